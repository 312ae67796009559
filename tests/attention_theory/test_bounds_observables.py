"""attention_theory.bounds.observables: the order parameter and the harmonic powers on the sphere.

Oracles written here: the Fourier modes on the circle, the spherical harmonics' addition theorem in d = 3
(scipy.special.sph_harm_y summed over the orders), and the exact mean 1/n for independent uniform tokens.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from attention_theory.bounds import harmonic_power, order_parameter


def _sphere(n, d, seed):
    z = np.random.default_rng(seed).standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


@pytest.mark.parametrize("d", [2, 3, 5])
@pytest.mark.parametrize("degree", [1, 2, 3, 6])
def test_one_cluster_has_power_one(d, degree):
    x = np.tile(_sphere(1, d, 3), (9, 1))
    assert_allclose(harmonic_power(x, degree), 1.0, rtol=1e-13)
    assert_allclose(order_parameter(x), 1.0, rtol=1e-13)


@pytest.mark.parametrize("degree", [1, 2, 5])
def test_circle_powers_are_the_fourier_modes(degree):
    theta = np.random.default_rng(4).uniform(0, 2 * math.pi, 37)
    x = np.column_stack([np.cos(theta), np.sin(theta)])
    mode = abs(np.mean(np.exp(1j * degree * theta))) ** 2
    assert_allclose(harmonic_power(x, degree), mode, rtol=1e-12)


@pytest.mark.parametrize("degree", [1, 2, 4])
def test_sphere_powers_follow_the_addition_theorem(degree):
    from scipy.special import sph_harm_y

    x = _sphere(23, 3, 5)
    polar = np.arccos(np.clip(x[:, 2], -1, 1))
    azimuth = np.arctan2(x[:, 1], x[:, 0])
    total = sum(abs(np.mean(sph_harm_y(degree, m, polar, azimuth))) ** 2 for m in range(-degree, degree + 1))
    # sum_m |mean Y_lm|^2 = (2l + 1) / (4 pi) * P_l  (the addition theorem with P_l normalised to 1 at one point)
    assert_allclose(harmonic_power(x, degree), 4 * math.pi / (2 * degree + 1) * total, rtol=1e-12)


def test_degree_one_is_the_order_parameter_squared_and_batches_broadcast():
    x = np.stack([_sphere(15, 4, s) for s in range(3)])
    assert_allclose(harmonic_power(x, 1), order_parameter(x) ** 2, rtol=1e-12)
    assert harmonic_power(x, 2).shape == (3,)


@pytest.mark.parametrize("d", [2, 3])
def test_uniform_tokens_have_mean_power_one_over_n(d):
    # E P_l = 1/n exactly (the diagonal); z-test over 400 independent clouds, two-sided at alpha = 1e-3
    n, sets = 16, 400
    x = np.stack([_sphere(n, d, 100 + s) for s in range(sets)])
    for degree in (1, 2):
        p = harmonic_power(x, degree)
        z = (p.mean() - 1.0 / n) / (p.std(ddof=1) / math.sqrt(sets))
        assert abs(z) < 3.29
    clustered = x.copy()
    clustered[:, : n // 2] = clustered[:, :1]  # half the tokens on one point: a clear negative control
    z = (harmonic_power(clustered, 1).mean() - 1.0 / n) / (p.std(ddof=1) / math.sqrt(sets))
    assert abs(z) > 3.29


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="degree"):
        harmonic_power(_sphere(4, 3, 0), 0)
    with pytest.raises(ValueError, match="x must have shape"):
        order_parameter(np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        harmonic_power(np.full((3, 2), np.nan), 1)
