"""Convergence orders, read from the integrators' declarations.

Strong errors use common random numbers: every level shares one Brownian
path (noise on the finest grid) and the same initial data (THEORY A3).
Tolerances are those of THEORY Part D: slopes within +-0.1 of the declared
order for the stochastic rates, +-0.15 for the deterministic schemes.
"""

from __future__ import annotations

import numpy as np
import pytest

import particles
from particles import integrators, systems
from tests._inputs import sphere_points
from validation.strong_order import coupled_strong_errors


def _slope(levels, errors):
    return np.polyfit(np.log(levels), np.log(errors), 1)[0]


def _rbm_errors(system, x0, taus, p, seed, t_end=1.0):
    """RMS over replicas, particles and coordinates of RBM-1 - full at T, per level (common random numbers)."""
    sq = coupled_strong_errors(system, x0, taus=taus, batch_sizes=[p], t_end=t_end, seed=seed)[p]
    return np.sqrt(sq.mean(axis=0))


@pytest.fixture(scope="module")
def tanh_setup():
    system = systems.confined_tanh(r=1.0, L=0.3, sigma=1.0)
    x0 = np.random.default_rng(12).standard_normal((32, 32, 1))  # 32 replicas of 32 particles
    return system, x0


def test_rbm1_strong_order_in_tau(tanh_setup):
    system, x0 = tanh_setup
    taus = [2.0**-k for k in range(3, 9)]
    errs = _rbm_errors(system, x0, taus, p=2, seed=5)
    assert abs(_slope(taus, errs) - particles.RBM1.strong_order) <= 0.1


def test_rbm1_error_against_batch_size(tanh_setup):
    system, _ = tanh_setup
    # N >> p so that the finite-population correction -1/(N-1) of T3 is negligible,
    # and tau << 1/(p-1), where the (p-1)^(-1/2) law holds
    x0 = np.random.default_rng(13).standard_normal((8, 192, 1))
    ps = np.array([2, 3, 5, 9])
    sq = coupled_strong_errors(system, x0, taus=[2.0**-7], batch_sizes=[int(p) for p in ps], t_end=1.0, seed=6)
    errs = [np.sqrt(sq[int(p)].mean()) for p in ps]
    assert abs(_slope(ps - 1, errs) - particles.RBM1.batch_exponent) <= 0.1


@pytest.mark.parametrize("scheme", ["heun", "rk4"])
def test_deterministic_scheme_orders(scheme):
    order = integrators.SCHEMES[scheme].order
    system = systems.confined_tanh(r=1.0, L=0.8, sigma=0.0)
    x0 = np.random.default_rng(1).standard_normal((6, 2)) * 2
    ref = particles.solve(system, x0, t_end=1.0, dt=2.0**-10, scheme="rk4", save_every=10**9).final
    dts = [2.0**-k for k in range(2, 6)]
    errs = [np.abs(particles.solve(system, x0, t_end=1.0, dt=h, scheme=scheme, save_every=10**9).final - ref).max()
            for h in dts]
    assert abs(_slope(dts, errs) - order) <= 0.15


@pytest.mark.parametrize("scheme", ["euler", "heun", "rk4", "ambient_euler"])
def test_sphere_schemes_keep_their_declared_order(scheme):
    order = integrators.SCHEMES[scheme].order
    system = systems.attention(2.0, "SA", V=np.array([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 1.0]]))
    x0 = sphere_points(5, 3, seed=3)
    ref = particles.solve(system, x0, t_end=1.0, dt=2.0**-10, scheme="rk4", save_every=10**9).final
    dts = [2.0**-k for k in range(2, 6)]
    errs = [np.abs(particles.solve(system, x0, t_end=1.0, dt=h, scheme=scheme, save_every=10**9).final - ref).max()
            for h in dts]
    assert abs(_slope(dts, errs) - order) <= 0.15


def test_euler_maruyama_strong_order_additive_noise():
    declared = integrators.EULER.strong_order_additive
    system = systems.confined_tanh(r=1.0, L=0.3, sigma=1.0)
    x0 = np.random.default_rng(3).standard_normal((64, 8, 1))
    fine = 2.0**-10
    ref = particles.solve(system, x0, t_end=1.0, dt=fine, seed=8, save_every=10**9).final
    dts = [2.0**-k for k in range(3, 8)]
    errs = [np.sqrt(np.mean((particles.solve(system, x0, t_end=1.0, dt=h, noise_dt=fine, seed=8,
                                             save_every=10**9).final - ref) ** 2)) for h in dts]
    assert abs(_slope(dts, errs) - declared) <= 0.1
