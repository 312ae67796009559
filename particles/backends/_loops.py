"""Source of the compiled loops of the ``cpu`` backend (not imported as such).

These functions are plain Python; :mod:`particles.backends.cpu` compiles
them with ``numba.njit`` after binding the free names below. Binding them
per system family (and per user-defined system) is what lets one loop body
serve every system without a Python call per pair, while the built-in
systems keep an on-disk compilation cache.

Free names bound at compile time:
  ``kernel_fn``, ``drift_fn``        scalar kernel/drift of a kernel system
  ``prepare_row``, ``member_force``  the family's per-particle routines
  ``HAS_PREPARE``, ``TRANSPOSED_KEYS`` constants: the family has a prepare pass / is attention
  ``pair_fn``, ``pair_const``, ``drift1``, ``drift_const``
                                     componentwise pieces of a built-in kernel (fast path only)
  ``force_all``, ``stage_state``, ... the other functions of this module
  RNG, batch and kernel helpers from ``particles._rng`` / ``_batches`` / ``_kernels``.

Array conventions: states ``x`` are (R, N, d) float64 (R replicas), the
per-replica permutations ``idx`` are (R, N) int64, the stage derivatives
``K`` are (S, R, N, d), ``work`` is (R, N, W) per-particle scratch (W = d
for kernel systems, 3d for attention: Qx, Kx, Vx).
"""
# ruff: noqa: F821  (names are bound by the compiler, see docstring)

import math

import numpy as np
from numba import prange

from particles._rng import STREAM_NOISE, STREAM_PERM, STREAM_SUBSET  # noqa: F401  (one home: the stream ids)

# --- kernel family -------------------------------------------------------------
# A user's kernel or drift that leaves a component of ``out`` unwritten must not add whatever the scratch held:
# the loops of user-defined systems zero ``out`` before every call (a compile-time constant, so the built-in
# systems, whose kernels write every component, compile to the same code as without it).
ZERO_OUT = False


def kernel_prepare_row(x_row, params, work_row):
    return


def kernel_member_force(xr, idx, start, stop, a, params, coupling, work_r, out_row):
    i = idx[a]
    d = xr.shape[1]
    tmp = work_r[i]
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


# --- attention family ----------------------------------------------------------
# params = [beta, normalisation (0 softmax, 1 mean), include_self, identity, Q, K, V]
def attn_prepare_row(x_row, params, work_row):
    d = x_row.shape[0]
    if params[3] == 1.0:
        for c in range(d):
            work_row[c] = x_row[c]
            work_row[d + c] = x_row[c]
            work_row[2 * d + c] = x_row[c]
    else:
        for m in range(3):
            base = 4 + m * d * d
            for row in range(d):
                s = 0.0
                for c in range(d):
                    s += params[base + row * d + c] * x_row[c]
                work_row[m * d + row] = s


def attn_member_force(xr, idx, start, stop, a, params, coupling, work_r, out_row):
    i = idx[a]
    d = xr.shape[1]
    beta = params[0]
    wi = work_r[i]
    for c in range(d):
        out_row[c] = 0.0
    if params[1] == 0.0:
        # softmax over the batch (T19 / T18), online max-subtraction
        mx = -np.inf
        den = 0.0
        for b in range(start, stop):
            j = idx[b]
            if j == i and params[2] == 0.0:
                continue
            wj = work_r[j]
            s = 0.0
            for c in range(d):
                s += wi[c] * wj[d + c]
            s *= beta
            if s > mx:
                scale = math.exp(mx - s)
                den = den * scale + 1.0
                for c in range(d):
                    out_row[c] = out_row[c] * scale + wj[2 * d + c]
                mx = s
            else:
                e = math.exp(s - mx)
                den += e
                for c in range(d):
                    out_row[c] += e * wj[2 * d + c]
        for c in range(d):
            out_row[c] /= den
    else:
        # unnormalised (T20): self/N exactly, others with weight c_N/(|C|-1)
        m = stop - start
        for b in range(start, stop):
            j = idx[b]
            if j != i:
                wj = work_r[j]
                s = 0.0
                for c in range(d):
                    s += wi[c] * wj[d + c]
                e = math.exp(beta * s)
                for c in range(d):
                    out_row[c] += e * wj[2 * d + c]
        w = coupling / (m - 1) if m > 1 else 0.0
        s = 0.0
        for c in range(d):
            s += wi[c] * wi[d + c]
        e = (1.0 - coupling) * math.exp(beta * s) if params[2] != 0.0 else 0.0
        for c in range(d):
            out_row[c] = w * out_row[c] + e * wi[2 * d + c]


# The same forces with the keys of the batch in component-major order (``ktb[c*m + a]`` = component c of
# K x of the batch's member a): the scores of a block of partners are computed together (vectorised
# over partners, each still summed over c in order), then the partners are taken one by one exactly as
# in attn_member_force, so the results are the same bits.
SCORE_BLOCK = 256  # partners per block of scores
ATTN_TILE = 16  # members sharing one block of partners


def gather_keys(work_r, idx_r, start, stop, d, kt_r):
    m = stop - start
    idv = idx_r[start:stop]
    ktb = kt_r[d * start:d * stop]
    for c in range(d):
        row = ktb[c * m:(c + 1) * m]
        for a in range(m):
            row[a] = work_r[idv[a], d + c]


def attn_tile_force(idx_r, start, stop, a0, a1, params, coupling, work_r, ktb, sbuf, mxb, denb, out_r):
    """Forces on the members at positions a0..a1-1 of the batch start..stop (same batch).

    The partners are taken in blocks of SCORE_BLOCK, each block used by all
    the members of the tile while it is in cache; per member the partners
    still come in batch order, with attn_member_force's arithmetic.
    """
    m = stop - start
    d = out_r.shape[1]
    T = a1 - a0
    beta = params[0]
    softmax = params[1] == 0.0
    skip_self = params[2] == 0.0
    idv = idx_r[start:stop]
    for t in range(T):
        orow = out_r[idx_r[a0 + t]]
        for c in range(d):
            orow[c] = 0.0
        mxb[t] = -np.inf
        denb[t] = 0.0
    for j0 in range(0, m, SCORE_BLOCK):
        nj = min(SCORE_BLOCK, m - j0)
        sc = sbuf[0:nj]
        for t in range(T):
            i = idx_r[a0 + t]
            qi = work_r[i, 0:d]
            out_row = out_r[i]
            for jj in range(nj):
                sc[jj] = 0.0
            for c in range(d):
                qc = qi[c]
                krow = ktb[c * m + j0:c * m + j0 + nj]
                for jj in range(nj):
                    sc[jj] += qc * krow[jj]
            mx = mxb[t]
            den = denb[t]
            for jj in range(nj):
                j = idv[j0 + jj]
                vj = work_r[j, 2 * d:3 * d]
                if softmax:
                    # softmax over the batch (T19 / T18), online max-subtraction
                    if j == i and skip_self:
                        continue
                    s = sc[jj] * beta
                    if s > mx:
                        scale = math.exp(mx - s)
                        den = den * scale + 1.0
                        for c in range(d):
                            out_row[c] = out_row[c] * scale + vj[c]
                        mx = s
                    else:
                        e = math.exp(s - mx)
                        den += e
                        for c in range(d):
                            out_row[c] += e * vj[c]
                elif j != i:
                    e = math.exp(beta * sc[jj])
                    for c in range(d):
                        out_row[c] += e * vj[c]
            mxb[t] = mx
            denb[t] = den
    for t in range(T):
        i = idx_r[a0 + t]
        out_row = out_r[i]
        wi = work_r[i]
        if softmax:
            den = denb[t]
            for c in range(d):
                out_row[c] /= den
        else:
            # unnormalised (T20): self/N exactly, others with weight c_N/(|C|-1)
            w = coupling / (m - 1) if m > 1 else 0.0
            s = 0.0
            for c in range(d):
                s += wi[c] * wi[d + c]
            e = (1.0 - coupling) * math.exp(beta * s) if params[2] != 0.0 else 0.0
            for c in range(d):
                out_row[c] = w * out_row[c] + e * wi[2 * d + c]


# --- shared pieces --------------------------------------------------------------
def project_tangent(x_row, v_row):
    d = x_row.shape[0]
    s = 0.0
    for c in range(d):
        s += x_row[c] * v_row[c]
    for c in range(d):
        v_row[c] -= s * x_row[c]


def normalise(x_row):
    d = x_row.shape[0]
    s = 0.0
    for c in range(d):
        s += x_row[c] * x_row[c]
    s = math.sqrt(s)
    for c in range(d):
        x_row[c] /= s


def force_all(x, idx, bounds, batch_of_pos, params, coupling, project, work, out, kt, sbuf):
    """out[r, i] = force on particle i of replica r, batches given by idx/bounds.

    For the attention family the keys K x_j of each batch are first gathered
    into ``kt`` (per replica, batch b at ``d * bounds[b]``, component-major) so
    that the scores of a block of partners vectorise; worker w takes the w-th
    contiguous range of the R*N particles, in tiles of ATTN_TILE members of one
    batch, with row w of ``sbuf`` (SCORE_BLOCK scores, then the running max
    and denominator of each member of the tile) as scratch. ``project``: the
    forces are projected on the tangent space (the sphere's projected schemes;
    False for the ambient Euler step, which moves along the unprojected field).
    """
    R, N, d = x.shape
    if HAS_PREPARE:  # compile-time constant: False for the kernel family, whose prepare is a no-op
        for f in prange(R * N):
            r = f // N
            i = f - r * N
            prepare_row(x[r, i], params, work[r, i])
    if TRANSPOSED_KEYS:  # compile-time constant: True for the attention family
        nb = bounds.size - 1
        for f in prange(R * nb):
            r = f // nb
            b = f - r * nb
            gather_keys(work[r], idx[r], bounds[b], bounds[b + 1], d, kt[r])
        W = sbuf.shape[0]
        T = sbuf.shape[1] - SCORE_BLOCK
        total = R * N
        for w in prange(W):
            sb = sbuf[w, 0:SCORE_BLOCK]
            mxb = sbuf[w, SCORE_BLOCK:SCORE_BLOCK + T // 2]
            denb = sbuf[w, SCORE_BLOCK + T // 2:SCORE_BLOCK + T]
            f = w * total // W
            f1 = (w + 1) * total // W
            while f < f1:  # tiles of consecutive positions of one batch
                r = f // N
                pos = f - r * N
                b = batch_of_pos[pos]
                start = bounds[b]
                stop = bounds[b + 1]
                n = min(f1 - f, stop - pos, T // 2)
                attn_tile_force(idx[r], start, stop, pos, pos + n, params, coupling, work[r],
                                kt[r, d * start:d * stop], sb, mxb, denb, out[r])
                if project:
                    for a in range(pos, pos + n):
                        i = idx[r, a]
                        project_tangent(x[r, i], out[r, i])
                f += n
        return
    for f in prange(R * N):
        r = f // N
        pos = f - r * N
        b = batch_of_pos[pos]
        i = idx[r, pos]
        member_force(x[r], idx[r], bounds[b], bounds[b + 1], pos, params, coupling, work[r], out[r, i])
        if project:
            project_tangent(x[r, i], out[r, i])


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


def particle_noise(knoise, fine0, nfine, i, scale, dw):
    """dw = scale * sum of the standard normals of particle i on fine steps fine0.. ."""
    d = dw.shape[0]
    for c in range(d):
        dw[c] = 0.0
    for q in range(nfine):
        kp = combine(combine(knoise, fine0 + q), i)
        for c in range(d):
            dw[c] += normal(kp, c)
    for c in range(d):
        dw[c] *= scale


def stage_particle(x, xs, K, A, s, dt, r, i, sphere):
    d = x.shape[2]
    for c in range(d):
        acc = 0.0
        for q in range(s):
            acc += A[s, q] * K[q, r, i, c]
        xs[r, i, c] = x[r, i, c] + dt * acc
    # No normalisation of stage states: the projected field extends smoothly off
    # the sphere and its flow preserves |x|, so plain RK stages keep the order;
    # only the end of the step is normalised.


def advance_particle(x, K, B, dt, r, i, scale, knoise, fine0, nfine, sphere, dw):
    d = x.shape[2]
    xi = x[r, i]
    if scale != 0.0:
        particle_noise(knoise, fine0, nfine, i, scale, dw)
        if sphere:
            project_tangent(xi, dw)
    else:
        for c in range(d):
            dw[c] = 0.0
    S = B.shape[0]
    for c in range(d):
        acc = 0.0
        for s in range(S):
            acc += B[s] * K[s, r, i, c]
        xi[c] += dt * acc + dw[c]
    if sphere:
        normalise(xi)


def stage_all(x, xs, K, A, s, dt, sphere):
    R, N, d = x.shape
    for f in prange(R * N):
        r = f // N
        stage_particle(x, xs, K, A, s, dt, r, f - r * N, sphere)


def advance_all(x, K, B, dt, scale, knoise, fine0, nfine, sphere, dw):
    R, N, d = x.shape
    for f in prange(R * N):
        r = f // N
        advance_particle(x, K, B, dt, r, f - r * N, scale, knoise[r], fine0, nfine, sphere, dw[r, f - r * N])


def save_state(x, traj, k):
    R, N, d = x.shape
    for f in prange(R * N):
        r = f // N
        i = f - r * N
        for c in range(d):
            traj[k, r, i, c] = x[r, i, c]


def run_batched(x, traj, nsteps, save_every, tau_steps, full, A, B, dt, scale, dt_last, scale_last, nfine, seed,
                bounds, batch_of_pos, nbuckets, params, coupling, sphere, project, work, K, xs, kt, sbuf, idx, bucket,
                u, hist, bstart):
    """Full or RBM-1 integration of R replicas; traj[0] = x0, then every save_every steps.

    The last step has length ``dt_last`` and noise scale ``scale_last``
    (``dt`` and ``scale`` unless t_end is not a whole number of steps).
    """
    R, N, d = x.shape
    S = B.shape[0]
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
        for s in range(S):
            if s == 0:
                force_all(x, idx, bounds, batch_of_pos, params, coupling, project, work, K[0], kt, sbuf)
            else:
                stage_all(x, xs, K, A, s, h, sphere)
                force_all(xs, idx, bounds, batch_of_pos, params, coupling, project, work, K[s], kt, sbuf)
        advance_all(x, K, B, h, sc, knoise, n * nfine, nfine, sphere, xs)
        if (n + 1) % save_every == 0 or n + 1 == nsteps:
            k += 1
            save_state(x, traj, k)


def run_rbmr(x, traj, nsteps, save_every, p, A, B, dt, scale, dt_last, scale_last, nfine, seed,
             params, coupling, sphere, project, work, K, xs, pool, clock):
    """RBM with replacement: per unit step, N/p sub-steps each advancing one random p-subset.

    A particle's Brownian increments are indexed by its own clock (how many
    times it has been advanced), so they remain a function of (seed,
    particle, step) as for the other methods.
    """
    R, N, d = x.shape
    S = B.shape[0]
    save_state(x, traj, 0)
    for r in prange(R):
        ksub = root_key(seed, r, STREAM_SUBSET)
        knoise = root_key(seed, r, STREAM_NOISE)
        xr = x[r]
        pr = pool[r]
        sub = 0
        k = 0
        for n in range(nsteps):
            h = dt if n + 1 < nsteps else dt_last
            sc = scale if n + 1 < nsteps else scale_last
            nsub = ((n + 1) * N) // p - (n * N) // p
            for _ in range(nsub):
                draw_subset(combine(ksub, sub), N, p, pr)
                sub += 1
                for s in range(S):
                    if s == 0:
                        st = xr
                    else:
                        for a in range(p):
                            stage_particle(x, xs, K, A, s, h, r, pr[a], sphere)
                        st = xs[r]
                    for a in range(p):
                        prepare_row(st[pr[a]], params, work[r, pr[a]])
                    for a in range(p):
                        i = pr[a]
                        member_force(st, pr, 0, p, a, params, coupling, work[r], K[s, r, i])
                        if project:
                            project_tangent(st[i], K[s, r, i])
                for a in range(p):
                    i = pr[a]
                    advance_particle(x, K, B, h, r, i, sc, knoise, clock[r, i] * nfine, nfine, sphere, xs[r, i])
                    clock[r, i] += 1
            if (n + 1) % save_every == 0 or n + 1 == nsteps:
                k += 1
                for i in range(N):
                    for c in range(d):
                        traj[k, r, i, c] = xr[i, c]


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
    base = N // nb
    extra = N - base * nb  # batches 0..extra-1 have base + 1 members
    W = xg.shape[0]
    total = R * nch
    small = base + 1 <= SMALL_BATCH
    for w in prange(W):
        for t in range(w * total // W, (w + 1) * total // W):
            r = t // nch
            b0 = (t - r * nch) * per_chunk
            b1 = min(nb, b0 + per_chunk)
            p0 = bounds[b0]
            e = min(b1, max(b0, extra))
            # small batches: at most two segments, the batches of size base + 1 then those of size
            # base; large batches: one segment per batch
            for g in range(2 if small else b1 - b0):
                if small:
                    s0 = b0 if g == 0 else e
                    nbat = e - b0 if g == 0 else b1 - e
                    m = base + 1 if g == 0 else base
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


def run_fast_fused(x, traj, nsteps, save_every, tau_steps, per_chunk, A, B, dt, scale, dt_last, scale_last, nfine,
                   seed, bounds,
                   nbuckets, params, coupling, xg, kg, sg, ip, kp, idx, bucket, u, hist, bstart):
    """``run_batched`` for RBM-1 on the built-in kernel systems (flat space), same results.

    Steps chunk by chunk (fused_step; scratch rows per worker).
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
        fused_step(x, idx, bounds, per_chunk, A, B, h, sc, knoise, n * nfine, nfine, c1, c2, coupling,
                   xg, kg, sg, ip, kp)
        if (n + 1) % save_every == 0 or n + 1 == nsteps:
            k += 1
            save_state(x, traj, k)


def run_fast_phased(x, traj, nsteps, save_every, tau_steps, full, A, B, dt, scale, dt_last, scale_last, nfine, seed,
                    bounds, nbuckets,
                    params, coupling, xg, kg, sg, ip, kp, idx, bucket, u, hist, bstart):
    """``run_batched`` for the full method (or RBM-1 with few batches) on the built-in kernel systems.

    Steps phase by phase (phased_step; scratch rows per replica). Two
    drivers rather than one keep the first compilation of each shorter.
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
        phased_step(x, idx, bounds, A, B, h, sc, knoise, n * nfine, nfine, c1, c2, coupling, xg, kg, sg, ip, kp)
        if (n + 1) % save_every == 0 or n + 1 == nsteps:
            k += 1
            save_state(x, traj, k)
