"""Self-attention dynamics on the sphere (THEORY Part C)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.integrate import solve_ivp

import particles
from particles import initial, systems
from tests._inputs import sphere_points


def _gamma_ode(kind, beta, n, t):
    def rhs(_, g):
        g = g[0]
        if kind == "SA":
            return [2 * np.exp(beta * g) * (1 - g) * ((n - 1) * g + 1) / (np.exp(beta) + (n - 1) * np.exp(beta * g))]
        return [(2 / n) * np.exp(beta * g) * (1 - g) * ((n - 1) * g + 1)]

    return solve_ivp(rhs, (0, t[-1]), [0.0], t_eval=t, rtol=1e-12, atol=1e-14).y[0]


@pytest.mark.parametrize("kind", ["SA", "USA"])
@pytest.mark.parametrize("method", ["full", "rbm1"])
def test_equiangular_particles_follow_the_ode(kind, method, backend):
    n, d, beta = 6, 8, 1.5
    system = systems.attention(beta, kind)
    t_end = 0.3 if backend == "cuda" else 2.0  # the CUDA simulator runs every GPU thread in Python: fewer steps
    tr = particles.solve(system, initial.equiangular(n, d), t_end=t_end, dt=0.01, scheme="rk4", backend=backend,
                         method=method, batch_size=None if method == "full" else n)
    gram = np.einsum("kid,kjd->kij", tr.x, tr.x)
    off = gram[:, ~np.eye(n, dtype=bool)]
    # all pairwise inner products stay equal ...
    assert_allclose(off, off[:, :1] * np.ones_like(off), atol=1e-12)
    # ... and equal to gamma(t) of the equiangular ODE
    assert_allclose(off[:, 0], _gamma_ode(kind, beta, n, tr.t), atol=1e-8)


def test_equiangular_symmetry_is_broken_by_random_batches():
    # rbm1 with p < n treats particles unequally: a control that the check above can fail
    n = 6
    system = systems.attention(1.5, "SA")
    tr = particles.solve(system, initial.equiangular(n, 8), t_end=1.0, dt=0.01, method="rbm1", batch_size=2, seed=1)
    gram = np.einsum("id,jd->ij", tr.final, tr.final)[~np.eye(n, dtype=bool)]
    assert gram.max() - gram.min() > 1e-3


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_energy_is_non_decreasing(kind):
    beta, n = 2.0, 16
    system = systems.attention(beta, kind)
    tr = particles.solve(system, sphere_points(n, 3, seed=4), t_end=5.0, dt=0.01, scheme="rk4")
    gram = np.einsum("kid,kjd->kij", tr.x, tr.x)
    energy = np.exp(beta * gram).sum(axis=(1, 2)) / (2 * beta * n**2)
    assert np.all(np.diff(energy) >= -1e-13)
    assert energy[-1] > energy[0] + 1e-3


def test_usa_is_gradient_ascent_of_the_energy():
    beta, n = 1.3, 7
    system = systems.attention(beta, "USA")
    x = sphere_points(n, 4, seed=9)
    force = particles.drift(system, x)
    # n grad E restricted to the sphere: P_x (1/n) sum_j exp(beta <x_i, x_j>) x_j
    w = np.exp(beta * x @ x.T)
    g = (w @ x) / n
    expected = g - np.sum(g * x, axis=1, keepdims=True) * x
    assert_allclose(force, expected, rtol=1e-13, atol=1e-15)


def test_one_cluster_in_dimension_three():
    system = systems.attention(1.0, "SA")
    tr = particles.solve(system, sphere_points(12, 3, seed=2), t_end=40.0, dt=0.1, save_every=400)
    gram = tr.final @ tr.final.T
    assert gram.min() > 1 - 1e-6
