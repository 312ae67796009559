"""Integrators: the *method*, declaring the theory it is expected to obey.

Tests and validation studies read these declarations (``strong_order``,
``weak_order``, ``batch_exponent``) instead of repeating numbers, in the
spirit of diffrax's ``order`` attributes.

Two layers:

- a :class:`Method` says how the interaction is evaluated: ``full`` (all
  pairs, O(N^2)), ``rbm1`` (random batches without replacement, O(Np)),
  ``rbmr`` (random subsets with replacement);
- a :class:`Scheme` is the one-step integrator used inside each step:
  Euler(-Maruyama), Heun or RK4 (the latter two for sigma = 0 only).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Method", "Scheme", "METHODS", "SCHEMES", "FULL", "RBM1", "RBMR", "EULER", "HEUN", "RK4",
           "batch_variance_factor"]


@dataclass(frozen=True)
class Method:
    """How the interaction term is evaluated, with its declared theory.

    Attributes
    ----------
    name : str
    strong_order : float or None
        Order in tau of the strong error against the full system run with the
        same initial data and Brownian increments (THEORY A3), T4.
    weak_order : float or None
        Order in tau of the weak error (T5).
    batch_exponent : float or None
        The strong error behaves like (p - 1) ** batch_exponent while
        tau << 1/(p-1) (T4).
    w2_order_noisy, w2_order_deterministic : float or None
        Declared Wasserstein-2 order in tau (RBM-r, T6).
    n_uniform, time_uniform : bool
        Whether the declared constant is independent of N and of T.
    reference : str
    """

    name: str
    code: int
    strong_order: float | None = None
    weak_order: float | None = None
    batch_exponent: float | None = None
    w2_order_noisy: float | None = None
    w2_order_deterministic: float | None = None
    n_uniform: bool = False
    time_uniform: bool = False
    cost: str = ""
    reference: str = ""
    label: str = ""


FULL = Method(
    name="full",
    code=0,
    cost="O(N^2 d) per step",
    reference="direct summation of T1",
    label="T1",
)

RBM1 = Method(
    name="rbm1",
    code=1,
    strong_order=0.5,
    weak_order=1.0,
    batch_exponent=-0.5,
    n_uniform=True,
    time_uniform=True,
    cost="O(N p d) per step",
    reference=(
        "S. Jin, L. Li, J.-G. Liu, Random batch methods (RBM) for interacting particle systems, "
        "J. Comput. Phys. 400 (2020) 108877 (strong error, T4); S. Jin, L. Li, J.-G. Liu, "
        "SIAM J. Numer. Anal. 2021, arXiv:2003.11257 (weak error, T5)"
    ),
    label="T2, T4, T5",
)

RBMR = Method(
    name="rbmr",
    code=2,
    w2_order_noisy=0.25,
    w2_order_deterministic=0.5,
    cost="O(N d) per unit of pseudo-time tau (N/p sub-steps of O(p^2 d))",
    reference="Z. Cai, J.-G. Liu, Y. Wang, arXiv:2407.19315 (W2 error of RBM with replacement, T6)",
    label="T6",
)

METHODS = {m.name: m for m in (FULL, RBM1, RBMR)}


@dataclass(frozen=True)
class Scheme:
    """One-step scheme used inside each step.

    ``order`` is the deterministic (ODE) order; ``strong_order_additive`` the
    strong order for additive noise (Euler-Maruyama is order 1 there);
    ``stochastic`` says whether the scheme accepts sigma > 0.
    """

    name: str
    code: int
    order: int
    stages: int
    stochastic: bool
    strong_order_additive: float | None = None
    weak_order: float | None = None


EULER = Scheme("euler", 0, order=1, stages=1, stochastic=True, strong_order_additive=1.0, weak_order=1.0)
HEUN = Scheme("heun", 1, order=2, stages=2, stochastic=False)
RK4 = Scheme("rk4", 2, order=4, stages=4, stochastic=False)

SCHEMES = {s.name: s for s in (EULER, HEUN, RK4)}


def batch_variance_factor(n: int, p: int) -> float:
    """``E[1/(|C(i)|-1)] - 1/(N-1)`` for the RBM-1 partition of n into n // p batches.

    The batch-force lemma (T3) reads E|chi_i|^2 = factor * Lambda_i. When p
    divides n this is 1/(p-1) - 1/(n-1); otherwise the batch of particle i
    has size p or p+1 with size-biased probabilities, which this accounts for.
    """
    from particles._batches import batch_sizes  # local: keep this module import-light

    sizes = batch_sizes(n, p)
    # P(|C(i)| = s) = s * (number of batches of size s) / n
    return float(sum(s / n * (1.0 / (s - 1)) for s in sizes if s > 1)) - 1.0 / (n - 1)
