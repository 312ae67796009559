"""Forces of the ``cpu`` loops (source compiled by :mod:`particles.backends.cpu`, see ``_loops``).

The per-particle force routines of the two families -- a kernel system's
batch sum (T1) and the attention forces (T19 / T20), per member or in tiles
of members sharing a block of partners' keys -- and :func:`force_all`, the
force on every particle of every replica for one partition. Also compiled
for the ``cuda`` kernels: ``attn_prepare_row``, ``attn_head_force``, ``attn_member_force``,
``kernel_prepare_row``, ``project_tangent``, ``normalise``.

Free names bound at compile time: ``kernel_fn``, ``drift_fn``,
``prepare_row``, ``member_force``, ``HAS_PREPARE``, ``TRANSPOSED_KEYS`` and
``softmax_step`` (:mod:`particles.device`).
"""
# ruff: noqa: F821  (names are bound by the compiler, see docstring)

import math

import numpy as np
from numba import prange

from particles._layout import (
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
# params: the attention layout of particles._layout. work_row of particle i holds, per head h, (Q_h x_i, K_h x_i,
# W_h V_h x_i) at 3 d h: the output map is applied to the values once per particle (W_h sum_j w_ij V_h x_j is
# sum_j w_ij W_h V_h x_j), so that a head's force is the one-head force read at another offset. The heads form
# also keeps a d-vector at 3 d H in which each head's output is formed before it is added to the others.
def attn_prepare_row(x_row, params, work_row):
    d = x_row.shape[0]
    if params[ATTN_IDENTITY] == 1.0:
        for c in range(d):
            work_row[c] = x_row[c]
            work_row[d + c] = x_row[c]
            work_row[2 * d + c] = x_row[c]
    elif params[ATTN_IDENTITY] == ATTN_FORM_HEADS:
        H = int(params[ATTN_HEADS])
        dd = d * d
        vx = work_row[3 * d * H:3 * d * H + d]
        for h in range(H):
            base = ATTN_HEAD_BLOCKS + 4 * dd * h
            o = 3 * d * h
            for m in range(3):  # Q_h x and K_h x into place, V_h x into the head scratch
                mb = base + m * dd
                for row in range(d):
                    s = 0.0
                    for c in range(d):
                        s += params[mb + row * d + c] * x_row[c]
                    if m < 2:
                        work_row[o + m * d + row] = s
                    else:
                        vx[row] = s
            wb = base + 3 * dd
            for row in range(d):
                s = 0.0
                for c in range(d):
                    s += params[wb + row * d + c] * vx[c]
                work_row[o + 2 * d + row] = s
    else:
        for m in range(3):
            base = ATTN_QKV + m * d * d
            for row in range(d):
                s = 0.0
                for c in range(d):
                    s += params[base + row * d + c] * x_row[c]
                work_row[m * d + row] = s


def attn_head_force(xr, idx, start, stop, a, params, coupling, work_r, o, out_row):
    """One head's force on the member at position ``a``: its Q x, K x, V x at offset ``o`` of the work rows."""
    i = idx[a]
    d = xr.shape[1]
    beta = params[ATTN_BETA]
    wi = work_r[i]
    for c in range(d):
        out_row[c] = 0.0
    if params[ATTN_NORM] == ATTN_SOFTMAX:
        # softmax over the batch (T19 / T18), online max-subtraction (particles.device)
        mx = -np.inf
        den = 0.0
        for b in range(start, stop):
            j = idx[b]
            if j == i and params[ATTN_SELF] == 0.0:
                continue
            wj = work_r[j]
            s = 0.0
            for c in range(d):
                s += wi[o + c] * wj[o + d + c]
            mx, den = softmax_step(s * beta, mx, den, out_row, wj[o + 2 * d:o + 3 * d], d)
        for c in range(d):
            out_row[c] /= den
    else:
        # unnormalised (T20): self/N exactly (dropped without self), others with weight c_N/(|C|-1)
        m = stop - start
        for b in range(start, stop):
            j = idx[b]
            if j != i:
                wj = work_r[j]
                s = 0.0
                for c in range(d):
                    s += wi[o + c] * wj[o + d + c]
                e = math.exp(beta * s)
                for c in range(d):
                    out_row[c] += e * wj[o + 2 * d + c]
        w = coupling / (m - 1) if m > 1 else 0.0
        s = 0.0
        for c in range(d):
            s += wi[o + c] * wi[o + d + c]
        e = (1.0 - coupling) * math.exp(beta * s) if params[ATTN_SELF] != 0.0 else 0.0
        for c in range(d):
            out_row[c] = w * out_row[c] + e * wi[o + 2 * d + c]


def attn_member_force(xr, idx, start, stop, a, params, coupling, work_r, out_row):
    if params[ATTN_IDENTITY] != ATTN_FORM_HEADS:
        attn_head_force(xr, idx, start, stop, a, params, coupling, work_r, 0, out_row)
        return
    # sum_h W_h A_h(x_i): every head over the same batch, each formed in the scratch of particle i, then added
    d = xr.shape[1]
    H = int(params[ATTN_HEADS])
    acc = work_r[idx[a], 3 * d * H:3 * d * H + d]
    for c in range(d):
        out_row[c] = 0.0
    for h in range(H):
        attn_head_force(xr, idx, start, stop, a, params, coupling, work_r, 3 * d * h, acc)
        for c in range(d):
            out_row[c] += acc[c]


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
    beta = params[ATTN_BETA]
    softmax = params[ATTN_NORM] == ATTN_SOFTMAX
    skip_self = params[ATTN_SELF] == 0.0
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
                    # softmax over the batch (T19 / T18), online max-subtraction (particles.device)
                    if j == i and skip_self:
                        continue
                    mx, den = softmax_step(sc[jj] * beta, mx, den, out_row, vj, d)
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
            e = (1.0 - coupling) * math.exp(beta * s) if params[ATTN_SELF] != 0.0 else 0.0
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
    and denominator of each member of the tile) as scratch; the heads form
    (several heads or an output map) takes the per-member loop, each member
    summing its heads over its batch. ``project``: the
    forces are projected on the tangent space (the sphere's projected schemes;
    False for the ambient Euler step, which moves along the unprojected field).
    """
    R, N, d = x.shape
    if HAS_PREPARE:  # compile-time constant: False for the kernel family, whose prepare is a no-op
        for f in prange(R * N):
            r = f // N
            i = f - r * N
            prepare_row(x[r, i], params, work[r, i])
    # TRANSPOSED_KEYS: compile-time constant, True for the attention family; the tiles gather one head's keys,
    # so the heads form takes the per-member loop below
    if TRANSPOSED_KEYS and params[ATTN_IDENTITY] != ATTN_FORM_HEADS:
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

