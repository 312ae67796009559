"""Source of the fused ensemble kernel of the ``cpu`` backend (not imported as such).

Self-attention dynamics with Q = K = V = I of many independent small token
sets, ``method="full"``, no noise: the phase-diagram workload (R sets of n
tokens in d <= 32 span coordinates, hundreds of steps). The engine's general
path (:mod:`particles.backends._loops`) works phase by phase over all R*N
particles, with a libm ``exp`` per score that does not vectorise; here one
thread takes one token set at a time (sets handed out in chunks, see
``cpu.run``) and integrates it through every step while it is in cache:

- the state lives transposed, ``xt[c, i]`` (component-major, tokens padded
  to a multiple of 8 with zero columns), in per-set scratch, so that every
  inner loop runs unit-stride over the tokens and vectorises without
  re-association (``fastmath`` is off): the Gram matrix and the attention
  sums ``a[c, i] = sum_j xt[c, j] w[j, i]`` in 4 x 4 blocks
  (:func:`ens_gram`, :func:`ens_accumulate`), the scores and their
  exponentials, the projection and the update are axpy-form loops over i;
- ``exp`` is :func:`ens_exp_flat`, a branch-free exp in plain arithmetic that
  vectorises (libm's does not), accurate to about 1 ulp over the whole range;
- SA with the self term (beta >= 0, norms close: always on the sphere) uses
  one softmax shift for all tokens, beta max_i |x_i|^2, so that the weights
  are symmetric: the Gram matrix and the exps are computed on the upper
  triangle (blocks of 8) and the weights mirrored; otherwise (USA has no
  shift and is symmetric too) each token is shifted by its own maximum
  score, as the reference does; the softmax denominators come out of the
  attention sums as the sums of a row of ones (row d of ``xt``);
- each saved step is written straight into ``traj``.

Arithmetic: that of :func:`particles.backends.reference._batch_force` (SA:
shifted softmax; USA: ``coupling/(n-1)`` on the others, ``1 - coupling`` on
the self term) and of ``_loops.stage_particle`` / ``advance_particle`` (stages
not normalised, the step normalised on the sphere), with sums taken in a
different order (groups of four components or partners) and reciprocals
multiplied instead of divisions, so it agrees with the reference to rounding
(about 1e-15), not to the bit.

Free names bound at compile time (see ``cpu.ensemble_loops``): the other
functions of this module.
"""
# ruff: noqa: F821  (names are bound by the compiler, see docstring)

import math

import numpy as np
from numba import prange

from particles._layout import ATTN_BETA, ATTN_NORM, ATTN_SELF, ATTN_SOFTMAX

# exp(y) = 2^k e^r with k = round(y / ln 2), |r| <= ln(2)/2; ln 2 split in a high part with trailing zero bits
# (k * _LN2_HI is exact for |k| < 2^20) and a low part; e^r = 1 + r q(r), q(r) = (e^r - 1)/r to r^12 (error
# < 5e-18 on |r| <= 0.35). 2^k is built from its bits in two factors 2^k1 2^k2 (k1 = k >> 1), each a normal
# number for every k in [-1076, 1025], so that the subnormal range and overflow to inf come out right.
# The exp arguments are clamped to [_Y_LO, _Y_HI] (the result is 0 below and inf above either way).
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12 = (
    1.0 / math.factorial(k + 1) for k in range(13))
_Y_LO = -746.0  # exp(-746) rounds to 0
_Y_HI = 710.0  # exp(710) overflows to inf

SYM_MIN_D = 8  # below this many components the mirrored half-Gram costs more than it saves
SHIFT_SPAN = 600.0  # one softmax shift for all tokens when their own scores differ by less (see ens_forces)


def ens_exp_flat(y, L, scale, shift):
    """y[i] = exp(scale * y[i] - shift) for i < L (a 1-D array), in place.

    Branch-free so that it vectorises: the exponent bits of 2^k are made as
    an int64 and reinterpreted (a scalar ``view``, a no-op in the compiled
    code). Relative error <= 1 ulp (2.2e-16 measured on [-708, 709]), 5e-324
    absolute in the subnormal range; NaN stays NaN (through the
    polynomial), +-inf is clamped to exp(710) = inf and exp(-746) = 0
    (exactly 0: 2^-1076 e^r rounds to 0).
    """
    for i in range(L):
        v = scale * y[i] - shift
        v = _Y_LO if v < _Y_LO else v  # written so that NaN passes (every comparison with NaN is False)
        v = _Y_HI if v > _Y_HI else v
        kf = math.floor(v * _LOG2E + 0.5)
        r = (v - kf * _LN2_HI) - kf * _LN2_LO
        # Estrin's scheme: short dependency chains (the loop is latency-bound with Horner's)
        r2 = r * r
        r4 = r2 * r2
        r8 = r4 * r4
        q03 = (_E0 + _E1 * r) + (_E2 + _E3 * r) * r2
        q47 = (_E4 + _E5 * r) + (_E6 + _E7 * r) * r2
        q811 = (_E8 + _E9 * r) + (_E10 + _E11 * r) * r2
        q = (q03 + q47 * r4) + (q811 + _E12 * r4) * r8
        k = np.int64(kf)
        k1 = k >> 1
        p1 = np.int64((k1 + 1023) << 52).view(np.float64)
        p2 = np.int64((k - k1 + 1023) << 52).view(np.float64)
        y[i] = ((1.0 + r * q) * p1) * p2


def ens_gram(xt, n, n8, d, g, mirror):
    """g[j, i] = <x_j, x_i> for j < n, i < n8 (x given transposed, xt[c, i], n8 padded columns).

    Rows in blocks of 4 and components in groups of 4 (16 products per
    vector step of the inner loop over i, which amortises the loop set-up and
    its runtime alias checks); each sum is taken in groups of four components.
    With ``sym``, a block of rows starts at the multiple of 8 at or below its
    first row (row j holds columns from (j // 8) * 8 on), and the lower
    triangle left is mirrored when ``mirror``.
    """
    sym = not mirror or d >= SYM_MIN_D
    j = 0
    while j < n:
        rows = 4 if j + 3 < n else 1
        i0 = (j // 8) * 8 if sym else 0
        L = n8 - i0
        g0 = g[j, i0:n8]
        g1 = g[j + (1 if rows == 4 else 0), i0:n8]
        g2 = g[j + (2 if rows == 4 else 0), i0:n8]
        g3 = g[j + (3 if rows == 4 else 0), i0:n8]
        for i in range(L):
            g0[i] = 0.0
        if rows == 4:
            for i in range(L):
                g1[i] = 0.0
                g2[i] = 0.0
                g3[i] = 0.0
        c = 0
        while c < d:
            comps = 4 if c + 3 < d else 1
            r0 = xt[c, i0:n8]
            if rows == 4 and comps == 4:
                r1 = xt[c + 1, i0:n8]
                r2 = xt[c + 2, i0:n8]
                r3 = xt[c + 3, i0:n8]
                a00, a01, a02, a03 = xt[c, j], xt[c + 1, j], xt[c + 2, j], xt[c + 3, j]
                a10, a11, a12, a13 = xt[c, j + 1], xt[c + 1, j + 1], xt[c + 2, j + 1], xt[c + 3, j + 1]
                a20, a21, a22, a23 = xt[c, j + 2], xt[c + 1, j + 2], xt[c + 2, j + 2], xt[c + 3, j + 2]
                a30, a31, a32, a33 = xt[c, j + 3], xt[c + 1, j + 3], xt[c + 2, j + 3], xt[c + 3, j + 3]
                for i in range(L):
                    u0 = r0[i]
                    u1 = r1[i]
                    u2 = r2[i]
                    u3 = r3[i]
                    g0[i] += (a00 * u0 + a01 * u1) + (a02 * u2 + a03 * u3)
                    g1[i] += (a10 * u0 + a11 * u1) + (a12 * u2 + a13 * u3)
                    g2[i] += (a20 * u0 + a21 * u1) + (a22 * u2 + a23 * u3)
                    g3[i] += (a30 * u0 + a31 * u1) + (a32 * u2 + a33 * u3)
            elif rows == 4:
                a0, a1, a2, a3 = xt[c, j], xt[c, j + 1], xt[c, j + 2], xt[c, j + 3]
                for i in range(L):
                    u0 = r0[i]
                    g0[i] += a0 * u0
                    g1[i] += a1 * u0
                    g2[i] += a2 * u0
                    g3[i] += a3 * u0
            elif comps == 4:
                r1 = xt[c + 1, i0:n8]
                r2 = xt[c + 2, i0:n8]
                r3 = xt[c + 3, i0:n8]
                a00, a01, a02, a03 = xt[c, j], xt[c + 1, j], xt[c + 2, j], xt[c + 3, j]
                for i in range(L):
                    g0[i] += (a00 * r0[i] + a01 * r1[i]) + (a02 * r2[i] + a03 * r3[i])
            else:
                a0 = xt[c, j]
                for i in range(L):
                    g0[i] += a0 * r0[i]
            c += comps
        j += rows
    if sym and mirror:
        for j in range(n):
            for i in range((j // 8) * 8):  # the start of row j's block: row i < that start reached column j
                g[j, i] = g[i, j]


def ens_accumulate(xt, n, n8, d1, g, ft):
    """ft[c, i] = sum_{j < n} xt[c, j] g[j, i] for c < d1, i < n8.

    Components in blocks of 4 and partners in groups of 4 (16 products per
    vector step of the inner loop over i); each sum is taken in groups of
    four partners.
    """
    c = 0
    while c < d1:
        comps = 4 if c + 3 < d1 else 1
        f0 = ft[c]
        f1 = ft[c + (1 if comps == 4 else 0)]
        f2 = ft[c + (2 if comps == 4 else 0)]
        f3 = ft[c + (3 if comps == 4 else 0)]
        for i in range(n8):
            f0[i] = 0.0
        if comps == 4:
            for i in range(n8):
                f1[i] = 0.0
                f2[i] = 0.0
                f3[i] = 0.0
        j = 0
        while j < n:
            parts = 4 if j + 3 < n else 1
            w0 = g[j]
            if comps == 4 and parts == 4:
                w1 = g[j + 1]
                w2 = g[j + 2]
                w3 = g[j + 3]
                a00, a01, a02, a03 = xt[c, j], xt[c, j + 1], xt[c, j + 2], xt[c, j + 3]
                a10, a11, a12, a13 = xt[c + 1, j], xt[c + 1, j + 1], xt[c + 1, j + 2], xt[c + 1, j + 3]
                a20, a21, a22, a23 = xt[c + 2, j], xt[c + 2, j + 1], xt[c + 2, j + 2], xt[c + 2, j + 3]
                a30, a31, a32, a33 = xt[c + 3, j], xt[c + 3, j + 1], xt[c + 3, j + 2], xt[c + 3, j + 3]
                for i in range(n8):
                    u0 = w0[i]
                    u1 = w1[i]
                    u2 = w2[i]
                    u3 = w3[i]
                    f0[i] += (a00 * u0 + a01 * u1) + (a02 * u2 + a03 * u3)
                    f1[i] += (a10 * u0 + a11 * u1) + (a12 * u2 + a13 * u3)
                    f2[i] += (a20 * u0 + a21 * u1) + (a22 * u2 + a23 * u3)
                    f3[i] += (a30 * u0 + a31 * u1) + (a32 * u2 + a33 * u3)
            elif comps == 4:
                a0, a1, a2, a3 = xt[c, j], xt[c + 1, j], xt[c + 2, j], xt[c + 3, j]
                for i in range(n8):
                    u0 = w0[i]
                    f0[i] += a0 * u0
                    f1[i] += a1 * u0
                    f2[i] += a2 * u0
                    f3[i] += a3 * u0
            elif parts == 4:
                w1 = g[j + 1]
                w2 = g[j + 2]
                w3 = g[j + 3]
                a0, a1, a2, a3 = xt[c, j], xt[c, j + 1], xt[c, j + 2], xt[c, j + 3]
                for i in range(n8):
                    f0[i] += (a0 * w0[i] + a1 * w1[i]) + (a2 * w2[i] + a3 * w3[i])
            else:
                a0 = xt[c, j]
                for i in range(n8):
                    f0[i] += a0 * w0[i]
            j += parts
        c += comps


def ens_forces(xt, ft, n, n8, d, beta, softmax, include_self, coupling, project, g, m, dg):
    """ft[c, i] = attention force on token i of the set xt, for c < d, i < n8.

    ``xt`` (d + 1, n8): the tokens component-major, row d all ones on the n
    tokens (so that the accumulation also gives the softmax denominators, in
    row d of ``ft``), zero on the padding columns n..n8-1 (queries whose
    results are not used; never partners).
    SA: softmax_j(beta <x_i, x_j>) x_j (j = i kept when ``include_self``);
    USA: coupling/(n-1) sum_{j != i} e^{beta <x_i, x_j>} x_j + (1 - coupling) e^{beta |x_i|^2} x_i
    (the self term only when ``include_self``). Projected on the tangent space of x_i when ``project``.
    ``g`` (n, n8) holds the scores then the weights, g[j, i] = weight of partner j for token i.
    """
    # SA with the self term and beta >= 0: by Cauchy-Schwarz every score is at most M = beta max_i |x_i|^2, and
    # token i's own score is beta |x_i|^2, so one shift M for all tokens (exact for a softmax) keeps every
    # exponent <= 0 and every token's largest weight >= e^-SHIFT_SPAN (a normal number, full precision) when
    # the norms are close (always on the sphere): the weights are then symmetric, exp(beta g - M) of the upper
    # triangle only, mirrored. USA has no shift: symmetric too. Otherwise each token has its own shift (its
    # largest score), as the reference does.
    sym_w = not softmax
    shift = 0.0
    if softmax and include_self and beta >= 0.0:
        ens_gram(xt, n, n8, d, g, False)
        lo = np.inf
        hi = -np.inf
        for i in range(n):
            v = g[i, i]
            lo = v if v < lo else lo
            hi = v if v > hi else hi
        if beta * (hi - lo) < SHIFT_SPAN:
            sym_w = True
            shift = beta * hi
        else:
            for j in range(n):
                for i in range((j // 8) * 8):
                    g[j, i] = g[i, j]
    else:
        ens_gram(xt, n, n8, d, g, not sym_w)
    if sym_w:
        # rows in groups of 8 from the group's first column on: one call per group (the lower parts of the
        # group's later rows are computed too, then overwritten by the mirror)
        gf = g.reshape(n * n8)
        for j0 in range(0, n, 8):
            lo = j0 * n8 + j0
            hi = min(j0 + 8, n) * n8
            ens_exp_flat(gf[lo:hi], hi - lo, beta, shift)
        for j in range(n):
            for i in range((j // 8) * 8):
                g[j, i] = g[i, j]
        if not softmax:
            for i in range(n):
                dg[i] = (1.0 - coupling) * g[i, i] if include_self else 0.0
                g[i, i] = 0.0
    else:
        gf = g.reshape(n * n8)
        for q in range(n * n8):
            gf[q] *= beta
        if not include_self:
            for i in range(n):
                g[i, i] = -np.inf
        for i in range(n8):
            m[i] = -np.inf
        for j in range(n):
            gj = g[j]
            for i in range(n8):
                v = gj[i]
                m[i] = v if v > m[i] else m[i]
        for j in range(n):
            gj = g[j]
            for i in range(n8):
                gj[i] -= m[i]
        ens_exp_flat(gf, n * n8, 1.0, 0.0)  # exp(-inf) is exactly 0
    ens_accumulate(xt, n, n8, d + 1 if softmax else d, g, ft)
    pr = m
    for i in range(n8):
        pr[i] = 0.0
    if softmax:
        den = ft[d]
        inv = dg
        for i in range(n8):
            inv[i] = 1.0 / den[i]
        for c in range(d):
            fc = ft[c]
            xc = xt[c]
            if project:
                for i in range(n8):
                    v = fc[i] * inv[i]
                    fc[i] = v
                    pr[i] += xc[i] * v
            else:
                for i in range(n8):
                    fc[i] *= inv[i]
    else:
        w = coupling / (n - 1) if n > 1 else 0.0
        for c in range(d):
            fc = ft[c]
            xc = xt[c]
            for i in range(n8):
                v = w * fc[i] + dg[i] * xc[i]
                fc[i] = v
                pr[i] += xc[i] * v
    if project:
        for c in range(d):
            fc = ft[c]
            xc = xt[c]
            for i in range(n8):
                fc[i] -= pr[i] * xc[i]


def ens_save(xt, n, d, dst):
    """dst[i, c] = xt[c, i]."""
    for i in range(n):
        for c in range(d):
            dst[i, c] = xt[c, i]


def run_ensemble(x, traj, nsteps, save_every, A, B, dt, dt_last, params, coupling, sphere, project):
    """Integrate the R token sets of ``x`` (R, n, d) in place; traj[0] = x0, then every save_every steps.

    Each set is integrated by one thread through all ``nsteps`` steps (the
    last of length ``dt_last``), with its own scratch (a few kB, allocated
    once per set). ``project``: the forces are projected on the tangent space
    (False for the ambient Euler step); ``sphere``: each step ends with a
    normalisation. The tokens are padded to n8, a multiple of 8 (the
    vector width), with zero columns (the updates touch only the n tokens, so
    they stay zero).
    """
    R, n, d = x.shape
    n8 = -(-n // 8) * 8
    S = B.shape[0]
    beta = params[ATTN_BETA]
    softmax = params[ATTN_NORM] == ATTN_SOFTMAX
    include_self = params[ATTN_SELF] != 0.0
    for r in prange(R):  # the caller sets Numba's parallel chunk size: sets are handed out as threads free up
        xt = np.zeros((d + 1, n8))
        xs = np.zeros((d + 1, n8))
        kst = np.zeros((S, d + 1, n8))
        g = np.empty((n, n8))
        m = np.empty(n8)
        dg = np.zeros(n8)  # zeros: USA leaves the padding columns of the self weights unset
        nrm = np.empty(n8)
        for i in range(n):
            xt[d, i] = 1.0
            xs[d, i] = 1.0
        xr = x[r]
        for c in range(d):
            for i in range(n):
                xt[c, i] = xr[i, c]
        ens_save(xt, n, d, traj[0, r])
        k = 0
        for step in range(nsteps):
            h = dt if step + 1 < nsteps else dt_last
            for s in range(S):
                if s == 0:
                    ens_forces(xt, kst[0], n, n8, d, beta, softmax, include_self, coupling, project,
                               g, m, dg)
                else:
                    for c in range(d):
                        for i in range(n):
                            acc = 0.0
                            for q in range(s):
                                acc += A[s, q] * kst[q, c, i]
                            xs[c, i] = xt[c, i] + h * acc
                    ens_forces(xs, kst[s], n, n8, d, beta, softmax, include_self, coupling, project,
                               g, m, dg)
            for i in range(n8):
                nrm[i] = 0.0
            for c in range(d):
                xc = xt[c]
                if S == 1:
                    k0 = kst[0, c]
                    b0 = B[0]
                    for i in range(n):
                        v = xc[i] + h * (b0 * k0[i])
                        xc[i] = v
                        nrm[i] += v * v
                else:
                    for i in range(n):
                        acc = 0.0
                        for s in range(S):
                            acc += B[s] * kst[s, c, i]
                        v = xc[i] + h * acc
                        xc[i] = v
                        nrm[i] += v * v
            if sphere:
                for i in range(n):
                    nrm[i] = 1.0 / math.sqrt(nrm[i])
                for c in range(d):
                    xc = xt[c]
                    for i in range(n):
                        xc[i] *= nrm[i]
            if (step + 1) % save_every == 0 or step + 1 == nsteps:
                k += 1
                ens_save(xt, n, d, traj[k, r])
        for c in range(d):
            for i in range(n):
                xr[i, c] = xt[c, i]
