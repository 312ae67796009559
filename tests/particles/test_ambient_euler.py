"""The ambient Euler step (``scheme="ambient_euler"``) against a hand-written NumPy statement of it.

The oracle is written from the update of the public phase-diagram script of
Geshkovski et al. (borjanG/2023-transformers-rotf, ``phase-diagrams.py``,
read at commit 538ba83): scores beta <x_i, x_j> over all j (self included),
a row softmax, the attention output a = softmax @ x, then x + h a
normalised. Nothing of the engine is used to compute it.
"""

from __future__ import annotations

import numpy as np
import pytest

import particles
from particles import initial, integrators, systems


def authors_step(x, beta, h):
    s = beta * (x @ x.T)
    w = np.exp(s - s.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    y = x + h * (w @ x)
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def authors_trajectory(x0, beta, h, steps):
    out = [x0]
    for _ in range(steps):
        out.append(authors_step(out[-1], beta, h))
    return np.array(out)


# 300 steps of rounding-level differences (summation order of the scores and of the output): the flow contracts
# (tokens cluster), so they stay near 1e-15; 1e-10 is the bound and leaves a wide margin
TOL = 1e-10


@pytest.mark.parametrize("d", [2, 32])
@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_ambient_euler_is_the_authors_update(backend, d, beta):
    steps = 300 if backend != "cuda" else 30  # the simulator runs Python per thread
    x0 = initial.uniform_sphere(32, d, rng=np.random.default_rng(7))
    want = authors_trajectory(x0, beta, 0.1, steps)
    tr = particles.solve(systems.attention(beta, "SA"), x0, t_end=steps * 0.1, dt=0.1, scheme="ambient_euler",
                         backend=backend)
    assert tr.x.shape == want.shape
    assert np.max(np.abs(tr.x - want)) <= TOL
    # negative control: the projected Euler step is a different (first-order) discretisation of the same ODE
    proj = particles.solve(systems.attention(beta, "SA"), x0, t_end=steps * 0.1, dt=0.1, scheme="euler",
                           backend=backend)
    assert np.max(np.abs(proj.x - want)) > 1e3 * TOL


def test_ambient_euler_ensemble_replicas_are_independent_runs(backend):
    x0 = initial.uniform_sphere(9, 4, rng=np.random.default_rng(3), replicas=3)
    tr = particles.solve(systems.attention(2.0, "SA"), x0, t_end=2.0, dt=0.1, scheme="ambient_euler",
                         backend=backend, save_every=5)
    for r in range(3):
        want = authors_trajectory(x0[r], 2.0, 0.1, 20)[::5]
        assert np.max(np.abs(tr.x[:, r] - want)) <= TOL


@pytest.mark.parametrize("method", ["rbm1", "rbmr"])
def test_ambient_euler_random_batches_match_reference(method):
    # the random-batch methods step along the unprojected batch field; cpu and reference share the batches
    system = systems.attention(1.5, "USA")
    x0 = initial.uniform_sphere(12, 3, rng=np.random.default_rng(4), replicas=2)
    kw = dict(t_end=0.5, dt=0.05, method=method, batch_size=4, seed=3, scheme="ambient_euler")
    a = particles.solve(system, x0, backend="cpu", **kw)
    b = particles.solve(system, x0, backend="reference", **kw)
    assert np.max(np.abs(a.x - b.x)) <= 1e-12
    proj = particles.solve(system, x0, backend="reference", **{**kw, "scheme": "euler"})
    assert np.max(np.abs(proj.x - b.x)) > 1e-6


def test_ambient_euler_with_batch_size_n_is_the_full_step():
    system = systems.attention(1.0, "SA")
    x0 = initial.uniform_sphere(10, 3, rng=np.random.default_rng(5))
    kw = dict(t_end=1.0, dt=0.1, scheme="ambient_euler", backend="reference")
    full = particles.solve(system, x0, **kw)
    rbm = particles.solve(system, x0, method="rbm1", batch_size=10, seed=1, **kw)
    assert np.max(np.abs(full.x - rbm.x)) <= 1e-14


def test_ambient_euler_declaration():
    s = integrators.SCHEMES["ambient_euler"]
    assert (s.order, s.stages, s.stochastic, s.projected, s.sphere_only) == (1, 1, False, False, True)


def test_ambient_euler_refuses_systems_off_the_sphere():
    with pytest.raises(ValueError, match=r"scheme='ambient_euler' .* defined only for systems on the sphere"):
        particles.solve(systems.confined_tanh(sigma=0.0), np.zeros((4, 2)), t_end=0.1, dt=0.1,
                        scheme="ambient_euler")
    with pytest.raises(ValueError, match=r"scheme='ambient_euler' .* defined only for systems on the sphere"):
        particles.solve(systems.attention(1.0, "SA", sphere=False), np.ones((4, 2)), t_end=0.1, dt=0.1,
                        scheme="ambient_euler")


def test_ambient_euler_refuses_noise():
    x0 = initial.uniform_sphere(4, 3, rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match=r"scheme='ambient_euler' is deterministic; it requires sigma = 0"):
        particles.solve(systems.attention(1.0, "SA", sigma=0.5), x0, t_end=0.1, dt=0.1, scheme="ambient_euler")
