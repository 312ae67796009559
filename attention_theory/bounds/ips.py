r"""T3 and the Dyson gas: numeric statements of THEORY Part A that the particle-system studies compare against.

=============================================  =======  ====================================================
function                                       label    what it returns
=============================================  =======  ====================================================
:func:`batch_variance_factor`                  T3       E ``|chi_i|^2`` / Lambda_i for the RBM-1 partition
                                                        (the engine's :mod:`particles.integrators`, re-exported)
:func:`batch_lambdas`                          T3       Lambda_i, the finite-population variance of the K_ij,
                                                        from a kernel matrix
:func:`kernel_lambdas`                         T3       Lambda_i at positions x, for a :class:`particles.System`
:func:`finite_n_batch_slope`                   T3, T4   the log-log slope in (p - 1) that T3's finite-N factor
                                                        predicts for the RMS batch error
:func:`semicircle_density`                     A1.2     rho(x) = sqrt(2 - x^2)/pi
:func:`semicircle_cdf`                         A1.2     its CDF
:func:`dyson_stationary_second_moment`         T1, T2   the stationary E m2 of Dyson Brownian motion, continuous
                                                        time and exact Euler
=============================================  =======  ====================================================

Plain NumPy; positions and kernels follow the engine's conventions (N
particles, pair axes ``(i, j)`` before the vector axis).
"""

from __future__ import annotations

import math

import numpy as np

from particles.integrators import batch_variance_factor

__all__ = [
    "batch_variance_factor",
    "batch_lambdas",
    "kernel_lambdas",
    "finite_n_batch_slope",
    "semicircle_density",
    "semicircle_cdf",
    "dyson_stationary_second_moment",
]


def batch_lambdas(K):
    r"""Lambda_i of T3 from a kernel matrix: :math:`\frac1{N-2}\sum_{j\ne i} |K_{ij} - \bar K_i|^2`.

    :math:`\bar K_i = \frac1{N-1}\sum_{j\ne i} K_{ij}` is the mean interaction of
    particle i. ``K`` has shape ``(..., N, N, d)`` (leading axes are
    independent configurations, then the pair axes i, j, then the vector
    axis); its diagonal is ignored. Returns shape ``(..., N)``.
    """
    K = np.array(K, dtype=np.float64)
    n = K.shape[-2]
    if K.ndim < 3 or K.shape[-3] != n:
        raise ValueError(f"K must have shape (..., N, N, d), got {K.shape}")
    if n < 3:
        raise ValueError(f"Lambda_i needs N >= 3 particles, got N = {n}")
    idx = np.arange(n)
    K[..., idx, idx, :] = 0.0
    kbar = K.sum(axis=-2) / (n - 1)
    dev = K - kbar[..., :, None, :]
    dev[..., idx, idx, :] = 0.0
    return np.sum(dev**2, axis=(-2, -1)) / (n - 2)


def kernel_lambdas(system, x):
    """Lambda_i of T3 (:func:`batch_lambdas`) for ``system``'s kernel at positions ``x`` of shape (N, d)."""
    x = np.asarray(x, dtype=np.float64)
    return batch_lambdas(system.kernel_np(x[:, None, :], x[None, :, :], system.params))


def finite_n_batch_slope(n, ps):
    """Least-squares slope of ``0.5 log batch_variance_factor(n, p)`` vs ``log(p - 1)`` over the batch sizes ps.

    With T3's finite-N factor in place of 1/(p - 1), the RMS batch error
    ~ sqrt(factor) has this slope in (p - 1); as n -> infinity it tends to
    -1/2 (``RBM1.batch_exponent``).
    """
    ps = np.asarray(ps)
    factor = np.array([batch_variance_factor(n, int(p)) for p in ps])
    return float(np.polyfit(np.log(ps - 1.0), 0.5 * np.log(factor), 1)[0])


def semicircle_density(x):
    """rho(x) = sqrt(2 - x^2)/pi on [-sqrt 2, sqrt 2], 0 outside (THEORY A1.2)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(np.clip(2.0 - x * x, 0.0, None)) / math.pi


def semicircle_cdf(x):
    r"""CDF of the semicircle law rho(x) = sqrt(2 - x^2)/pi on [-sqrt 2, sqrt 2] (THEORY A1.2).

    F(x) = 1/2 + (x sqrt(2 - x^2)/2 + arcsin(x / sqrt 2)) / pi, clipped to
    [0, 1] outside the support.

    >>> float(semicircle_cdf(0.0)), float(semicircle_cdf(2.0)), float(semicircle_cdf(-2.0))
    (0.5, 1.0, 0.0)
    """
    s2 = math.sqrt(2.0)
    x = np.clip(np.asarray(x, dtype=np.float64), -s2, s2)
    return 0.5 + (x * np.sqrt(np.maximum(2.0 - x * x, 0.0)) / 2.0 + np.arcsin(x / s2)) / np.pi


def dyson_stationary_second_moment(n, dt=0.0, pair_term=None, force_sq=None):
    r"""Stationary mean of m2 = (1/N) sum_i lambda_i^2 for Dyson Brownian motion (beta = 2), full or RBM.

    Continuous time, eps = 0. Ito's formula for
    dl_i = -l_i dt + F_i dt + N^{-1/2} dB_i gives
    d m2 = (2/N) sum_i l_i (-l_i + F_i) dt + (1/N) dt + martingale, so

        d E m2 / dt = -2 E m2 + 2 A + 1/N,      A = E (1/N) sum_i l_i F_i.

    For the full system, F_i = (1/N) sum_{j != i} 1/(l_i - l_j), and pairing
    (i, j) with (j, i): sum_i l_i F_i = (1/N) sum_{i<j} (l_i - l_j)/(l_i - l_j)
    = (N-1)/2. For RBM-1 (normalisation c_N = (N-1)/N, batch weight
    1/(``|C|``-1)): sum_i l_i F_i = c_N sum_batches (1/(``|C|``-1)) ``|C|(|C|-1)/2`` =
    c_N N/2 = (N-1)/2, for EVERY partition. Either way A = (N-1)/(2N), and
    the stationary value is E m2 = A + 1/(2N) = 1/2, for every N and both
    methods. (With the regularised kernel z/(z^2 + eps^2) each pair
    contributes z^2/(z^2 + eps^2) < 1 instead of 1: A is slightly smaller.)

    Euler-Maruyama with step dt. l' = (1 - dt) l + dt F + sqrt(dt/N) xi
    gives E m2' = (1-dt)^2 E m2 + 2 dt (1-dt) A + dt^2 B + dt/N with
    B = E (1/N) sum_i F_i^2, hence the exact stationary identity

        E m2 = [2 (1 - dt) A + dt B + 1/N] / (2 - dt).

    For RBM, B carries the batch-force variance of T3:
    B = c_N^2 (1/N) sum_i (Kbar_i^2 + batch_variance_factor(N, p) Lambda_i),
    and Lambda_i ~ E 1/(l_i - l_j)^2 grows like N for the singular kernel, so
    the Euler bias dt B / 2 is O(dt N) for RBM against O(dt) for the full
    system: RBM on Dyson needs dt << 1/N.

    Parameters
    ----------
    n : int
        N.
    dt : float, default 0
        Euler step; 0 is continuous time.
    pair_term : float, optional
        A; default (N-1)/(2N), the eps = 0 value.
    force_sq : float, optional
        B; required when dt > 0.

    >>> dyson_stationary_second_moment(64)
    0.5
    """
    a = (n - 1) / (2.0 * n) if pair_term is None else float(pair_term)
    if dt == 0:
        return a + 1.0 / (2.0 * n)
    if force_sq is None:
        raise ValueError("force_sq (B = E (1/N) sum_i F_i^2) is required when dt > 0")
    return (2.0 * (1.0 - dt) * a + dt * float(force_sq) + 1.0 / n) / (2.0 - dt)
