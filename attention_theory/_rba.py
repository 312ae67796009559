"""Numba kernels of random batch attention (T18) and of the random batch sum (T3).

Imported lazily by :mod:`attention_theory.estimators`, so that importing the
package neither imports Numba nor compiles anything; the kernels are compiled
on first call and cached on disk (``cache=True``, ``NUMBA_CACHE_DIR``).

Layout. The partition is given as ``perm`` (a permutation of the N tokens)
and ``bounds`` (batch b is ``perm[bounds[b]:bounds[b + 1]]``), exactly the
RBM-1 partition of :func:`particles.partition`. Each batch is computed by one
of three functions, chosen by its size (:func:`one_batch_any`; the threshold
is fixed per call by :func:`run`'s ``kernel``, see there):

- :func:`blas_batch`, attention (``normalize``) in batches of at least
  :data:`BLAS_MIN_SIZE` tokens: the batch's keys and values are gathered into
  contiguous blocks and its queries, in chunks of rows, likewise; the scores
  are one BLAS product (``np.dot``, which Numba lowers to dgemm), the
  max-subtracted exponentials a branch-free exp that vectorises
  (:func:`particles.backends._ensemble.ens_exp_flat`, about 1 ulp), the
  weighted values a second product; everything stays in cache between the
  gather and the scatter;
- :func:`one_batch`, the loop kernel: the unnormalised batch sum, and
  attention in small batches, where a BLAS call costs more than its work, and
  in small problems, which keep the arithmetic (and the bits) of the kernel
  before the BLAS path and of the ``cuda`` backend's (the softmax sums by the
  engine's :func:`particles.device.softmax_step`, two-pass: the maximum first);
- :func:`lone_token`, a batch of a single token (``remainder="pad"`` with
  N mod p == 1): the token has no batch-mates, so its batch is widened to all
  N tokens, i.e. it gets the exact attention (j = i dropped without
  ``include_self``), or for the batch sum the exact target
  (1/(N-1)) sum_{j != i} exp(q_i.k_j) v_j, which keeps lemma T3 exact. The
  other tokens' batches are not widened.

Two drivers loop over the batches: :func:`batch_attention_parallel`, a
``prange`` loop over ``ngroups`` groups of batches (group g owns batches g,
g + ngroups, ...), so that the scratch buffers are allocated once per group,
never inside the batch loop; and :func:`batch_attention_serial`, the same
loop without threads, for small problems where waking a thread pool costs
more than the work, and for one thread.

A batch's arithmetic depends on its size and its tokens only, not on the
driver, the group or the thread count, so the output is bitwise identical in
all cases. The BLAS products are cut into chunks of at most
:data:`PRODUCT_WORK` multiply-adds (for the usual batch sizes), under which
OpenBLAS runs a product on the calling thread: the library's threads never
start BLAS threads of their own. Batches own disjoint sets of tokens, so the
writes to ``out`` never race.

The inner loops of the loop kernel are arranged so that LLVM vectorises them
without fastmath (which stays off, as everywhere in the project): scores are
accumulated with the feature axis t outside and the batch axis j inside (no
floating-point reduction in the vectorised loop), and the weighted sum runs
over the value axis.
"""

from __future__ import annotations

import hashlib
import inspect
import math

import numpy as np
from numba import njit, prange

from particles import device
from particles.backends import _ensemble

# the engine's batch-softmax step, in its two-pass use (particles.device): the maximum is found first
# (inlined in Numba's IR: as a call, LLVM does not inline it, and the kernel ran 1.35x slower)
softmax_step = njit(cache=True, inline="always")(device.softmax_step)
# libm's exp does not vectorise; this one does (about 1 ulp, exp(-inf) = 0 exactly)
exp_flat = njit(cache=True, inline="always")(_ensemble.ens_exp_flat)

# Numba's on-disk cache checks only the timestamp of the file defining a function, but the kernels below
# compile softmax_step (particles/device.py) and ens_exp_flat (particles/backends/_ensemble.py) into
# themselves: a hash of those sources in their qualified names (which key the cache) makes an edit of either
# select fresh entries
_DEVICE_TAG = hashlib.sha1((inspect.getsource(device) + inspect.getsource(_ensemble)).encode()).hexdigest()[:10]


def _cached(**options):
    def compile_(fn):
        fn.__qualname__ = f"{fn.__qualname__}_{_DEVICE_TAG}"
        return njit(cache=True, **options)(fn)

    return compile_


#: Below this many multiply-adds (N * p * (d + dv)) the serial driver and, for attention, the loop kernel are used.
SERIAL_WORK = 2**18
#: Attention batches of at least this many tokens take the BLAS path: about where it overtakes the loop
#: kernel at d = dv = 3 (measured at N = 8192, one thread: equal at p = 8, 1.7x faster at 12; at d = dv = 16
#: and 64 it is faster from p = 8 and p = 4 on).
BLAS_MIN_SIZE = 8
#: Multiply-adds of one BLAS product at most, rows of a batch taken in chunks: OpenBLAS's threshold for
#: running a product on the calling thread (SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD = 65536 * 4).
PRODUCT_WORK = 2**18
#: ... but never fewer query rows per product than this (huge batches: p close to N at large N), where
#: one product per row would read all the batch's keys once per query.
MIN_ROWS = 32


@_cached()
def chunk_rows(size, d, dv):
    """Query rows per BLAS product in a batch of ``size`` tokens: chunks as even as possible."""
    width = max(d, dv)
    cap = max(1, PRODUCT_WORK // (size * width))
    nchunks = -(-size // cap)
    rows = -(-size // nchunks)
    return min(size, max(rows, MIN_ROWS))


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


@_cached()
def blas_batch(q, k, v, perm, a, size, include_self, qb, kb, vb, sb, ob, den, out):
    """Attention inside the batch ``perm[a:a + size]`` by two BLAS products per chunk of query rows.

    ``qb``, ``kb``, ``vb``, ``sb``, ``ob``, ``den`` are flat scratch arrays, long enough for the batch
    (``size`` keys and values, :func:`chunk_rows` queries, their scores, outputs and denominators).
    """
    d = q.shape[1]
    dv = v.shape[1]
    ks = kb[: size * d].reshape(size, d)
    vs = vb[: size * dv].reshape(size, dv)
    for jj in range(size):
        j = perm[a + jj]
        for t in range(d):
            ks[jj, t] = k[j, t]
        for t in range(dv):
            vs[jj, t] = v[j, t]
    rows = chunk_rows(size, d, dv)
    for r0 in range(0, size, rows):
        nr = min(rows, size - r0)
        qs = qb[: nr * d].reshape(nr, d)
        ss = sb[: nr * size].reshape(nr, size)
        outs = ob[: nr * dv].reshape(nr, dv)
        for ii in range(nr):
            i = perm[a + r0 + ii]
            for t in range(d):
                qs[ii, t] = q[i, t]
        np.dot(qs, ks.T, ss)
        for ii in range(nr):
            row = sb[ii * size : (ii + 1) * size]
            if not include_self:
                row[r0 + ii] = -np.inf
            m = -np.inf
            for jj in range(size):
                m = max(m, row[jj])
            exp_flat(row, size, 1.0, m)
            total = 0.0
            for jj in range(size):
                total += row[jj]
            den[ii] = total
        np.dot(ss, vs, outs)
        for ii in range(nr):
            i = perm[a + r0 + ii]
            scale = 1.0 / den[ii]
            for t in range(dv):
                out[i, t] = outs[ii, t] * scale


@_cached()
def lone_token(q, k, v, i, include_self, normalize, out):
    """Token i alone in its batch: its batch is widened to all N tokens (the module docstring).

    normalize=True: out_i = exact attention of query i over all keys, without j = i unless ``include_self``;
    normalize=False: out_i = (1/(N-1)) sum_{j != i} exp(q_i.k_j) v_j, max-shifted as in :func:`one_batch`.
    """
    n = q.shape[0]
    s = np.dot(k, q[i])
    if not include_self:
        s[i] = -np.inf
    m = s.max()
    for j in range(n):
        s[j] = math.exp(s[j] - m)
    acc = np.dot(s, v)
    scale = 1.0 / s.sum() if normalize else math.exp(m) / (n - 1)
    for t in range(v.shape[1]):
        out[i, t] = acc[t] * scale


@_cached()
def one_batch_any(q, k, v, perm, a, size, include_self, normalize, blas_min, kt, s, acc, qb, kb, vb, sb, ob, den,
                  out):
    """The batch ``perm[a:a + size]`` by the function its size selects (the module docstring)."""
    if size == 1:
        lone_token(q, k, v, perm[a], include_self, normalize, out)
    elif normalize and size >= blas_min:
        blas_batch(q, k, v, perm, a, size, include_self, qb, kb, vb, sb, ob, den, out)
    else:
        one_batch(q, k, v, perm, a, size, include_self, normalize, kt, s, acc, out)


@_cached(parallel=True)
def batch_attention_parallel(q, k, v, perm, bounds, include_self, normalize, blas_min, ngroups, loop_max, blas_max,
                             rows_max, out):
    """Loop over all batches, in parallel over ``ngroups`` groups of batches.

    ``loop_max`` / ``blas_max``: the largest batch taking the loop kernel / the BLAS path (0: none),
    ``rows_max``: the largest chunk of query rows of the BLAS path; they size the scratch.
    """
    nbatches = bounds.size - 1
    d = q.shape[1]
    dv = v.shape[1]
    for g in prange(ngroups):
        kt = np.empty((d, loop_max))
        s = np.empty(loop_max)
        acc = np.empty(dv)
        qb = np.empty(rows_max * d)
        kb = np.empty(blas_max * d)
        vb = np.empty(blas_max * dv)
        sb = np.empty(rows_max * blas_max)
        ob = np.empty(rows_max * dv)
        den = np.empty(rows_max)
        for b in range(g, nbatches, ngroups):
            one_batch_any(q, k, v, perm, bounds[b], bounds[b + 1] - bounds[b], include_self, normalize, blas_min,
                          kt, s, acc, qb, kb, vb, sb, ob, den, out)


@_cached()
def batch_attention_serial(q, k, v, perm, bounds, include_self, normalize, blas_min, loop_max, blas_max, rows_max,
                           out):
    """Loop over all batches in one thread (arguments as :func:`batch_attention_parallel`)."""
    d = q.shape[1]
    dv = v.shape[1]
    kt = np.empty((d, loop_max))
    s = np.empty(loop_max)
    acc = np.empty(dv)
    qb = np.empty(rows_max * d)
    kb = np.empty(blas_max * d)
    vb = np.empty(blas_max * dv)
    sb = np.empty(rows_max * blas_max)
    ob = np.empty(rows_max * dv)
    den = np.empty(rows_max)
    for b in range(bounds.size - 1):
        one_batch_any(q, k, v, perm, bounds[b], bounds[b + 1] - bounds[b], include_self, normalize, blas_min,
                      kt, s, acc, qb, kb, vb, sb, ob, den, out)


def _scratch_sizes(sizes, pmax, normalize, blas_min, d, dv):
    """(loop_max, blas_max, rows_max) for the batch sizes present."""
    if not normalize or blas_min > pmax:  # no BLAS batch: skip the scan (it would cost more than a small call)
        return pmax, 0, 0
    loop_max = blas_max = rows_max = 0
    for size in np.unique(sizes).tolist():
        if size >= blas_min and size > 1:
            blas_max = max(blas_max, size)
            rows_max = max(rows_max, int(chunk_rows(size, d, dv)))
        elif size > 1:
            loop_max = max(loop_max, size)
    return loop_max, blas_max, rows_max


#: The kernel choices of :func:`run`.
KERNELS = ("auto", "blas", "loops")


def run(q, k, v, perm, bounds, include_self, normalize, *, driver="auto", ngroups=None, kernel="auto"):
    """Allocate the output and run a driver.

    Parameters
    ----------
    q, k : ndarray of float64, shape (N, d)
    v : ndarray of float64, shape (N, dv)
    perm : ndarray of int64, shape (N,)
        A permutation of the tokens.
    bounds : ndarray of int64, shape (B + 1,)
        Batch b is ``perm[bounds[b]:bounds[b + 1]]``; a batch of one token is widened to all N tokens.
    include_self : bool
        Keep j = i in the softmax of token i (attention only; the batch sum always drops it).
    normalize : bool
        True: attention in each batch; False: the unnormalised batch sum of lemma T3 (always the loop kernel).
    driver : {"auto", "serial", "parallel"}
        "auto": serial for small problems (N p (d + dv) below :data:`SERIAL_WORK`), one batch or one Numba
        thread, parallel otherwise. The result does not depend on it.
    ngroups : int, optional
        Groups of batches of the parallel driver (default 4 per Numba thread). The result does not depend on it.
    kernel : {"auto", "blas", "loops"}
        Attention batches by :func:`blas_batch` or by :func:`one_batch`. "auto": the BLAS path for batches of
        at least :data:`BLAS_MIN_SIZE` tokens, except in small problems (below :data:`SERIAL_WORK`), which
        keep the loop kernel and its bits (there the whole call takes microseconds); "blas": every batch of
        two tokens or more; "loops": none. The choices agree to rounding.

    Returns
    -------
    ndarray of float64, shape (N, dv)
    """
    from numba import get_num_threads

    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if driver not in ("auto", "serial", "parallel"):
        raise ValueError(f"driver must be 'auto', 'serial' or 'parallel', got {driver!r}")
    q = np.ascontiguousarray(q, dtype=np.float64)
    k = np.ascontiguousarray(k, dtype=np.float64)
    v = np.ascontiguousarray(v, dtype=np.float64)
    perm = np.ascontiguousarray(perm, dtype=np.int64)
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    n, d, dv = q.shape[0], q.shape[1], v.shape[1]
    out = np.empty((n, dv))
    sizes = np.diff(bounds)
    pmax = int(sizes.max())
    nbatches = sizes.size
    small = n * pmax * (d + dv) < SERIAL_WORK
    if kernel == "blas":
        blas_min = 2
    elif kernel == "loops" or small:
        blas_min = pmax + 1
    else:
        blas_min = BLAS_MIN_SIZE
    loop_max, blas_max, rows_max = _scratch_sizes(sizes, pmax, normalize, blas_min, d, dv)
    args = (q, k, v, perm, bounds, include_self, normalize, blas_min)
    if driver == "auto":
        driver = "serial" if small or nbatches == 1 or get_num_threads() == 1 else "parallel"
    if driver == "serial":
        batch_attention_serial(*args, loop_max, blas_max, rows_max, out)
    else:
        if ngroups is None:
            ngroups = min(nbatches, 4 * get_num_threads())
        batch_attention_parallel(*args, ngroups, loop_max, blas_max, rows_max, out)
    return out
