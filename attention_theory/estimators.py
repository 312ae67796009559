r"""Attention estimators: exact softmax, random features, randomized attention, LARA, random batches.

Notation follows THEORY.md, Part B. Queries ``q`` have shape (N, d), keys
``k`` shape (M, d), values ``v`` shape (M, dv); every estimator returns an
array of shape (N, dv). The 1/sqrt(d) temperature is folded into ``q`` and
``k``. Exact attention is

.. math:: \mathrm{Attn}_n = \sum_m \pi_{nm} v_m, \qquad
          \pi_{nm} = e^{q_n\cdot k_m} / Z_n, \qquad Z_n = \sum_m e^{q_n\cdot k_m}.  \tag{T7}

The randomized estimators all rest on one identity (Zheng, Wang and Kong,
ICML 2022): with the query-specific target mixture
:math:`p_n(w) = \sum_m \pi_{nm} N(w; q_n + k_m, I)` (T12) and the
query-independent integrand :math:`f(w) = \sum_m \mathrm{softmax}_m(w\cdot k_m -
|k_m|^2/2)\, v_m` (T13), softmax attention is an expectation,
:math:`\mathrm{Attn}_n = E_{w\sim p_n}[f(w)]` (T14). Then

- :func:`rfa` is self-normalised importance sampling (SNIS) of (T14) with the
  proposal N(0, I), written as linear attention with random features (B1);
- :func:`randomized_attention` samples :math:`p_n` exactly (B3, unbiased, quadratic);
- :func:`lara` is SNIS with a mixture of C Gaussian proposals and multiple
  importance sampling weights (T17, linear cost);
- :func:`random_batch_attention` runs exact softmax attention inside the random
  batches of the RBM-1 partition (T18); :func:`random_batch_sum` is its
  unnormalised, unbiased cousin (lemma T3).

Conventions shared by every function here
-----------------------------------------
- **Log space.** Scores and importance weights are handled as logarithms and
  exponentiated only after subtracting a maximum, so inputs with
  :math:`|q\cdot k|` up to about 1e3 (and beyond) never overflow. The
  exceptions say so: :func:`random_batch_sum`, :func:`exact_batch_sum_target`
  and :func:`trig_features` compute quantities that are themselves of size
  :math:`e^{q\cdot k}` and overflow when those do.
- **Precision.** Inputs are validated (shapes, finiteness, real dtype) and
  converted to float64; the result is always float64, also for float32 inputs.
- **Randomness.** ``rng`` is a non-negative int seed or a
  :class:`numpy.random.Generator` (used and advanced in place). ``None`` is
  rejected: every random result here is reproducible from its seed.
- **Cost.** Quadratic estimators process queries in chunks so that no more than
  ``max_scores`` scores are held at once.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from attention_theory._validate import (
    as_generator,
    as_matrix,
    check_bool,
    check_choice,
    check_int,
    check_qkv,
    check_real,
    seed_from,
)

__all__ = [
    "NonPositiveDenominatorWarning",
    "softmax_attention",
    "rfa",
    "randomized_attention",
    "lara",
    "random_batch_attention",
    "random_batch_sum",
    "exact_batch_sum_target",
    "positive_features",
    "trig_features",
    "draw_features",
    "target_mixture_sample",
    "target_mixture_logpdf",
    "integrand_f",
    "snis_weights",
    "snis_attention",
    "MAX_SCORES",
]

#: Default cap on the number of scores (floats) held at once by the quadratic estimators (128 MiB).
MAX_SCORES = 2**24
#: Compute backends of :func:`softmax_attention` and :func:`random_batch_attention`.
_BACKENDS = ("cpu", "cuda")

_LOG_2PI = math.log(2.0 * math.pi)
#: Floor applied to the "optimal" LARA weights, as in the authors' code (``clamp(min=1e-8)``).
LARA_ALPHA_FLOOR = 1e-8


class NonPositiveDenominatorWarning(RuntimeWarning):
    """Random-feature attention produced a denominator <= 0 for some queries.

    Happens with trigonometric features, which are not positive: the estimate of
    :math:`Z_n` can be zero or negative, and the ratio is then meaningless
    (infinite, NaN, or outside the convex hull of the values). The estimator
    returns the raw ratio; this warning says for how many queries it happened.
    """


# ---------------------------------------------------------------------------
# log-space kernels
# ---------------------------------------------------------------------------
def _logsumexp(a, axis):
    """log(sum(exp(a))) along ``axis`` with max-subtraction; rows of -inf give -inf."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis)


def _softmax_rows(scores):
    """Row-wise softmax of a (n, m) array of finite or -inf scores (each row with one finite entry)."""
    e = scores - np.max(scores, axis=1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=1, keepdims=True)
    return e


def _half_sq_norms(x):
    return 0.5 * np.einsum("ij,ij->i", x, x)


def _softmax_pass(x, k, v, kshift, max_scores):
    r"""Online softmax of the scores :math:`x_i\cdot k_m - \mathrm{kshift}_m` over m.

    Returns ``(lse, out)``: lse_i = log sum_m exp(score_im) and
    out_i = sum_m softmax_m(score_im) v_m. Rows are processed in chunks and,
    when M > max_scores, keys too (running max and rescaled accumulators, as
    in flash attention), so that at most ``max_scores`` scores exist at once.
    With M <= max_scores there is a single key pass, and the result does not
    depend on the row chunking.
    """
    n, m_keys = x.shape[0], k.shape[0]
    if m_keys <= max_scores:
        rows, kc = max(1, max_scores // m_keys), m_keys
    else:
        rows, kc = 1, max_scores
    out = np.empty((n, v.shape[1]))
    lse = np.empty(n)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        xa = x[a:b]
        mx = den = acc = None
        for c0 in range(0, m_keys, kc):
            c1 = min(m_keys, c0 + kc)
            sc = xa @ k[c0:c1].T
            if kshift is not None:
                sc -= kshift[c0:c1]
            cm = sc.max(axis=1)
            if mx is None:
                mx = cm
                sc -= mx[:, None]
                np.exp(sc, out=sc)
                den = sc.sum(axis=1)
                acc = sc @ v[c0:c1]
            else:
                new = np.maximum(mx, cm)
                r = np.exp(mx - new)
                sc -= new[:, None]
                np.exp(sc, out=sc)
                den = den * r + sc.sum(axis=1)
                acc = acc * r[:, None] + sc @ v[c0:c1]
                mx = new
            del sc  # free this chunk before the next one is allocated
        out[a:b] = acc / den[:, None]
        lse[a:b] = mx + np.log(den)
    return lse, out


def _check_max_scores(max_scores):
    return check_int("max_scores", max_scores, low=1)


# ---------------------------------------------------------------------------
# pieces
# ---------------------------------------------------------------------------
def _as_points(name, x, d=None, d_from=None):
    """x of shape (d,) or (n, d) -> (2-D float64 array, was_1d); d: required dimension (from ``d_from``)."""
    if isinstance(x, np.random.Generator):
        raise TypeError(f"{name} must be an array, got a numpy Generator (arguments in the wrong order?)")
    a = np.asarray(x)
    one = a.ndim == 1
    if one:
        a = a[None, :]
    cols = None if d is None else (d_from, d)
    return as_matrix(name, a, cols=cols), one


def positive_features(x, w, *, log=False):
    r"""Positive random features :math:`\xi(x, w_s) = \exp(w_s\cdot x - |x|^2/2)` (B1, T8).

    :math:`E_{w\sim N(0,I)}[\xi(x,w)\xi(y,w)] = e^{x\cdot y}` (T8) with variance
    :math:`e^{2x\cdot y}(e^{|x+y|^2} - 1)` (T9). No :math:`1/\sqrt{S}` factor is
    applied: :math:`\frac1S\sum_s \xi(x,w_s)\xi(y,w_s)` estimates :math:`e^{x\cdot y}`.

    Parameters
    ----------
    x : array_like, shape (n, d) or (d,)
    w : array_like, shape (S, d)
        Feature directions, normally drawn from N(0, I) (see :func:`draw_features`).
    log : bool
        Return :math:`\log\xi` (always finite) instead of :math:`\xi` (which
        over- or underflows when :math:`|w\cdot x - |x|^2/2| > 709`).

    Returns
    -------
    ndarray, shape (n, S) or (S,)
    """
    w = as_matrix("w", w)
    x2, one = _as_points("x", x)
    if x2.shape[1] != w.shape[1]:
        raise ValueError(f"x and w must have the same dimension d, got x with d={x2.shape[1]}, w with d={w.shape[1]}")
    log = check_bool("log", log)
    lf = x2 @ w.T - _half_sq_norms(x2)[:, None]
    out = lf if log else np.exp(lf)
    return out[0] if one else out


def trig_features(x, w):
    r"""Trigonometric random features :math:`\phi(x, w_s) = e^{|x|^2/2}[\cos w_s\cdot x, \sin w_s\cdot x]` (T10).

    :math:`\phi(x,w)\cdot\phi(y,w) = e^{(|x|^2+|y|^2)/2}\cos(w\cdot(x-y))` is unbiased
    for :math:`e^{x\cdot y}` under w ~ N(0, I), but it is not positive. Not in log
    space by nature: the prefactor overflows for :math:`|x|^2/2 > 709`.

    Parameters
    ----------
    x : array_like, shape (n, d) or (d,)
    w : array_like, shape (S, d)

    Returns
    -------
    ndarray, shape (n, 2S) or (2S,)
        Columns ``[cos(w_1.x), ..., cos(w_S.x), sin(w_1.x), ..., sin(w_S.x)]`` times
        :math:`e^{|x|^2/2}`, without a :math:`1/\sqrt{S}` factor.
    """
    w = as_matrix("w", w)
    x2, one = _as_points("x", x)
    if x2.shape[1] != w.shape[1]:
        raise ValueError(f"x and w must have the same dimension d, got x with d={x2.shape[1]}, w with d={w.shape[1]}")
    p = x2 @ w.T
    out = np.exp(_half_sq_norms(x2))[:, None] * np.concatenate([np.cos(p), np.sin(p)], axis=1)
    return out[0] if one else out


def _draw_features(gen, num_features, dim, orthogonal):
    if not orthogonal:
        return gen.standard_normal((num_features, dim))
    nblocks = -(-num_features // dim)
    blocks = []
    for _ in range(nblocks):
        qm, rm = np.linalg.qr(gen.standard_normal((dim, dim)))
        qm = qm * np.where(np.diag(rm) < 0, -1.0, 1.0)  # Haar-distributed orthogonal matrix
        blocks.append(qm.T)
    directions = np.concatenate(blocks, axis=0)[:num_features]
    norms = np.sqrt(gen.chisquare(dim, size=num_features))
    return directions * norms[:, None]


def draw_features(num_features, dim, *, rng, orthogonal=False):
    r"""Draw S feature vectors :math:`w_s`, each marginally N(0, I_d).

    Parameters
    ----------
    num_features : int
        S >= 1.
    dim : int
        d >= 1.
    rng : int or numpy.random.Generator
    orthogonal : bool
        False: i.i.d. ``rng.standard_normal((S, d))``. True: orthogonal random
        features as in Performer (Choromanski et al. 2021): blocks of d exactly
        orthogonal, Haar-distributed directions (QR of a Gaussian matrix with the
        signs of diag(R) fixed), the last block truncated when d does not divide
        S, each direction scaled by an independent chi(d)-distributed norm. Each
        :math:`w_s` is still N(0, I) marginally, so every estimator built on them
        keeps its expectation per feature; features of one block are dependent.

    Returns
    -------
    ndarray, shape (S, d)
    """
    s = check_int("num_features", num_features, low=1)
    d = check_int("dim", dim, low=1)
    orthogonal = check_bool("orthogonal", orthogonal)
    return _draw_features(as_generator(rng), s, d, orthogonal)


def _sample_mixture(q, k, gen, num_samples, max_scores):
    """Ancestral draws from p_n for every query: (N, R, d). Randomness: u (N, R) then eps (N, R, d)."""
    n, d = q.shape
    m_keys = k.shape[0]
    u = 1.0 - gen.random((n, num_samples))  # in (0, 1]
    eps = gen.standard_normal((n, num_samples, d))
    idx = np.empty((n, num_samples), dtype=np.int64)
    rows = max(1, max_scores // m_keys)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        cdf = q[a:b] @ k.T
        cdf -= cdf.max(axis=1, keepdims=True)
        np.exp(cdf, out=cdf)
        np.cumsum(cdf, axis=1, out=cdf)
        last = cdf[:, -1:].copy()
        cdf /= last  # last column exactly 1
        for r in range(num_samples):
            # m* = #{m : cdf_m < u}: P(m* = m) = cdf_m - cdf_{m-1} = pi_nm.
            idx[a:b, r] = np.count_nonzero(cdf < u[a:b, r, None], axis=1)
        del cdf
    np.minimum(idx, m_keys - 1, out=idx)
    return q[:, None, :] + k[idx] + eps


def target_mixture_sample(q_n, k, rng, size=1, *, max_scores=MAX_SCORES):
    r"""Draw from the target mixture :math:`p_n(w) = \sum_m \pi_{nm} N(w; q_n + k_m, I)` (T12).

    Ancestral sampling: :math:`m^* \sim \mathrm{Categorical}(\pi_{n\cdot})` by
    inversion of the cumulative weights, then :math:`w = q_n + k_{m^*} + \varepsilon`,
    :math:`\varepsilon \sim N(0, I)`.

    Parameters
    ----------
    q_n : array_like, shape (d,) or (N, d)
        One query, or several (then each gets ``size`` independent draws).
    k : array_like, shape (M, d)
    rng : int or numpy.random.Generator
        Consumed as ``u = rng.random((N, size))`` then ``rng.standard_normal((N, size, d))``;
        :func:`randomized_attention` draws its samples with this very function, so the
        same seed gives the same samples.
    size : int
        Number of draws per query, >= 1.
    max_scores : int
        Chunking of the (N, M) score matrix (at least one row of M scores is held).

    Returns
    -------
    ndarray, shape (size, d) for one query, (N, size, d) for several.
    """
    q2, one = _as_points("q_n", q_n)
    k = as_matrix("k", k, cols=("q_n", q2.shape[1]))
    size = check_int("size", size, low=1)
    max_scores = _check_max_scores(max_scores)
    w = _sample_mixture(q2, k, as_generator(rng), size, max_scores)
    return w[0] if one else w


def target_mixture_logpdf(w, q_n, k):
    r"""Log-density of the target mixture :math:`p_n` (T12) at the rows of ``w``.

    :math:`\log p_n(w) = \mathrm{logsumexp}_m[\log\pi_{nm} + \log N(w; q_n + k_m, I)]`,
    evaluated directly as a mixture (independently of the product identity T11,
    so that tests can check one against the other).

    Parameters
    ----------
    w : array_like, shape (P, d) or (d,)
    q_n : array_like, shape (d,)
    k : array_like, shape (M, d)

    Returns
    -------
    ndarray, shape (P,) or scalar float
    """
    qn = as_matrix("q_n", q_n, ndim=1)
    k = as_matrix("k", k, cols=("q_n", qn.shape[0]))
    w2, one = _as_points("w", w, d=qn.shape[0], d_from="q_n")
    s = k @ qn
    log_pi = s - _logsumexp(s, axis=0)
    means = qn[None, :] + k  # (M, d)
    sq = (
        np.einsum("ij,ij->i", w2, w2)[:, None]
        - 2.0 * (w2 @ means.T)
        + np.einsum("ij,ij->i", means, means)[None, :]
    )
    np.maximum(sq, 0.0, out=sq)
    comp = log_pi[None, :] - 0.5 * sq - 0.5 * qn.shape[0] * _LOG_2PI
    out = _logsumexp(comp, axis=1)
    return float(out[0]) if one else out


def integrand_f(w, k, v, *, max_scores=MAX_SCORES):
    r"""The query-independent integrand :math:`f(w) = \sum_m \mathrm{softmax}_m(w\cdot k_m - |k_m|^2/2)\, v_m` (T13).

    Every value of f is a convex combination of the values :math:`v_m`.

    Parameters
    ----------
    w : array_like, shape (S, d) or (d,)
    k : array_like, shape (M, d)
    v : array_like, shape (M, dv)
    max_scores : int

    Returns
    -------
    ndarray, shape (S, dv) or (dv,)
    """
    k = as_matrix("k", k)
    v = as_matrix("v", v)
    if v.shape[0] != k.shape[0]:
        raise ValueError(f"v must have one row per key: k has shape {k.shape}, v has shape {v.shape}")
    w2, one = _as_points("w", w, d=k.shape[1], d_from="k")
    max_scores = _check_max_scores(max_scores)
    _, f = _softmax_pass(w2, k, v, _half_sq_norms(k), max_scores)
    return f[0] if one else f


def snis_weights(log_target, log_proposal):
    r"""Self-normalised importance weights :math:`\bar w_s = \frac{p(w_s)/q(w_s)}{\sum_{s'} p(w_{s'})/q(w_{s'})}`.

    Computed in log space along the last axis (max-subtraction), so the
    unnormalised target may be known only up to a constant and its logarithm
    may be as large as you like.

    Parameters
    ----------
    log_target : array_like, shape (..., S)
        log of the (possibly unnormalised) target at the samples; -inf (zero
        target density) allowed.
    log_proposal : array_like, broadcastable to log_target
        log proposal density at the samples, finite.

    Returns
    -------
    ndarray, the broadcast shape; non-negative, summing to one along the last axis.
    """
    lt = np.asarray(log_target)
    lp = np.asarray(log_proposal)
    for name, a in (("log_target", lt), ("log_proposal", lp)):
        if a.dtype.kind not in "iuf":
            raise TypeError(f"{name} must be an array of real numbers, got dtype {a.dtype}")
        if a.ndim < 1:
            raise ValueError(f"{name} must have at least one axis (the samples), got a scalar")
    lt = lt.astype(np.float64)
    lp = lp.astype(np.float64)
    if np.any(np.isnan(lt) | (lt == np.inf)):
        raise ValueError("log_target must not contain NaN or +inf")
    if not np.all(np.isfinite(lp)):
        raise ValueError("log_proposal must contain only finite values")
    try:
        lw = lt - lp
    except ValueError as e:
        raise ValueError(f"log_target {lt.shape} and log_proposal {lp.shape} do not broadcast: {e}") from e
    mx = np.max(lw, axis=-1, keepdims=True)
    if np.any(mx == -np.inf):
        raise ValueError("log_target must have at least one finite entry along the sample axis")
    out = np.exp(lw - mx)
    out /= out.sum(axis=-1, keepdims=True)
    return out


def _snis_core(q, k, v, w, log_prop, log_alpha, normalization, max_scores):
    r"""(Multiple) importance sampling estimate of (T14) for given samples.

    log W_ns = log alpha_ns + log ptilde_n(w_s) - log_prop_s, with the
    query-dependent part of log ptilde factored out as q_n.w_s - |q_n|^2/2:
    cost O(S (N + M) d).
    """
    d = q.shape[1]
    lse_k, f = _softmax_pass(w, k, v, _half_sq_norms(k), max_scores)  # (S,), (S, dv)
    g = -_half_sq_norms(w) - 0.5 * d * _LOG_2PI + lse_k - log_prop  # sample-only part
    lw = q @ w.T
    lw -= _half_sq_norms(q)[:, None]
    lw += g[None, :]
    if log_alpha is not None:
        lw += log_alpha
    if normalization == "self":
        lw -= lw.max(axis=1, keepdims=True)
        np.exp(lw, out=lw)
        return (lw @ f) / lw.sum(axis=1)[:, None]
    log_z, _ = _softmax_pass(q, k, v, None, max_scores)  # exact log Z_n: quadratic, for checks only
    lw -= log_z[:, None]
    np.exp(lw, out=lw)
    return lw @ f


def snis_attention(q, k, v, w, log_proposal, *, log_alpha=None, normalization="self", max_scores=MAX_SCORES):
    r"""Importance-sampling estimate of :math:`\mathrm{Attn}_n = E_{p_n}[f]` (T14) from given samples.

    With the unnormalised target
    :math:`\tilde p_n(w) = N(w;0,I)\,\xi(q_n,w)\sum_m\xi(k_m,w) = Z_n\,p_n(w)` (T11),
    per-sample proposal densities :math:`q_s(w_s)` and weights :math:`\alpha_{ns}`:

    - ``normalization="self"`` (T17):
      :math:`\sum_s \alpha_{ns}\frac{\tilde p_n(w_s)}{q_s(w_s)} f(w_s)
      \big/ \sum_s \alpha_{ns}\frac{\tilde p_n(w_s)}{q_s(w_s)}`;
    - ``normalization="exact"``: :math:`\sum_s \alpha_{ns}\frac{\tilde p_n(w_s)}{Z_n\, q_s(w_s)} f(w_s)`
      with the exact :math:`Z_n` (quadratic cost; a diagnostic). This is the
      multiple-importance-sampling (MIS) estimator, unbiased whenever the weights
      of each query sum to one over the proposals (with J draws per proposal,
      weight alpha_nc / J for each of them).

    Every LARA variant, RFA (one proposal N(0, I), constant alpha) and RA
    (proposal :math:`p_n` for sample n, :math:`\alpha_{ns} = \delta_{ns}`) is this
    function on suitable inputs; that is how the identities of THEORY B2-B4 are
    tested on the same samples. Cost O(S (N + M) d).

    Parameters
    ----------
    q, k, v : array_like, shapes (N, d), (M, d), (M, dv)
    w : array_like, shape (S, d)
        The samples.
    log_proposal : array_like, shape (S,)
        :math:`\log q_s(w_s)`: the normalised log-density of the proposal each sample was drawn from.
    log_alpha : array_like, shape (S,) or (N, S), optional
        Log of the (non-negative) weights; -inf means weight zero, but each query
        needs a finite entry. Default: :math:`\alpha_{ns} = 1/S` (plain importance
        sampling from one proposal). Irrelevant up to a per-query constant for
        ``normalization="self"``.
    normalization : {"self", "exact"}
    max_scores : int

    Returns
    -------
    ndarray, shape (N, dv)
    """
    q, k, v = check_qkv(q, k, v)
    w = as_matrix("w", w, cols=("q", q.shape[1]))
    s = w.shape[0]
    log_proposal = as_matrix("log_proposal", log_proposal, ndim=1)
    if log_proposal.shape[0] != s:
        raise ValueError(
            f"log_proposal must have one entry per sample: w has {s} rows, log_proposal has shape {log_proposal.shape}"
        )
    normalization = check_choice("normalization", normalization, ("self", "exact"))
    max_scores = _check_max_scores(max_scores)
    if log_alpha is None:
        la = np.full((1, s), -math.log(s))
    else:
        la = np.asarray(log_alpha)
        if la.dtype.kind in "iuf" and la.ndim == 1:
            la = la[None, :]
        la = as_matrix("log_alpha", la, allow_neg_inf=True)
        if la.shape[1] != s or la.shape[0] not in (1, q.shape[0]):
            raise ValueError(
                f"log_alpha must have shape (S,) or (N, S) = ({q.shape[0]}, {s}), got {np.shape(log_alpha)}"
            )
        if np.any(np.max(la, axis=1) == -np.inf):
            raise ValueError(
                "log_alpha must have at least one finite entry for every query (else its weights are all 0)"
            )
    return _snis_core(q, k, v, w, log_proposal, la, normalization, max_scores)


# ---------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------
def softmax_attention(q, k, v, *, max_scores=MAX_SCORES, backend="cpu"):
    r"""Exact softmax attention (T7), chunked and in log space.

    :math:`\mathrm{Attn}_n = \sum_m \mathrm{softmax}_m(q_n\cdot k_m)\, v_m`.

    Queries are processed in chunks of ``max_scores // M`` rows with one BLAS
    matrix product for the scores and one for the weighted values; when
    M > max_scores the keys are chunked too (online softmax with a running
    maximum), so no more than ``max_scores`` scores are ever held. The chunking
    does not change the result when M <= max_scores (each row is computed
    identically); with key chunking it changes only the summation order.

    Parameters
    ----------
    q : array_like, shape (N, d)
    k : array_like, shape (M, d)
    v : array_like, shape (M, dv)
    max_scores : int, default 2**24
        Memory cap, in number of float64 scores (2**24 = 128 MiB).
    backend : {"cpu", "cuda"}
        ``"cuda"``: one GPU thread per query, two passes over the keys (no
        score matrix, ``max_scores`` unused); needs numba-cuda and a GPU (or
        the CUDA simulator). Agrees with ``"cpu"`` to rounding.

    Returns
    -------
    ndarray of float64, shape (N, dv)

    Notes
    -----
    Time O(N M (d + dv)), memory O(min(N M, max_scores) + N dv). Reference:
    Vaswani et al., "Attention is all you need", NeurIPS 2017.
    """
    q, k, v = check_qkv(q, k, v)
    max_scores = _check_max_scores(max_scores)
    if check_choice("backend", backend, _BACKENDS) == "cuda":
        from attention_theory import _rba_cuda

        return _rba_cuda.softmax_attention(q, k, v)
    return _softmax_pass(q, k, v, None, max_scores)[1]


def _rfa_positive(q, k, v, w):
    lk = k @ w.T
    lk -= _half_sq_norms(k)[:, None]  # log xi(k_m, w_s), (M, S)
    c = lk.max(axis=0)  # per-feature scale
    lk -= c[None, :]
    np.exp(lk, out=lk)
    a = lk.T @ v  # (S, dv): sum_m xi(k_m, w_s) v_m / e^{c_s}
    b = lk.sum(axis=0)  # (S,) >= 1
    lq = q @ w.T
    lq += c[None, :]  # log xi(q_n, w_s) + c_s, without the per-query constant -|q_n|^2/2 (cancels)
    lq -= lq.max(axis=1, keepdims=True)
    np.exp(lq, out=lq)
    return (lq @ a) / (lq @ b)[:, None]


def _rfa_trig(q, k, v, w):
    pk = k @ w.T  # (M, S)
    hk = _half_sq_norms(k)
    scale = np.exp(hk - hk.max())  # e^{|k_m|^2/2} up to a global constant, <= 1
    ck = np.cos(pk) * scale[:, None]
    sk = np.sin(pk) * scale[:, None]
    pq = q @ w.T  # the factor e^{|q_n|^2/2} cancels per query
    cq, sq = np.cos(pq), np.sin(pq)
    num = cq @ (ck.T @ v) + sq @ (sk.T @ v)
    den = cq @ ck.sum(axis=0) + sq @ sk.sum(axis=0)
    bad = int(np.count_nonzero(den <= 0.0))
    if bad:
        warnings.warn(
            f"rfa(kind='trig'): the estimated normaliser is <= 0 for {bad} of {den.size} queries; "
            "their outputs are the raw (meaningless) ratio, possibly inf or NaN",
            NonPositiveDenominatorWarning,
            stacklevel=3,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den[:, None]


def rfa(q, k, v, *, num_features, rng, kind="positive", orthogonal=False):
    r"""Random feature attention (B1) with S = ``num_features`` Gaussian features.

    .. math:: \mathrm{RFA}_n = \frac{\sum_s \xi(q_n,w_s)\sum_m \xi(k_m,w_s) v_m}
                                    {\sum_s \xi(q_n,w_s)\sum_m \xi(k_m,w_s)}, \qquad w_s \sim N(0, I).

    ``kind="positive"``: :math:`\xi(x,w) = e^{w\cdot x - |x|^2/2}` (Performer's
    FAVOR+), computed in log space: per feature the key sums are scaled by
    :math:`e^{-\max_m \log\xi(k_m,w_s)}`, per query the feature weights by their
    maximum; these constants cancel in the ratio. RFA is then exactly the
    self-normalised importance-sampling estimate of (T14) with proposal N(0, I)
    (Zheng et al. 2022), hence biased (a ratio) and consistent as S grows, its
    outputs convex combinations of the values.

    ``kind="trig"``: :math:`\phi(x,w) = e^{|x|^2/2}[\cos w\cdot x, \sin w\cdot x]`
    (T10; Rahimi-Recht features as in Peng et al. 2021 / Performer). The
    query factor cancels; the key factor is scaled by its maximum over keys.
    **The denominator is an unbiased but not positive estimate of** :math:`Z_n`:
    it can be <= 0, and then the output is meaningless. The raw ratio is
    returned (inf/NaN for a zero denominator, values outside the convex hull
    of v for a negative one) and a :class:`NonPositiveDenominatorWarning` says
    for how many queries it happened.

    Parameters
    ----------
    q, k, v : array_like, shapes (N, d), (M, d), (M, dv)
    num_features : int
        S >= 1.
    rng : int or numpy.random.Generator
        The features are ``draw_features(S, d, rng=rng, orthogonal=orthogonal)``.
    kind : {"positive", "trig"}
    orthogonal : bool
        Orthogonal random features (see :func:`draw_features`).

    Returns
    -------
    ndarray of float64, shape (N, dv)

    Notes
    -----
    Time O(S (N + M)(d + dv)), memory O(S (N + M + dv)). Bias and variance (T15);
    weight second moment (T16) with mu = 0.
    """
    q, k, v = check_qkv(q, k, v)
    s = check_int("num_features", num_features, low=1)
    kind = check_choice("kind", kind, ("positive", "trig"))
    orthogonal = check_bool("orthogonal", orthogonal)
    w = _draw_features(as_generator(rng), s, q.shape[1], orthogonal)
    if kind == "positive":
        return _rfa_positive(q, k, v, w)
    return _rfa_trig(q, k, v, w)


def randomized_attention(q, k, v, *, rng, num_samples=1, max_scores=MAX_SCORES):
    r"""Randomized attention (B3): :math:`\frac1R\sum_r f(w_{nr})`, :math:`w_{nr} \sim p_n` i.i.d.

    Each query draws R = ``num_samples`` independent samples from its target
    mixture :math:`p_n` (T12) by :func:`target_mixture_sample` (same seed, same
    samples) and averages the integrand f (T13). Unbiased for
    :math:`\mathrm{Attn}_n` by (T14); each output is a convex combination of the
    values, so each coordinate's single-draw variance is at most range^2/4.

    Parameters
    ----------
    q, k, v : array_like, shapes (N, d), (M, d), (M, dv)
    rng : int or numpy.random.Generator
    num_samples : int
        R >= 1.
    max_scores : int
        Chunking of the quadratic parts (sampling from :math:`\pi_{n\cdot}` and
        evaluating f); at least one row of M scores is held.

    Returns
    -------
    ndarray of float64, shape (N, dv)

    Notes
    -----
    Quadratic: time O(R N M (d + dv)), memory O(min(N M, max_scores) + N R (d + dv)).
    Reference: Zheng, Wang, Kong, "Linear complexity randomized self-attention
    mechanism", ICML 2022 (arXiv 2204.04667).
    """
    q, k, v = check_qkv(q, k, v)
    r = check_int("num_samples", num_samples, low=1)
    max_scores = _check_max_scores(max_scores)
    n, d = q.shape
    w = _sample_mixture(q, k, as_generator(rng), r, max_scores).reshape(n * r, d)
    _, f = _softmax_pass(w, k, v, _half_sq_norms(k), max_scores)
    return f.reshape(n, r, v.shape[1]).mean(axis=1)


def _segment_means(x, c):
    """Means of x over the c contiguous segments of ``np.array_split(x, c)``."""
    n = x.shape[0]
    base, extra = divmod(n, c)
    sizes = np.full(c, base, dtype=np.int64)
    sizes[:extra] += 1
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return np.add.reduceat(x, starts, axis=0) / sizes[:, None]


def lara(
    q,
    k,
    v,
    *,
    num_proposals,
    rng,
    samples_per_proposal=1,
    weights="balance",
    gamma=1.0,
    mode="sampled",
    proposal_means=None,
    normalization="self",
    max_scores=MAX_SCORES,
):
    r"""Linear randomized attention, LARA (T17; Zheng, Wang, Kong, ICML 2022).

    C = ``num_proposals`` Gaussian proposals :math:`q_c = N(\mu_c, I)` shared by
    all queries, :math:`\mu_c = \bar q_c + \bar k_c`, the means of the queries and
    of the keys over C contiguous segments (``np.array_split`` semantics: the
    first ``N mod C`` segments are one longer). J = ``samples_per_proposal``
    draws :math:`w_{cj} \sim q_c`; then, with
    :math:`\tilde p_n(w) = N(w;0,I)\,\xi(q_n,w)\sum_m\xi(k_m,w)`,

    .. math:: \mathrm{LARA}_n = \frac{\sum_{c,j} \alpha_{nc}(w_{cj})\,\tilde p_n(w_{cj})/q_c(w_{cj})\; f(w_{cj})}
                                     {\sum_{c,j} \alpha_{nc}(w_{cj})\,\tilde p_n(w_{cj})/q_c(w_{cj})}.   \tag{T17}

    The query-dependent factor :math:`e^{w\cdot q_n}` of :math:`\tilde p_n` is
    factored out (one (N, CJ) matrix product), so the cost is linear in N + M.

    Weights (each sums to one over c for every w and every query):

    - ``"balance"``: the balance heuristic :math:`\alpha_c(w) = q_c(w)/\sum_{c'} q_{c'}(w)`;
    - ``"optimal"``: :math:`\alpha_{nc}(w) = \mathrm{BH}_c(w) + \gamma\,(r_{nc} - \frac1C\sum_{c'} r_{nc'})`
      with :math:`r_{nc} = \mathrm{softmax}_n(\bar q_c\cdot q_n)`, the softmax taken
      **over queries n** for each c. This follows the specification's (THEORY B4)
      reading of the authors' code (``mis-opt``), including its floor: weights
      below 1e-8 are clamped to 1e-8, after which they no longer sum to one
      (where the clamp acts, the exact-Z MIS estimator is no longer exactly unbiased).
      With J > 1 every draw of proposal c carries weight :math:`\alpha_{nc}/J`
      (the authors' multi-sample variant divides only the BH term; a difference of
      scale of gamma).

    Parameters
    ----------
    q, k, v : array_like, shapes (N, d), (M, d), (M, dv)
    num_proposals : int
        C, with 1 <= C <= min(N, M) (every segment of queries and of keys non-empty).
    rng : int or numpy.random.Generator
        Consumed as ``eps = rng.standard_normal((C, J, d))``, ``w_cj = mu_c + eps_cj``.
        Unused (may be None) when ``mode="deterministic"``.
    samples_per_proposal : int
        J >= 1 (must be 1 in deterministic mode).
    weights : {"balance", "optimal"}
    gamma : float
        Coefficient of the query-specific term of the "optimal" weights (ignored for "balance").
    mode : {"sampled", "deterministic"}
        ``"deterministic"`` evaluates the formula at :math:`w_c = \mu_c`, as the
        authors' code does at inference. **This is a plug-in, not an importance
        sampling estimate**: nothing is random, it is neither unbiased nor
        consistent, and no Monte Carlo statement applies to it.
    proposal_means : array_like, shape (C, d), optional
        Override :math:`\mu_c` (the segment means still define :math:`\bar q_c` for
        the "optimal" weights). With all means 0 and "balance" weights (then
        :math:`\alpha = 1/C`), LARA is RFA on the same draws.
    normalization : {"self", "exact"}
        ``"exact"`` divides by the exact :math:`Z_n` instead of self-normalising:
        the unbiased MIS estimator, quadratic, for verification only ("sampled" mode).
    max_scores : int
        Chunking of the key pass (and of the exact Z).

    Returns
    -------
    ndarray of float64, shape (N, dv)

    Notes
    -----
    Self-normalised LARA is biased (a ratio) and consistent as J grows; outputs
    are convex combinations of the values. Time O(C J (N + M)(d + dv) + C^2 J d),
    memory O(C J (N + M + dv)). See :func:`snis_attention` for the generic formula.
    """
    q, k, v = check_qkv(q, k, v)
    n, d = q.shape
    m_keys = k.shape[0]
    c = check_int("num_proposals", num_proposals, low=1, high=min(n, m_keys),
                  high_doc=f"min(N, M) = {min(n, m_keys)}")
    j = check_int("samples_per_proposal", samples_per_proposal, low=1)
    weights = check_choice("weights", weights, ("balance", "optimal"))
    gamma = check_real("gamma", gamma)
    mode = check_choice("mode", mode, ("sampled", "deterministic"))
    normalization = check_choice("normalization", normalization, ("self", "exact"))
    max_scores = _check_max_scores(max_scores)
    qbar = _segment_means(q, c)
    if proposal_means is None:
        mu = qbar + _segment_means(k, c)
    else:
        mu = as_matrix("proposal_means", proposal_means)
        if mu.shape != (c, d):
            raise ValueError(f"proposal_means must have shape (num_proposals, d) = ({c}, {d}), got {mu.shape}")
    if mode == "deterministic":
        if j != 1:
            raise ValueError(f"samples_per_proposal must be 1 when mode='deterministic' (one point mu_c each), got {j}")
        if normalization != "self":
            raise ValueError("normalization='exact' needs mode='sampled' (the plug-in is not an IS estimate)")
        if rng is not None:
            as_generator(rng)  # validated, not used
        w = mu.copy()
        comp = np.arange(c)
    else:
        eps = as_generator(rng).standard_normal((c, j, d))
        w = (mu[:, None, :] + eps).reshape(c * j, d)
        comp = np.repeat(np.arange(c), j)
    # log q_c'(w_s) for every sample s and proposal c': (S, C)
    half_sq_dist = _half_sq_norms(w)[:, None] - w @ mu.T + _half_sq_norms(mu)[None, :]
    log_q_all = -np.maximum(half_sq_dist, 0.0) - 0.5 * d * _LOG_2PI
    s_idx = np.arange(w.shape[0])
    log_prop = log_q_all[s_idx, comp]
    log_bh = log_prop - _logsumexp(log_q_all, axis=1)  # log BH_{c(s)}(w_s)
    if weights == "balance":
        log_alpha = (log_bh - math.log(j))[None, :]
    else:
        r = _softmax_rows((q @ qbar.T).T).T  # (N, C), softmax over queries n for each c
        dev = r - r.mean(axis=1, keepdims=True)
        alpha = np.exp(log_bh)[None, :] + gamma * dev[:, comp]
        np.maximum(alpha, LARA_ALPHA_FLOOR, out=alpha)
        log_alpha = np.log(alpha) - math.log(j)
    return _snis_core(q, k, v, w, log_prop, log_alpha, normalization, max_scores)


def _check_batch_args(q, k, v, batch_size):
    q, k, v = check_qkv(q, k, v, self_attention=True)
    n = q.shape[0]
    if n < 2:
        raise ValueError(
            f"q must hold at least 2 tokens for random batches (batch_size in [2, N]), got shape {q.shape}"
        )
    p = check_int("batch_size", batch_size, low=2, high=n, high_doc=f"N = {n}")
    return q, k, v, p


def _run_batches(q, k, v, p, rng, include_self, normalize, backend="cpu"):
    import particles
    from attention_theory import _rba

    if backend == "cuda":  # the same partition, built on the device
        from attention_theory import _rba_cuda

        return _rba_cuda.random_batch_attention(q, k, v, seed_from(rng), p, include_self, normalize)
    part = particles.partition(q.shape[0], p, seed=seed_from(rng), step=0)
    perm = np.ascontiguousarray(part.perm, dtype=np.int64)
    bounds = np.ascontiguousarray(part.bounds, dtype=np.int64)
    return _rba.run(q, k, v, perm, bounds, include_self, normalize)


def random_batch_attention(q, k, v, *, batch_size, rng, include_self=True, backend="cpu"):
    r"""Random batch attention, RBA (T18; Liu, Ma, Jin, Wang, arXiv 2511.06044).

    .. math:: \mathrm{RBA}_i = \sum_{j\in C(i)} \mathrm{softmax}_{j\in C(i)}(q_i\cdot k_j)\, v_j

    Self-attention over N tokens (queries and keys indexed alike, N == M). The
    tokens are cut into batches by the RBM-1 partition
    ``particles.partition(N, batch_size, seed=s, step=0)`` (sizes p or p + 1 when
    p does not divide N), where s is ``rng`` itself when it is an int and
    ``rng.integers(2**63)`` when it is a Generator; exact, max-subtracted softmax
    attention runs inside each batch in a Numba kernel parallel over batches
    (compiled on first call). p = N gives exact attention.

    The batch softmax is a ratio estimator, hence **biased** for
    :math:`\mathrm{Attn}_i` (bias decaying roughly like 1/p in our measurements,
    larger when the token itself is included); see :func:`random_batch_sum` for
    the unbiased, unnormalised batch sum.

    Parameters
    ----------
    q, k : array_like, shape (N, d)
    v : array_like, shape (N, dv)
    batch_size : int
        p with 2 <= p <= N. (p = 1 is rejected: the batch softmax of a singleton is
        v_i itself with the token, and undefined without it.)
    rng : int or numpy.random.Generator
    include_self : bool
        False drops j = i from the batch softmax of token i.
    backend : {"cpu", "cuda"}
        ``"cuda"``: the partition is built on the GPU (the same integers) and one
        GPU thread computes each token; needs numba-cuda and a GPU (or the CUDA
        simulator). Agrees with ``"cpu"`` to rounding.

    Returns
    -------
    ndarray of float64, shape (N, dv)

    Notes
    -----
    Time O(N p (d + dv)); memory O(N dv) for the output plus O(p d) scratch per thread
    (no (N, N) or (N/p, p, p) score tensor is formed).
    """
    q, k, v, p = _check_batch_args(q, k, v, batch_size)
    include_self = check_bool("include_self", include_self)
    backend = check_choice("backend", backend, _BACKENDS)
    return _run_batches(q, k, v, p, rng, include_self, True, backend)


def _warn_overflow(name, out):
    bad = int(np.count_nonzero(~np.all(np.isfinite(out), axis=1)))
    if bad:
        warnings.warn(
            f"{name}: the result is not representable in float64 for {bad} queries "
            "(a score q_i.k_j above about 709 overflows exp); these rows hold inf or NaN",
            RuntimeWarning,
            stacklevel=3,
        )


def random_batch_sum(q, k, v, *, batch_size, rng):
    r"""Unnormalised random batch sum (the RBM batch force of lemma T3).

    .. math:: \frac{1}{|C(i)|-1}\sum_{j\in C(i),\, j\ne i} e^{q_i\cdot k_j} v_j,

    an unbiased estimate of :math:`\frac{1}{N-1}\sum_{j\ne i} e^{q_i\cdot k_j} v_j`
    (:func:`exact_batch_sum_target`) over the uniformly random RBM-1 partition,
    drawn exactly as in :func:`random_batch_attention` (same seed, same batches).

    **Not in log space by nature**: the result has the size of
    :math:`e^{q_i\cdot k_j}`. It is computed as
    :math:`e^{m_i}\sum_j e^{q_i\cdot k_j - m_i} v_j/(|C|-1)`, :math:`m_i = \max_j q_i\cdot k_j`,
    so it is accurate whenever it is representable, i.e. while the scores stay
    below about 709 (log of the largest float64, 1.8e308); beyond, rows become
    inf (or NaN where a value coordinate is 0) and a RuntimeWarning is emitted.

    Parameters
    ----------
    q, k : array_like, shape (N, d)
    v : array_like, shape (N, dv)
    batch_size : int
        2 <= p <= N.
    rng : int or numpy.random.Generator

    Returns
    -------
    ndarray of float64, shape (N, dv)
    """
    q, k, v, p = _check_batch_args(q, k, v, batch_size)
    out = _run_batches(q, k, v, p, rng, False, False)
    _warn_overflow("random_batch_sum", out)
    return out


def exact_batch_sum_target(q, k, v, *, max_scores=MAX_SCORES):
    r"""The target of :func:`random_batch_sum`: :math:`\frac{1}{N-1}\sum_{j\ne i} e^{q_i\cdot k_j} v_j`.

    Quadratic, chunked like :func:`softmax_attention` (at least one row of N
    scores is held). Same overflow range as :func:`random_batch_sum` (scores
    below about 709), with a RuntimeWarning beyond.

    Parameters
    ----------
    q, k : array_like, shape (N, d)
    v : array_like, shape (N, dv)
    max_scores : int

    Returns
    -------
    ndarray of float64, shape (N, dv)
    """
    q, k, v = check_qkv(q, k, v, self_attention=True)
    n = q.shape[0]
    if n < 2:
        raise ValueError(f"q must hold at least 2 tokens (the sum runs over j != i), got shape {q.shape}")
    max_scores = _check_max_scores(max_scores)
    out = np.empty((n, v.shape[1]))
    rows = max(1, max_scores // n)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        sc = q[a:b] @ k.T
        sc[np.arange(b - a), np.arange(a, b)] = -np.inf
        mx = sc.max(axis=1)
        sc -= mx[:, None]
        np.exp(sc, out=sc)
        with np.errstate(over="ignore", invalid="ignore"):
            out[a:b] = (sc @ v) * (np.exp(mx) / (n - 1))[:, None]
        del sc
    _warn_overflow("exact_batch_sum_target", out)
    return out
