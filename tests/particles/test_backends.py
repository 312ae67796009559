"""The backend contract: every backend computes the same thing from the same streams."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import particles
from particles import systems
from tests._inputs import _drift_cubic, _kern_sin, sphere_points

RTOL = 1e-12  # agreement "to rounding": summation order may differ between backends


def _states(system, shape, seed):
    if system.sphere:
        z = np.random.default_rng(seed).standard_normal(shape)
        return z / np.linalg.norm(z, axis=-1, keepdims=True)
    return np.random.default_rng(seed).standard_normal(shape)


SYSTEMS = {
    "tanh": systems.confined_tanh(r=1.0, L=0.3, sigma=0.7),
    "dyson": systems.dyson(eps=1e-3),
    "SA": systems.attention(1.5, "SA"),
    "USA": systems.attention(1.0, "USA", Q=np.diag([1.0, 0.5, 2.0]), V=-np.eye(3)),
    "SA_flat": systems.attention(0.5, "SA", sphere=False, K=np.array([[1.0, 0.2, 0], [0, 1, 0], [0.1, 0, 1]])),
    "noisy_SA": systems.attention(1.0, "SA", sigma=0.3),
    "custom": systems.custom(_kern_sin, _drift_cubic, sigma=0.2, params=[0.8, 0.1]),
}


def _dim(system):
    return 1 if system.dim == 1 else 3


@pytest.mark.parametrize("name", list(SYSTEMS))
@pytest.mark.parametrize("method", ["full", "rbm1", "rbmr"])
def test_cpu_matches_reference(name, method):
    system = SYSTEMS[name]
    x0 = _states(system, (2, 9, _dim(system)), seed=len(name))
    kw = dict(t_end=0.1, dt=0.02, method=method, batch_size=None if method == "full" else 3, seed=7)
    a = particles.solve(system, x0, backend="cpu", **kw)
    b = particles.solve(system, x0, backend="reference", **kw)
    assert a.x.shape == b.x.shape == (6, 2, 9, _dim(system))
    assert_allclose(a.x, b.x, rtol=RTOL, atol=RTOL)
    assert not np.array_equal(a.x[-1], a.x[0])


@pytest.mark.parametrize("scheme", ["heun", "rk4", "ambient_euler"])
@pytest.mark.parametrize("method", ["full", "rbm1", "rbmr"])
def test_cpu_matches_reference_deterministic_schemes(scheme, method):
    system = SYSTEMS["USA"]
    x0 = _states(system, (8, 3), seed=1)
    kw = dict(t_end=0.2, dt=0.05, method=method, batch_size=None if method == "full" else 4, seed=2, scheme=scheme)
    assert_allclose(particles.solve(system, x0, backend="cpu", **kw).x,
                    particles.solve(system, x0, backend="reference", **kw).x, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("name", ["tanh", "SA", "USA", "custom"])
def test_drift_matches_reference(name):
    system = SYSTEMS[name]
    x = _states(system, (3, 10, 3), seed=5)
    for method, p in (("full", None), ("rbm1", 3), ("rbm1", 4)):
        a = particles.drift(system, x, method=method, batch_size=p, seed=1, step=3, backend="cpu")
        b = particles.drift(system, x, method=method, batch_size=p, seed=1, step=3, backend="reference")
        assert_allclose(a, b, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("name", ["tanh", "SA", "USA", "custom", "dyson"])
def test_rbm1_with_batch_size_n_is_the_full_system(name, backend):
    system = SYSTEMS[name]
    x0 = _states(system, (12, _dim(system)), seed=3)
    kw = dict(t_end=0.2, dt=0.02, seed=11, backend=backend)
    full = particles.solve(system, x0, method="full", **kw)
    rbm = particles.solve(system, x0, method="rbm1", batch_size=12, **kw)
    assert_allclose(rbm.x, full.x, rtol=1e-12, atol=1e-13)


def test_full_and_rbm1_share_the_brownian_path(backend):
    # without interaction the batches do not matter: only the shared noise remains
    system = systems.confined_tanh(r=0.5, L=0.0, sigma=1.0)
    x0 = _states(system, (20, 2), seed=4)
    kw = dict(t_end=0.5, dt=0.05, seed=3, backend=backend)
    full = particles.solve(system, x0, method="full", **kw)
    rbm = particles.solve(system, x0, method="rbm1", batch_size=2, **kw)
    assert_allclose(rbm.x, full.x, rtol=0, atol=1e-14)
    other_seed = particles.solve(system, x0, method="full", **{**kw, "seed": 4})
    assert np.max(np.abs(other_seed.x[-1] - full.x[-1])) > 0.1


def test_coarse_steps_sum_the_fine_increments(backend):
    # pure Brownian motion: X_T = X_0 + sigma W_T, whatever the step, for one noise grid
    system = systems.confined_tanh(r=1e-300, L=0.0, sigma=1.3)
    x0 = np.zeros((15, 2))
    fine = particles.solve(system, x0, t_end=0.8, dt=0.05, noise_dt=0.05, seed=5, backend=backend)
    coarse = particles.solve(system, x0, t_end=0.8, dt=0.2, noise_dt=0.05, seed=5, backend=backend)
    assert_allclose(coarse.final, fine.final, rtol=1e-13, atol=1e-14)
    assert_allclose(coarse.x, fine.x[::4], rtol=1e-13, atol=1e-14)
    # and the increments have the right variance: sigma^2 T per coordinate
    big = particles.solve(system, np.zeros((4000, 1)), t_end=0.8, dt=0.2, noise_dt=0.05, seed=6, backend="cpu")
    assert abs(np.var(big.final) / (1.3**2 * 0.8) - 1) < 0.1  # 0.1 is > 4 standard errors (sqrt(2/4000)=0.022)


def test_ensemble_replicas_use_their_own_streams(backend):
    system = SYSTEMS["tanh"]
    x0 = _states(system, (10, 2), seed=8)
    kw = dict(t_end=0.1, dt=0.02, method="rbm1", batch_size=3, seed=21, backend=backend)
    single = particles.solve(system, x0, **kw)
    ens = particles.solve(system, np.stack([x0, x0, x0]), **kw)
    assert ens.x.shape == (6, 3, 10, 2)
    assert_array_equal(ens.x[:, 0], single.x)
    assert not np.allclose(ens.x[-1, 1], ens.x[-1, 0])
    # replica r does not depend on which other replicas are in the call
    assert_array_equal(particles.solve(system, np.stack([x0, x0]), **kw).x[:, 1], ens.x[:, 1])


def test_repeated_runs_are_bitwise_identical():
    system = SYSTEMS["noisy_SA"]
    x0 = sphere_points(40, 3, seed=2)
    kw = dict(t_end=0.3, dt=0.01, method="rbm1", batch_size=4, seed=99)
    assert particles.solve(system, x0, **kw).x.tobytes() == particles.solve(system, x0, **kw).x.tobytes()


def test_reshuffle_interval_tau(backend):
    system = SYSTEMS["tanh"]
    x0 = _states(system, (12, 2), seed=1)
    kw = dict(t_end=0.2, dt=0.02, method="rbm1", batch_size=3, seed=4, backend=backend)
    every = particles.solve(system, x0, **kw)
    every_other = particles.solve(system, x0, tau=0.04, **kw)
    assert every_other.metadata["tau"] == pytest.approx(0.04)
    # the first interval uses the same batches and noise; later intervals differ
    assert_allclose(every_other.x[:2], every.x[:2], rtol=1e-14)
    assert not np.allclose(every_other.x[-1], every.x[-1])


def test_save_every_keeps_the_final_state(backend):
    system = SYSTEMS["tanh"]
    x0 = _states(system, (6, 1), seed=1)
    all_steps = particles.solve(system, x0, t_end=1.0, dt=0.1, seed=1, backend=backend)
    some = particles.solve(system, x0, t_end=1.0, dt=0.1, seed=1, save_every=3, backend=backend)
    assert_allclose(some.t, [0.0, 0.3, 0.6, 0.9, 1.0])
    assert_array_equal(some.x, all_steps.x[[0, 3, 6, 9, 10]])
    assert some.metadata["seed"] == 1 and some.metadata["backend"] == backend
    assert some.method is particles.FULL


def test_integer_state_is_cast():
    system = SYSTEMS["tanh"]
    x0 = np.arange(12).reshape(6, 2)
    a = particles.solve(system, x0, t_end=0.1, dt=0.05, seed=0)
    b = particles.solve(system, x0.astype(float), t_end=0.1, dt=0.05, seed=0)
    assert_array_equal(a.x, b.x)


def test_import_compiles_nothing():
    import subprocess
    import sys

    # importing the package does not even import numba, so nothing can be compiled
    code = "import sys, particles, particles.systems, particles.integrators; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_partition_is_the_one_solve_uses():
    n, p = 11, 3
    part = particles.partition(n, p, seed=5, step=2)
    assert_array_equal(part.perm, particles.partition(n, p, seed=5, step=2, backend="reference").perm)
    assert sorted(np.concatenate(part.batches()).tolist()) == list(range(n))
    assert set(part.sizes.tolist()) <= {p, p + 1}
    # the drift of a kernel system on these batches, computed by hand, equals particles.drift
    system = systems.confined_tanh(r=1.0, L=0.4)
    x = np.random.default_rng(0).standard_normal((n, 2))
    expected = -1.0 * x
    for batch in part.batches():
        for i in batch:
            others = [j for j in batch if j != i]
            expected[i] += sum(-0.4 * np.tanh(x[i] - x[j]) for j in others) / (len(batch) - 1)
    assert_allclose(particles.drift(system, x, method="rbm1", batch_size=p, seed=5, step=2), expected, rtol=1e-13)
