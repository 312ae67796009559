"""Numba kernels of random batch attention (T18) and of the random batch sum (T3).

Imported lazily by :mod:`attention_theory.estimators`, so that importing the
package neither imports Numba nor compiles anything; the kernels are compiled
on first call and cached on disk (``cache=True``, ``NUMBA_CACHE_DIR``).

Layout. The partition is given as ``perm`` (a permutation of the N tokens)
and ``bounds`` (batch b is ``perm[bounds[b]:bounds[b + 1]]``), exactly the
RBM-1 partition of :func:`particles.partition`. All the arithmetic of one
batch is in :func:`one_batch` (the softmax sums by the engine's
:func:`particles.device.softmax_step`, two-pass: the maximum first); two drivers loop over the batches:

- :func:`batch_attention_parallel`: a ``prange`` loop over ``ngroups`` groups of
  batches (group g owns batches g, g + ngroups, ...), so that the scratch
  buffers (the keys of one batch, transposed; the scores of one query; one
  accumulator) are allocated once per group, never inside the batch loop;
- :func:`batch_attention_serial`: the same loop without threads, for small
  problems where waking a thread pool costs more than the work.

A batch's arithmetic does not depend on the driver, the group or the thread
count, so the output is bitwise identical in all cases. Batches own disjoint
sets of tokens, so the writes to ``out`` never race.

The inner loops are arranged so that LLVM vectorises them without fastmath
(which stays off, as everywhere in the project): scores are accumulated with
the feature axis t outside and the batch axis j inside (no floating-point
reduction in the vectorised loop), and the weighted sum runs over the value axis.
"""

from __future__ import annotations

import hashlib
import inspect

import numpy as np
from numba import njit, prange

from particles import device

# the engine's batch-softmax step, in its two-pass use (particles.device): the maximum is found first
# (inlined in Numba's IR: as a call, LLVM does not inline it, and the kernel ran 1.35x slower)
softmax_step = njit(cache=True, inline="always")(device.softmax_step)

# Numba's on-disk cache checks only the timestamp of the file defining a function, but the kernels below
# compile softmax_step (particles/device.py) into themselves: a hash of that source in their qualified
# names (which key the cache) makes an edit of it select fresh entries
_DEVICE_TAG = hashlib.sha1(inspect.getsource(device).encode()).hexdigest()[:10]


def _cached(**options):
    def compile_(fn):
        fn.__qualname__ = f"{fn.__qualname__}_{_DEVICE_TAG}"
        return njit(cache=True, **options)(fn)

    return compile_

#: Below this many multiply-adds (N * p * (d + dv)) the serial driver is used.
SERIAL_WORK = 2**18


@_cached()
def one_batch(q, k, v, perm, a, size, include_self, normalize, kt, s, acc, out):
    """Attention (``normalize``) or batch sum inside the batch ``perm[a:a + size]``.

    normalize=True: out_i = sum_{j in C} softmax_j(q_i.k_j) v_j, without j = i unless ``include_self``.
    normalize=False: out_i = (1/(|C|-1)) sum_{j in C, j != i} exp(q_i.k_j) v_j (``include_self`` must be
    False), computed as exp(m_i) sum_j exp(q_i.k_j - m_i) v_j / (|C| - 1), m_i = max_j q_i.k_j.
    """
    d = q.shape[1]
    dv = v.shape[1]
    for jj in range(size):
        j = perm[a + jj]
        for t in range(d):
            kt[t, jj] = k[j, t]
    for ii in range(size):
        i = perm[a + ii]
        for jj in range(size):
            s[jj] = 0.0
        for t in range(d):
            qt = q[i, t]
            for jj in range(size):
                s[jj] += qt * kt[t, jj]
        m = -np.inf
        for jj in range(size):
            if (include_self or jj != ii) and s[jj] > m:
                m = s[jj]
        for t in range(dv):
            acc[t] = 0.0
        den = 0.0
        for jj in range(size):
            if not include_self and jj == ii:
                continue
            m, den = softmax_step(s[jj], m, den, acc, v[perm[a + jj]], dv)
        if normalize:
            scale = 1.0 / den
        else:
            scale = np.exp(m) / (size - 1)
        for t in range(dv):
            out[i, t] = acc[t] * scale


@_cached(parallel=True)
def batch_attention_parallel(q, k, v, perm, bounds, include_self, normalize, ngroups, pmax, out):
    """Loop :func:`one_batch` over all batches, in parallel over ``ngroups`` groups of batches."""
    nbatches = bounds.size - 1
    for g in prange(ngroups):
        kt = np.empty((q.shape[1], pmax))
        s = np.empty(pmax)
        acc = np.empty(v.shape[1])
        for b in range(g, nbatches, ngroups):
            one_batch(q, k, v, perm, bounds[b], bounds[b + 1] - bounds[b], include_self, normalize, kt, s, acc, out)


@_cached()
def batch_attention_serial(q, k, v, perm, bounds, include_self, normalize, pmax, out):
    """Loop :func:`one_batch` over all batches in one thread."""
    kt = np.empty((q.shape[1], pmax))
    s = np.empty(pmax)
    acc = np.empty(v.shape[1])
    for b in range(bounds.size - 1):
        one_batch(q, k, v, perm, bounds[b], bounds[b + 1] - bounds[b], include_self, normalize, kt, s, acc, out)


def run(q, k, v, perm, bounds, include_self, normalize, *, driver="auto", ngroups=None):
    """Allocate the output and run a driver; ``driver`` in {"auto", "serial", "parallel"}."""
    from numba import get_num_threads

    n, dv = q.shape[0], v.shape[1]
    out = np.empty((n, dv))
    sizes = np.diff(bounds)
    pmax = int(sizes.max())
    nbatches = sizes.size
    if driver == "auto":
        driver = "serial" if n * pmax * (q.shape[1] + dv) < SERIAL_WORK or nbatches == 1 else "parallel"
    if driver == "serial":
        batch_attention_serial(q, k, v, perm, bounds, include_self, normalize, pmax, out)
    else:
        if ngroups is None:
            ngroups = min(nbatches, 4 * get_num_threads())
        batch_attention_parallel(q, k, v, perm, bounds, include_self, normalize, ngroups, pmax, out)
    return out
