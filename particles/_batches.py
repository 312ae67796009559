"""Random batches: the RBM-1 partition and the RBM-r subsets.

A permutation of ``0..n-1`` for reshuffle ``m`` is a pure function of the
key ``(seed, replica, STREAM_PERM, m)``. It is built in a way that is exactly
uniform (up to the 2^-53 granularity of the uniforms) and parallelises on a
GPU: every element draws an independent uniform bucket among ``n // 32``
buckets, a stable counting sort concatenates the buckets, and each bucket is
shuffled by Fisher-Yates with draws keyed by position (Sanders, 1998). The
permutation is then cut into contiguous batches, by one of two conventions
(``REMAINDERS``) when p does not divide n: ``"spread"`` makes ``n // p``
batches whose sizes differ by at most one (``p`` or ``p + 1`` only while
``n mod p <= n // p``; n = 1000, p = 64 gives sizes 66 and 67); ``"pad"``
(the pad-and-crop of random batch attention) makes ``ceil(n / p)`` batches
of ``p``, the last one holding the ``n mod p`` left over. Under ``"pad"`` a
batch can hold a single element (``n mod p == 1``): a *lone* element, which
has no batch-mates; every consumer widens a lone element's batch to all n
(:func:`lone_position`), which keeps the batch-force lemma T3 exact.

The scalar functions are compiled by the CPU backend (which builds the same
permutation in parallel, ``permute_replica`` in ``backends/_loops.py``: the
stable counting sort is unique, so it does not depend on the split); the
``*_np`` twins serve the NumPy reference backend and must produce identical
integers.
"""

from __future__ import annotations

import numpy as np

from particles._rng import combine, combine_np, draw, draw_np, to_unit, to_unit_np

BUCKET_SIZE = 32


def num_buckets(n):
    return max(1, n // BUCKET_SIZE)


#: The conventions for the batches when p does not divide n (see the module docstring).
REMAINDERS = ("spread", "pad")


def batch_bounds(n, p, remainder="spread"):
    """Start offsets of the batches, length (number of batches + 1), by the ``remainder`` convention."""
    if remainder == "pad":
        nb = -(-n // p)
        return np.minimum(np.arange(nb + 1, dtype=np.int64) * p, n)
    nb = n // p
    base, extra = divmod(n, nb)
    b = np.arange(nb + 1, dtype=np.int64)
    return b * base + np.minimum(b, extra)


def batch_sizes(n, p, remainder="spread"):
    return np.diff(batch_bounds(n, p, remainder))


def batch_of_position(n, p, remainder="spread"):
    bounds = batch_bounds(n, p, remainder)
    return np.repeat(np.arange(bounds.size - 1, dtype=np.int64), np.diff(bounds))


def lone_position(n, p, remainder="spread"):
    """The position of the permutation holding a lone element (a batch of one), or -1 if there is none.

    Only ``"pad"`` with ``n mod p == 1`` has one: the last position. Its batch is widened to all n elements.
    """
    return n - 1 if remainder == "pad" and n % p == 1 else -1


# --- scalar versions, compiled by numba -------------------------------------
def build_permutation(key, n, nbuckets, perm, bucket, counts):
    """Write the permutation under ``key`` into ``perm`` (length n).

    ``bucket`` (length n) and ``counts`` (length nbuckets + 1) are scratch.
    """
    for b in range(nbuckets + 1):
        counts[b] = 0
    for i in range(n):
        b = np.int64(to_unit(draw(key, i)) * nbuckets)
        bucket[i] = b
        counts[b + 1] += 1
    for b in range(nbuckets):
        counts[b + 1] += counts[b]
    for i in range(n):
        b = bucket[i]
        perm[counts[b]] = i
        counts[b] += 1
    # now counts[b] is the end of bucket b
    start = 0
    for b in range(nbuckets):
        stop = counts[b]
        for k in range(stop - 1, start, -1):
            j = start + np.int64(to_unit(draw(key, n + k)) * (k - start + 1))
            t = perm[k]
            perm[k] = perm[j]
            perm[j] = t
        start = stop


def draw_subset(key, n, p, pool):
    """Partial Fisher-Yates: ``pool[:p]`` becomes a uniform p-subset."""
    for k in range(p):
        j = k + np.int64(to_unit(draw(key, k)) * (n - k))
        t = pool[k]
        pool[k] = pool[j]
        pool[j] = t


def subset_key(root, substep):
    return combine(root, substep)


# --- NumPy twins -------------------------------------------------------------
def build_permutation_np(key, n):
    nbuckets = num_buckets(n)
    i = np.arange(n)
    bucket = (to_unit_np(draw_np(key, i)) * nbuckets).astype(np.int64)
    perm = np.argsort(bucket, kind="stable")
    ends = np.cumsum(np.bincount(bucket, minlength=nbuckets))
    starts = ends - np.bincount(bucket, minlength=nbuckets)
    for start, stop in zip(starts, ends, strict=True):
        for k in range(stop - 1, start, -1):
            j = start + int(to_unit_np(draw_np(key, n + k)) * (k - start + 1))
            perm[k], perm[j] = perm[j], perm[k]
    return perm


def draw_subset_np(key, n, p, pool):
    for k in range(p):
        j = k + int(to_unit_np(draw_np(key, k)) * (n - k))
        pool[k], pool[j] = pool[j], pool[k]


def subset_key_np(root, substep):
    return combine_np(root, substep)
