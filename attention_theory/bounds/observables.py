r"""Order parameters of tokens on the sphere S^(d-1): the empirical mean and the harmonic powers.

=====================================  ==============================================================
function                               what it returns
=====================================  ==============================================================
:func:`order_parameter`                ``|(1/n) sum_i x_i|``, 0 for a balanced cloud, 1 for one cluster
:func:`harmonic_power`                 the power of the empirical measure in the degree-l spherical
                                       harmonics, normalised to 1 for one cluster
=====================================  ==============================================================

The degree-l power of the empirical measure :math:`\mu = \frac1n\sum_i \delta_{x_i}` is the squared norm
of its projection on the degree-l harmonics, which by the addition theorem is a double sum of the
zonal harmonic of the pairwise cosines:

.. math::

   P_l(x) = \frac{1}{n^2}\sum_{i,j} \frac{C_l^{(\alpha)}(x_i\cdot x_j)}{C_l^{(\alpha)}(1)}, \qquad
   \alpha = \frac{d-2}{2},

with :math:`C_l^{(\alpha)}` the Gegenbauer polynomial (the Chebyshev polynomial :math:`T_l` on the circle,
d = 2, where :math:`P_l = |\frac1n\sum_j e^{i l\theta_j}|^2`, the Fourier modes). Normalised so that n
tokens at one point give :math:`P_l = 1` for every l; :math:`P_1 = |\bar x|^2` (the order parameter
squared); for n independent uniform tokens :math:`E P_l = 1/n` (the diagonal), so a phase transition
shows as :math:`n P_l` leaving 1. These are the observables of the noisy-transformer phase transition
(Mun and Rosenzweig, arXiv 2604.16288 and 2606.05140): the uniform state loses stability through the
degree-one mode.
"""

from __future__ import annotations

import numpy as np

__all__ = ["order_parameter", "harmonic_power"]


def _tokens(x):
    a = np.asarray(x, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] < 2 or a.shape[-2] < 1:
        raise ValueError(f"x must have shape (..., n, d) with n >= 1 tokens and d >= 2, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("x must contain only finite values")
    return a


def order_parameter(x):
    """``|(1/n) sum_i x_i|`` of tokens ``x`` of shape (..., n, d): an array of shape (...) (a float for (n, d))."""
    a = _tokens(x)
    out = np.linalg.norm(a.mean(axis=-2), axis=-1)
    return float(out) if out.ndim == 0 else out


def harmonic_power(x, degree):
    r"""The degree-``degree`` power :math:`P_l` of the empirical measure of unit tokens ``x`` (..., n, d).

    Parameters
    ----------
    x : array_like, shape (..., n, d)
        Unit vectors (rows), d >= 2; not renormalised here (the cosines are clipped to [-1, 1]).
    degree : int
        l >= 1.

    Returns
    -------
    float or ndarray of shape (...)
        :math:`P_l` as in the module docstring: 1 for one cluster, mean 1/n for n independent uniform
        tokens. Time O(n^2 d) per set of tokens.
    """
    from scipy.special import eval_chebyt, eval_gegenbauer

    a = _tokens(x)
    if isinstance(degree, (bool, np.bool_)) or not isinstance(degree, (int, np.integer)) or degree < 1:
        raise ValueError(f"degree must be an integer >= 1, got {degree!r}")
    d = a.shape[-1]
    cos = np.clip(a @ np.swapaxes(a, -1, -2), -1.0, 1.0)
    if d == 2:
        zonal = eval_chebyt(int(degree), cos)
    else:
        alpha = (d - 2) / 2.0
        zonal = eval_gegenbauer(int(degree), alpha, cos) / eval_gegenbauer(int(degree), alpha, 1.0)
    out = zonal.mean(axis=(-2, -1))
    return float(out) if out.ndim == 0 else out
