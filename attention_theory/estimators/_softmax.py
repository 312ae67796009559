"""Exact softmax attention (T7) and the log-space kernels every estimator shares."""

from __future__ import annotations

import numpy as np

from attention_theory._validate import (
    as_matrix,
    check_choice,
    check_int,
    check_qkv_heads,
)

MAX_SCORES = 2**24
#: Compute backends of :func:`softmax_attention` and :func:`random_batch_attention`.
_BACKENDS = ("cpu", "cuda")


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


def softmax_attention(q, k, v, *, max_scores=MAX_SCORES, backend="cpu"):
    r"""Exact softmax attention (T7), chunked and in log space.

    :math:`\mathrm{Attn}_n = \sum_m \mathrm{softmax}_m(q_n\cdot k_m)\, v_m`.

    Queries are processed in chunks of ``max_scores // M`` rows with one BLAS
    matrix product for the scores and one for the weighted values; when
    M > max_scores the keys are chunked too (online softmax with a running
    maximum), so no more than ``max_scores`` scores are ever held. The chunking
    does not change the result when M <= max_scores (each row is computed
    identically); with key chunking it changes only the summation order.

    Several heads: q, k, v of shapes (H, N, d), (H, M, d), (H, M, dv) give
    (H, N, dv), head h being the call on ``q[h], k[h], v[h]`` (bit for bit).

    Parameters
    ----------
    q : array_like, shape (N, d) or (H, N, d)
    k : array_like, shape (M, d) or (H, M, d)
    v : array_like, shape (M, dv) or (H, M, dv)
        All three 2-D (one head) or all three 3-D (head axis first).
    max_scores : int, default 2**24
        Memory cap, in number of float64 scores (2**24 = 128 MiB), per head.
    backend : {"cpu", "cuda"}
        ``"cuda"``: one GPU thread per query, two passes over the keys (no
        score matrix, ``max_scores`` unused); needs numba-cuda and a GPU (or
        the CUDA simulator). Agrees with ``"cpu"`` to rounding.

    Returns
    -------
    ndarray of float64, shape (N, dv) (or (H, N, dv))

    Notes
    -----
    Time O(H N M (d + dv)), memory O(min(N M, max_scores) + H N dv). Reference:
    Vaswani et al., "Attention is all you need", NeurIPS 2017.
    """
    q, k, v, multi = check_qkv_heads(q, k, v)
    max_scores = _check_max_scores(max_scores)
    if check_choice("backend", backend, _BACKENDS) == "cuda":
        from attention_theory import _rba_cuda

        def one(h):
            return _rba_cuda.softmax_attention(q[h], k[h], v[h])
    else:
        def one(h):
            return _softmax_pass(q[h], k[h], v[h], None, max_scores)[1]
    if not multi:
        return one(0)
    return np.stack([one(h) for h in range(q.shape[0])])
