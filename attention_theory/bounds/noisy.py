r"""The Bessel-function predictions for noisy USA dynamics on the sphere S^(d-1).

=====================================  ==============================================================
function                               what it returns
=====================================  ==============================================================
:func:`noisy_critical_beta`            beta*(d), the root of I_{d/2+1}(beta) / I_{d/2}(beta) = 1/d
:func:`noisy_coupling_threshold`       K#(beta, d), the linear-stability threshold of the uniform state
:func:`noisy_kappa_threshold`          kappa# = 2 K#, the threshold of kappa = 2 / sigma^2 in this library
:func:`noisy_sigma_threshold`          sigma# = K#^(-1/2): the uniform state is unstable for sigma < sigma#
=====================================  ==============================================================

Source. Mun and Rosenzweig, arXiv:2606.05140 (2026), abstract (read through
the ``search`` tool; the body of the paper was not available here): for the
McKean-Vlasov free energy of the unnormalised self-attention (USA) model on
the unit sphere in every dimension d >= 2 there is a unique beta*(d) > 0
with I_{d/2+1}(beta*) / I_{d/2}(beta*) = 1/d; for 0 < beta <= beta* the
uniform density is the unique global minimiser up to the linear-stability
threshold K#(beta) = beta^(d/2) / (2^(d/2) Gamma(d/2) I_{d/2}(beta)) and the
transition is continuous (K_c = K#); for beta > beta* it is discontinuous
(K_c < K#). Their d = 2 paper (arXiv:2604.16288, abstract) writes the circle
as theta in [0, 1) with the interaction W_beta(theta) = (exp(beta cos(2 pi
theta)) - 1) / beta and a coupling strength K.

Conventions. The abstracts do not say how K enters the particle
SDE, so the papers' own normalisation of K is not checked here. What is
derived here, in this library's convention (USA with Q = K = V = I, the
mean over the tokens, noise sigma with generator (sigma^2 / 2)
Laplace-Beltrami, :func:`particles.solve`): the mean-field equation is
d rho/dt = (sigma^2 / 2) Delta rho - div(rho grad(W * rho)) with
W(t) = exp(beta t) / beta, t = <x, y>, W * rho(x) = int W(<x, y>) rho(y) dy and
rho a density against the normalised uniform measure dy. Around the uniform state a degree-l harmonic grows at the rate
l (l + d - 2) (lambda_l - sigma^2 / 2), lambda_l the Funk-Hecke coefficient
of W; the degree-one one, lambda_1 = E[t exp(beta t)] / beta =
Gamma(d/2) 2^(d/2 - 1) beta^(-d/2) I_{d/2}(beta), is the largest (the
coefficients of exp(beta t) decrease with l), so the uniform state is unstable
exactly when sigma^2 < 2 lambda_1 = 1 / K#(beta). With kappa = 2 / sigma^2
(the SDE written with sqrt(2 / kappa) P_x dW) that is kappa > kappa# = 2 K#,
the value derived in the library's convention; the papers' K is then kappa / 2 if their threshold is
the same instability, which matches their small-beta limit K# -> d/2 (the
noisy Kuramoto threshold sigma^2 = 1 on the circle, d = 2). The test checks
2 lambda_1 K# = 1 with lambda_1 computed by quadrature.
beta*(2) = 2.44692 and beta*(3) = 1.81615 (2.447 and 1.816, derived independently before) are
confirmed numerically by :func:`noisy_critical_beta`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.optimize import brentq
from scipy.special import ive

from attention_theory.bounds._checks import _positive_int

__all__ = ["noisy_critical_beta", "noisy_coupling_threshold", "noisy_kappa_threshold", "noisy_sigma_threshold"]


def _check_beta(beta):
    if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"beta must be a real number, got {type(beta).__name__}")
    beta = float(beta)
    if not (math.isfinite(beta) and beta > 0.0):
        raise ValueError(f"beta must be finite and > 0, got {beta!r}")
    return beta


def _ratio(nu, beta):
    # ive scales both by exp(-beta): the ratio is the same and neither overflows at large beta
    return ive(nu + 1.0, beta) / ive(nu, beta)


def noisy_critical_beta(d):
    """The critical inverse temperature beta*(d) of noisy USA dynamics on S^(d-1).

    Parameters
    ----------
    d : int
        Ambient dimension, d >= 2 (tokens on the sphere S^(d-1) of R^d).

    Returns
    -------
    float
        The unique beta > 0 with I_{d/2+1}(beta) / I_{d/2}(beta) = 1/d
        (Mun and Rosenzweig, arXiv:2606.05140, abstract). The ratio
        I_{nu+1}/I_nu increases from 0 (at beta = 0) to 1 (beta -> inf),
        so the root is unique; it is bracketed in (0, 4 d) and found by
        ``scipy.optimize.brentq`` to machine precision. beta*(2) = 2.44692,
        beta*(3) = 1.81615.

    Raises
    ------
    TypeError
        ``d`` is not an integer.
    ValueError
        ``d < 2``.
    """
    d = _positive_int("d", d, low=2)
    nu = d / 2.0

    def f(b):
        return _ratio(nu, b) - 1.0 / d

    # near 0 the ratio is ~ beta / (d + 2) < 1/d; at 4 d it is above beta / (nu + 1 + sqrt((nu + 1)^2 + beta^2))
    # (Amos' bound), about 0.8 > 1/d for every d >= 2
    return float(brentq(f, 1e-12, 4.0 * d, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200))


def noisy_coupling_threshold(beta, d):
    """The linear-stability threshold K#(beta, d) of the uniform density (the papers' coupling K).

    Parameters
    ----------
    beta : float
        Inverse temperature of the USA interaction, finite and > 0.
    d : int
        Ambient dimension, d >= 2.

    Returns
    -------
    float
        K#(beta) = beta^(d/2) / (2^(d/2) Gamma(d/2) I_{d/2}(beta))
        (arXiv:2606.05140, abstract), computed in logarithms with the scaled
        Bessel function so that large beta does not overflow. It decreases
        strictly in beta (d log K#/d beta = -I_{d/2+1}/I_{d/2}), from d/2 at
        beta -> 0.

    Raises
    ------
    TypeError
        ``beta`` is not a real number or ``d`` not an integer.
    ValueError
        ``beta <= 0`` or not finite, ``d < 2``.
    """
    beta = _check_beta(beta)
    d = _positive_int("d", d, low=2)
    nu = d / 2.0
    log_k = nu * math.log(beta / 2.0) - math.lgamma(nu) - (math.log(ive(nu, beta)) + beta)
    return math.exp(log_k)


def noisy_kappa_threshold(beta, d):
    """The threshold kappa#(beta, d) = 2 K#(beta, d) of kappa = 2 / sigma^2 in this library's convention.

    Parameters
    ----------
    beta : float
        Inverse temperature, finite and > 0.
    d : int
        Ambient dimension, d >= 2.

    Returns
    -------
    float
        ``2 * noisy_coupling_threshold(beta, d)``: the uniform state of
        noisy USA (Q = K = V = I) is linearly unstable for
        kappa = 2 / sigma^2 > kappa# (the derivation is in the module
        docstring). That this is the papers' K# with K = kappa / 2 rests on
        their abstracts' formula and its small-beta limit, not on their SDE,
        which was not read.

    Raises
    ------
    TypeError, ValueError
        As :func:`noisy_coupling_threshold`.
    """
    return 2.0 * noisy_coupling_threshold(beta, d)


def noisy_sigma_threshold(beta, d):
    """The noise level sigma#(beta, d) = K#(beta, d)^(-1/2) below which the uniform state is unstable.

    Parameters
    ----------
    beta : float
        Inverse temperature, finite and > 0.
    d : int
        Ambient dimension, d >= 2.

    Returns
    -------
    float
        sigma# with sigma#^2 = 2 lambda_1 = 1 / K#(beta): noisy USA
        (``particles.systems.attention(beta, kind="USA", sigma=sigma)``) has
        a linearly unstable uniform state for sigma < sigma# (mean-field
        limit; see the module docstring). It tends to sqrt(2 / d) as
        beta -> 0 and increases with beta.

    Raises
    ------
    TypeError, ValueError
        As :func:`noisy_coupling_threshold`.
    """
    return noisy_coupling_threshold(beta, d) ** -0.5
