"""Multi-head attention dynamics (``systems.attention(..., heads=, W=)``) on every backend.

The force is P_x( sum_h W_h A_h(x) ), A_h the head-h attention over the particle's batch (all heads share the
partition). Oracles are plain NumPy written here; the cuda backend runs under the simulator at tiny N.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import particles
from particles import _layout, systems

RTOL = 1e-12
ATOL = 1e-13
D = 3
N = 7
P = 3


def _matrices(H, seed=0, d=D):
    rng = np.random.default_rng(seed)
    return [np.eye(d) + 0.4 * rng.normal(size=(H, d, d)) for _ in range(4)]


def _sphere_states(shape, seed):
    z = np.random.default_rng(seed).standard_normal(shape)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def _head_oracle(X, beta, kind, Q, K, V, include_self, n):
    """One head's unprojected force on each member of the batch X (m, d), in a system of n particles."""
    m = X.shape[0]
    S = beta * (X @ Q.T) @ (X @ K.T).T
    VX = X @ V.T
    off = ~np.eye(m, dtype=bool)
    if kind == "SA":
        keep = off if not include_self else np.ones((m, m), dtype=bool)
        S = np.where(keep, S, -np.inf)
        E = np.exp(S - S.max(axis=1, keepdims=True))
        return (E / E.sum(axis=1, keepdims=True)) @ VX
    E = np.exp(S)
    out = (np.where(off, E, 0.0) @ VX) * ((n - 1) / n / (m - 1)) if m > 1 else np.zeros_like(X)
    if include_self:
        out = out + np.diag(E)[:, None] * VX / n
    return out


def _oracle(x, batches, beta, kind, Q, K, V, W, include_self, project=True):
    n = x.shape[0]
    F = np.zeros_like(x)
    for members in batches:
        X = x[members]
        for h in range(Q.shape[0]):
            F[members] += _head_oracle(X, beta, kind, Q[h], K[h], V[h], include_self, n) @ W[h].T
    if project:
        F = F - np.sum(F * x, axis=1, keepdims=True) * x
    return F


def _batches(method, seed=3, step=2):
    if method == "full":
        return [np.arange(N)]
    return particles.partition(N, P, seed=seed, step=step).batches()


def _drift(system, x, method, backend, seed=3, step=2):
    if method == "full":
        return particles.drift(system, x, method="full", backend=backend)
    return particles.drift(system, x, method="rbm1", batch_size=P, seed=seed, step=step, backend=backend)


# --- one head with W = I is the one-head system ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_one_head_with_identity_output_is_the_one_head_vector(kind):
    Q, K, V, _ = _matrices(1)
    today = systems.attention(0.8, kind, Q=Q[0], K=K[0], V=V[0])
    for system in (systems.attention(0.8, kind, Q=Q, K=K, V=V, W=np.eye(D)),
                   systems.attention(0.8, kind, Q=Q, K=K, V=V, heads=1),
                   systems.attention(0.8, kind, Q=Q[0], K=K[0], V=V[0], W=np.eye(D)[None])):
        assert_array_equal(system.params, today.params)
        assert system.info == today.info and system.dim == today.dim
    assert_array_equal(systems.attention(0.5, kind, heads=1).params, systems.attention(0.5, kind).params)
    assert_array_equal(systems.attention(0.5, kind, W=np.eye(D)).params, [0.5, today.params[1], 1.0, 1.0])


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_heads_form_with_a_silent_second_head_gives_the_one_head_bits(backend, kind):
    """The heads code path (the layout's heads form, the per-member loop, the head scratch) against the one-head
    path: head 2 with W_2 = 0 adds exact zeros and W_1 = I leaves the values as they were, so the bits must agree."""
    Q, K, V, _ = _matrices(2, seed=4)
    one = systems.attention(0.9, kind, Q=Q[0], K=K[0], V=V[0], sigma=0.2)
    two = systems.attention(0.9, kind, Q=Q, K=K, V=V, W=np.stack([np.eye(D), np.zeros((D, D))]), sigma=0.2)
    assert two.params[_layout.ATTN_IDENTITY] == _layout.ATTN_FORM_HEADS
    x0 = _sphere_states((2, N, D), seed=1)
    for method in ("full", "rbm1", "rbmr"):
        kw = dict(t_end=0.2, dt=0.05, method=method, batch_size=None if method == "full" else P, seed=5,
                  backend=backend)
        assert_array_equal(particles.solve(two, x0, **kw).x, particles.solve(one, x0, **kw).x)
    for method in ("full", "rbm1"):
        assert_array_equal(_drift(two, x0[0], method, backend), _drift(one, x0[0], method, backend))


# --- the force against a NumPy oracle ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["full", "rbm1"])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_heads_force_matches_the_oracle(backend, kind, include_self, method):
    Q, K, V, W = _matrices(3, seed=11)
    beta = 1.3
    system = systems.attention(beta, kind, Q=Q, K=K, V=V, W=W, include_self=include_self)
    assert system.info["heads"] == 3
    x = _sphere_states((N, D), seed=2)
    want = _oracle(x, _batches(method), beta, kind, Q, K, V, W, include_self)
    assert_allclose(_drift(system, x, method, backend), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_heads_force_in_flat_space_is_not_projected(backend, kind):
    Q, K, V, W = _matrices(2, seed=12)
    system = systems.attention(0.4, kind, Q=Q, K=K, V=V, W=W, sphere=False, include_self=False)
    x = np.random.default_rng(8).normal(size=(N, D))
    want = _oracle(x, _batches("rbm1"), 0.4, kind, Q, K, V, W, False, project=False)
    assert_allclose(_drift(system, x, "rbm1", backend), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_shared_matrices_and_default_output_map(backend, kind):
    """(d, d) arguments are shared by every head, None is the identity, and W defaults to I / H."""
    Q, K, V, _ = _matrices(2, seed=13)
    system = systems.attention(0.7, kind, Q=Q, K=K[0], heads=2)
    x = _sphere_states((N, D), seed=3)
    eye = np.stack([np.eye(D)] * 2)
    want = _oracle(x, _batches("rbm1"), 0.7, kind, Q, np.stack([K[0]] * 2), eye, eye / 2, True)
    assert_allclose(_drift(system, x, "rbm1", backend), want, rtol=RTOL, atol=ATOL)


# --- heads against single-head systems --------------------------------------------------------------------------
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_heads_with_identity_outputs_are_the_sum_of_single_head_systems(backend, kind, include_self):
    Q, K, V, _ = _matrices(3, seed=21)
    multi = systems.attention(1.1, kind, Q=Q, K=K, V=V, W=np.eye(D), include_self=include_self)
    singles = [systems.attention(1.1, kind, Q=Q[h], K=K[h], V=V[h], include_self=include_self) for h in range(3)]
    x = _sphere_states((N, D), seed=4)
    for method in ("full", "rbm1"):  # rbm1: the same seed and step, so every head sees the same partition
        want = sum(_drift(s, x, method, backend, seed=9, step=1) for s in singles)
        assert_allclose(_drift(multi, x, method, backend, seed=9, step=1), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_copies_of_one_head_with_the_default_output_map_are_that_head(backend, kind):
    Q, K, V, _ = _matrices(1, seed=22)
    one = systems.attention(0.6, kind, Q=Q[0], K=K[0], V=V[0])
    copies = systems.attention(0.6, kind, Q=Q[0], K=K[0], V=V[0], heads=4)
    x = _sphere_states((N, D), seed=5)
    for method in ("full", "rbm1"):
        assert_allclose(_drift(copies, x, method, backend), _drift(one, x, method, backend), rtol=RTOL, atol=ATOL)


# --- trajectories: every backend the same -----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["full", "rbm1", "rbmr"])
@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_heads_trajectories_agree_with_the_reference(backend, kind, method):
    Q, K, V, W = _matrices(2, seed=31)
    system = systems.attention(0.9, kind, Q=Q, K=K, V=V, W=W, include_self=kind == "SA", sigma=0.3)
    x0 = _sphere_states((2, N, D), seed=6)
    kw = dict(t_end=0.15, dt=0.05, method=method, batch_size=None if method == "full" else P, seed=2)
    got = particles.solve(system, x0, backend=backend, **kw).x
    assert_allclose(got, particles.solve(system, x0, backend="reference", **kw).x, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("scheme", ["rk4", "ambient_euler"])
def test_heads_with_other_schemes_agree_with_the_reference(backend, scheme):
    """RK4's stages and the ambient Euler step (the unprojected field, then normalised) through the heads path."""
    Q, K, V, W = _matrices(2, seed=32)
    system = systems.attention(0.8, "SA", Q=Q, K=K, V=V, W=W, include_self=False)
    x0 = _sphere_states((1, N, D), seed=9)
    for method in ("full", "rbm1"):
        kw = dict(t_end=0.2, dt=0.1, method=method, batch_size=None if method == "full" else P, seed=3,
                  scheme=scheme)
        got = particles.solve(system, x0, backend=backend, **kw).x
        assert_allclose(got, particles.solve(system, x0, backend="reference", **kw).x, rtol=1e-11, atol=1e-12)


def test_identity_heads_do_not_take_the_one_head_ensemble_kernel():
    from particles.backends import cpu

    system = systems.attention(1.0, "SA", W=np.stack([np.eye(D), 0.5 * np.eye(D)]))  # identity Q, K, V, 2 heads
    one = systems.attention(1.0, "SA")
    x0 = _sphere_states((3, N, D), seed=7)
    before = cpu.ensemble_calls
    got = particles.solve(system, x0, t_end=0.2, dt=0.1, backend="cpu").x
    assert cpu.ensemble_calls == before
    # the two heads are the same identity head: 1.5 times its force
    want = particles.solve(systems.attention(1.0, "SA", V=1.5 * np.eye(D)), x0, t_end=0.2, dt=0.1,
                           backend="reference").x
    assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    particles.solve(one, x0, t_end=0.2, dt=0.1, backend="cpu")
    assert cpu.ensemble_calls == before + 1  # the check above can fail: the kernel is taken for one head


# --- bad input -----------------------------------------------------------------------------------------------
def test_heads_bad_input_names_the_argument():
    Q, K, V, W = _matrices(2)
    with pytest.raises(ValueError, match=r"^heads must be >= 1, got 0"):
        systems.attention(1.0, heads=0, Q=Q)
    with pytest.raises(TypeError, match=r"^heads must be an integer, got float"):
        systems.attention(1.0, heads=2.0, Q=Q)
    with pytest.raises(TypeError, match=r"^heads must be an integer, got bool"):
        systems.attention(1.0, heads=True, Q=Q)
    with pytest.raises(ValueError, match=r"^K has shape \(2, 3, 3\): 2 heads, but heads=3"):
        systems.attention(1.0, heads=3, K=K)
    with pytest.raises(ValueError, match=r"^W has shape \(3, 3, 3\): 3 heads, but Q has 2; every"):
        systems.attention(1.0, Q=Q, W=np.stack([np.eye(3)] * 3))
    with pytest.raises(ValueError, match=r"^W must be a square \(d, d\) matrix, got shape \(2, 3, 2\) \(or a stack"):
        systems.attention(1.0, Q=Q, W=np.ones((2, 3, 2)))
    with pytest.raises(ValueError, match=r"^V must be a square \(d, d\) matrix, got shape \(1, 2, 3, 3\) \(or a "
                                         r"stack \(H, d, d\) of one per head\)"):
        systems.attention(1.0, V=np.ones((1, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"^W has shape \(2, 4, 4\), but the other matrices are \(3, 3\)"):
        systems.attention(1.0, Q=Q, W=np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match=r"^W must contain only finite values"):
        systems.attention(1.0, Q=Q, W=np.full((2, 3, 3), np.nan))
    with pytest.raises(TypeError, match=r"^W must be a real numeric matrix"):
        systems.attention(1.0, Q=Q, W=np.full((2, 3, 3), "a"))
    with pytest.raises(ValueError, match=r"^heads=2 needs at least one of Q, K, V, W"):
        systems.attention(1.0, heads=2)
    with pytest.raises(TypeError, match=r"^include_self must be a bool, got int"):
        systems.attention(1.0, include_self=1)
    with pytest.raises(TypeError, match=r"^include_self must be a bool, got str"):
        systems.attention(1.0, Q=Q, include_self="no")
    with pytest.raises(TypeError):  # the new arguments are keyword-only
        systems.attention(1.0, "SA", None, None, None, True, 0.0, False)
