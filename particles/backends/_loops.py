"""Source of the compiled loops of the ``cpu`` backend (not imported as such).

These functions are plain Python; :mod:`particles.backends.cpu` compiles
them with ``numba.njit`` after binding the free names below. Binding them
per system family (and per user-defined system) is what lets one loop body
serve every system without a Python call per pair, while the built-in
systems keep an on-disk compilation cache.

Free names bound at compile time:
  ``kernel_fn``, ``drift_fn``        scalar kernel/drift of a kernel system
  ``prepare_row``, ``member_force``  the family's per-particle routines
  ``force_all``, ``stage_state``, ... the other functions of this module
  RNG and batch helpers from ``particles._rng`` / ``particles._batches``.

Array conventions: states ``x`` are (R, N, d) float64 (R replicas), the
per-replica permutations ``idx`` are (R, N) int64, the stage derivatives
``K`` are (S, R, N, d), ``work`` is (R, N, W) per-particle scratch (W = d
for kernel systems, 3d for attention: Qx, Kx, Vx).
"""
# ruff: noqa: F821  (names are bound by the compiler, see docstring)

import math

import numpy as np
from numba import prange

STREAM_NOISE = 1
STREAM_PERM = 2
STREAM_SUBSET = 3


# --- kernel family -------------------------------------------------------------
def kernel_prepare_row(x_row, params, work_row):
    return


def kernel_member_force(xr, idx, start, stop, a, params, coupling, work_r, out_row):
    i = idx[a]
    d = xr.shape[1]
    tmp = work_r[i]
    xi = xr[i]
    for c in range(d):
        out_row[c] = 0.0
    for b in range(start, stop):
        j = idx[b]
        if j != i:
            kernel_fn(xi, xr[j], params, tmp)
            for c in range(d):
                out_row[c] += tmp[c]
    m = stop - start
    if m > 1:
        w = coupling / (m - 1)
        for c in range(d):
            out_row[c] *= w
    drift_fn(xi, params, tmp)
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


def force_all(x, idx, bounds, batch_of_pos, params, coupling, sphere, work, out):
    """out[r, i] = force on particle i of replica r, batches given by idx/bounds."""
    R, N, d = x.shape
    for f in prange(R * N):
        r = f // N
        i = f - r * N
        prepare_row(x[r, i], params, work[r, i])
    for f in prange(R * N):
        r = f // N
        pos = f - r * N
        b = batch_of_pos[pos]
        i = idx[r, pos]
        member_force(x[r], idx[r], bounds[b], bounds[b + 1], pos, params, coupling, work[r], out[r, i])
        if sphere:
            project_tangent(x[r, i], out[r, i])


def build_perms(seed, m, nbuckets, idx, bucket, counts):
    R, N = idx.shape
    for r in prange(R):
        key = combine(root_key(seed, r, STREAM_PERM), m)
        build_permutation(key, N, nbuckets, idx[r], bucket[r], counts[r])


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


def run_batched(x, traj, nsteps, save_every, tau_steps, full, A, B, dt, scale, nfine, seed,
                bounds, batch_of_pos, nbuckets, params, coupling, sphere, work, K, xs, idx, bucket, counts):
    """Full or RBM-1 integration of R replicas; traj[0] = x0, then every save_every steps."""
    R, N, d = x.shape
    S = B.shape[0]
    knoise = np.empty(R, dtype=np.uint64)
    for r in range(R):
        knoise[r] = root_key(seed, r, STREAM_NOISE)
    save_state(x, traj, 0)
    k = 0
    for n in range(nsteps):
        if not full and n % tau_steps == 0:
            build_perms(seed, n // tau_steps, nbuckets, idx, bucket, counts)
        for s in range(S):
            if s == 0:
                force_all(x, idx, bounds, batch_of_pos, params, coupling, sphere, work, K[0])
            else:
                stage_all(x, xs, K, A, s, dt, sphere)
                force_all(xs, idx, bounds, batch_of_pos, params, coupling, sphere, work, K[s])
        advance_all(x, K, B, dt, scale, knoise, n * nfine, nfine, sphere, xs)
        if (n + 1) % save_every == 0 or n + 1 == nsteps:
            k += 1
            save_state(x, traj, k)


def run_rbmr(x, traj, nsteps, save_every, p, A, B, dt, scale, nfine, seed,
             params, coupling, sphere, work, K, xs, pool, clock):
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
            nsub = ((n + 1) * N) // p - (n * N) // p
            for _ in range(nsub):
                draw_subset(combine(ksub, sub), N, p, pr)
                sub += 1
                for s in range(S):
                    if s == 0:
                        st = xr
                    else:
                        for a in range(p):
                            stage_particle(x, xs, K, A, s, dt, r, pr[a], sphere)
                        st = xs[r]
                    for a in range(p):
                        prepare_row(st[pr[a]], params, work[r, pr[a]])
                    for a in range(p):
                        i = pr[a]
                        member_force(st, pr, 0, p, a, params, coupling, work[r], K[s, r, i])
                        if sphere:
                            project_tangent(st[i], K[s, r, i])
                for a in range(p):
                    i = pr[a]
                    advance_particle(x, K, B, dt, r, i, scale, knoise, clock[r, i] * nfine, nfine, sphere, xs[r, i])
                    clock[r, i] += 1
            if (n + 1) % save_every == 0 or n + 1 == nsteps:
                k += 1
                for i in range(N):
                    for c in range(d):
                        traj[k, r, i, c] = xr[i, c]
