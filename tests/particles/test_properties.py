"""Structural properties of the engine, checked on hypothesis-generated inputs.

- permutation equivariance of the full drift (the particles are exchangeable);
- conservation of the particle mean for an odd kernel without confinement,
  by the full method and by RBM-1 (each batch is itself a symmetric system);
- the attention dynamics on the sphere stay on the sphere at every saved step.

Each property is checked by one helper (``assert_*``) and each helper has a
negative control below that feeds it a deliberate violation and requires an
AssertionError, so that a property cannot pass vacuously.

Not tested here, on purpose: RBM-1 is not permutation equivariant (its
batches depend on the labels), and softmax shift invariance belongs to a
later issue.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose

from particles import drift, solve, systems

RTOL = ATOL = 1e-12
N_MAX, D_MAX = 12, 4


# --- strategies ---------------------------------------------------------------------------------------------------
def _floats(bound):
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def states(draw, bound=3.0, d_min=1):
    """An (N, d) state with 2 <= N <= 12, d_min <= d <= 4 and entries in [-bound, bound]."""
    n = draw(st.integers(2, N_MAX))
    d = draw(st.integers(d_min, D_MAX))
    return draw(hnp.arrays(np.float64, (n, d), elements=_floats(bound)))


@st.composite
def sphere_states(draw, d_min=1):
    """Points on the unit sphere S^{d-1}: a drawn state with each row normalised (tiny rows become e_1)."""
    z = draw(states(bound=1.0, d_min=d_min))
    tiny = np.linalg.norm(z, axis=1) < 1e-3
    z[tiny] = 0.0
    z[tiny, 0] = 1.0
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def matrices(d, bound=0.5):
    return hnp.arrays(np.float64, (d, d), elements=_floats(bound))


@st.composite
def attention_systems(draw, d, beta=(-1.0, 1.0), sigma=0.0, sphere=True):
    """SA or USA with identity or general Q, K, V (entries in [-0.5, 0.5]; |forces| stay below ~1e2)."""
    kind = draw(st.sampled_from(["SA", "USA"]))
    b = draw(st.floats(*beta, allow_nan=False))
    mats = {}
    if draw(st.booleans()):
        mats = {name: draw(matrices(d)) for name in ("Q", "K", "V")}
    return systems.attention(b, kind=kind, sphere=sphere, sigma=sigma, **mats)


# --- the checks, shared by the properties and their negative controls ----------------------------------------------
def assert_permutation_equivariant(f, x, perm):
    """f(x[perm]) == f(x)[perm] along the particle axis."""
    assert_allclose(f(x[perm]), f(x)[perm], rtol=RTOL, atol=ATOL)


def assert_mean_conserved(traj, atol=1e-12):
    """The particle mean of every saved state equals that of the initial state."""
    means = traj.x.mean(axis=-2)
    assert_allclose(means, np.broadcast_to(means[0], means.shape), rtol=0.0, atol=atol)


def assert_on_sphere(traj, atol=1e-12):
    """Every particle of every saved state has unit norm."""
    norms = np.linalg.norm(traj.x, axis=-1)
    assert np.all(np.isfinite(norms))
    assert_allclose(norms, 1.0, rtol=0.0, atol=atol)


# --- permutation equivariance of the full drift -------------------------------------------------------------------
@given(data=st.data())
def test_full_drift_equivariant_confined_tanh(backend, data):
    x = data.draw(states())
    perm = np.array(data.draw(st.permutations(range(x.shape[0]))))
    r = data.draw(st.floats(0.1, 3.0))
    L = data.draw(st.floats(0.0, 1.0))
    system = systems.confined_tanh(r=r, L=L)
    assert_permutation_equivariant(lambda y: drift(system, y, backend=backend), x, perm)


@given(data=st.data())
def test_full_drift_equivariant_confined_tanh_ensemble(backend, data):
    """With a leading replica axis, permuting the particles of every replica commutes with the drift."""
    x = data.draw(states())
    reps = np.stack([x, x[::-1], 0.5 * x])
    perm = np.array(data.draw(st.permutations(range(x.shape[0]))))
    system = systems.confined_tanh()
    out = drift(system, reps, backend=backend)
    assert_allclose(drift(system, reps[:, perm], backend=backend), out[:, perm], rtol=RTOL, atol=ATOL)


@given(data=st.data())
def test_full_drift_equivariant_attention(backend, data):
    x = data.draw(sphere_states())
    system = data.draw(attention_systems(x.shape[1], sphere=data.draw(st.booleans())))
    perm = np.array(data.draw(st.permutations(range(x.shape[0]))))
    assert_permutation_equivariant(lambda y: drift(system, y, backend=backend), x, perm)


def test_equivariance_check_detects_a_labelled_force(backend):
    """Negative control: a force that depends on the particle labels (1e-9 per label) is caught."""
    x = np.random.default_rng(1).standard_normal((6, 2))
    system = systems.confined_tanh()
    perm = np.array([1, 0, 2, 3, 5, 4])

    def labelled(y):
        return drift(system, y, backend=backend) + 1e-9 * np.arange(y.shape[0])[:, None]

    assert_permutation_equivariant(lambda y: drift(system, y, backend=backend), x, perm)
    with pytest.raises(AssertionError):
        assert_permutation_equivariant(labelled, x, perm)


# --- conservation of the mean for an odd kernel --------------------------------------------------------------------
def shifted_tanh(x, y, params, out):
    """K(x, y) = -tanh(x - params[1] y) + params[0]; odd (K(x, y) = -K(y, x)) iff params = (0, 1)."""
    for c in range(x.shape[0]):
        out[c] = -math.tanh(x[c] - params[1] * y[c]) + params[0]


ODD = systems.custom(shifted_tanh, params=[0.0, 1.0], name="odd_tanh")


@st.composite
def short_solves(draw, method):
    """Keyword arguments of a short deterministic solve (<= 10 steps) by ``method``."""
    x0 = draw(states())
    n = x0.shape[0]
    dt = draw(st.sampled_from([0.05, 0.1, 0.25]))
    kw = {
        "t_end": dt * draw(st.integers(1, 10)),
        "dt": dt,
        "method": method,
        "scheme": draw(st.sampled_from(["euler", "heun", "rk4"])),
        "seed": draw(st.integers(0, 2**64 - 1)),
    }
    if method == "rbm1":
        kw["batch_size"] = draw(st.integers(2, n))
        kw["tau"] = dt * draw(st.integers(1, 3))
    return x0, kw


@pytest.mark.parametrize("method", ["full", "rbm1"])
@given(data=st.data())
def test_mean_conserved_for_odd_kernel(backend, method, data):
    x0, kw = data.draw(short_solves(method))
    traj = solve(ODD, x0, backend=backend, **kw)
    assert traj.x.shape[1:] == x0.shape
    assert_mean_conserved(traj)


@pytest.mark.parametrize("method", ["full", "rbm1"])
@pytest.mark.parametrize("params", [(0.1, 1.0), (0.0, 0.5)], ids=["shifted", "asymmetric"])
def test_mean_check_detects_a_non_odd_kernel(backend, method, params):
    """Negative control: the same check rejects a kernel that is not odd, at the same sizes."""
    x0 = np.random.default_rng(2).uniform(-2.0, 2.0, size=(8, 2))
    kw = {"t_end": 0.5, "dt": 0.05, "method": method, "seed": 3, "backend": backend}
    if method == "rbm1":
        kw["batch_size"] = 3
    assert_mean_conserved(solve(ODD, x0, **kw))
    non_odd = systems.custom(shifted_tanh, params=list(params), name="non_odd_tanh")
    with pytest.raises(AssertionError):
        assert_mean_conserved(solve(non_odd, x0, **kw))


# --- attention stays on the sphere ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["euler", "rk4"])
@pytest.mark.parametrize("method", ["full", "rbm1"])
@pytest.mark.parametrize("kind", ["SA", "USA"])
@given(data=st.data())
def test_attention_stays_on_sphere(backend, kind, method, scheme, data):
    x0 = data.draw(sphere_states(d_min=2))
    n, d = x0.shape
    if scheme == "euler":
        # every step ends with a normalisation: any step size, strong interactions and noise are fine
        sigma = data.draw(st.sampled_from([0.0, 0.5]))
        beta = data.draw(st.floats(-1.0, 4.0))
        dt = data.draw(st.sampled_from([0.05, 0.2, 1.0]))
    else:
        # RK4 stages are not normalised (only the end of the step is): stay inside its stability region
        sigma = 0.0
        beta = data.draw(st.floats(-1.0, 2.0))
        dt = data.draw(st.sampled_from([0.01, 0.05, 0.1]))
    mats = {name: data.draw(matrices(d, bound=0.5 / d)) for name in ("Q", "K", "V")} if data.draw(st.booleans()) else {}
    system = systems.attention(beta, kind=kind, sigma=sigma, **mats)
    steps = data.draw(st.integers(1, 3 if backend == "cuda" else 10))  # the CUDA simulator is slow: fewer steps
    kw = {"t_end": dt * steps, "dt": dt, "method": method, "scheme": scheme,
          "seed": data.draw(st.integers(0, 2**32)), "save_every": data.draw(st.integers(1, 3))}
    if method == "rbm1":
        kw["batch_size"] = data.draw(st.integers(2, n))
    traj = solve(system, x0, backend=backend, **kw)
    assert_on_sphere(traj)


@pytest.mark.parametrize("scheme", ["euler", "rk4"])
def test_sphere_check_detects_unprojected_dynamics(backend, scheme):
    """Negative control: the same dynamics without the projection leave the sphere, and the check says so."""
    rng = np.random.default_rng(4)
    x0 = rng.standard_normal((6, 3))
    x0 /= np.linalg.norm(x0, axis=1, keepdims=True)
    kw = {"t_end": 0.5, "dt": 0.1, "scheme": scheme, "backend": backend}
    assert_on_sphere(solve(systems.attention(1.0, kind="SA"), x0, **kw))
    with pytest.raises(AssertionError):
        assert_on_sphere(solve(systems.attention(1.0, kind="SA", sphere=False), x0, **kw))
