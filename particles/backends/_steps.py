"""Steppers of the ``cpu`` loops: noise, Runge-Kutta stages, the update, the integration drivers.

Source compiled by :mod:`particles.backends.cpu` (see ``_loops``); the
per-particle routines (``particle_noise``, ``stage_particle``,
``advance_particle``) are also compiled for the ``cuda`` kernels.
:func:`run_batched` integrates with ``full`` or ``rbm1`` and
:func:`run_rbmr` with RBM-r, both through ``force_all`` / ``member_force``
(``_forces``) and ``build_perms`` (``_perms``); :func:`lone_force` gives the
lone particle of ``remainder="pad"`` its widened batch.
"""
# ruff: noqa: F821  (names are bound by the compiler)

import numpy as np
from numba import prange

from particles._rng import STREAM_NOISE, STREAM_SUBSET


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


def lone_force(x, idx, lone, params, coupling, project, work, out):
    """out[r, i] for the particle i at position ``lone`` of every replica, its batch widened to all N positions.

    The lone particle of ``remainder="pad"`` (a batch of one): called after
    ``force_all``, which prepared ``work`` for every particle (and gave the
    lone one a batch of one, overwritten here).
    """
    R, N, d = x.shape
    for r in prange(R):
        i = idx[r, lone]
        member_force(x[r], idx[r], 0, N, lone, params, coupling, work[r], out[r, i])
        if project:
            project_tangent(x[r, i], out[r, i])


def run_batched(x, traj, nsteps, save_every, tau_steps, full, A, B, dt, scale, dt_last, scale_last, nfine, seed,
                bounds, batch_of_pos, lone, nbuckets, params, coupling, sphere, project, work, K, xs, kt, sbuf, idx,
                bucket, u, hist, bstart):
    """Full or RBM-1 integration of R replicas; traj[0] = x0, then every save_every steps.

    The last step has length ``dt_last`` and noise scale ``scale_last``
    (``dt`` and ``scale`` unless t_end is not a whole number of steps).
    ``lone``: the position of the permutation whose batch is widened to all
    N (a lone particle), or -1.
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
                if lone >= 0:
                    lone_force(x, idx, lone, params, coupling, project, work, K[0])
            else:
                stage_all(x, xs, K, A, s, h, sphere)
                force_all(xs, idx, bounds, batch_of_pos, params, coupling, project, work, K[s], kt, sbuf)
                if lone >= 0:
                    lone_force(xs, idx, lone, params, coupling, project, work, K[s])
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

