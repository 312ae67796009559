"""attention_theory.bounds.noisy: beta*(d) and K#(beta, d) of noisy USA dynamics (issue 16, item 4).

The oracles are independent of the code under test: the defining equation
evaluated with the unscaled ``scipy.special.iv``, the power series of I_nu
(I_nu(b) = sum_k (b/2)^(2k+nu) / (k! Gamma(k+nu+1))) for small beta, and the
Hankel expansion I_nu(b) ~ e^b / sqrt(2 pi b) (1 - (4 nu^2 - 1) / (8 b)) for
large beta.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import beta as beta_fn
from scipy.special import iv

from attention_theory import bounds
from attention_theory.bounds import (
    noisy_coupling_threshold,
    noisy_critical_beta,
    noisy_kappa_threshold,
    noisy_sigma_threshold,
)

DIMS = (2, 3, 4, 5, 8)


@pytest.mark.parametrize("d", DIMS)
def test_root_solves_the_defining_equation(d):
    b = noisy_critical_beta(d)
    assert abs(iv(d / 2 + 1, b) / iv(d / 2, b) - 1.0 / d) < 1e-12


def test_issue_values():
    # issue 16 quotes beta* = 2.447 (d = 2) and 1.816 (d = 3): confirmed to the digits given
    assert round(noisy_critical_beta(2), 3) == 2.447
    assert round(noisy_critical_beta(3), 3) == 1.816


def test_root_decreases_with_dimension():
    roots = [noisy_critical_beta(d) for d in range(2, 12)]
    assert all(a > b for a, b in zip(roots, roots[1:]))


def _k_series(beta, d, terms=40):
    nu = d / 2
    i_nu = sum((beta / 2) ** (2 * k + nu) / (math.factorial(k) * math.gamma(k + nu + 1)) for k in range(terms))
    return beta ** nu / (2 ** nu * math.gamma(nu) * i_nu)


@pytest.mark.parametrize("d", DIMS)
def test_small_beta(d):
    # K# = d/2 (1 - beta^2 / (2 (d + 2)) + O(beta^4)): the limit d/2 and the first correction
    for beta in (1e-3, 1e-2, 0.1):
        k = noisy_coupling_threshold(beta, d)
        assert abs(k - d / 2 * (1 - beta ** 2 / (2 * (d + 2)))) < d * beta ** 4
    for beta in (0.5, 1.0, 3.0):
        assert noisy_coupling_threshold(beta, d) == pytest.approx(_k_series(beta, d), rel=1e-13)


@pytest.mark.parametrize("d", DIMS)
def test_large_beta(d):
    # K# ~ beta^(d/2) sqrt(2 pi beta) e^(-beta) / (2^(d/2) Gamma(d/2)) (1 + (4 nu^2 - 1) / (8 beta)); relative
    # error O(beta^-2), and no overflow where iv itself overflows (beta = 720; K# itself underflows past about 745)
    nu = d / 2
    for beta in (50.0, 200.0, 720.0):
        log_lead = nu * math.log(beta / 2) + 0.5 * math.log(2 * math.pi * beta) - beta - math.lgamma(nu)
        approx = math.exp(log_lead) * (1 + (4 * nu ** 2 - 1) / (8 * beta))
        k = noisy_coupling_threshold(beta, d)
        assert k > 0 and math.isfinite(k)
        assert abs(k / approx - 1) < 3 * (nu + 1) ** 4 / beta ** 2


@pytest.mark.parametrize("d", DIMS)
def test_strictly_decreasing_in_beta(d):
    betas = np.geomspace(1e-3, 300, 200)
    ks = [noisy_coupling_threshold(b, d) for b in betas]
    assert all(a > b for a, b in zip(ks, ks[1:]))


def _lambda1(beta, d):
    # Funk-Hecke: the degree-one coefficient of W(t) = exp(beta t) / beta, E[t W(t)] with t = <x, y>, y uniform on
    # S^(d-1): t = cos(phi), phi with density sin(phi)^(d-2) / B(1/2, (d-1)/2) on (0, pi) (smooth, unlike t's);
    # folding phi and pi - phi gives the positive integrand 2 t sinh(beta t), free of cancellation at small beta
    def f(phi):
        t = np.cos(phi)
        return 2 * t * np.sinh(beta * t) / beta * np.sin(phi) ** (d - 2) / beta_fn(0.5, (d - 1) / 2)

    val, _ = integrate.quad(f, 0, np.pi / 2, epsabs=0, epsrel=1e-12)
    return val


@pytest.mark.parametrize("d", [2, 3, 4, 6])
@pytest.mark.parametrize("beta", [0.05, 0.7, 1.816, 2.447, 6.0])
def test_threshold_is_the_degree_one_instability(beta, d):
    # the uniform state is unstable iff sigma^2 < 2 lambda_1 (module docstring): 2 lambda_1 K# = 1
    lam = _lambda1(beta, d)
    assert 2 * lam * noisy_coupling_threshold(beta, d) == pytest.approx(1.0, rel=1e-9)
    assert noisy_sigma_threshold(beta, d) ** 2 == pytest.approx(2 * lam, rel=1e-9)
    assert noisy_kappa_threshold(beta, d) == pytest.approx(1 / lam, rel=1e-9)


def test_kappa_is_twice_k():
    assert noisy_kappa_threshold(1.3, 3) == 2 * noisy_coupling_threshold(1.3, 3)


def test_sigma_threshold_small_beta():
    # sigma#^2 -> 2 / d: on the circle the noisy Kuramoto threshold sigma^2 = 1
    for d in (2, 3, 5):
        assert noisy_sigma_threshold(1e-6, d) == pytest.approx(math.sqrt(2 / d), rel=1e-9)


def test_reexported():
    for name in ("noisy_critical_beta", "noisy_coupling_threshold", "noisy_kappa_threshold", "noisy_sigma_threshold"):
        assert name in bounds.__all__


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_beta(bad):
    with pytest.raises(ValueError, match="beta"):
        noisy_coupling_threshold(bad, 3)
    with pytest.raises(ValueError, match="beta"):
        noisy_kappa_threshold(bad, 3)
    with pytest.raises(ValueError, match="beta"):
        noisy_sigma_threshold(bad, 3)


def test_bad_types_and_dimension():
    for d in (1, 0, -3):
        with pytest.raises(ValueError, match="d must be >= 2"):
            noisy_critical_beta(d)
        with pytest.raises(ValueError, match="d must be >= 2"):
            noisy_coupling_threshold(1.0, d)
    with pytest.raises(TypeError, match="d must be an integer"):
        noisy_critical_beta(2.5)
    with pytest.raises(TypeError, match="beta must be a real number"):
        noisy_coupling_threshold("1", 2)
    with pytest.raises(TypeError, match="beta must be a real number"):
        noisy_coupling_threshold(True, 2)
