"""Source of the fused ensemble kernel of the ``cpu`` backend (not imported as such).

Self-attention dynamics with Q = K = V = I of many independent small token
sets, ``method="full"``, no noise: the phase-diagram workload (R sets of n
tokens in d <= 32 span coordinates, hundreds of steps). The engine's general
path (:mod:`particles.backends._loops`) works phase by phase over all R*N
particles, with a libm ``exp`` per score that does not vectorise; here one
worker takes a contiguous range of token sets and integrates each set
through every step while it is in cache:

- the state lives transposed, ``xt[c, i]`` (component-major), in per-worker
  scratch, so that every inner loop runs unit-stride over the n tokens and
  vectorises without re-association (``fastmath`` is off): the Gram matrix
  (only its upper triangle, mirrored: it is symmetric), the scores and their
  exponentials, the attention sums ``a[c, i] = sum_j w[j, i] xt[c, j]``, the
  projection and the update are all axpy-form loops over i;
- ``exp`` is :func:`ens_exp_row`, a branch-free exp in plain arithmetic that
  vectorises (libm's does not), accurate to about 1 ulp over the whole range;
- the softmax of token i is shifted by its own row maximum (an elementwise
  max over rows of the symmetric score matrix, so no reduction either), as
  the reference does;
- each saved step is written straight into ``traj``.

Arithmetic: that of :func:`particles.backends.reference._batch_force` (SA:
shifted softmax; USA: ``coupling/(n-1)`` on the others, ``1 - coupling`` on
the self term) and of ``_loops.stage_particle`` / ``advance_particle`` (stages
not normalised, the step normalised on the sphere), with sums taken in a
different order (pairs of Gram components, groups of four partners), so it
agrees with the reference to rounding, not to the bit.

Free names bound at compile time (see ``cpu._ensemble_loops``): the other
functions of this module.
"""
# ruff: noqa: F821  (names are bound by the compiler, see docstring)

import math

import numpy as np
from numba import prange

# exp(y) = 2^k e^r with k = round(y / ln 2), |r| <= ln(2)/2; ln 2 split in a high part with trailing zero bits
# (k * _LN2_HI is exact for |k| < 2^20) and a low part; e^r = 1 + r q(r), q(r) = (e^r - 1)/r to r^13 (error
# < 3e-19 on |r| <= 0.35). 2^k is built from its bits in two factors 2^k1 2^k2 (k1 = k >> 1), each a normal
# number for every k in [-1076, 1025], so that the subnormal range and overflow to inf come out right.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13 = (
    1.0 / math.factorial(k + 1) for k in range(14))
_Y_LO = -746.0  # exp(-746) rounds to 0
_Y_HI = 710.0  # exp(710) overflows to inf

SYM_MIN_D = 10**9  # below this many components the mirrored half-Gram costs more than it saves


def ens_exp_row(y, shift, n, out, acc, p, b1, b2, f1, f2):
    """out[i] = exp(y[i] - shift[i]) and acc[i] += out[i], for i < n.

    ``p`` float64 scratch, ``b1``/``b2`` int64 scratch viewed as ``f1``/``f2``.
    Two passes, both branch-free so that they vectorise: the polynomial (into
    ``p``) and the exponent bits, then the product (``out`` may be ``y``: the
    first pass writes only scratch, so that no runtime alias check sends it
    to the scalar loop). NaN stays NaN (through the polynomial), +-inf is
    clamped to exp(710) = inf and exp(-746) = 0 (exactly 0: 2^-1076 e^r
    rounds to 0).
    """
    for i in range(n):
        v = y[i] - shift[i]
        v = v if v > _Y_LO else _Y_LO
        v = v if v < _Y_HI else _Y_HI
        kf = math.floor(v * _LOG2E + 0.5)
        r = (v - kf * _LN2_HI) - kf * _LN2_LO
        q = _E13
        q = q * r + _E12
        q = q * r + _E11
        q = q * r + _E10
        q = q * r + _E9
        q = q * r + _E8
        q = q * r + _E7
        q = q * r + _E6
        q = q * r + _E5
        q = q * r + _E4
        q = q * r + _E3
        q = q * r + _E2
        q = q * r + _E1
        q = q * r + _E0
        k = np.int64(kf)
        k1 = k >> 1
        b1[i] = (k1 + 1023) << 52
        b2[i] = (k - k1 + 1023) << 52
        p[i] = 1.0 + r * q
    for i in range(n):
        e = (p[i] * f1[i]) * f2[i]
        out[i] = e
        acc[i] += e


def ens_gram(xt, n, d, g):
    """g[j, i] = <x_j, x_i> (x given transposed, xt[c, i]); components summed four at a time.

    From ``SYM_MIN_D`` components on, only i >= j is computed, then mirrored.
    The inner loops run over slices from 0 (a loop index that Numba cannot
    prove non-negative keeps its wraparound select, which blocks vectorisation).
    """
    sym = d >= SYM_MIN_D
    for j in range(n):
        i0 = j if sym else 0
        gj = g[j, i0:n]
        L = n - i0
        for i in range(L):
            gj[i] = 0.0
        c = 0
        while c + 3 < d:
            a0 = xt[c, j]
            a1 = xt[c + 1, j]
            a2 = xt[c + 2, j]
            a3 = xt[c + 3, j]
            r0 = xt[c, i0:n]
            r1 = xt[c + 1, i0:n]
            r2 = xt[c + 2, i0:n]
            r3 = xt[c + 3, i0:n]
            for i in range(L):
                gj[i] += (a0 * r0[i] + a1 * r1[i]) + (a2 * r2[i] + a3 * r3[i])
            c += 4
        while c < d:
            a0 = xt[c, j]
            r0 = xt[c, i0:n]
            for i in range(L):
                gj[i] += a0 * r0[i]
            c += 1
    if sym:
        for j in range(n):
            for i in range(j):
                g[j, i] = g[i, j]


def ens_forces(xt, ft, n, d, beta, softmax, include_self, coupling, project, g, m, den, dg, ep, b1, b2, f1, f2):
    """ft[c, i] = attention force on token i of the set xt (both (d, n), component-major).

    SA: softmax_j(beta <x_i, x_j>) x_j (j = i kept when ``include_self``);
    USA: coupling/(n-1) sum_{j != i} e^{beta <x_i, x_j>} x_j + (1 - coupling) e^{beta |x_i|^2} x_i
    (the self term only when ``include_self``). Projected on the tangent space of x_i when ``project``.
    ``g`` (n, n) holds the scores then the weights, w[j, i] = weight of partner j for token i.
    """
    ens_gram(xt, n, d, g)
    for i in range(n):
        den[i] = 0.0
    if softmax:
        for i in range(n):
            m[i] = -np.inf
        for j in range(n):
            gj = g[j]
            if include_self:
                for i in range(n):
                    v = gj[i] * beta
                    gj[i] = v
                    m[i] = v if v > m[i] else m[i]
            else:
                for i in range(n):
                    gj[i] *= beta
                gj[j] = -np.inf  # after the product: -inf * beta is +inf or nan for beta <= 0
                for i in range(n):
                    v = gj[i]
                    m[i] = v if v > m[i] else m[i]
        for j in range(n):
            gj = g[j]
            ens_exp_row(gj, m, n, gj, den, ep, b1, b2, f1, f2)  # exp(-inf) is 0: den is right
    else:
        for i in range(n):
            m[i] = 0.0
        for j in range(n):
            gj = g[j]
            for i in range(n):
                gj[i] *= beta
            ens_exp_row(gj, m, n, gj, den, ep, b1, b2, f1, f2)
        for i in range(n):
            dg[i] = (1.0 - coupling) * g[i, i] if include_self else 0.0
            g[i, i] = 0.0
    for c in range(d):
        fc = ft[c]
        xc = xt[c]
        for i in range(n):
            fc[i] = 0.0
        j = 0
        while j + 3 < n:
            x0 = xc[j]
            x1 = xc[j + 1]
            x2 = xc[j + 2]
            x3 = xc[j + 3]
            w0 = g[j]
            w1 = g[j + 1]
            w2 = g[j + 2]
            w3 = g[j + 3]
            for i in range(n):
                fc[i] += (x0 * w0[i] + x1 * w1[i]) + (x2 * w2[i] + x3 * w3[i])
            j += 4
        while j < n:
            x0 = xc[j]
            w0 = g[j]
            for i in range(n):
                fc[i] += x0 * w0[i]
            j += 1
    if softmax:
        for c in range(d):
            fc = ft[c]
            for i in range(n):
                fc[i] /= den[i]
    else:
        w = coupling / (n - 1) if n > 1 else 0.0
        for c in range(d):
            fc = ft[c]
            xc = xt[c]
            for i in range(n):
                fc[i] = w * fc[i] + dg[i] * xc[i]
    if project:
        for i in range(n):
            den[i] = 0.0
        for c in range(d):
            fc = ft[c]
            xc = xt[c]
            for i in range(n):
                den[i] += xc[i] * fc[i]
        for c in range(d):
            fc = ft[c]
            xc = xt[c]
            for i in range(n):
                fc[i] -= den[i] * xc[i]


def ens_save(xt, n, d, dst):
    """dst[i, c] = xt[c, i]."""
    for i in range(n):
        for c in range(d):
            dst[i, c] = xt[c, i]


def run_ensemble(x, traj, nsteps, save_every, A, B, dt, params, coupling, sphere, project, workers):
    """Integrate the R token sets of ``x`` (R, n, d) in place; traj[0] = x0, then every save_every steps.

    Worker w integrates sets w*R//W .. (w+1)*R//W - 1 one after the other,
    each through all ``nsteps`` steps, with its own scratch.
    """
    R, n, d = x.shape
    S = B.shape[0]
    beta = params[0]
    softmax = params[1] == 0.0
    include_self = params[2] != 0.0
    for w in prange(workers):
        xt = np.empty((d, n))
        xs = np.empty((d, n))
        kst = np.empty((S, d, n))
        g = np.empty((n, n))
        m = np.empty(n)
        den = np.empty(n)
        dg = np.empty(n)
        ep = np.empty(n)
        b1 = np.empty(n, dtype=np.int64)
        b2 = np.empty(n, dtype=np.int64)
        f1 = b1.view(np.float64)
        f2 = b2.view(np.float64)
        for r in range(w * R // workers, (w + 1) * R // workers):
            xr = x[r]
            for c in range(d):
                for i in range(n):
                    xt[c, i] = xr[i, c]
            ens_save(xt, n, d, traj[0, r])
            k = 0
            for step in range(nsteps):
                for s in range(S):
                    if s == 0:
                        ens_forces(xt, kst[0], n, d, beta, softmax, include_self, coupling, project,
                                   g, m, den, dg, ep, b1, b2, f1, f2)
                    else:
                        for c in range(d):
                            for i in range(n):
                                acc = 0.0
                                for q in range(s):
                                    acc += A[s, q] * kst[q, c, i]
                                xs[c, i] = xt[c, i] + dt * acc
                        ens_forces(xs, kst[s], n, d, beta, softmax, include_self, coupling, project,
                                   g, m, den, dg, ep, b1, b2, f1, f2)
                for c in range(d):
                    xc = xt[c]
                    for i in range(n):
                        acc = 0.0
                        for s in range(S):
                            acc += B[s] * kst[s, c, i]
                        xc[i] += dt * acc
                if sphere:
                    for i in range(n):
                        den[i] = 0.0
                    for c in range(d):
                        xc = xt[c]
                        for i in range(n):
                            den[i] += xc[i] * xc[i]
                    for i in range(n):
                        den[i] = math.sqrt(den[i])
                    for c in range(d):
                        xc = xt[c]
                        for i in range(n):
                            xc[i] /= den[i]
                if (step + 1) % save_every == 0 or step + 1 == nsteps:
                    k += 1
                    ens_save(xt, n, d, traj[k, r])
            for c in range(d):
                for i in range(n):
                    xr[i, c] = xt[c, i]
