"""The ``reference`` backend: plain NumPy, written to be obviously right.

It is the oracle of the test suite, so it shares nothing with the compiled
loops except the definition of the random streams (the vectorised twins in
:mod:`particles._rng` and :mod:`particles._batches`). Forces are computed
batch by batch with dense NumPy expressions; user-defined kernels are
called from Python once per pair. Use it for small systems only.
"""

from __future__ import annotations

import numpy as np

from particles import _batches, _layout, _rng

name = "reference"


# A user's function receives a zeroed ``out`` on every call, as in the compiled loops: a component it leaves
# unwritten counts as 0 on every backend (systems.custom refuses such a function when its probe sees it).
def _pairwise_custom(fn, X, params):
    m, d = X.shape
    out = np.zeros((m, m, d))
    for a in range(m):
        for b in range(m):
            if a != b:
                fn(X[a], X[b], params, out[a, b])
    return out


def _drift_custom(fn, X, params):
    out = np.zeros_like(X)
    for a in range(X.shape[0]):
        fn(X[a], params, out[a])
    return out


def _batch_force(system, X, coupling):
    """Force on each member of one batch X (m, d), before projection."""
    m, d = X.shape
    params = system.params
    if system.family == "kernel":
        if system.builtin:
            Kmat = system.kernel_np(X[:, None, :], X[None, :, :], params)
            Kmat[np.arange(m), np.arange(m)] = 0.0
            b = system.drift_np(X, params)
        else:
            Kmat = _pairwise_custom(system.kernel, X, params)
            b = _drift_custom(system.drift, X, params)
        inter = Kmat.sum(axis=1) * (coupling / (m - 1)) if m > 1 else np.zeros_like(X)
        return inter + b
    f = _layout.unpack_attention(params, d)
    if f.identity == _layout.ATTN_FORM_HEADS:  # sum_h W_h A_h(x): every head over the same batch
        F = None
        for h in range(f.heads):
            A = _head_force(X, f.beta, f.norm, f.include_self, f.Q[h], f.K[h], f.V[h], coupling) @ f.W[h].T
            F = A if F is None else F + A
        return F
    return _head_force(X, f.beta, f.norm, f.include_self, f.Q, f.K, f.V, coupling)


def _head_force(X, beta, norm, include_self, Q, K, V, coupling):
    """One head's attention force on each member of one batch X (m, d); Q, K, V None for the identity."""
    m = X.shape[0]
    if Q is None:
        Qx = Kx = Vx = X
    else:
        Qx, Kx, Vx = X @ Q.T, X @ K.T, X @ V.T
    S = beta * (Qx @ Kx.T)
    if norm == _layout.ATTN_SOFTMAX:  # softmax (SA, T19)
        if not include_self:
            S[np.arange(m), np.arange(m)] = -np.inf
        S = S - S.max(axis=1, keepdims=True)
        W = np.exp(S)
        return (W / W.sum(axis=1, keepdims=True)) @ Vx
    # USA (T20): (1/N) sum_j = c_N/(|C|-1) over the others in the batch, plus the self term (1 - c_N) = 1/N
    # kept exact; without self only the first part (THEORY B5)
    E = np.exp(S)
    diag = np.diag(E).copy()
    np.fill_diagonal(E, 0.0)
    others = (E @ Vx) * (coupling / (m - 1)) if m > 1 else np.zeros_like(X)
    self_term = (1.0 - coupling) * diag[:, None] * Vx if include_self else 0.0
    return others + self_term


def _project(X, F):
    return F - np.sum(X * F, axis=1, keepdims=True) * X


def _normalise(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _force(system, X, perm, p, coupling, project, remainder="spread"):
    n = X.shape[0]
    F = np.empty_like(X)
    bounds = _batches.batch_bounds(n, p, remainder)
    for b in range(bounds.size - 1):
        members = perm[bounds[b]:bounds[b + 1]]
        if members.size == 1:
            # a lone particle (remainder="pad", n mod p == 1) has no batch-mates: its batch is widened to all n
            # positions, so it feels the full force; it is the last row of that batch (it holds the last position)
            F[members] = _batch_force(system, X[perm], coupling)[-1:]
        else:
            F[members] = _batch_force(system, X[members], coupling)
    if project:  # False for the ambient Euler step: it moves along the unprojected field, then normalises
        F = _project(X, F)
    return F


def permutation(seed, replica, step, n):
    key = _rng.combine_np(_rng.root_key_np(seed, replica, _rng.STREAM_PERM), step)
    return _batches.build_permutation_np(key, n)


def noise(seed, replica, fine_step, particles, d):
    """Standard normals of the given particles on one fine step, shape (len(particles), d)."""
    kstep = _rng.combine_np(_rng.root_key_np(seed, replica, _rng.STREAM_NOISE), fine_step)
    kp = _rng.combine_np(kstep, np.asarray(particles))
    return _rng.normal_np(kp[:, None], np.arange(d)[None, :])


def _advance(system, X, stages, B, dt, dW):
    if system.sphere:  # the schemes that accept noise all project it (ambient_euler is deterministic)
        dW = _project(X, dW)
    X = X + dt * sum(b * k for b, k in zip(B, stages)) + dW
    return _normalise(X) if system.sphere else X


def _rk_stages(system, X, A, dt, force):
    stages = []
    for s in range(len(A)):
        Xs = X + dt * sum(A[s][q] * stages[q] for q in range(s)) if s else X
        stages.append(force(Xs))
    return stages


def _step_size(plan, n):
    """Length and noise scale of step n: the last one is shorter when t_end is not a whole number of steps."""
    return (plan.dt, plan.scale) if n + 1 < plan.nsteps else (plan.dt_last, plan.scale_last)


def run(system, x, traj, plan):
    R, N, d = x.shape
    traj[0] = x
    for r in range(R):
        if plan.method == "rbmr":
            _run_rbmr(system, x, traj, plan, r)
            continue
        X = x[r].copy()
        perm = np.arange(N)
        p = N if plan.method == "full" else plan.batch_size
        k = 0
        for n in range(plan.nsteps):
            h, scale = _step_size(plan, n)
            if plan.method == "rbm1" and n % plan.tau_steps == 0:
                perm = permutation(plan.seed, r, n // plan.tau_steps, N)
            stages = _rk_stages(system, X, plan.A, h,
                                lambda Y, perm=perm, p=p: _force(system, Y, perm, p, plan.coupling, plan.project,
                                                                 plan.remainder))
            dW = np.zeros_like(X)
            if scale:
                for q in range(plan.nfine):
                    dW += noise(plan.seed, r, n * plan.nfine + q, np.arange(N), d)
                dW *= scale
            X = _advance(system, X, stages, plan.B, h, dW)
            if (n + 1) % plan.save_every == 0 or n + 1 == plan.nsteps:
                k += 1
                traj[k, r] = X
        x[r] = X


def _run_rbmr(system, x, traj, plan, r):
    N, d = x.shape[1:]
    p = plan.batch_size
    X = x[r].copy()
    pool = np.arange(N)
    clock = np.zeros(N, dtype=np.int64)
    root = _rng.root_key_np(plan.seed, r, _rng.STREAM_SUBSET)
    sub = 0
    k = 0
    for n in range(plan.nsteps):
        h, scale = _step_size(plan, n)
        for _ in range(((n + 1) * N) // p - (n * N) // p):
            _batches.draw_subset_np(_batches.subset_key_np(root, sub), N, p, pool)
            sub += 1
            members = pool[:p].copy()

            def force(Y):
                F = _batch_force(system, Y, plan.coupling)
                return _project(Y, F) if plan.project else F

            Xc = X[members]
            stages = _rk_stages(system, Xc, plan.A, h, force)
            dW = np.zeros_like(Xc)
            if scale:
                for a, i in enumerate(members):
                    for q in range(plan.nfine):
                        dW[a] += noise(plan.seed, r, clock[i] * plan.nfine + q, [i], d)[0]
                dW *= scale
            X[members] = _advance(system, Xc, stages, plan.B, h, dW)
            clock[members] += 1
        if (n + 1) % plan.save_every == 0 or n + 1 == plan.nsteps:
            k += 1
            traj[k, r] = X
    x[r] = X


def drift(system, x, out, *, method, batch_size, seed, step, coupling, remainder="spread"):
    R, N, d = x.shape
    for r in range(R):
        if method == "full":
            out[r] = _force(system, x[r], np.arange(N), N, coupling, system.sphere)
        else:
            out[r] = _force(system, x[r], permutation(seed, r, step, N), batch_size, coupling, system.sphere,
                            remainder)
