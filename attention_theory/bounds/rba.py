r"""T18: the random batch attention operator E_partition[RBA], exactly at small N and by Monte Carlo at any N.

"The expectation over all random partitions defines the RBA operator"
(Liu, Ma, Jin, Wang, arXiv 2511.06044). Its difference from exact attention
is the batch-softmax bias; the spread of one call around it is the partition
noise. The functions here separate the two:

============================  =======  ===================================================================
function                      label    what it returns
============================  =======  ===================================================================
:func:`rba_operator_exact`    T18, T3  E_partition[RBA] (or of the batch sum), by enumerating batch-mates
:func:`rba_operator`          T18, T3  a Monte Carlo estimate of it over independent partitions, with an
                                       interval per coordinate (:class:`RBAOperatorEstimate`)
:func:`rba_exact_bias`        T18      E[RBA] - Attn by enumerating all N! permutations
============================  =======  ===================================================================

Both partition conventions of THEORY A2 (``remainder="spread"`` or
``"pad"``) and the library's lone-token rule are covered: under ``"pad"``
with N mod p == 1 the token alone in the last batch has its batch widened to
all N tokens (exact attention for it, with the same self convention; weight
1/(N - 1) in the batch sum), as in
:func:`attention_theory.estimators.random_batch_attention`.

Conventions: queries ``q`` and keys ``k`` of shape (N, d) (the same N
tokens), values ``v`` of shape (N,) or (N, d_v); the 1/sqrt(d) scale is
folded into q and k (T7). Errors name the argument at fault.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from attention_theory._validate import as_generator as _as_generator
from attention_theory._validate import seed_from as _seed_from
from attention_theory.bounds._checks import _positive_int, _qkv
from particles.batching import batch_bounds, check_remainder

__all__ = [
    "RBA_EXACT_MAX_TOKENS",
    "RBA_OPERATOR_MAX_TOKENS",
    "RBAOperatorEstimate",
    "rba_exact_bias",
    "rba_operator",
    "rba_operator_exact",
]

#: Largest N accepted by :func:`rba_exact_bias` (it enumerates N! permutations).
RBA_EXACT_MAX_TOKENS = 8
#: Largest N accepted by :func:`rba_operator_exact` (it enumerates batch-mate subsets, at most C(15, 7) per token).
RBA_OPERATOR_MAX_TOKENS = 16
#: What the operator averages: RBA itself, or the unnormalised batch sum of lemma T3.
STATISTICS = ("attention", "batch_sum")


def _tokens_and_batch(q, k, v, batch_size, max_tokens, what):
    q, k, v2, vector_valued = _qkv(q, k, v, same_tokens=True)
    n = q.shape[0]
    if max_tokens is not None and n > max_tokens:
        raise ValueError(f"q has N = {n} tokens; {what} and accepts N <= {max_tokens}")
    if n < 2:
        raise ValueError(f"q must hold at least 2 tokens, got shape {q.shape}")
    p = _positive_int("batch_size", batch_size, low=2)
    if p > n:
        raise ValueError(f"batch_size must be <= N = {n}, got {p}")
    return q, k, v2, vector_valued, p


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _check_statistic(statistic):
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(map(repr, STATISTICS))}, got {statistic!r}")
    return statistic


def _masked_attention(scores_i, masks, v2):
    """Softmax attention of one query over each row of masks (n_masks, N)."""
    logits = np.where(masks, scores_i, -np.inf)
    mx = logits.max(axis=-1, keepdims=True)
    wts = np.where(masks, np.exp(logits - mx), 0.0)
    return (wts @ v2) / wts.sum(axis=-1, keepdims=True)


# --- exact enumeration ------------------------------------------------------------------------------------------


def rba_exact_bias(q, k, v, batch_size, include_self=True, *, remainder="spread"):
    r"""Exact bias E[RBA] - Attn of random batch attention, by enumerating all N! permutations (T18).

    RBA (THEORY B5) draws a uniform random permutation of the N tokens, cuts it
    into contiguous batches (the RBM-1 partition of T2,
    :func:`particles.batching.batch_bounds`, by the ``remainder`` convention)
    and runs softmax attention inside each batch:

    .. math:: RBA_i = \sum_{j\in C(i)} \operatorname{softmax}_{j\in C(i)}(q_i\cdot k_j)\, v_j.

    The expectation over the permutation is computed exactly by averaging over
    all N! permutations (grouping the permutations that give token i the same
    batch, each group weighted by its count / N!), and compared with exact attention over all tokens
    under the same convention (with ``include_self=False`` token i is left out
    of its own softmax and of the exact attention's), so that p = N, and under
    ``"spread"`` any p with ``N // p == 1``, gives a bias of exactly zero. The
    batch softmax is a ratio estimator, hence biased for p < N.

    Parameters
    ----------
    q, k : array_like, shape (N, d)
        Queries and keys of the same N tokens, N <= 8.
    v : array_like, shape (N,) or (N, d_v)
    batch_size : int
        p, with 2 <= p <= N.
    include_self : bool
        Whether token i attends to itself.
    remainder : {"spread", "pad"}
        The batches when p does not divide N (THEORY A2): ``"spread"`` (default),
        N // p batches of sizes differing by at most one; ``"pad"``, ceil(N / p)
        batches of p, the last one short, a lone token (N mod p == 1) attending
        to all N tokens.

    Returns
    -------
    ndarray, shape (N, d_v) (or (N,) for scalar values)

    Raises
    ------
    ValueError
        If N > 8 (the enumeration would take N! steps), among other input errors.
    """
    q, k, v2, vector_valued, p = _tokens_and_batch(q, k, v, batch_size, RBA_EXACT_MAX_TOKENS,
                                                   "rba_exact_bias enumerates all N! permutations")
    n = q.shape[0]
    include_self = _check_flag("include_self", include_self)
    remainder = check_remainder(remainder)
    scores = q @ k.T  # (N, N)
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)  # (P, N)
    bounds = batch_bounds(n, p, remainder)
    batch_of_pos = np.repeat(np.arange(bounds.size - 1), np.diff(bounds))
    batch_of_token = np.empty_like(perms)
    np.put_along_axis(batch_of_token, perms, np.broadcast_to(batch_of_pos, perms.shape), axis=1)
    # token i's batch in each permutation, as a bit mask; identical masks are grouped with their counts
    bits = np.int64(1) << np.arange(n, dtype=np.int64)
    eye = np.eye(n, dtype=bool)
    lone = np.diff(bounds)[-1] == 1  # only under "pad": the last batch's single token is widened to all N

    bias = np.empty((n, v2.shape[1]))
    for i in range(n):
        same = batch_of_token == batch_of_token[:, i : i + 1]  # (P, N)
        if lone:
            same[same.sum(axis=1) == 1] = True
        codes, counts = np.unique(same.astype(np.int64) @ bits, return_counts=True)
        masks = (codes[:, None] & bits[None, :]) != 0
        full = np.ones((1, n), dtype=bool)
        if not include_self:
            masks &= ~eye[i]
            full &= ~eye[i]
        expected = (counts / perms.shape[0]) @ _masked_attention(scores[i], masks, v2)
        bias[i] = expected - _masked_attention(scores[i], full, v2)[0]
    return bias if vector_valued else bias[:, 0]


def _size_law(n, p, remainder):
    """(size, probability) of token i's batch: a uniform position lies in a batch of size s with probability
    s * (number of batches of size s) / n."""
    sizes, counts = np.unique(np.diff(batch_bounds(n, p, remainder)), return_counts=True)
    return [(int(s), s * c / n) for s, c in zip(sizes, counts, strict=True)]


def rba_operator_exact(q, k, v, batch_size, *, include_self=True, remainder="spread", statistic="attention"):
    r"""The RBA operator E_partition[RBA_i] (T18), or the mean of the batch sum (T3), computed exactly.

    Under a uniformly random permutation token i lands at a uniform position,
    so its batch has size s with probability s (number of batches of size s) / N
    and, given s, its batch-mates are a uniform (s - 1)-subset of the other
    N - 1 tokens; the expectation is the average over those subsets, weighted
    by the size law (a lone token, ``remainder="pad"`` with N mod p == 1,
    s = 1: its batch is all N tokens). This is the mean over all N! partitions
    of :func:`rba_exact_bias` (plus exact attention), reached with sums over
    at most C(N - 1, s - 1) subsets per token and size instead of N!.

    Parameters
    ----------
    q, k : array_like, shape (N, d)
        Queries and keys of the same N tokens, 2 <= N <= 16
        (:data:`RBA_OPERATOR_MAX_TOKENS`).
    v : array_like, shape (N,) or (N, d_v)
    batch_size : int
        p, with 2 <= p <= N.
    include_self : bool
        Whether token i attends to itself (``statistic="attention"``; the batch
        sum always leaves j = i out and ignores it).
    remainder : {"spread", "pad"}
        The batches when p does not divide N (THEORY A2); default ``"spread"``.
    statistic : {"attention", "batch_sum"}
        ``"attention"``: E[RBA_i], softmax inside the batch (biased for Attn_i
        when p < N). ``"batch_sum"``: E of
        :math:`\frac{1}{|C(i)|-1}\sum_{j\in C(i), j\ne i} e^{q_i\cdot k_j} v_j`
        (:func:`~attention_theory.estimators.random_batch_sum`), which lemma T3
        says equals :func:`~attention_theory.estimators.exact_batch_sum_target`
        in both conventions; not in log space (scores below about 709).

    Returns
    -------
    ndarray, shape (N, d_v) (or (N,) for scalar values)
    """
    q, k, v2, vector_valued, p = _tokens_and_batch(
        q, k, v, batch_size, RBA_OPERATOR_MAX_TOKENS, "rba_operator_exact enumerates batch-mate subsets")
    include_self = _check_flag("include_self", include_self)
    remainder = check_remainder(remainder)
    statistic = _check_statistic(statistic)
    n = q.shape[0]
    scores = q @ k.T
    out = np.zeros((n, v2.shape[1]))
    for i in range(n):
        others = np.delete(np.arange(n), i)
        for size, prob in _size_law(n, p, remainder):
            if size == 1:  # the lone token: its batch widened to all n
                size, mates = n, others[None, :]
            else:
                mates = np.array(list(itertools.combinations(others, size - 1)), dtype=np.int64)
            masks = np.zeros((mates.shape[0], n), dtype=bool)
            np.put_along_axis(masks, mates, True, axis=1)
            if statistic == "attention":
                masks[:, i] = include_self
                mean = _masked_attention(scores[i], masks, v2).mean(axis=0)
            else:
                mx = scores[i, others].max()
                with np.errstate(over="ignore", invalid="ignore"):
                    mean = (masks @ (np.exp(scores[i] - mx)[:, None] * v2)).mean(axis=0) * (math.exp(mx)
                                                                                           / (size - 1))
            out[i] += prob * mean
    return out if vector_valued else out[:, 0]


# --- Monte Carlo --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RBAOperatorEstimate:
    """A Monte Carlo estimate of the RBA operator (:func:`rba_operator`), per token and value coordinate.

    Attributes
    ----------
    mean : ndarray, shape (N, d_v) (or (N,))
        The average of RBA (or of the batch sum) over ``n_partitions`` independent partitions: unbiased for
        E_partition[RBA].
    se : ndarray, same shape
        Its standard error, std(ddof=1) / sqrt(n_partitions).
    low, high : ndarray, same shape
        The simultaneous interval ``mean -+ z * se`` at ``confidence``: z is the two-sided normal quantile with
        a Bonferroni correction over the ``mean.size`` coordinates.
    z : float
        That critical value, Phi^{-1}(1 - (1 - confidence) / (2 mean.size)).
    confidence : float
    n : int
        The number of partitions averaged (``n_partitions``).
    reference : ndarray, same shape
        What the operator is compared with: exact attention under the same ``include_self`` convention
        (``statistic="attention"``) or the batch sum's target (``"batch_sum"``).
    mean_square_bias, mean_square_bias_se : float
        An estimate of mean((E[RBA] - reference)^2) over the coordinates, corrected for the Monte Carlo noise
        (mean(bias_hat^2) - mean(se^2), which can be slightly negative when the bias is below the noise), and
        its delete-a-group jackknife standard error (20 groups of partitions, or one partition per group when
        there are fewer than 40).
    """

    mean: np.ndarray
    se: np.ndarray
    low: np.ndarray
    high: np.ndarray
    z: float
    confidence: float
    n: int
    reference: np.ndarray
    mean_square_bias: float
    mean_square_bias_se: float

    @property
    def n_partitions(self) -> int:
        """:attr:`n`, under the name of the argument of :func:`rba_operator`."""
        return self.n

    @property
    def bias(self) -> np.ndarray:
        """mean - reference, the estimated bias per coordinate."""
        return self.mean - self.reference

    @property
    def rms_bias(self) -> float:
        """sqrt(max(0, mean_square_bias)), the RMS bias over the coordinates."""
        return math.sqrt(max(0.0, self.mean_square_bias))

    @property
    def rms_bias_se(self) -> float:
        """The delta-method standard error of :attr:`rms_bias` (inf where it is 0)."""
        rms = self.rms_bias
        return self.mean_square_bias_se / (2.0 * rms) if rms > 0 else math.inf

    def covers(self, target, *, atol=0.0) -> bool:
        """Whether ``target`` (shaped as :attr:`mean`) lies in the simultaneous interval, coordinate by coordinate.

        ``atol`` >= 0 widens every interval by that much on each side: a coordinate that does not vary over the
        partitions (p = N) has a zero-width interval, which a target equal up to rounding would otherwise miss.
        """
        target = np.asarray(target, dtype=np.float64)
        if target.shape != self.mean.shape:
            raise ValueError(f"target must have the shape {self.mean.shape} of the estimate, got {target.shape}")
        atol = float(atol)
        if not atol >= 0.0:
            raise ValueError(f"atol must be >= 0, got {atol!r}")
        return bool(np.all((self.low - atol <= target) & (target <= self.high + atol)))


def _check_confidence(confidence):
    if isinstance(confidence, (bool, np.bool_)) or not isinstance(confidence, (int, float, np.floating)):
        raise TypeError(f"confidence must be a real number, got {type(confidence).__name__}")
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return c


def rba_operator(q, k, v, batch_size, *, n_partitions, rng, include_self=True, remainder="spread",
                 confidence=0.95, statistic="attention"):
    r"""Monte Carlo estimate of the RBA operator E_partition[RBA_i] with a simultaneous interval, at any N and p.

    Draws ``n_partitions`` seeds s_1, ..., s_R from ``rng`` and averages
    ``random_batch_attention(q, k, v, batch_size=p, rng=s_r, include_self=...,
    remainder=...)`` (or ``random_batch_sum``, ``statistic="batch_sum"``) over
    them: independent uniform partitions, so the average is an unbiased
    estimate of the operator, whose difference from exact attention is the
    batch-softmax bias and whose spread is the partition noise. Every sample
    is the library call with its seed, so any one can be reproduced.

    The interval is a normal approximation (central limit theorem over the
    partitions; each sample is bounded, RBA being a convex combination of the
    values): ``mean -+ z se`` with z = Phi^{-1}(1 - (1 - confidence)/(2 m)),
    a Bonferroni correction over the m = N d_v coordinates, so that all m
    intervals hold together with probability at least about ``confidence``.
    Where a coordinate does not vary over the partitions (p = N), se = 0 and
    its interval is the point itself.

    Parameters
    ----------
    q, k : array_like, shape (N, d)
    v : array_like, shape (N,) or (N, d_v)
    batch_size : int
        p, with 2 <= p <= N.
    n_partitions : int
        R >= 2 independent partitions.
    rng : int or numpy.random.Generator
        Seeds the generator of the R partition seeds (a Generator is advanced by R draws).
    include_self : bool
        Whether token i attends to itself (unused by the batch sum).
    remainder : {"spread", "pad"}
        The batches when p does not divide N (THEORY A2); default ``"spread"``.
    confidence : float
        In (0, 1), default 0.95: the simultaneous coverage of the intervals.
    statistic : {"attention", "batch_sum"}
        As in :func:`rba_operator_exact`.

    Returns
    -------
    RBAOperatorEstimate

    Notes
    -----
    Time R times one RBA call, O(R N p (d + d_v)), plus exact attention once
    (quadratic, for :attr:`RBAOperatorEstimate.reference`); memory O(20 N d_v).
    """
    from scipy.stats import norm

    from attention_theory.estimators._batch import _run_batches
    from attention_theory.estimators._batch import exact_batch_sum_target as _sum_target

    q, k, v2, vector_valued, p = _tokens_and_batch(q, k, v, batch_size, None, "")
    r = _positive_int("n_partitions", n_partitions, low=2)
    include_self = _check_flag("include_self", include_self)
    remainder = check_remainder(remainder)
    confidence = _check_confidence(confidence)
    statistic = _check_statistic(statistic)
    gen = _as_generator(rng)
    normalize = statistic == "attention"
    n, dv = v2.shape
    q3, k3, v3 = (np.ascontiguousarray(a)[None] for a in (q, k, v2))
    groups = 20 if r >= 40 else r
    group_sums = np.zeros((groups, n, dv))
    group_sizes = np.zeros(groups)
    shift = s1 = s2 = None
    for t in range(r):
        x = _run_batches(q3, k3, v3, p, _seed_from(gen), include_self if normalize else False, normalize,
                         "cpu", remainder)[0]
        if shift is None:  # sums of deviations from the first sample: no cancellation in the variance
            shift, s1, s2 = x, np.zeros_like(x), np.zeros_like(x)
        dx = x - shift
        s1 += dx
        s2 += dx * dx
        g = t * groups // r
        group_sums[g] += dx
        group_sizes[g] += 1
    mean = shift + s1 / r
    var = np.maximum(s2 - s1 * s1 / r, 0.0) / (r - 1)
    se = np.sqrt(var / r)
    z = float(norm.ppf(1.0 - (1.0 - confidence) / (2.0 * mean.size)))
    if normalize:
        logits = q @ k.T
        if not include_self:
            np.fill_diagonal(logits, -np.inf)
        reference = _masked_attention(logits, np.isfinite(logits), v2)
    else:
        reference = _sum_target(q, k, v2)
    noise = float(np.mean(se**2))
    ms = float(np.mean((mean - reference) ** 2)) - noise
    loo = np.array([np.mean((shift + (s1 - group_sums[g]) / (r - group_sizes[g]) - reference) ** 2)
                    for g in range(groups)])
    ms_se = float(math.sqrt((groups - 1) / groups * np.sum((loo - loo.mean()) ** 2)))

    def shaped(a):
        return a if vector_valued else a[:, 0]

    return RBAOperatorEstimate(mean=shaped(mean), se=shaped(se), low=shaped(mean - z * se),
                               high=shaped(mean + z * se), z=z, confidence=confidence, n=r,
                               reference=shaped(reference), mean_square_bias=ms, mean_square_bias_se=ms_se)
