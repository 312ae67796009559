"""attention_theory.bounds.dynamics (Part C) against closed forms, limits and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

import attention_theory.bounds as bounds
from attention_theory.bounds import dynamics as dyn


def _gamma_beta0(n, t):
    # beta = 0: gamma' = (2/n)(1 - gamma)((n-1) gamma + 1) (SA and USA alike), by partial fractions
    e = np.exp(2.0 * np.asarray(t))
    return (e - 1.0) / (e + n - 1.0)


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_gamma_at_beta_zero_is_the_closed_form(kind):
    t = np.linspace(0.0, 4.0, 9)
    assert_allclose(dyn.gamma_reference(kind, 0.0, 8, t), _gamma_beta0(8, t), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_equiangular_time_at_beta_zero_is_the_closed_form(kind):
    n = 32
    for level in (0.1, 0.5, 0.999):
        want = 0.5 * math.log(((n - 1) * level + 1.0) / (1.0 - level))
        assert dyn.equiangular_time(kind, 0.0, n, level) == pytest.approx(want, rel=1e-10)
    assert dyn.equiangular_time(kind, 1.0, n, 0.0) == 0.0
    with pytest.raises(ValueError, match="level"):
        dyn.equiangular_time(kind, 1.0, n, 1.0)


@pytest.mark.parametrize(("kind", "beta"), [("SA", 2.0), ("USA", 0.5)])
def test_the_ode_reaches_the_level_at_the_equiangular_time(kind, beta):
    # two different algorithms (an ODE solve, a quadrature of 1/f) for the same solution
    t = dyn.equiangular_time(kind, beta, 16, 0.9)
    assert dyn.gamma_reference(kind, beta, 16, [0.0, t])[-1] == pytest.approx(0.9, abs=1e-9)


@pytest.mark.parametrize(("kind", "beta"), [("SA", 1.0), ("SA", 9.0), ("USA", 0.5), ("USA", 2.0)])
def test_collapse_rate_is_the_linearisation_of_the_ode_at_one(kind, beta):
    n, g = 8, 1.0 - 1e-9
    if kind == "SA":
        f = 2 * math.exp(beta * g) * (1 - g) * ((n - 1) * g + 1) / (math.exp(beta) + (n - 1) * math.exp(beta * g))
    else:
        f = 2 / n * math.exp(beta * g) * (1 - g) * ((n - 1) * g + 1)
    assert dyn.collapse_rate(kind, beta) == pytest.approx(f / (1 - g), rel=1e-7)
    with pytest.raises(ValueError, match="kind"):
        dyn.collapse_rate("XA", beta)


def test_energy_of_one_cluster_and_of_orthogonal_tokens():
    beta, n = 1.5, 5
    one = np.tile(np.eye(n)[1], (n, 1))
    assert dyn.attention_energy(one, beta) == pytest.approx(math.exp(beta) / (2 * beta), rel=1e-15)
    eye = np.eye(n)
    want = (n * math.exp(beta) + n * (n - 1)) / (2 * beta * n * n)
    assert dyn.attention_energy(eye, beta) == pytest.approx(want, rel=1e-15)
    assert_allclose(dyn.attention_energy(np.stack([one, eye]), beta), [math.exp(beta) / (2 * beta), want])


def _two_tokens(c):
    return np.array([[1.0, 0.0], [c, math.sqrt(1.0 - c * c)]])


def test_sa_force_of_two_tokens_by_hand():
    beta, c = 2.0, 0.3
    x = _two_tokens(c)
    w12 = math.exp(beta * c) / (math.exp(beta) + math.exp(beta * c))
    f = dyn.sa_force(x, beta)
    assert_allclose(f[0], w12 * (x[1] - c * x[0]), rtol=1e-14, atol=1e-16)
    assert_allclose(np.sum(f * x, axis=1), 0.0, atol=1e-15)  # tangent to the sphere


def test_averaged_pair_force_is_the_mean_over_the_three_pairings_of_four_tokens():
    beta = 1.3
    gen = np.random.default_rng(7)
    x = gen.standard_normal((4, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    def in_pair(i, j):  # the batch softmax of the pair {i, j}, projected, for token i: by hand
        c = x[i] @ x[j]
        return (x[j] - c * x[i]) / (1.0 + math.exp(beta * (1.0 - c)))

    want = np.zeros_like(x)
    for pairing in ([(0, 1), (2, 3)], [(0, 2), (1, 3)], [(0, 3), (1, 2)]):
        for i, j in pairing:
            want[i] += in_pair(i, j) / 3
            want[j] += in_pair(j, i) / 3
    assert_allclose(dyn.averaged_pair_force(x, beta), want, rtol=1e-13, atol=1e-15)


def test_with_two_tokens_the_pair_is_the_whole_system_and_the_floor_vanishes():
    x = _two_tokens(-0.4)
    assert_allclose(dyn.averaged_pair_force(x, 1.0), dyn.sa_force(x, 1.0), rtol=1e-13, atol=1e-16)
    assert dyn.pair_averaging_floor(x, 1.0, 1.0) < 1e-20
    gen = np.random.default_rng(1)
    y = gen.standard_normal((6, 3))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    assert dyn.pair_averaging_floor(y, 1.0, 1.0) > 1e-6  # with more tokens the averaged force differs


def test_circle_cluster_count_by_hand():
    delta = 0.1
    assert dyn.circle_cluster_count(np.array([0.0, 0.05, 3.0]), delta) == 2
    assert dyn.circle_cluster_count(np.full(5, 1.0), delta) == 1
    assert dyn.circle_cluster_count(2 * math.pi * np.arange(8) / 8, delta) == 8
    # across the cut at 0 = 2 pi: one cluster of two points 0.02 apart, and one chain 0.09 apart
    assert dyn.circle_cluster_count(np.array([0.01, 2 * math.pi - 0.01]), delta) == 1
    assert dyn.circle_cluster_count(np.array([0.0, 0.09, 0.18, 0.27]), delta) == 1
    assert_allclose(dyn.circle_cluster_count(np.array([[0.0, 3.0], [1.0, 1.0]]), delta), [2, 1])


def test_the_package_re_exports_the_module():
    for name in dyn.__all__:
        assert getattr(bounds, name) is getattr(dyn, name)


def test_the_largest_energy_is_that_of_one_cluster():
    beta = 2.5
    one = np.tile(np.eye(4)[0], (6, 1))
    assert dyn.attention_energy_max(beta) == pytest.approx(float(dyn.attention_energy(one, beta)), rel=1e-15)
    gen = np.random.default_rng(5)
    x = gen.standard_normal((200, 6, 4))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    assert np.all(dyn.attention_energy(x, beta) < dyn.attention_energy_max(beta))
