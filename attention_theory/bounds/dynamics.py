r"""Part C: numeric statements about self-attention dynamics on the sphere (T19, T20, B5), Q = K = V = I.

=====================================  ========  ==============================================================
function                               label     what it returns
=====================================  ========  ==============================================================
:func:`gamma_reference`                T19, T20  gamma(t) of the equiangular ODE (``solve_ivp``, DOP853)
:func:`equiangular_time`               T19, T20  the time at which gamma reaches a level (a quadrature)
:func:`collapse_rate`                  T19, T20  the rate of 1 - gamma ~ exp(-rate t) near collapse
:func:`attention_energy`               T19, T20  E_beta(X), non-decreasing along the flows
:func:`attention_energy_max`           T19, T20  its largest value, e^beta/(2 beta), at one cluster
:func:`sa_force`                       T19       the SA vector field
:func:`averaged_pair_force`            B5        the SA force averaged over the RBM-1 pairings (p = 2)
:func:`pair_averaging_floor`           B5        squared distance at T between the SA flow and the pair-averaged
                                                 flow: the bias floor of RBM-1 on SA
:func:`circle_cluster_count`           T19       the number of clusters of points on the circle at a resolution
=====================================  ========  ==============================================================

Tokens are rows of ``x`` (shape (n, d), unit norm); plain NumPy and SciPy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.integrate import solve_ivp

__all__ = [
    "gamma_reference",
    "equiangular_time",
    "collapse_rate",
    "attention_energy",
    "attention_energy_max",
    "sa_force",
    "averaged_pair_force",
    "pair_averaging_floor",
    "circle_cluster_count",
]


def _check_kind(kind):
    if kind not in ("SA", "USA"):
        raise ValueError(f"kind must be 'SA' or 'USA', got {kind!r}")


def gamma_reference(kind, beta, n, t):
    r"""gamma(t) of the equiangular ODE of Part C at the times ``t`` (``solve_ivp``, DOP853, rtol 1e-13).

    .. math:: \gamma' = \frac{2 e^{\beta\gamma}(1-\gamma)((n-1)\gamma+1)}{e^\beta + (n-1)e^{\beta\gamma}}
              \ \text{(SA)},\qquad
              \gamma' = \frac2n e^{\beta\gamma}(1-\gamma)((n-1)\gamma+1)\ \text{(USA)},\qquad \gamma(0)=0.
    """
    t = np.asarray(t, dtype=float)

    if kind == "SA":
        def rhs(_, g):
            e = math.exp(beta * (g[0] - 1.0))  # numerator and denominator divided by e^beta
            return [2.0 * e * (1.0 - g[0]) * ((n - 1) * g[0] + 1.0) / (1.0 + (n - 1) * e)]
    elif kind == "USA":
        def rhs(_, g):
            return [2.0 / n * math.exp(beta * g[0]) * (1.0 - g[0]) * ((n - 1) * g[0] + 1.0)]
    else:
        raise ValueError(f"kind must be 'SA' or 'USA', got {kind!r}")
    sol = solve_ivp(rhs, (0.0, float(t[-1])), [0.0], t_eval=t, method="DOP853", rtol=1e-13, atol=1e-15)
    if not sol.success:
        raise RuntimeError(f"gamma ODE failed: {sol.message}")
    return sol.y[0]


def equiangular_time(kind, beta, n, level):
    r"""The time at which the equiangular solution gamma(t) of Part C reaches ``level`` (0 <= level < 1).

    gamma' = f(gamma) > 0 on [0, 1) is separable, so the time is a quadrature
    (``scipy.integrate.quad``) of 1/f:

    .. math:: t(\ell) = \int_0^\ell \frac{d\gamma}{f(\gamma)},\qquad
              \frac1{f} = \frac{e^{\beta(1-\gamma)} + n - 1}{2(1-\gamma)((n-1)\gamma+1)}\ \text{(SA)},\qquad
              \frac1{f} = \frac{n e^{-\beta\gamma}}{2(1-\gamma)((n-1)\gamma+1)}\ \text{(USA)}.

    The phase-diagram curve gamma_beta(t) = 1 - 1e-3 is ``equiangular_time(kind, beta, n, 1 - 1e-3)``
    as a function of beta.
    """
    from scipy.integrate import quad

    if not 0.0 <= level < 1.0:
        raise ValueError(f"level must be in [0, 1), got {level!r}")
    a = n - 1.0
    if kind == "SA":
        def inv(g):
            return (math.exp(beta * (1.0 - g)) + a) / (2.0 * (1.0 - g) * (a * g + 1.0))
    elif kind == "USA":
        def inv(g):
            return n * math.exp(-beta * g) / (2.0 * (1.0 - g) * (a * g + 1.0))
    else:
        raise ValueError(f"kind must be 'SA' or 'USA', got {kind!r}")
    value, err = quad(inv, 0.0, level, limit=200, epsabs=0.0, epsrel=1e-11)
    if not err <= 1e-8 * max(1.0, value):
        raise RuntimeError(f"quadrature of the equiangular time did not converge (estimate {value}, error {err})")
    return float(value)


def collapse_rate(kind, beta):
    r"""Rate of 1 - gamma(t) ~ exp(-rate t) as gamma -> 1: 2 for SA, 2 e^beta for USA.

    Linearising the equiangular ODE at gamma = 1: with e = 1 - gamma, the
    factor (n - 1) gamma + 1 tends to n and e^(beta gamma) to e^beta, so
    gamma' = 2 e^beta e n / (e^beta + (n - 1) e^beta) + O(e^2) = 2 e + O(e^2) (SA) and
    gamma' = (2/n) e^beta e n + O(e^2) = 2 e^beta e + O(e^2) (USA); n drops out.
    """
    _check_kind(kind)
    return 2.0 if kind == "SA" else 2.0 * math.exp(beta)


def attention_energy(x, beta):
    r"""E_beta(X) = (1/(2 beta n^2)) sum_{i,j} exp(beta <x_i, x_j>) for x of shape (..., n, d)."""
    x = np.asarray(x, dtype=float)
    n = x.shape[-2]
    gram = np.einsum("...id,...jd->...ij", x, x)
    return np.exp(beta * gram).sum(axis=(-2, -1)) / (2.0 * beta * n * n)


def attention_energy_max(beta):
    """The largest value of E_beta, e^beta / (2 beta), reached at one cluster (every <x_i, x_j> = 1), beta > 0."""
    return math.exp(beta) / (2.0 * beta)


def _project(x, f):
    return f - np.sum(f * x, axis=-1, keepdims=True) * x


def sa_force(x, beta):
    """SA force (T19) with Q = K = V = I, for x of shape (n, d): P_x of the softmax-weighted mean of the tokens."""
    s = beta * (x @ x.T)
    w = np.exp(s - s.max(axis=1, keepdims=True))
    return _project(x, (w @ x) / w.sum(axis=1, keepdims=True))


def averaged_pair_force(x, beta):
    r"""SA force averaged over the RBM-1 partitions into pairs (p = 2, n even), Q = K = V = I, ``|x_i|`` = 1.

    In a pair {i, j} the batch softmax gives token i the force
    :math:`P_{x_i}(x_j)\,/(1 + e^{\beta(1 - x_i\cdot x_j)})` (its own term is
    killed by the projection), and under a uniform random pairing the partner
    j is uniform among the n - 1 others, so the mean force is the average of
    that over j != i. As tau -> 0, RBM-1 integrates this averaged force
    (averaging principle), not the SA force: the difference is the bias
    floor of B5.
    """
    n = x.shape[0]
    g = x @ x.T
    w = 1.0 / (1.0 + np.exp(beta * (1.0 - g)))
    np.fill_diagonal(w, 0.0)
    return _project(x, (w @ x) / (n - 1))


def _flow(force, x0, beta, t_end):
    n, d = x0.shape
    sol = solve_ivp(lambda _, y: force(y.reshape(n, d), beta).ravel(), (0.0, t_end), x0.ravel(), method="DOP853",
                    rtol=1e-10, atol=1e-12)
    if not sol.success:
        raise RuntimeError(f"flow failed: {sol.message}")
    return sol.y[:, -1].reshape(n, d)


def pair_averaging_floor(x0, beta, t_end):
    """Mean over tokens of the squared distance at ``t_end`` between the SA flow and the pair-averaged flow.

    Both flows start at ``x0`` (shape (n, d)) and are solved by ``solve_ivp``
    (DOP853, rtol 1e-10). By the averaging principle, RBM-1 with p = 2 follows
    :func:`averaged_pair_force` as tau -> 0, so this is the squared error floor
    of RBM-1 integrating SA (B5).
    """
    return np.mean(np.sum((_flow(sa_force, x0, beta, t_end) - _flow(averaged_pair_force, x0, beta, t_end)) ** 2,
                          axis=-1))


def circle_cluster_count(theta, delta):
    r"""Number of clusters of points on the circle at resolution ``delta`` (angles ``theta`` of shape (..., n)).

    Rule: sort the angles and take the n circular gaps between neighbours;
    the clusters are the groups separated by a gap larger than ``delta``
    (single linkage at angular distance ``delta``: two points are in one
    cluster when a chain of neighbours less than ``delta`` apart joins
    them). The count is the number of gaps > ``delta``, and 1 when there is
    none.
    """
    a = np.sort(np.mod(np.asarray(theta, dtype=float), 2.0 * math.pi), axis=-1)
    gaps = np.diff(np.concatenate([a, a[..., :1] + 2.0 * math.pi], axis=-1), axis=-1)
    return np.maximum(1, np.count_nonzero(gaps > delta, axis=-1))
