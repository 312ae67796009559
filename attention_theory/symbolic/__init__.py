r"""Symbolic derivations (sympy) of the identities and variance formulas of THEORY.md.

Every formula that :mod:`attention_theory.bounds` evaluates, and that the
estimators rely on, is derived here from its definition with sympy, checked
against the formula stated in THEORY.md (the difference is simplified to
zero), and turned into a NumPy function with :func:`sympy.lambdify`. The tests
compare the NumPy functions with Monte Carlo and quadrature, and
:mod:`attention_theory.bounds` (plain NumPy, no sympy at run time) with these
functions.

sympy is slow to import and slower to simplify, so it is imported lazily, only
inside the functions of this package: ``import attention_theory.symbolic`` does
not import sympy, and each derivation runs once per process
(:func:`functools.cache`, an unbounded ``lru_cache``). The result types and
the shared tools (the Gaussian lemma, the lift to d dimensions) are in
``_core``, the derivations in ``_features`` (T8-T10), ``_sampling`` (T11,
T14-T16) and ``_batch`` (T3).

Usage
-----
>>> from attention_theory.symbolic import DERIVATIONS, derivation
>>> d = derivation("T9")
>>> d.statement
'Var_w[xi(x,w) xi(y,w)] = exp(2 x.y) (exp(|x+y|^2) - 1), w ~ N(0, I)'
>>> d.symbols  # the arguments of d.function: x.y, |x|^2, |y|^2
(xy, xx, yy)
>>> round(float(d.function(0.1, 0.2, 0.3)), 6)
1.2382

Notation
--------
Dimension-free results are written in *invariant symbols*: ``xy`` stands for
the inner product x.y, ``xx`` for ``|x|^2``, ``amu`` for a.mu and so on. The
``vector_function`` of a derivation evaluates the result on arrays of shape
``(..., d)`` by computing the invariants with NumPy.

The derivations
---------------
One-dimensional Gaussian integrals. The expectations over w ~ N(0, 1) below
(except the cosines of T10) have integrands ``c * exp(-A w^2/2 + B w + C)``
with A > 0. The lemma
``int exp(-A w^2/2 + B w) dw = sqrt(2 pi / A) exp(B^2 / (2A))`` is derived once
by ``sympy.integrate`` with symbolic A > 0 and real B; an integrand of that form
is reduced to it by reading off A, B, C from the (expanded) exponent. Other
integrands fall back to ``sympy.integrate`` directly.

From one to d dimensions. For w ~ N(0, I_d) the coordinates are independent,
and all the integrands of T8, T9, T11, T16 factorise over coordinates into
``exp(Q(x_j, y_j, ...))`` with Q a homogeneous quadratic polynomial. The
d-dimensional expectation is therefore ``exp(sum_j Q(x_j, y_j))``, and
``sum_j x_j y_j = x.y``: each monomial of Q becomes an inner product. This
"lift" is done mechanically from the coefficients of Q and checked against the
explicit product over d = 3 coordinates.

T8 (positive random features are unbiased). In one dimension
``E[xi(x,w) xi(y,w)] = int exp(w (x+y) - x^2/2 - y^2/2) N(w;0,1) dw = exp(x y)``;
the lift gives exp(x.y).

T9 (their variance). The second moment is
``E[xi^2 xi^2] = int exp(2 w (x+y) - x^2 - y^2) N(w) dw = exp(x^2 + 4 x y + y^2)``,
lifted ``exp(xx + 4 xy + yy)``; minus exp(2 xy) it equals
``exp(2 xy) (exp(|x+y|^2) - 1)``.

T10 (trigonometric features). ``phi(x,w).phi(y,w) = exp((|x|^2+|y|^2)/2)
(cos w.x cos w.y + sin w.x sin w.y) = exp((|x|^2+|y|^2)/2) cos(w.(x-y))`` (sympy
``trigsimp``). cos(w.u) does not factorise over coordinates, but
``exp(i w.u)`` does: the characteristic function ``E exp(i w u) = exp(-u^2/2)``
is integrated in one dimension, lifted to ``exp(-|u|^2/2)`` and its real part is
``E cos(w.u)``. With ``cos^2 t = (1 + cos 2t)/2``, ``E cos^2(w.u) = (1 +
exp(-2|u|^2))/2``. Hence the mean ``exp((xx+yy)/2) exp(-|x-y|^2/2) = exp(x.y)``
and the per-sample variance ``exp(xx+yy) (1 + exp(-2|u|^2))/2 - exp(2 xy)``,
which simplifies to ``(1/2) exp(|x+y|^2) exp(-2 x.y) (1 - exp(-|x-y|^2))^2``
as stated in THEORY.md.

T11 (Gaussian product identity). The ratio ``N(w;0,I) xi(q,w) xi(k,w) /
(exp(q.k) N(w; q+k, I))`` is written out for d = 3 with explicit coordinates;
its logarithm expands to 0. The one-dimensional right-hand side
``exp(q k) N(w; q+k, 1)`` is the expression; in d dimensions it is the product
over coordinates.

T14 (attention is an expectation), in one dimension with M = 2 or 3 symbolic
keys. With pi_m = exp(q k_m)/Z, p_n(w) = sum_m pi_m N(w; q+k_m, 1) and
f(w) = sum_m softmax_m(w k_m - k_m^2/2) v_m: by T11 each pi_m N(w; q+k_m, 1)
equals N(w;0,1) xi(q,w) xi(k_m,w)/Z, so p_n(w) = N(w;0,1) xi(q,w) sum_m
xi(k_m,w) / Z, the denominator of f cancels, and ``p_n(w) f(w) - sum_m pi_m
N(w; q+k_m, 1) v_m`` simplifies to 0. Each Gaussian integrates to one, so
``int p_n f dw = sum_m pi_m v_m = Attn_n``.

T16 (weight second moment). ``int N(w;a,1) N(w;b,1) / N(w;mu,1) dw =
exp((a-mu)(b-mu))`` by the lemma; lifted, ``exp((a-mu).(b-mu))``. Expanding
p_n^2 and integrating term by term (linearity) gives ``E_{N(mu,I)}[(p_n/q)^2]
= sum_{m,m'} pi_m pi_m' exp((q+k_m-mu).(q+k_m'-mu))``; for M = 2 in one
dimension the sum is also obtained by integrating the expanded p_n^2/q with
the lemma and compared.

T15 (first-order bias and variance of self-normalised importance sampling).
With normalised weights wbar = p/q (E_q[wbar] = 1), the estimator is the ratio
A/B of the sample means A = (1/S) sum wbar_s f_s and B = (1/S) sum wbar_s, with
E A = mu, E B = 1. Write A = mu + e a, B = 1 + e b, where e = S^(-1/2) and a,
b are the rescaled centred fluctuations, and expand A/B to second order in e
(sympy ``series``): ``mu + e (a - mu b) + e^2 (mu b^2 - a b) + O(e^3)``. Take
expectations with E a = E b = 0, E a^2 = Var_q(wbar f), E ab = Cov_q(wbar f,
wbar) = E_q[wbar^2 f] - mu, E b^2 = E_q[wbar^2] - 1. The third-order terms
involve third moments of sample means, O(S^(-2)), and are dropped. The result
is ``bias = -(1/S) (E_q[wbar^2 f] - mu E_q[wbar^2]) = -(1/S) E_q[wbar^2 (f -
mu)]`` and, from the square of the first-order term, ``Var = (1/S) E_q[wbar^2
(f - mu)^2]``. The expression is in the moment symbols ``E_w2 = E_q[wbar^2]``,
``E_w2f = E_q[wbar^2 f]``, ``E_w2f2 = E_q[wbar^2 f^2]``.

T3 (batch-force lemma), for symbolic scalar values K_1..K_{N-1} and small N:
the batch-mates of particle i form a uniform random (p-1)-subset of the other
N-1 particles. Enumerating all C(N-1, p-1) subsets, the mean of (sample mean -
population mean) is 0 and its mean square minus ``(1/(p-1) - 1/(N-1))
Lambda``, ``Lambda = sum_j (K_j - Kbar)^2 / (N-2)``, expands to 0. The
derivation also enumerates the RBM-1 partition itself (all N! permutations cut
by :func:`particles.batching.batch_bounds`, ``remainder="spread"``): when p
does not divide N, the N // p batch sizes differ by at most one (p or p + 1
only while N mod p <= N // p) and the factor becomes ``E[1/(|C(i)|-1)] - 1/(N-1)``
(:func:`particles.integrators.batch_variance_factor`), which is checked too.

References
----------
- K. Choromanski et al., "Rethinking attention with Performers", ICLR 2021 (T8-T10).
- L. Zheng, C. Wang, L. Kong, "Linear complexity randomized self-attention
  mechanism", ICML 2022, arXiv:2204.04667 (T11-T16).
- S. Jin, L. Li, J.-G. Liu, "Random batch methods (RBM) for interacting particle
  systems", J. Comput. Phys. 400 (2020) 108877 (T3).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from attention_theory.symbolic._batch import _build_t3
from attention_theory.symbolic._core import Derivation, Part
from attention_theory.symbolic._features import _build_t8, _build_t9, _build_t10
from attention_theory.symbolic._sampling import _build_t11, _build_t14, _build_t15, _build_t16

__all__ = ["DERIVATIONS", "Derivation", "Part", "derivation"]

#: The labels of THEORY.md that :func:`derivation` knows.
DERIVATIONS: tuple[str, ...] = ("T3", "T8", "T9", "T10", "T11", "T14", "T15", "T16")


def derivation(label: str, **options: int) -> Derivation:
    """Derive the formula with equation label ``label`` of THEORY.md (cached).

    Parameters
    ----------
    label : str
        One of :data:`DERIVATIONS`.
    **options : int
        ``"T3"``: ``n`` (number of particles, 3 <= n <= 7, default 5) and ``p``
        (batch size, 2 <= p <= n, default 3). ``"T14"``: ``num_keys`` (M, 2 or
        3, default 2). Other labels take none.

    Returns
    -------
    Derivation
        The same object for the same arguments (cached with ``functools.cache``).
        Its ``vector_function`` takes: ``(x, y)`` of shape (..., d) for T8, T9,
        T10; ``(w, q, k)`` of shape (..., d) for T11; ``(q_n, k, mu)`` of shapes
        (d,), (M, d), (d,) for T16; ``values`` of shape (..., n - 1) for T3; it
        is None for T14 and T15 (one-dimensional and moment-level results).

    Raises
    ------
    ValueError
        For an unknown label or an invalid option.
    """
    if label not in _BUILDERS:
        raise ValueError(f"label must be one of {', '.join(DERIVATIONS)}; got {label!r}")
    allowed = _OPTIONS[label]
    for key, value in options.items():
        if key not in allowed:
            raise ValueError(f"derivation {label!r} takes options {sorted(allowed) or 'none'}; got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{key} must be an integer, got {type(value).__name__}")
    merged = {**allowed, **{k: int(v) for k, v in options.items()}}
    return _derive(label, tuple(sorted(merged.items())))


@functools.cache
def _derive(label: str, options: tuple) -> Derivation:
    return _BUILDERS[label](**dict(options))


_BUILDERS: dict[str, Callable[..., Derivation]] = {
    "T3": _build_t3,
    "T8": _build_t8,
    "T9": _build_t9,
    "T10": _build_t10,
    "T11": _build_t11,
    "T14": _build_t14,
    "T15": _build_t15,
    "T16": _build_t16,
}
_OPTIONS: dict[str, dict[str, int]] = {label: {} for label in _BUILDERS}
_OPTIONS["T3"] = {"n": 5, "p": 3}
_OPTIONS["T14"] = {"num_keys": 2}

# The public names are the package's (API reference, reprs), not those of the private module defining them.
Derivation.__module__ = Part.__module__ = __name__
