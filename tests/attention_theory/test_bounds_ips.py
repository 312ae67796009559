"""attention_theory.bounds.ips (T3, the Dyson gas) against statements that do not use it: hand computations,
closed forms, limits and an exact enumeration of the RBM-1 partitions."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import integrate

import attention_theory.bounds as bounds
from attention_theory.bounds import ips
from particles import systems
from particles.backends import reference
from particles.integrators import batch_variance_factor


def test_lambdas_by_hand_for_three_particles():
    # N = 3, d = 1: Lambda_i = (K_ij - K_ik)^2 / 2 over the two others j, k
    K = np.array([[9.0, 1.0, 4.0], [2.0, 9.0, -1.0], [0.5, 3.5, 9.0]])[..., None]
    assert_allclose(ips.batch_lambdas(K), [(1.0 - 4.0) ** 2 / 2, (2.0 + 1.0) ** 2 / 2, (0.5 - 3.5) ** 2 / 2],
                    rtol=1e-15)


def test_lambdas_are_summed_sample_variances_of_the_others():
    gen = np.random.default_rng(3)
    n, d = 7, 3
    K = gen.standard_normal((n, n, d))
    want = [sum(np.var([K[i, j, c] for j in range(n) if j != i], ddof=1) for c in range(d)) for i in range(n)]
    assert_allclose(ips.batch_lambdas(K), want, rtol=1e-13)
    # leading axes are independent configurations; the input is not modified
    stack = np.stack([K, 2.0 * K])
    before = stack.copy()
    assert_allclose(ips.batch_lambdas(stack), [want, 4.0 * np.asarray(want)], rtol=1e-13)
    assert np.array_equal(stack, before)


@pytest.mark.parametrize(("n", "p"), [(6, 2), (7, 3), (5, 4)])
def test_kernel_lambdas_give_the_exact_second_moment_of_the_batch_force(n, p):
    # T3, checked by averaging over every permutation (each partition equally likely)
    system = systems.confined_tanh(r=1.0, L=0.7)
    x = np.random.default_rng(10 * n + p).standard_normal((n, 2))
    full = reference._force(system, x, np.arange(n), n, 1.0, system.sphere)
    chis = np.array([reference._force(system, x, np.array(perm), p, 1.0, system.sphere) - full
                     for perm in permutations(range(n))])
    second = np.mean(np.sum(chis**2, axis=2), axis=0)
    assert_allclose(second, batch_variance_factor(n, p) * ips.kernel_lambdas(system, x), rtol=1e-12, atol=1e-28)


def test_lambdas_reject_too_few_particles_and_bad_shapes():
    with pytest.raises(ValueError, match="N >= 3"):
        ips.batch_lambdas(np.zeros((2, 2, 1)))
    with pytest.raises(ValueError, match="shape"):
        ips.batch_lambdas(np.zeros((3, 4, 1)))


def test_finite_n_slope_tends_to_minus_one_half_and_is_steeper_at_finite_n():
    ps = [2, 3, 5, 9]
    # 1/(p-1) - 1/(N-1) -> 1/(p-1): the slope of 0.5 log(1/(p-1)) in log(p-1) is -1/2
    assert ips.finite_n_batch_slope(720720, ps) == pytest.approx(-0.5, abs=1e-5)  # 720720: every p divides it
    assert ips.finite_n_batch_slope(64, ps) < -0.5
    # two batch sizes: the slope is the secant, by hand
    n = 40
    f = [1.0 / (p - 1) - 1.0 / (n - 1) for p in (2, 5)]
    assert ips.finite_n_batch_slope(n, [2, 5]) == pytest.approx(0.5 * math.log(f[1] / f[0]) / math.log(4.0),
                                                                rel=1e-12)


def test_semicircle_density_integrates_to_one_with_second_moment_one_half():
    mass = integrate.quad(ips.semicircle_density, -2.0, 2.0, points=[-math.sqrt(2), math.sqrt(2)])[0]
    m2 = integrate.quad(lambda x: x * x * ips.semicircle_density(x), -math.sqrt(2), math.sqrt(2))[0]
    assert mass == pytest.approx(1.0, abs=1e-10)
    assert m2 == pytest.approx(0.5, abs=1e-10)
    assert ips.semicircle_density(0.0) == pytest.approx(math.sqrt(2) / math.pi)
    assert ips.semicircle_density(1.5) == 0.0


def test_semicircle_cdf_is_the_integral_of_the_density():
    for x in (-1.3, -0.2, 0.0, 0.7, 1.4):
        want = integrate.quad(ips.semicircle_density, -math.sqrt(2), x)[0]
        assert float(ips.semicircle_cdf(x)) == pytest.approx(want, abs=1e-10)
    assert float(ips.semicircle_cdf(-5.0)) == 0.0 and float(ips.semicircle_cdf(5.0)) == 1.0


def test_dyson_second_moment_continuous_time_and_euler():
    # continuous time: A = (N-1)/(2N) gives 1/2 for every N
    for n in (2, 16, 1000):
        assert ips.dyson_stationary_second_moment(n) == pytest.approx(0.5, rel=1e-15)
    # the Euler identity is the fixed point of m' = (1-dt)^2 m + 2 dt (1-dt) A + dt^2 B + dt/N
    n, dt, a, b = 64, 0.01, 0.49, 250.0
    m = ips.dyson_stationary_second_moment(n, dt, a, b)
    assert (1 - dt) ** 2 * m + 2 * dt * (1 - dt) * a + dt**2 * b + dt / n == pytest.approx(m, rel=1e-14)
    # dt -> 0 with the eps = 0 pair term: back to the continuous-time value
    assert ips.dyson_stationary_second_moment(n, 1e-9, (n - 1) / (2 * n), 1.0) == pytest.approx(0.5, abs=1e-8)
    with pytest.raises(ValueError, match="force_sq"):
        ips.dyson_stationary_second_moment(n, dt)


def test_the_package_re_exports_the_module_and_the_engine_factor():
    assert ips.batch_variance_factor is batch_variance_factor
    for name in ips.__all__:
        assert getattr(bounds, name) is getattr(ips, name)
