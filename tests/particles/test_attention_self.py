"""Self-exclusion in the attention dynamics (``systems.attention(..., include_self=False)``) on every backend.

Without self every sum runs over j != i: SA is the softmax over the other members of the batch; USA keeps the
weight c_N/(``|C|``-1) over j in C, j != i and drops the self term, so that RBM-1 stays unbiased for it (T3).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import particles
from particles import _layout, systems

RTOL = 1e-12
ATOL = 1e-13
D = 3


def _sphere_states(shape, seed):
    z = np.random.default_rng(seed).standard_normal(shape)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def _qkv(seed=0):
    rng = np.random.default_rng(seed)
    return [np.eye(D) + 0.4 * rng.normal(size=(D, D)) for _ in range(3)]


def _oracle(x, batches, beta, kind, Q, K, V, include_self, project=True):
    """P_x of one head's attention force, batch by batch (plain NumPy)."""
    n = x.shape[0]
    F = np.zeros_like(x)
    for members in batches:
        X = x[members]
        m = len(members)
        S = beta * (X @ Q.T) @ (X @ K.T).T
        VX = X @ V.T
        off = ~np.eye(m, dtype=bool)
        if kind == "SA":
            S = np.where(off | include_self, S, -np.inf)
            E = np.exp(S - S.max(axis=1, keepdims=True))
            F[members] = (E / E.sum(axis=1, keepdims=True)) @ VX
        else:
            E = np.exp(S)
            F[members] = (np.where(off, E, 0.0) @ VX) * ((n - 1) / n / (m - 1))
            if include_self:
                F[members] += np.diag(E)[:, None] * VX / n
    if project:
        F = F - np.sum(F * x, axis=1, keepdims=True) * x
    return F


def test_default_keeps_the_vector_and_false_clears_the_flag():
    Q, K, V = _qkv()
    on = systems.attention(0.8, "USA", Q=Q, K=K, V=V)
    assert_array_equal(on.params, systems.attention(0.8, "USA", Q=Q, K=K, V=V, include_self=True).params)
    assert on.params[_layout.ATTN_SELF] == 1.0 and "include_self" not in on.info
    off = systems.attention(0.8, "USA", Q=Q, K=K, V=V, include_self=False)
    assert off.params[_layout.ATTN_SELF] == 0.0 and off.info["include_self"] is False
    assert_array_equal(np.delete(off.params, _layout.ATTN_SELF), np.delete(on.params, _layout.ATTN_SELF))
    assert_array_equal(systems.attention(0.5, "SA", include_self=np.bool_(False)).params,
                       [0.5, _layout.ATTN_SOFTMAX, 0.0, 1.0])


# --- one head (the cpu backend's tiled path) against the oracle ------------------------------------------------
@pytest.mark.parametrize("method", ["full", "rbm1"])
@pytest.mark.parametrize("matrices", [False, True])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_force_matches_the_oracle(backend, kind, include_self, matrices, method):
    n, p = 8, 3
    Q, K, V = _qkv(1) if matrices else [np.eye(D)] * 3
    kw = dict(Q=Q, K=K, V=V) if matrices else {}
    system = systems.attention(1.2, kind, include_self=include_self, **kw)
    x = _sphere_states((n, D), seed=2)
    if method == "full":
        got = particles.drift(system, x, backend=backend)
        batches = [np.arange(n)]
    else:
        got = particles.drift(system, x, method="rbm1", batch_size=p, seed=4, step=3, backend=backend)
        batches = particles.partition(n, p, seed=4, step=3).batches()
    assert_allclose(got, _oracle(x, batches, 1.2, kind, Q, K, V, include_self), rtol=RTOL, atol=ATOL)


# --- RBM-1: USA unbiased, SA exact at p = N ---------------------------------------------------------------------
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("include_self", [True, False])
def test_usa_rbm1_is_unbiased_over_every_partition(backend, include_self, heads):
    """The mean of the RBM-1 drift over all 5! relabelings of the particles (each relabeling moves the one
    partition of (seed, step) to another labelling, and together they are every labelling equally often) is the
    full drift: batches of 3 and 2, each weighted with its own size."""
    n, p = 5, 2
    rng = np.random.default_rng(7)
    mats = {k: np.eye(D) + 0.4 * rng.normal(size=(heads, D, D)) for k in "QKV"}
    if heads == 1:
        mats = {k: m[0] for k, m in mats.items()}
    system = systems.attention(0.9, "USA", include_self=include_self, **mats)
    x = _sphere_states((n, D), seed=3)
    mean = np.zeros_like(x)
    perms = list(itertools.permutations(range(n)))
    for sigma in perms:
        sigma = np.array(sigma)
        mean[sigma] += particles.drift(system, x[sigma], method="rbm1", batch_size=p, seed=1, step=0,
                                       backend=backend)
    mean /= len(perms)
    assert_allclose(mean, particles.drift(system, x, backend=backend), rtol=1e-12, atol=1e-13)
    # the check can fail: the same average of SA's batch softmax is not the full softmax
    sa = systems.attention(0.9, "SA", include_self=include_self, **mats)
    sa_mean = sum(np.eye(n)[np.array(s)].T @ particles.drift(sa, x[np.array(s)], method="rbm1", batch_size=p,
                                                             seed=1, step=0, backend=backend) for s in perms)
    assert np.abs(sa_mean / len(perms) - particles.drift(sa, x, backend=backend)).max() > 1e-4


@pytest.mark.parametrize("include_self", [True, False])
def test_sa_rbm1_with_one_batch_of_everyone_is_full(backend, include_self):
    Q, K, V = _qkv(2)
    system = systems.attention(1.4, "SA", Q=Q, K=K, V=V, include_self=include_self)
    x = _sphere_states((6, D), seed=4)
    got = particles.drift(system, x, method="rbm1", batch_size=6, seed=2, step=5, backend=backend)
    assert_allclose(got, particles.drift(system, x, backend=backend), rtol=RTOL, atol=ATOL)


# --- RBM-r: the batch weight and the self term ------------------------------------------------------------------
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_rbmr_with_one_subset_of_everyone_steps_with_the_full_force(backend, kind, include_self):
    """RBM-r with p = N draws one subset of all N particles per step: one Euler step is x + dt F_full, then
    normalised, F_full the oracle's (USA: weight (N-1)/N/(N-1) = 1/N on the others, 1/N on the self term)."""
    n, dt = 6, 0.1
    Q, K, V = _qkv(3)
    system = systems.attention(0.7, kind, Q=Q, K=K, V=V, include_self=include_self)
    x0 = _sphere_states((n, D), seed=5)
    got = particles.solve(system, x0, t_end=dt, dt=dt, method="rbmr", batch_size=n, backend=backend).final
    y = x0 + dt * _oracle(x0, [np.arange(n)], 0.7, kind, Q, K, V, include_self)
    assert_allclose(got, y / np.linalg.norm(y, axis=1, keepdims=True), rtol=RTOL, atol=ATOL)


def test_usa_self_term_vanishes_on_the_sphere_when_v_is_the_identity(backend):
    """THEORY B5: the self term exp(beta <Qx, Kx>) V x / n is along x when V = I, so P_x removes it."""
    Q, K, _ = _qkv(4)
    x = _sphere_states((7, D), seed=6)
    with_self = particles.drift(systems.attention(1.0, "USA", Q=Q, K=K), x, backend=backend)
    without = particles.drift(systems.attention(1.0, "USA", Q=Q, K=K, include_self=False), x, backend=backend)
    assert_allclose(with_self, without, rtol=1e-12, atol=1e-14)
    flat = dict(Q=Q, K=K, sphere=False)  # the check can fail: unprojected, the self term stays
    assert not np.allclose(particles.drift(systems.attention(1.0, "USA", **flat), x, backend=backend),
                           particles.drift(systems.attention(1.0, "USA", include_self=False, **flat), x,
                                           backend=backend))


# --- trajectories (the cpu backend's ensemble kernel for small identity sets included) ---------------------------
@pytest.mark.parametrize("method", ["full", "rbm1", "rbmr"])
@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_trajectories_without_self_agree_with_the_reference(backend, kind, method):
    system = systems.attention(1.1, kind, include_self=False)
    x0 = _sphere_states((2, 6, D), seed=8)
    kw = dict(t_end=0.3, dt=0.1, method=method, batch_size=None if method == "full" else 3, seed=6)
    from particles.backends import cpu

    before = cpu.ensemble_calls
    got = particles.solve(system, x0, backend=backend, **kw).x
    # the cpu backend's fused ensemble kernel has its own self-exclusion: full, noiseless and small is its case
    assert cpu.ensemble_calls == before + (backend == "cpu" and method == "full")
    assert_allclose(got, particles.solve(system, x0, backend="reference", **kw).x, rtol=1e-11, atol=1e-12)
