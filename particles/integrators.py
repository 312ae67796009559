"""Integrators: the *method*, declaring the theory it is expected to obey.

Tests and validation studies read these declarations (``strong_order``,
``weak_order``, ``batch_exponent``) instead of repeating numbers, in the
spirit of diffrax's ``order`` attributes.

Two layers:

- a :class:`Method` says how the interaction is evaluated: ``full`` (all
  pairs, O(N^2)), ``rbm1`` (random batches without replacement, O(Np)),
  ``rbmr`` (random subsets with replacement);
- a :class:`Scheme` is the one-step integrator used inside each step:
  Euler(-Maruyama), Heun or RK4 (the latter two for sigma = 0 only), and
  on the sphere the ambient Euler step (sigma = 0).

On the sphere the two Euler steps differ by where the field is projected:

- ``euler`` (projected): ``x <- (x + h P_x a(x)) / |x + h P_x a(x)|``, with
  ``P_x v = v - <x, v> x``;
- ``ambient_euler``: ``x <- (x + h a(x)) / |x + h a(x)|``, with a the field
  before the tangent projection (for attention: a_i = sum_j
  softmax_j(beta <Q x_i, K x_j>) V x_j). This is the step of the public
  phase-diagram script of Geshkovski et al. (borjanG/2023-transformers-rotf,
  ``phase-diagrams.py``, read at commit 538ba83).

Both are first order for the same ODE (the radial part of h a changes only
the length that the normalisation removes, up to O(h^2) per step) and differ
at O(h^2) per step.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Method", "Scheme", "METHODS", "SCHEMES", "FULL", "RBM1", "RBMR", "EULER", "HEUN", "RK4", "AMBIENT_EULER",
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
    ``stochastic`` says whether the scheme accepts sigma > 0. ``a`` and ``b``
    are the explicit Runge-Kutta (Butcher) tableau: stage s is evaluated at
    x + h sum_q a[s][q] k_q (q < s), the step adds h sum_s b[s] k_s (the
    coefficients are checked against the order conditions in the tests).
    """

    name: str
    code: int
    order: int
    stages: int
    stochastic: bool
    strong_order_additive: float | None = None
    weak_order: float | None = None
    projected: bool = True  # on the sphere: the field is projected on the tangent space before the step
    sphere_only: bool = False  # defined only for systems on the sphere (the unprojected field needs a sphere)
    a: tuple = ((0.0,),)
    b: tuple = (1.0,)

    def tableau(self):
        """``(A, B)`` as float arrays of shape (stages, stages) and (stages,)."""
        import numpy as np  # local: keep this module import-light

        A = np.zeros((self.stages, self.stages))
        for s, row in enumerate(self.a):
            A[s, :len(row)] = row
        return A, np.array(self.b, dtype=float)


EULER = Scheme("euler", 0, order=1, stages=1, stochastic=True, strong_order_additive=1.0, weak_order=1.0)
HEUN = Scheme("heun", 1, order=2, stages=2, stochastic=False, a=((), (1.0,)), b=(0.5, 0.5))
RK4 = Scheme("rk4", 2, order=4, stages=4, stochastic=False, a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
             b=(1 / 6, 1 / 3, 1 / 3, 1 / 6))
AMBIENT_EULER = Scheme("ambient_euler", 3, order=1, stages=1, stochastic=False, projected=False, sphere_only=True)

SCHEMES = {s.name: s for s in (EULER, HEUN, RK4, AMBIENT_EULER)}


def batch_variance_factor(n: int, p: int, remainder: str = "spread") -> float:
    """``E[1/(|C(i)|-1)] - 1/(N-1)`` for the RBM-1 partition of n into batches of p.

    The batch-force lemma (T3) reads E|chi_i|^2 = factor * Lambda_i, the
    same factor for every particle i (its position in the permutation is
    uniform).

    Parameters
    ----------
    n : int
        Number of particles N, >= 2 (the lemma needs N >= 3 for Lambda_i).
    p : int
        Batch size, 2 <= p <= n.
    remainder : {"spread", "pad"}
        How the batches are cut when p does not divide n
        (:func:`particles.batching.batch_bounds`). When p divides n both
        give 1/(p-1) - 1/(n-1). Otherwise the batch of particle i has size s
        with the size-biased probability s * (number of batches of size s) / n.
        Under ``"pad"`` with n mod p == 1 the lone particle's batch is
        widened to all n (it gets the exact force), so it contributes 0.

    Returns
    -------
    float
    """
    from particles._batches import batch_sizes  # local: keep this module import-light
    from particles.batching import check_remainder

    sizes = batch_sizes(n, p, check_remainder(remainder))
    # P(|C(i)| = s) = s * (number of batches of size s) / n; a lone particle (s = 1) is widened to all n, so it
    # counts as a batch of size n (its conditional variance 1/(n-1) - 1/(n-1) is 0)
    return float(sum(s / n * (1.0 / ((s if s > 1 else n) - 1)) for s in sizes)) - 1.0 / (n - 1)
