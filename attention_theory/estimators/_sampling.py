"""The target mixture p_n (T12), the integrand f (T13), importance sampling: SNIS, RA, LARA (T14, T17)."""

from __future__ import annotations

import math

import numpy as np

from attention_theory._validate import (
    as_generator,
    as_matrix,
    check_choice,
    check_int,
    check_qkv,
    check_real,
)
from attention_theory.estimators._softmax import (
    MAX_SCORES,
    _as_points,
    _check_max_scores,
    _half_sq_norms,
    _logsumexp,
    _softmax_pass,
    _softmax_rows,
)

_LOG_2PI = math.log(2.0 * math.pi)
#: Floor applied to the "optimal" LARA weights, as in the authors' code (``clamp(min=1e-8)``).
LARA_ALPHA_FLOOR = 1e-8


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


# Where the N mod C segments that are one row longer go: first (np.array_split) or last (the authors' code).
_SEGMENT_LAYOUTS = ("leading", "trailing")


def _segment_means(x, c, segments="leading"):
    """Means of x over c contiguous segments; the ``len(x) mod c`` longer ones first or last."""
    n = x.shape[0]
    base, extra = divmod(n, c)
    sizes = np.full(c, base, dtype=np.int64)
    if segments == "leading":
        sizes[:extra] += 1
    else:
        sizes[c - extra:] += 1
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
    segments="leading",
    max_scores=MAX_SCORES,
):
    r"""Linear randomized attention, LARA (T17; Zheng, Wang, Kong, ICML 2022).

    C = ``num_proposals`` Gaussian proposals :math:`q_c = N(\mu_c, I)` shared by
    all queries, :math:`\mu_c = \bar q_c + \bar k_c`, the means of the queries and
    of the keys over C contiguous segments (the layout when C does not divide N
    or M is set by ``segments``). J = ``samples_per_proposal``
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
    segments : {"leading", "trailing"}
        Layout of the segments of the N queries (and, separately, of the M keys)
        when C does not divide their number: with ``N = s C + e``, 0 < e < C,
        there are e segments of s + 1 rows and C - e of s rows. ``"leading"``
        puts the longer ones first (``np.array_split``; the default, so that
        existing results keep their bits); ``"trailing"`` puts them last, as the
        authors' one-dimensional proposal generation does (``LinearRA._proposal_gen_1d``
        in ``efficient-attention/efficient_attention/lara.py`` of HKUNLP/efficient-attention,
        commit 531ff51; a test restates their inference-mode forward pass and matches
        ``"trailing"`` to 1e-12). The two agree exactly when C divides N and M.
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
    segments = check_choice("segments", segments, _SEGMENT_LAYOUTS)
    max_scores = _check_max_scores(max_scores)
    qbar = _segment_means(q, c, segments)
    if proposal_means is None:
        mu = qbar + _segment_means(k, c, segments)
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
