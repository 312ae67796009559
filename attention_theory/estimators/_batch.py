"""Random batch attention (T18) and the unnormalised random batch sum of lemma T3."""

from __future__ import annotations

import warnings

import numpy as np

from attention_theory._validate import (
    check_bool,
    check_choice,
    check_int,
    check_qkv,
    check_qkv_heads,
    seed_from,
)
from attention_theory.estimators._softmax import _BACKENDS, MAX_SCORES, _check_max_scores

#: How the heads of a multi-head call are batched (see :func:`random_batch_attention`).
HEAD_PARTITIONS = ("shared", "independent")


def _check_batch_args(q, k, v, batch_size):
    """(q, k, v as (H, N, .) arrays, p, whether the inputs had a head axis)."""
    q, k, v, multi = check_qkv_heads(q, k, v, self_attention=True)
    n = q.shape[1]
    if n < 2:
        raise ValueError(
            f"q must hold at least 2 tokens for random batches (batch_size in [2, N]), got shape {q.shape[1:]}"
        )
    p = check_int("batch_size", batch_size, low=2, high=n, high_doc=f"N = {n}")
    return q, k, v, p, multi


def _check_remainder(remainder):
    from particles.batching import check_remainder

    return check_remainder(remainder)


def _run_batches(q, k, v, p, seed, include_self, normalize, backend="cpu", remainder="spread",
                 head_partitions="shared"):
    """RBA (or the batch sum) of every head of q, k, v (H, N, .) -> (H, N, dv), partitions seeded by ``seed``.

    Head h is batched by replica h of the partition when ``head_partitions == "independent"``, by replica 0
    otherwise; a lone token (``remainder="pad"``, N mod p == 1) is left to the kernels, which widen its batch
    to all N tokens.
    """
    import particles
    from attention_theory import _rba

    heads, n = q.shape[0], q.shape[1]
    replicas = heads if head_partitions == "independent" else 1
    if backend == "cuda":  # the same partitions, built on the device
        from attention_theory import _rba_cuda

        return _rba_cuda.random_batch_attention(q, k, v, seed, p, include_self, normalize, remainder=remainder,
                                                replicas=replicas)
    parts = [particles.partition(n, p, seed=seed, step=0, replica=r, remainder=remainder) for r in range(replicas)]
    outs = []
    for h in range(heads):
        part = parts[h if replicas > 1 else 0]
        perm = np.ascontiguousarray(part.perm, dtype=np.int64)
        bounds = np.ascontiguousarray(part.bounds, dtype=np.int64)
        outs.append(_rba.run(q[h], k[h], v[h], perm, bounds, include_self, normalize))
    # one head: the kernel's own array, no copy (the one-head call is the speed-critical one)
    return outs[0][None] if heads == 1 else np.stack(outs)


def _one_or_many(out, multi):
    return out if multi else out[0]


def random_batch_attention(q, k, v, *, batch_size, rng, include_self=True, backend="cpu", remainder="spread",
                           head_partitions="shared"):
    r"""Random batch attention, RBA (T18; Liu, Ma, Jin, Wang, arXiv 2511.06044).

    .. math:: \mathrm{RBA}_i = \sum_{j\in C(i)} \mathrm{softmax}_{j\in C(i)}(q_i\cdot k_j)\, v_j

    Self-attention over N tokens (queries and keys indexed alike, N == M). The
    tokens are cut into batches by the RBM-1 partition
    ``particles.partition(N, batch_size, seed=s, step=0, remainder=remainder)``,
    where s is ``rng`` itself when it is an int and ``rng.integers(2**63)`` when
    it is a Generator; exact, max-subtracted softmax attention runs inside each
    batch in a Numba kernel parallel over batches (compiled on first call).
    p = N gives exact attention.

    When p does not divide N, ``remainder`` chooses the batches (THEORY A2):
    ``"spread"`` (default) makes N // p batches whose sizes differ by at most
    one (sizes p or p + 1 only while N mod p <= N // p: N = 1000, p = 64 gives
    66 and 67); ``"pad"``, the pad-and-crop of the RBA paper, makes ceil(N / p)
    batches of p, the last one holding the N mod p left over, with no padding
    slot ever entering a softmax. Under ``"pad"`` with N mod p == 1 the last
    batch holds one token, which has no batch-mates: that *lone* token gets
    exact attention over all N tokens (with the same ``include_self``
    convention); the other tokens' batches are unchanged.

    The batch softmax is a ratio estimator, hence **biased** for
    :math:`\mathrm{Attn}_i` (bias decaying roughly like 1/p in our measurements;
    whether including the token itself makes it larger depends on the score
    scale, THEORY B5); see :func:`random_batch_sum` for the unbiased,
    unnormalised batch sum, and :func:`attention_theory.bounds.rba_operator` for
    its mean over partitions.

    Several heads: q, k of shape (H, N, d) and v of shape (H, N, dv) give
    (H, N, dv), each head running RBA on its own q[h], k[h], v[h].

    Parameters
    ----------
    q, k : array_like, shape (N, d) or (H, N, d)
    v : array_like, shape (N, dv) or (H, N, dv)
        All three 2-D (one head) or all three 3-D (head axis first).
    batch_size : int
        p with 2 <= p <= N. (p = 1 is rejected: the batch softmax of a singleton is
        v_i itself with the token, and undefined without it.)
    rng : int or numpy.random.Generator
        One seed s is drawn per call, whatever the number of heads.
    include_self : bool
        False drops j = i from the batch softmax of token i.
    backend : {"cpu", "cuda"}
        ``"cuda"``: the partition is built on the GPU (the same integers) and one
        GPU thread computes each token; needs numba-cuda and a GPU (or the CUDA
        simulator). Agrees with ``"cpu"`` to rounding.
    remainder : {"spread", "pad"}
        The batches when p does not divide N (see above); default ``"spread"``.
    head_partitions : {"shared", "independent"}
        Only for 3-D inputs. ``"shared"`` (default; one batched tensor for all
        heads: the tokens are cut once and every head attends inside the same
        batches):
        every head uses the partition of replica 0 of seed s, the one of the
        one-head call. ``"independent"``: head h uses
        ``particles.partition(N, p, seed=s, step=0, replica=h, remainder=remainder)``,
        so head 0 is the one-head call and the heads' batch errors are
        independent.

    Returns
    -------
    ndarray of float64, shape (N, dv) (or (H, N, dv))

    Notes
    -----
    Time O(H N p (d + dv)); memory O(H N dv) for the output plus O(p (d + dv))
    scratch per group of batches (one p x p block of scores at a time; no (N, N)
    or (N/p, p, p) score tensor is formed).
    """
    q, k, v, p, multi = _check_batch_args(q, k, v, batch_size)
    include_self = check_bool("include_self", include_self)
    backend = check_choice("backend", backend, _BACKENDS)
    remainder = _check_remainder(remainder)
    head_partitions = check_choice("head_partitions", head_partitions, HEAD_PARTITIONS)
    out = _run_batches(q, k, v, p, seed_from(rng), include_self, True, backend, remainder, head_partitions)
    return _one_or_many(out, multi)


def _warn_overflow(name, out):
    bad = int(np.count_nonzero(~np.all(np.isfinite(out), axis=1)))
    if bad:
        warnings.warn(
            f"{name}: the result is not representable in float64 for {bad} queries "
            "(a score q_i.k_j above about 709 overflows exp); these rows hold inf or NaN",
            RuntimeWarning,
            stacklevel=3,
        )


def random_batch_sum(q, k, v, *, batch_size, rng, remainder="spread"):
    r"""Unnormalised random batch sum (the RBM batch force of lemma T3).

    .. math:: \frac{1}{|C(i)|-1}\sum_{j\in C(i),\, j\ne i} e^{q_i\cdot k_j} v_j,

    an unbiased estimate of :math:`\frac{1}{N-1}\sum_{j\ne i} e^{q_i\cdot k_j} v_j`
    (:func:`exact_batch_sum_target`) over the uniformly random RBM-1 partition,
    drawn exactly as in :func:`random_batch_attention` (same seed, same batches,
    same ``remainder``). The weight uses the real batch size ``|C(i)|``; a lone
    token (``remainder="pad"``, N mod p == 1) has its batch widened to all N
    tokens, so it gets the target itself, weight 1/(N - 1): the estimate stays
    unbiased for every token in both conventions.

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
    remainder : {"spread", "pad"}
        The batches when p does not divide N, as in :func:`random_batch_attention`;
        default ``"spread"``.

    Returns
    -------
    ndarray of float64, shape (N, dv)
    """
    q, k, v, p, multi = _check_batch_args(q, k, v, batch_size)
    if multi:
        raise ValueError(f"random_batch_sum takes one head: q, k, v must be 2-D, got q with shape {q.shape}")
    remainder = _check_remainder(remainder)
    out = _run_batches(q, k, v, p, seed_from(rng), False, False, "cpu", remainder)[0]
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
