"""Random batch attention (T18) and the unnormalised random batch sum of lemma T3."""

from __future__ import annotations

import warnings

import numpy as np

from attention_theory._validate import (
    check_bool,
    check_choice,
    check_int,
    check_qkv,
    seed_from,
)
from attention_theory.estimators._softmax import _BACKENDS, MAX_SCORES, _check_max_scores


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
