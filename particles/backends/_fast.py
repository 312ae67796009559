"""Fast path of the ``cpu`` loops: the built-in componentwise kernels (confined tanh, Dyson) in flat space.

Source compiled by :mod:`particles.backends.cpu` (see ``_loops``) for
``full`` and ``rbm1``; the same bits as the per-particle loops of
``_forces`` and ``_steps``. Any batch bounds whose sizes are non-increasing
and take at most two values (``"spread"``, and ``"pad"``). A lone particle
of ``"pad"`` is stepped on its own (``lone_forces``, ``lone_advance``) with
the Euler scheme; with several stages it would need the stage states of all
N, which the chunked step does not keep, so :func:`particles.backends.cpu.run`
then takes ``run_batched``.
"""
# ruff: noqa: F821  (names are bound by the compiler, see below)

import numpy as np
from numba import prange

from particles._rng import STREAM_NOISE

# --- fast path: built-in componentwise kernels (confined tanh, Dyson) --------------
# Free names: pair_fn(z, c1) (one component of K for z = x_c - y_c; must be exactly odd,
# pair_fn(-z) == -pair_fn(z) bit for bit), pair_const(params) -> c1, drift1(x_c, c2) (one
# component of b), drift_const(params) -> c2.
#
# The step works on *segments*: ``nbat`` consecutive batches of one size ``m``
# (M = m * nbat positions of the permutation). A segment's particles are
# gathered into scratch rows in the slot-major layout ``(c*m + a)*nbat + q``
# (component c, member a of batch q), so that the loops over batches (small
# batches) or over members (one large batch, nbat = 1) are unit-stride and
# vectorise; ``ip[a*nbat + q]`` is the particle in that slot. Every particle's
# force is the same sum, in the same order, as in ``kernel_member_force``
# (partners in batch order, self skipped, times w, plus the drift), and its
# update is ``advance_particle``'s, so neither the layout nor the split into
# segments, chunks and threads changes a single bit.
#
# The functions take zero-based views (``row[j]`` for j in range(n)): with a
# possibly negative index, Numba's wraparound test stays in the loop and
# blocks vectorisation.
SMALL_BATCH = 16  # batches up to this size are vectorised across batches
FAST_BLOCK = 256  # members per block when vectorising across members


def seg_slots(idv, m, nbat, ipv):
    for a in range(m):
        for q in range(nbat):
            ipv[a * nbat + q] = idv[q * m + a]


def seg_gather(xr, ipv, M, xv):
    d = xr.shape[1]
    for c in range(d):
        row = xv[c * M:(c + 1) * M]
        for j in range(M):
            row[j] = xr[ipv[j], c]


def block_forces(row, out, m, a0, a1, c1, c2, w):
    """Members a0..a1-1 of one batch of size m (nbat = 1), one component: row, out of length m."""
    n = a1 - a0
    o = out[a0:a1]
    sa = row[a0:a1]
    for a in range(n):
        o[a] = 0.0
    for b in range(m):
        xb = row[b]
        for a in range(min(n, b - a0)):  # members before b
            o[a] += pair_fn(sa[a] - xb, c1)
        lo = max(0, b + 1 - a0)
        if lo < n:  # members after b
            o2 = o[lo:]
            s2 = sa[lo:]
            for a in range(n - lo):
                o2[a] += pair_fn(s2[a] - xb, c1)
    for a in range(n):
        o[a] = o[a] * w + drift1(sa[a], c2)


def seg_forces(src, out, m, nbat, d, c1, c2, w):
    """Forces of a segment, src/out of length d*M in the slot-major layout."""
    M = m * nbat
    if nbat == 1:
        for c in range(d):
            for a0 in range(0, m, FAST_BLOCK):
                block_forces(src[c * M:(c + 1) * M], out[c * M:(c + 1) * M], m, a0, min(m, a0 + FAST_BLOCK),
                             c1, c2, w)
        return
    # small batches: each unordered pair once (pair_fn is exactly odd); the force on member a still
    # accumulates its partners in batch order (those before a arrive first)
    for c in range(d):
        row = out[c * M:(c + 1) * M]
        srow = src[c * M:(c + 1) * M]
        for e in range(M):
            row[e] = 0.0
        for a in range(m):
            oa = row[a * nbat:(a + 1) * nbat]
            sa = srow[a * nbat:(a + 1) * nbat]
            for b in range(a + 1, m):
                ob = row[b * nbat:(b + 1) * nbat]
                sb = srow[b * nbat:(b + 1) * nbat]
                for q in range(nbat):
                    v = pair_fn(sa[q] - sb[q], c1)
                    oa[q] += v
                    ob[q] -= v
        for e in range(M):
            row[e] = row[e] * w + drift1(srow[e], c2)


def stage_rows(xv, kg, w, lo, A, s, dt, sv):
    """sv = xv + dt * sum_{q<s} A[s, q] kg[q, w, lo:] (as stage_particle)."""
    n = xv.size
    for e in range(n):
        sv[e] = 0.0
    for q in range(s):
        aq = A[s, q]
        kq = kg[q, w, lo:lo + n]
        for e in range(n):
            sv[e] += aq * kq[e]
    for e in range(n):
        sv[e] = xv[e] + dt * sv[e]


def seg_noise(knoise_r, fine0, nfine, ipv, M, d, kpv, ngv):
    """ngv = sum over the fine steps of the standard normals of each slot (as particle_noise, unscaled).

    The vectorised pass keeps each normal's first ziggurat attempt (NaN where
    it is rejected, ~1% of draws); the sums hit by a NaN are then redone with
    the exact scalar :func:`normal`, in the same order.
    """
    for q in range(nfine):
        kstep = combine(knoise_r, fine0 + q)
        for j in range(M):
            kpv[j] = combine(kstep, ipv[j])
        for c in range(d):
            row = ngv[c * M:(c + 1) * M]
            if q == 0:
                for j in range(M):
                    row[j] = 0.0 + normal_first(kpv[j], c)
            else:
                for j in range(M):
                    row[j] += normal_first(kpv[j], c)
    for c in range(d):
        row = ngv[c * M:(c + 1) * M]
        for j in range(M):
            if row[j] != row[j]:  # a rejected first attempt: redo the sum exactly
                if nfine == 1:
                    row[j] = 0.0 + normal(kpv[j], c)
                else:
                    v = 0.0
                    for q in range(nfine):
                        v += normal(combine(combine(knoise_r, fine0 + q), ipv[j]), c)
                    row[j] = v


def seg_advance(xr, ipv, M, xv, kg, w, lo, B, dt, scale, ngv):
    """xv += dt * sum_s B[s] kg[s, w, lo:] + scale * ngv, scattered back into xr (as advance_particle)."""
    d = xr.shape[1]
    S = B.shape[0]
    n = d * M
    if S == 1:
        b0 = B[0]
        k0 = kg[0, w, lo:lo + n]
        if scale != 0.0:
            for e in range(n):
                xv[e] = xv[e] + (dt * (0.0 + b0 * k0[e]) + ngv[e] * scale)
        else:
            for e in range(n):
                xv[e] = xv[e] + (dt * (0.0 + b0 * k0[e]) + 0.0)
    else:
        for e in range(n):
            acc = 0.0
            for s in range(S):
                acc += B[s] * kg[s, w, lo + e]
            dw = ngv[e] * scale if scale != 0.0 else 0.0
            xv[e] = xv[e] + (dt * acc + dw)
    for c in range(d):
        row = xv[c * M:(c + 1) * M]
        for j in range(M):
            xr[ipv[j], c] = row[j]


def seg_step(xr, idv, m, nbat, A, B, dt, scale, knoise_r, fine0, nfine, c1, c2, wt, xg, kg, sg, ip, kp, w, ls):
    """One whole step of a segment (its batches interact only among themselves).

    ``idv``: the segment's positions of the permutation; scratch: row ``w``
    of xg, kg, sg (from ``d * ls``) and of ip, kp (from ``ls``).
    """
    d = xr.shape[1]
    S = B.shape[0]
    M = m * nbat
    lo = d * ls
    ipv = ip[w, ls:ls + M]
    xv = xg[w, lo:lo + d * M]
    sv = sg[w, lo:lo + d * M]
    seg_slots(idv, m, nbat, ipv)
    seg_gather(xr, ipv, M, xv)
    seg_forces(xv, kg[0, w, lo:lo + d * M], m, nbat, d, c1, c2, wt)
    for s in range(1, S):
        stage_rows(xv, kg, w, lo, A, s, dt, sv)
        seg_forces(sv, kg[s, w, lo:lo + d * M], m, nbat, d, c1, c2, wt)
    if scale != 0.0:
        seg_noise(knoise_r, fine0, nfine, ipv, M, d, kp[w, ls:ls + M], sv)
    seg_advance(xr, ipv, M, xv, kg, w, lo, B, dt, scale, sv)


def fused_step(x, idx, bounds, per_chunk, A, B, dt, scale, knoise, fine0, nfine, c1, c2, coupling,
               xg, kg, sg, ip, kp):
    """RBM-1 step in chunks of ``per_chunk`` consecutive batches, each done start to end by one worker.

    Worker w (one per scratch row, xg.shape[0] of them) takes a contiguous
    range of chunks; its scratch stays in cache.
    """
    R, N, d = x.shape
    nb = bounds.size - 1
    nch = (nb + per_chunk - 1) // per_chunk
    # batches 0..extra-1 have m_hi members, the others m_lo: under "spread" m_hi = N // nb + 1 (or no batch of
    # that size), under "pad" m_hi = p and the last batch m_lo = N mod p
    m_hi = bounds[1] - bounds[0]
    m_lo = bounds[nb] - bounds[nb - 1]
    extra = nb if m_hi == m_lo else (bounds[nb] - nb * m_lo) // (m_hi - m_lo)
    W = xg.shape[0]
    total = R * nch
    small = m_hi + (1 if m_hi == m_lo else 0) <= SMALL_BATCH  # under "spread": N // nb + 1 <= SMALL_BATCH
    for w in prange(W):
        for t in range(w * total // W, (w + 1) * total // W):
            r = t // nch
            b0 = (t - r * nch) * per_chunk
            b1 = min(nb, b0 + per_chunk)
            p0 = bounds[b0]
            e = min(b1, max(b0, extra))
            # small batches: at most two segments, the batches of size m_hi then those of size m_lo;
            # large batches: one segment per batch
            for g in range(2 if small else b1 - b0):
                if small:
                    s0 = b0 if g == 0 else e
                    nbat = e - b0 if g == 0 else b1 - e
                    m = m_hi if g == 0 else m_lo
                else:
                    s0 = b0 + g
                    nbat = 1
                    m = bounds[s0 + 1] - bounds[s0]
                if nbat > 0:
                    gs = bounds[s0]
                    seg_step(x[r], idx[r, gs:gs + m * nbat], m, nbat, A, B, dt, scale, knoise[r], fine0, nfine,
                             c1, c2, coupling / (m - 1), xg, kg, sg, ip, kp, w, gs - p0)


def phased_forces(src, kg, s, bounds, d, c1, c2, coupling):
    """kg[s] = forces of every batch (nbat = 1 segments at their positions), parallel over blocks."""
    R = src.shape[0]
    nb = bounds.size - 1
    mmax = bounds[1] - bounds[0]
    nblk = (mmax + FAST_BLOCK - 1) // FAST_BLOCK
    per_r = nb * d * nblk
    for t in prange(R * per_r):
        r = t // per_r
        rest = t - r * per_r
        b = rest // (d * nblk)
        rest = rest - b * d * nblk
        c = rest // nblk
        a0 = (rest - c * nblk) * FAST_BLOCK
        ps = bounds[b]
        m = bounds[b + 1] - ps
        if a0 < m:
            lo = d * ps + c * m
            block_forces(src[r, lo:lo + m], kg[s, r, lo:lo + m], m, a0, min(m, a0 + FAST_BLOCK), c1, c2,
                         coupling / (m - 1))


def phased_step(x, idx, bounds, A, B, dt, scale, knoise, fine0, nfine, c1, c2, coupling, xg, kg, sg, ip, kp):
    """Full step, or an RBM-1 step with few (large) batches: each phase parallel over all particles.

    Scratch rows are per replica (xg[r] etc. hold all N particles, batch b's segment at its positions).
    """
    R, N, d = x.shape
    S = B.shape[0]
    nb = bounds.size - 1
    for f in prange(R * nb):
        r = f // nb
        b = f - r * nb
        ps = bounds[b]
        m = bounds[b + 1] - ps
        seg_slots(idx[r, ps:ps + m], m, 1, ip[r, ps:ps + m])
        seg_gather(x[r], ip[r, ps:ps + m], m, xg[r, d * ps:d * (ps + m)])
    phased_forces(xg, kg, 0, bounds, d, c1, c2, coupling)
    for s in range(1, S):
        for f in prange(R * d):
            r = f // d
            c = f - r * d
            stage_rows(xg[r, c * N:(c + 1) * N], kg, r, c * N, A, s, dt, sg[r, c * N:(c + 1) * N])
        phased_forces(sg, kg, s, bounds, d, c1, c2, coupling)
    for f in prange(R * nb):
        r = f // nb
        b = f - r * nb
        ps = bounds[b]
        m = bounds[b + 1] - ps
        lo = d * ps
        if scale != 0.0:
            seg_noise(knoise[r], fine0, nfine, ip[r, ps:ps + m], m, d, kp[r, ps:ps + m], sg[r, lo:lo + d * m])
        seg_advance(x[r], ip[r, ps:ps + m], m, xg[r, lo:lo + d * m], kg, r, lo, B, dt, scale,
                    sg[r, lo:lo + d * m])


# The lone particle of remainder="pad" (position ``lone``, a batch of one widened to all N), with the Euler
# step only: its force needs the state of all N at the start of the step, taken before the other batches move
# (the ``bounds`` handed to the steps then stop before its position), and it is advanced after them.
def lone_forces(x, idx, lone, c1, c2, coupling, flo):
    """flo[r] = force on replica r's lone particle: kernel_member_force's sum over all N positions."""
    R, N, d = x.shape
    w = coupling / (N - 1)
    for r in range(R):
        i = idx[r, lone]
        xr = x[r]
        for c in range(d):
            xc = xr[i, c]
            acc = 0.0
            for b in range(N):
                j = idx[r, b]
                if j != i:
                    acc += pair_fn(xc - xr[j, c], c1)
            flo[r, c] = acc * w + drift1(xc, c2)


def lone_advance(x, idx, lone, flo, b0, dt, scale, knoise, fine0, nfine, dwl):
    """The Euler update of each replica's lone particle (advance_particle's arithmetic, one stage)."""
    R, N, d = x.shape
    for r in range(R):
        i = idx[r, lone]
        dw = dwl[r]
        if scale != 0.0:
            particle_noise(knoise[r], fine0, nfine, i, scale, dw)
        else:
            for c in range(d):
                dw[c] = 0.0
        xi = x[r, i]
        for c in range(d):
            acc = 0.0
            acc += b0 * flo[r, c]
            xi[c] += dt * acc + dw[c]


def run_fast_fused(x, traj, nsteps, save_every, tau_steps, per_chunk, A, B, dt, scale, dt_last, scale_last, nfine,
                   seed, bounds, lone,
                   nbuckets, params, coupling, xg, kg, sg, ip, kp, flo, dwl, idx, bucket, u, hist, bstart):
    """``run_batched`` for RBM-1 on the built-in kernel systems (flat space), same results.

    Steps chunk by chunk (fused_step; scratch rows per worker). ``lone`` >= 0
    (Euler only): the position of the lone particle, which ``bounds`` leaves
    out; ``flo``, ``dwl`` (R, d) are its scratch.
    """
    R = x.shape[0]
    c1 = pair_const(params)
    c2 = drift_const(params)
    knoise = np.empty(R, dtype=np.uint64)
    for r in range(R):
        knoise[r] = root_key(seed, r, STREAM_NOISE)
    save_state(x, traj, 0)
    k = 0
    for n in range(nsteps):
        if n % tau_steps == 0:
            build_perms(seed, n // tau_steps, nbuckets, idx, bucket, u, hist, bstart)
        h = dt if n + 1 < nsteps else dt_last
        sc = scale if n + 1 < nsteps else scale_last
        if lone >= 0:
            lone_forces(x, idx, lone, c1, c2, coupling, flo)
        fused_step(x, idx, bounds, per_chunk, A, B, h, sc, knoise, n * nfine, nfine, c1, c2, coupling,
                   xg, kg, sg, ip, kp)
        if lone >= 0:
            lone_advance(x, idx, lone, flo, B[0], h, sc, knoise, n * nfine, nfine, dwl)
        if (n + 1) % save_every == 0 or n + 1 == nsteps:
            k += 1
            save_state(x, traj, k)


def run_fast_phased(x, traj, nsteps, save_every, tau_steps, full, A, B, dt, scale, dt_last, scale_last, nfine, seed,
                    bounds, lone, nbuckets,
                    params, coupling, xg, kg, sg, ip, kp, flo, dwl, idx, bucket, u, hist, bstart):
    """``run_batched`` for the full method (or RBM-1 with few batches) on the built-in kernel systems.

    Steps phase by phase (phased_step; scratch rows per replica). Two
    drivers rather than one keep the first compilation of each shorter.
    ``lone``, ``flo``, ``dwl``: as in :func:`run_fast_fused`.
    """
    R = x.shape[0]
    c1 = pair_const(params)
    c2 = drift_const(params)
    knoise = np.empty(R, dtype=np.uint64)
    for r in range(R):
        knoise[r] = root_key(seed, r, STREAM_NOISE)
    save_state(x, traj, 0)
    k = 0
    for n in range(nsteps):
        if not full and n % tau_steps == 0:
            build_perms(seed, n // tau_steps, nbuckets, idx, bucket, u, hist, bstart)
        h = dt if n + 1 < nsteps else dt_last
        sc = scale if n + 1 < nsteps else scale_last
        if lone >= 0:
            lone_forces(x, idx, lone, c1, c2, coupling, flo)
        phased_step(x, idx, bounds, A, B, h, sc, knoise, n * nfine, nfine, c1, c2, coupling, xg, kg, sg, ip, kp)
        if lone >= 0:
            lone_advance(x, idx, lone, flo, B[0], h, sc, knoise, n * nfine, nfine, dwl)
        if (n + 1) % save_every == 0 or n + 1 == nsteps:
            k += 1
            save_state(x, traj, k)
