"""Source of the kernels of the ``cuda`` backend (not imported as such by user code).

Like :mod:`particles.backends._loops` for the ``cpu`` backend, these are
plain Python functions; :mod:`particles.backends.cuda` compiles them with
``numba.cuda.jit`` after binding the free names below, together with the
scalar functions they call -- the counter-based RNG (:mod:`particles._rng`),
the batch helpers (:mod:`particles._batches`), the kernels of the built-in
systems (:mod:`particles._kernels`) or a user's kernel and drift, and the
per-particle routines of :mod:`particles.backends._loops` (noise, stages,
update, projection, attention forces) -- each compiled with
``cuda.jit(device=True)`` from the same source as on the CPU. The random
numbers are therefore the same functions of (seed, replica, stream, step,
particle) on both backends.

Free names bound at compile time:
  ``cuda``                          the ``numba.cuda`` module (or its simulator)
  ``DIM``                           the state dimension d, a compile-time constant (local arrays)
  ``HAS_PREPARE``                   the family has a per-particle prepare pass (attention: Q x, K x, V x)
  ``kernel_fn``, ``drift_fn``       scalar kernel/drift of a kernel system
  ``prepare_row``, ``member_force`` the family's per-particle routines (attention: with ``attn_head_force``)
  ``project_tangent``, ``normalise``, ``particle_noise``, ``stage_particle``, ``advance_particle``
                                    from ``_loops``
  ``softmax_step``                  the batch-softmax step of :mod:`particles.device`
  RNG and batch helpers             ``combine``, ``root_key``, ``draw``, ``to_unit``, ``draw_subset``
  ``batch_span``, ``pad_span``      the batch of a position under ``"spread"`` / ``"pad"`` (this module)

Thread layout: one thread per (replica, position) for the per-particle
kernels (``f = r * N + pos``), one per (replica, bucket) for the bucket
pass of the permutation, one block per replica for RBM-r. Arrays: states
(R, N, d) float64, permutations ``idx`` (R, N) int32, stage derivatives
``K`` (S, R, N, d), per-particle scratch ``work`` (R, N, W).
"""
# ruff: noqa: F821  (names are bound by the compiler, see docstring)

import math  # noqa: F401  (the _loops routines bound into this namespace use it)

import numpy as np

from particles._layout import (  # noqa: F401  (the _loops routines bound into this namespace use them)
    ATTN_BETA,
    ATTN_FORM_HEADS,
    ATTN_HEAD_BLOCKS,
    ATTN_HEADS,
    ATTN_IDENTITY,
    ATTN_NORM,
    ATTN_QKV,
    ATTN_SELF,
    ATTN_SOFTMAX,
)
from particles._rng import STREAM_NOISE, STREAM_PERM, STREAM_SUBSET  # noqa: F401  (one home: the stream ids)

ZERO_OUT = False  # True for a user's kernel: ``out`` zeroed before each call (see ``_loops.ZERO_OUT``)


# --- batches -----------------------------------------------------------------------
def batch_span(pos, n, nbat):
    """(start, stop) of the batch holding position ``pos`` (as ``_batches.batch_bounds(n, n // nbat)``)."""
    base = n // nbat
    extra = n - base * nbat  # batches 0..extra-1 have base + 1 members
    big = extra * (base + 1)
    if pos < big:
        start = (pos // (base + 1)) * (base + 1)
        return start, start + base + 1
    start = big + ((pos - big) // base) * base
    return start, start + base


def pad_span(pos, n, p):
    """(start, stop) of the batch holding ``pos`` under ``remainder="pad"`` (``_batches.batch_bounds(n, p, "pad")``).

    A batch of one (the lone position, n mod p == 1) is widened to all n positions.
    """
    start = (pos // p) * p
    stop = min(start + p, n)
    if stop - start == 1:
        return 0, n
    return start, stop


def member_span(pos, n, nbat, pad):
    """The batch of ``pos``: ``batch_span(pos, n, nbat)`` when ``pad`` is 0, else ``pad_span(pos, n, pad)``."""
    if pad == 0:
        return batch_span(pos, n, nbat)
    return pad_span(pos, n, pad)


def kernel_member_force(xr, idx, start, stop, a, params, coupling, work_r, out_row):
    """``_loops.kernel_member_force`` with its scratch in a local array (same sum, same order)."""
    i = idx[a]
    d = xr.shape[1]
    tmp = cuda.local.array(DIM, np.float64)
    xi = xr[i]
    for c in range(d):
        out_row[c] = 0.0
        if ZERO_OUT:
            tmp[c] = 0.0
    for b in range(start, stop):
        j = idx[b]
        if j != i:
            kernel_fn(xi, xr[j], params, tmp)
            for c in range(d):
                out_row[c] += tmp[c]
                if ZERO_OUT:  # zero for the next call, in the same pass
                    tmp[c] = 0.0
    m = stop - start
    if m > 1:
        w = coupling / (m - 1)
        for c in range(d):
            out_row[c] *= w
    drift_fn(xi, params, tmp)  # tmp is zero here when ZERO_OUT (zeroed at the start and after every kernel call)
    for c in range(d):
        out_row[c] += tmp[c]


# --- keys, identity, zeroing ---------------------------------------------------------
def k_root_keys(seed, stream, keys):
    """keys[r] = root_key(seed, r, stream)."""
    r = cuda.grid(1)
    if r < keys.shape[0]:
        keys[r] = root_key(seed, r, stream)


def k_perm_keys(seed, m, keys):
    """keys[r] = the key of the RBM-1 permutation of reshuffle m of replica r."""
    r = cuda.grid(1)
    if r < keys.shape[0]:
        keys[r] = combine(root_key(seed, r, STREAM_PERM), m)


def k_identity(idx):
    f = cuda.grid(1)
    R, N = idx.shape
    if f < R * N:
        r = f // N
        idx[r, f - r * N] = f - r * N


def k_zero_int(a):
    f = cuda.grid(1)
    R, C = a.shape
    if f < R * C:
        r = f // C
        a[r, f - r * C] = 0


# --- the RBM-1 permutation (same integers as _batches.build_permutation) -------------
# Every element draws a bucket (histogram by atomics), an exclusive scan of the
# bucket counts gives each bucket's slots, the elements are scattered to their
# bucket's slots (in any order: atomics), each bucket is sorted back to increasing
# element index -- the order of the stable counting sort, which is unique -- and
# shuffled by Fisher-Yates with the uniforms keyed by position.
def k_perm_hist(keys, nbuckets, n, cnt):
    f = cuda.grid(1)
    R = keys.shape[0]
    if f < R * n:
        r = f // n
        i = f - r * n
        b = np.int64(to_unit(draw(keys[r], i)) * nbuckets)
        cuda.atomic.add(cnt, (r, b), 1)


def k_scan_reduce(src, L, C, sums):
    """sums[r, t] = sum of src[r, t*C:(t+1)*C] (columns < L)."""
    f = cuda.grid(1)
    R, T = sums.shape
    if f < R * T:
        r = f // T
        t = f - r * T
        s = 0
        for e in range(t * C, min(L, (t + 1) * C)):
            s += src[r, e]
        sums[r, t] = s


def k_scan_base(src, L, dst, zero_src):
    """dst[r, :L+1] = exclusive scan of src[r, :L] (and the total), one thread per row."""
    r = cuda.grid(1)
    if r < src.shape[0]:
        run = 0
        for e in range(L):
            v = src[r, e]
            dst[r, e] = run
            run += v
            if zero_src:
                src[r, e] = 0
        dst[r, L] = run


def k_scan_apply(src, L, C, offs, dst, zero_src):
    """dst[r, e] = offs[r, t] + exclusive scan of chunk t of src[r] (and the total at dst[r, L])."""
    f = cuda.grid(1)
    R = src.shape[0]
    T = (L + C - 1) // C
    if f < R * T:
        r = f // T
        t = f - r * T
        run = offs[r, t]
        for e in range(t * C, min(L, (t + 1) * C)):
            v = src[r, e]
            dst[r, e] = run
            run += v
            if zero_src:
                src[r, e] = 0
        if t == T - 1:
            dst[r, L] = run


def k_perm_scatter(keys, nbuckets, bstart, cursor, idx):
    f = cuda.grid(1)
    R, n = idx.shape
    if f < R * n:
        r = f // n
        i = f - r * n
        b = np.int64(to_unit(draw(keys[r], i)) * nbuckets)
        slot = cuda.atomic.add(cursor, (r, b), 1)
        idx[r, bstart[r, b] + slot] = i


def k_perm_buckets(keys, nbuckets, bstart, cursor, idx):
    """Per bucket: back to the stable order, then Fisher-Yates with u_k = to_unit(draw(key, n + k))."""
    f = cuda.grid(1)
    R, n = idx.shape
    if f < R * nbuckets:
        r = f // nbuckets
        b = f - r * nbuckets
        start = bstart[r, b]
        stop = bstart[r, b + 1]
        row = idx[r]
        for k in range(start + 1, stop):  # insertion sort: ~32 elements
            v = row[k]
            j = k - 1
            while j >= start and row[j] > v:
                row[j + 1] = row[j]
                j -= 1
            row[j + 1] = v
        key = keys[r]
        for k in range(stop - 1, start, -1):
            j = start + np.int64(to_unit(draw(key, n + k)) * (k - start + 1))
            t = row[k]
            row[k] = row[j]
            row[j] = t
        cursor[r, b] = 0  # ready for the next histogram


# --- forces and steps ----------------------------------------------------------------
def k_prepare(src, params, work):
    f = cuda.grid(1)
    R, N, d = src.shape
    if f < R * N:
        r = f // N
        i = f - r * N
        prepare_row(src[r, i], params, work[r, i])


def k_force(src, idx, nbat, pad, params, coupling, project, work, out):
    """out[r, i] = force on particle i (batches: consecutive slices of idx[r], see ``member_span``).

    ``pad``: 0 for the batches of ``remainder="spread"`` (``nbat`` of them),
    p for those of ``remainder="pad"``.
    """
    f = cuda.grid(1)
    R, N, d = src.shape
    if f < R * N:
        r = f // N
        pos = f - r * N
        start, stop = member_span(pos, N, nbat, pad)
        i = idx[r, pos]
        member_force(src[r], idx[r], start, stop, pos, params, coupling, work[r], out[r, i])
        if project:
            project_tangent(src[r, i], out[r, i])


def k_euler(src, dst, idx, nbat, pad, params, coupling, sphere, project, work, b0, dt, scale, knoise, fine0, nfine):
    """One Euler-Maruyama step from ``src`` into ``dst`` (force, noise and update fused).

    The arithmetic is that of ``_loops``: force_all, then advance_particle
    with one stage (acc = 0 + B[0] K); the state is double-buffered because
    the other threads still read ``src``.
    """
    f = cuda.grid(1)
    R, N, d = src.shape
    if f < R * N:
        r = f // N
        pos = f - r * N
        start, stop = member_span(pos, N, nbat, pad)
        i = idx[r, pos]
        force = cuda.local.array(DIM, np.float64)
        member_force(src[r], idx[r], start, stop, pos, params, coupling, work[r], force)
        xi = src[r, i]
        if project:
            project_tangent(xi, force)
        dw = cuda.local.array(DIM, np.float64)
        if scale != 0.0:
            particle_noise(knoise[r], fine0, nfine, i, scale, dw)
            if sphere:
                project_tangent(xi, dw)
        else:
            for c in range(d):
                dw[c] = 0.0
        yi = dst[r, i]
        for c in range(d):
            acc = 0.0
            acc += b0 * force[c]
            yi[c] = xi[c] + (dt * acc + dw[c])
        if sphere:
            normalise(yi)


def k_stage(x, xs, K, A, s, dt, sphere):
    f = cuda.grid(1)
    R, N, d = x.shape
    if f < R * N:
        r = f // N
        stage_particle(x, xs, K, A, s, dt, r, f - r * N, sphere)


def k_advance(x, K, B, dt, scale, knoise, fine0, nfine, sphere):
    f = cuda.grid(1)
    R, N, d = x.shape
    if f < R * N:
        r = f // N
        dw = cuda.local.array(DIM, np.float64)
        advance_particle(x, K, B, dt, r, f - r * N, scale, knoise[r], fine0, nfine, sphere, dw)


def k_rbmr(x, xs, K, A, B, dt, scale, nfine, sub0, nsub, p, params, coupling, sphere, project, work, pool, clock,
           ksub, knoise):
    """``nsub`` RBM-r sub-steps (from sub-step ``sub0``) of replica r = blockIdx.x, the block cooperating.

    Thread 0 draws the subset (partial Fisher-Yates on the persistent pool),
    then the block computes the stages and advances the members (the same
    per-particle routines as ``_loops.run_rbmr``), with barriers between phases.
    """
    r = cuda.blockIdx.x
    t = cuda.threadIdx.x
    bs = cuda.blockDim.x
    N = x.shape[1]
    S = B.shape[0]
    pr = pool[r]
    dw = cuda.local.array(DIM, np.float64)
    for q in range(nsub):
        if t == 0:
            draw_subset(combine(ksub[r], sub0 + q), N, p, pr)
        cuda.syncthreads()
        for s in range(S):
            if s > 0:
                for a in range(t, p, bs):
                    stage_particle(x, xs, K, A, s, dt, r, pr[a], sphere)
                cuda.syncthreads()
            st = xs[r] if s > 0 else x[r]
            if HAS_PREPARE:
                for a in range(t, p, bs):
                    prepare_row(st[pr[a]], params, work[r, pr[a]])
                cuda.syncthreads()
            for a in range(t, p, bs):
                i = pr[a]
                member_force(st, pr, 0, p, a, params, coupling, work[r], K[s, r, i])
                if project:
                    project_tangent(st[i], K[s, r, i])
            cuda.syncthreads()
        for a in range(t, p, bs):
            i = pr[a]
            advance_particle(x, K, B, dt, r, i, scale, knoise[r], clock[r, i] * nfine, nfine, sphere, dw)
            clock[r, i] += 1
        cuda.syncthreads()
