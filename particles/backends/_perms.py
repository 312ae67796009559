"""The RBM-1 permutations of the ``cpu`` loops (source compiled by :mod:`particles.backends.cpu`).

The parallel form of :func:`particles._batches.build_permutation` (the same
integers), built per reshuffle for every replica. They need nothing of a
system: :func:`particles.backends.cpu.permutation_loops` compiles them on
their own, with the RNG helpers of :mod:`particles._rng` bound as free names.
"""
# ruff: noqa: F821  (names are bound by the compiler)

import numpy as np
from numba import prange

from particles._rng import STREAM_PERM


def build_perms(seed, m, nbuckets, idx, bucket, u, hist, bstart):
    """idx[r] = the RBM-1 permutation of reshuffle m of replica r.

    Same integers as ``particles._batches.build_permutation``. With one
    histogram chunk (``hist`` is (R, 1, nbuckets): small n) the replicas are
    built in parallel, each serially; otherwise one replica after the other,
    each in parallel (permute_replica).
    """
    R, N = idx.shape
    if hist.shape[1] == 1:
        for r in prange(R):
            key = combine(root_key(seed, r, STREAM_PERM), m)
            h = hist[r, 0]
            perm_draws(key, N, nbuckets, 0, N, bucket[r], u[r], h)
            perm_scan(hist[r], nbuckets, N, bstart[r])
            perm_scatter(0, N, bucket[r], h, idx[r])
            perm_shuffle(0, nbuckets, bstart[r], u[r], idx[r])
    else:
        for r in range(R):
            key = combine(root_key(seed, r, STREAM_PERM), m)
            permute_replica(key, N, nbuckets, idx[r], bucket[r], u[r], hist[r], bstart[r])


def perm_draws(key, n, nbuckets, lo, hi, bucket, u, h):
    """Elements lo..hi-1: bucket draws, Fisher-Yates uniforms, and their histogram h."""
    bv = bucket[lo:hi]
    uv = u[lo:hi]
    for i in range(hi - lo):
        bv[i] = np.int64(to_unit(draw(key, lo + i)) * nbuckets)
    for i in range(hi - lo):
        uv[i] = to_unit(draw(key, n + lo + i))
    for b in range(nbuckets):
        h[b] = 0
    for i in range(hi - lo):
        h[bv[i]] += 1


def perm_scan(hist, nbuckets, n, bstart):
    """Bucket-major exclusive scan: hist[ch, b] becomes the first slot of chunk ch's elements of bucket b."""
    C = hist.shape[0]
    run = 0
    for b in range(nbuckets):
        bstart[b] = run
        for ch in range(C):
            t = hist[ch, b]
            hist[ch, b] = run
            run += t
    bstart[nbuckets] = n


def perm_scatter(lo, hi, bucket, h, perm):
    """Stable counting-sort scatter of elements lo..hi-1 (h: this chunk's slots)."""
    for i in range(lo, hi):
        b = bucket[i]
        perm[h[b]] = i
        h[b] += 1


def perm_shuffle(b0, b1, bstart, u, perm):
    """Fisher-Yates shuffle of buckets b0..b1-1, with the uniforms of their positions."""
    for b in range(b0, b1):
        start = bstart[b]
        for k in range(bstart[b + 1] - 1, start, -1):
            j = start + np.int64(u[k] * (k - start + 1))
            t = perm[k]
            perm[k] = perm[j]
            perm[j] = t


def permute_replica(key, n, nbuckets, perm, bucket, u, hist, bstart):
    """Parallel form of ``particles._batches.build_permutation`` (same integers).

    The bucket draws and the Fisher-Yates uniforms are independent per
    element; the stable counting sort uses one histogram per chunk of
    elements (``hist`` is (C, nbuckets)) and a bucket-major scan of them, so
    its output -- unique for a stable sort -- does not depend on C or on the
    number of threads; the buckets are then shuffled independently.
    """
    C = hist.shape[0]
    chunk = (n + C - 1) // C
    for ch in prange(C):
        perm_draws(key, n, nbuckets, ch * chunk, min(n, (ch + 1) * chunk), bucket, u, hist[ch])
    perm_scan(hist, nbuckets, n, bstart)
    for ch in prange(C):
        perm_scatter(ch * chunk, min(n, (ch + 1) * chunk), bucket, hist[ch], perm)
    per = (nbuckets + C - 1) // C
    for ch in prange(C):
        perm_shuffle(ch * per, min(nbuckets, (ch + 1) * per), bstart, u, perm)

