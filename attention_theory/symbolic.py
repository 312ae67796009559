r"""Symbolic derivations (sympy) of the identities and variance formulas of THEORY.md.

Every formula that :mod:`attention_theory.bounds` evaluates, and that the
estimators rely on, is derived here from its definition with sympy, checked
against the formula stated in THEORY.md (the difference is simplified to
zero), and turned into a NumPy function with :func:`sympy.lambdify`. The tests
compare the NumPy functions with Monte Carlo and quadrature, and
:mod:`attention_theory.bounds` (plain NumPy, no sympy at run time) with these
functions.

sympy is slow to import and slower to simplify, so it is imported lazily, only
inside the functions of this module: ``import attention_theory.symbolic`` does
not import sympy, and each derivation runs once per process
(:func:`functools.cache`, an unbounded ``lru_cache``).

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
by :func:`particles.batching.batch_bounds`): when p does not divide N, the
batch sizes are p or p+1 and the factor becomes ``E[1/(|C(i)|-1)] - 1/(N-1)``
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
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DERIVATIONS", "Derivation", "Part", "derivation"]

#: The labels of THEORY.md that :func:`derivation` knows.
DERIVATIONS: tuple[str, ...] = ("T3", "T8", "T9", "T10", "T11", "T14", "T15", "T16")


def _sympy():
    import sympy  # lazy: the only place the package imports sympy

    return sympy


@dataclass(frozen=True)
class Part:
    """A named intermediate expression of a derivation, with its NumPy function.

    Attributes
    ----------
    name : str
    expression : sympy.Expr
    symbols : tuple of sympy.Symbol
        Arguments of ``function``, in order.
    function : callable
        ``sympy.lambdify(symbols, expression, "numpy")``.
    """

    name: str
    expression: Any
    symbols: tuple
    function: Callable


@dataclass(frozen=True)
class Derivation:
    """The result of a symbolic derivation.

    Attributes
    ----------
    label : str
        Equation label of THEORY.md (``"T9"``).
    statement : str
        One line stating the result.
    expression : sympy.Expr or sympy.Tuple
        The derived closed form.
    symbols : tuple of sympy.Symbol
        Arguments of ``function``, in order.
    function : callable
        NumPy function of ``symbols`` (``sympy.lambdify(..., "numpy")``); it
        broadcasts over array arguments.
    residual : sympy.Expr
        Derived minus stated (or log of derived over stated) form, after
        simplification; ``0`` when the statement of THEORY.md was confirmed.
    vector_function : callable or None
        The result in d dimensions on NumPy arrays (see each label), or None.
    parts : tuple of Part
        Intermediate expressions (``part(name)``).
    options : tuple of (str, int)
        The options the derivation was made with (e.g. ``(("n", 5), ("p", 3))``).
    """

    label: str
    statement: str
    expression: Any
    symbols: tuple
    function: Callable
    residual: Any
    vector_function: Callable | None = None
    parts: tuple = ()
    options: tuple = ()

    @property
    def free_symbols(self) -> frozenset:
        """The free symbols of ``expression``."""
        return frozenset(self.expression.free_symbols)

    @property
    def verified(self) -> bool:
        """True when the residual simplified to exactly zero."""
        return self.residual == 0

    def part(self, name: str) -> Part:
        """The intermediate expression called ``name``."""
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"derivation {self.label} has no part {name!r}; it has {[p.name for p in self.parts]}")


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


# --- helpers -----------------------------------------------------------------------------------------------


def _lambdify(symbols, expr):
    sp = _sympy()
    return sp.lambdify(list(symbols), expr, modules="numpy")


def _part(name, expr, symbols):
    return Part(name=name, expression=expr, symbols=tuple(symbols), function=_lambdify(symbols, expr))


@functools.cache
def _gaussian_lemma():
    """``int exp(-A w^2/2 + B w) dw`` over the real line, derived by sympy for A > 0, real B."""
    sp = _sympy()
    w = sp.Symbol("w", real=True)
    A = sp.Symbol("A", positive=True)
    B = sp.Symbol("B", real=True)
    value = sp.simplify(sp.integrate(sp.exp(-A * w**2 / 2 + B * w), (w, -sp.oo, sp.oo), conds="none"))
    expected = sp.sqrt(2 * sp.pi / A) * sp.exp(B**2 / (2 * A))
    if sp.simplify(value / expected) != 1:  # pragma: no cover - guards against a sympy regression
        raise RuntimeError(f"sympy returned {value} for the Gaussian integral, expected {expected}")
    return A, B, value


def _integrate_real_line(integrand, w):
    """``int integrand dw`` over R, via the Gaussian lemma when integrand = c exp(quadratic in w)."""
    sp = _sympy()
    expr = sp.powsimp(sp.expand(integrand), combine="exp")
    coeff, rest = expr.as_independent(w, as_Add=False)
    if isinstance(rest, sp.exp):
        exponent = sp.expand(rest.args[0])
        poly = sp.Poly(exponent, w)
        if poly.degree() == 2:
            a2, a1, a0 = (poly.coeff_monomial(w**j) for j in (2, 1, 0))
            A_val = sp.simplify(-2 * a2)
            if A_val.is_positive and a1.is_real:
                A, B, value = _gaussian_lemma()
                value = coeff * sp.exp(a0) * value.subs({A: A_val, B: a1})
                # normal form: (simplified constant) * exp(expanded exponent)
                factors = sp.Mul.make_args(sp.powsimp(value, combine="exp"))
                exponent = sp.expand(sum(f.args[0] for f in factors if isinstance(f, sp.exp)))
                constant = sp.simplify(sp.Mul(*(f for f in factors if not isinstance(f, sp.exp))))
                return constant * sp.exp(exponent)
    return sp.simplify(sp.integrate(integrand, (w, -sp.oo, sp.oo), conds="none"))


def _normal_pdf(w, mean):
    sp = _sympy()
    return sp.exp(-((w - mean) ** 2) / 2) / sp.sqrt(2 * sp.pi)


def _invariant_symbol(a, b):
    sp = _sympy()
    a, b = sorted((str(a), str(b)), key=lambda s: _ORDER.get(s, s))
    return sp.Symbol(a + b, real=True)


_ORDER = {"x": "0", "y": "1", "a": "2", "b": "3", "mu": "4", "u": "5"}


def _exponent_of(expr):
    """Q when ``expr`` is exp(Q) (after combining exponentials), else an error."""
    sp = _sympy()
    e = sp.powsimp(sp.expand(expr), combine="exp")
    if not isinstance(e, sp.exp):
        raise ValueError(f"expected exp(quadratic), got {e}")
    return sp.expand(e.args[0])


def _lift(exponent, variables, check_dim=3):
    """Lift a homogeneous quadratic exponent Q(x, y, ...) in one dimension to d dimensions.

    ``sum_j Q(x_j, y_j, ...)`` is Q with every monomial ``x y`` replaced by the
    inner product symbol ``xy``. Returns the lifted exponent and the map from
    the invariant symbols used to their variable pairs; checks the lift against
    the explicit sum over ``check_dim`` coordinates.
    """
    sp = _sympy()
    poly = sp.Poly(exponent, *variables)
    lifted = sp.Integer(0)
    pairs = {}
    for monom, coeff in poly.terms():
        if sum(monom) != 2:
            raise ValueError(f"exponent {exponent} is not a homogeneous quadratic in {variables}")
        idx = [i for i, power in enumerate(monom) for _ in range(power)]
        a, b = variables[idx[0]], variables[idx[1]]
        sym = _invariant_symbol(a, b)
        pairs[sym] = (str(a), str(b))
        lifted += coeff * sym
    # explicit check over check_dim coordinates
    comps = {v: sp.symbols(f"{v}_0:{check_dim}", real=True) for v in variables}
    explicit = sum(exponent.subs({v: comps[v][j] for v in variables}, simultaneous=True) for j in range(check_dim))
    via_lift = lifted.subs(
        {sym: sum(comps[sp.Symbol(a, real=True)][j] * comps[sp.Symbol(b, real=True)][j] for j in range(check_dim))
         for sym, (a, b) in pairs.items()}
    )
    if sp.expand(explicit - via_lift) != 0:  # pragma: no cover - would be a bug in this helper
        raise RuntimeError("lift to d dimensions failed its explicit check")
    return sp.expand(lifted), pairs


def _invariants_function(fn, symbols, pairs, arg_names):
    """Evaluate ``fn(*symbols)`` where each symbol is the inner product of two array arguments."""
    order = [pairs[s] for s in symbols]

    def vector_function(*arrays):
        if len(arrays) != len(arg_names):
            raise TypeError(f"expected {len(arg_names)} arrays ({', '.join(arg_names)}), got {len(arrays)}")
        arrs = {name: np.asarray(a, dtype=np.float64) for name, a in zip(arg_names, arrays)}
        values = [np.einsum("...i,...i->...", arrs[a], arrs[b]) for a, b in order]
        return fn(*values)

    vector_function.__doc__ = f"Evaluate on arrays ({', '.join(arg_names)}) of shape (..., d)."
    return vector_function


# --- T8, T9: positive random features ----------------------------------------------------------------------


def _positive_feature_moments():
    sp = _sympy()
    w, x, y = sp.symbols("w x y", real=True)

    def xi(z, scale=1):
        return sp.exp(scale * (w * z - z**2 / 2))

    m1 = _integrate_real_line(xi(x) * xi(y) * _normal_pdf(w, 0), w)
    m2 = _integrate_real_line(xi(x, 2) * xi(y, 2) * _normal_pdf(w, 0), w)
    q1, pairs1 = _lift(_exponent_of(m1), (x, y))
    q2, pairs2 = _lift(_exponent_of(m2), (x, y))
    return (x, y), m1, m2, q1, q2, {**pairs1, **pairs2}


def _build_t8():
    sp = _sympy()
    (x, y), m1, _, q1, _, pairs = _positive_feature_moments()
    xy = _invariant_symbol(x, y)
    expr = sp.exp(q1)
    residual = sp.simplify(expr - sp.exp(xy))
    fn = _lambdify((xy,), expr)
    return Derivation(
        label="T8",
        statement="E_w[xi(x,w) xi(y,w)] = exp(x.y), xi(x,w) = exp(w.x - |x|^2/2), w ~ N(0, I)",
        expression=expr,
        symbols=(xy,),
        function=fn,
        residual=residual,
        vector_function=_invariants_function(fn, (xy,), pairs, ("x", "y")),
        parts=(_part("one_dim", m1, (x, y)),),
    )


def _build_t9():
    sp = _sympy()
    (x, y), _, m2, q1, q2, pairs = _positive_feature_moments()
    xy, xx, yy = _invariant_symbol(x, y), _invariant_symbol(x, x), _invariant_symbol(y, y)
    derived = sp.exp(q2) - sp.exp(q1) ** 2
    stated = sp.exp(2 * xy) * (sp.exp(xx + 2 * xy + yy) - 1)
    residual = sp.simplify(sp.expand(derived - stated))
    symbols = (xy, xx, yy)
    fn = _lambdify(symbols, stated)
    return Derivation(
        label="T9",
        statement="Var_w[xi(x,w) xi(y,w)] = exp(2 x.y) (exp(|x+y|^2) - 1), w ~ N(0, I)",
        expression=stated,
        symbols=symbols,
        function=fn,
        residual=residual,
        vector_function=_invariants_function(fn, symbols, pairs, ("x", "y")),
        parts=(_part("second_moment", sp.exp(q2), symbols), _part("second_moment_one_dim", m2, (x, y))),
    )


# --- T10: trigonometric random features ---------------------------------------------------------------------


def _build_t10():
    sp = _sympy()
    w, x, y, u = sp.symbols("w x y u", real=True)
    wx, wy = sp.symbols("wx wy", real=True)  # stand for w.x and w.y
    # phi(x,w).phi(y,w) = exp((|x|^2+|y|^2)/2) cos(w.(x-y))
    product = sp.cos(wx) * sp.cos(wy) + sp.sin(wx) * sp.sin(wy)
    trig_residual = sp.simplify(sp.trigsimp(product - sp.cos(wx - wy)))
    # characteristic function in one dimension, and E cos^2 through cos^2 t = (1 + cos 2t)/2
    char = _integrate_real_line(sp.cos(w * u) * _normal_pdf(w, 0), w)  # = exp(-u^2/2)
    sq = _integrate_real_line(sp.cos(w * u) ** 2 * _normal_pdf(w, 0), w)  # one-dimensional check
    t = sp.Symbol("t", real=True)
    double_angle = sp.simplify(sp.cos(t) ** 2 - (1 + sp.cos(2 * t)) / 2)
    sq_via_char = (1 + char.subs(u, 2 * u)) / 2
    sq_residual = sp.simplify(sq - sq_via_char)
    # lift with u = x - y: E cos(w.(x-y)) = exp(-|x-y|^2/2)
    qc, pairs = _lift(sp.expand(_exponent_of(char).subs(u, x - y)), (x, y))
    qc2, _ = _lift(sp.expand(_exponent_of(char).subs(u, 2 * (x - y))), (x, y))
    xy, xx, yy = _invariant_symbol(x, y), _invariant_symbol(x, x), _invariant_symbol(y, y)
    pairs.update({xx: ("x", "x"), yy: ("y", "y"), xy: ("x", "y")})
    scale = sp.exp((xx + yy) / 2)
    mean = scale * sp.exp(qc)
    second = scale**2 * (1 + sp.exp(qc2)) / 2
    derived_var = second - mean**2
    stated = sp.Rational(1, 2) * sp.exp(xx + 2 * xy + yy) * sp.exp(-2 * xy) * (1 - sp.exp(-(xx - 2 * xy + yy))) ** 2
    residual = (
        sp.simplify(sp.expand(derived_var - stated))
        + sp.simplify(mean - sp.exp(xy))
        + trig_residual
        + double_angle
        + sq_residual
    )
    symbols = (xy, xx, yy)
    fn = _lambdify(symbols, stated)
    return Derivation(
        label="T10",
        statement=(
            "phi(x,w).phi(y,w) = exp((|x|^2+|y|^2)/2) cos(w.(x-y)) has mean exp(x.y) and variance "
            "(1/2) exp(|x+y|^2) exp(-2 x.y) (1 - exp(-|x-y|^2))^2, w ~ N(0, I)"
        ),
        expression=stated,
        symbols=symbols,
        function=fn,
        residual=residual,
        vector_function=_invariants_function(fn, symbols, pairs, ("x", "y")),
        parts=(
            _part("mean", sp.simplify(mean), symbols),
            _part("second_moment", sp.simplify(second), symbols),
            _part("characteristic_one_dim", char, (u,)),
        ),
    )


# --- T11: Gaussian product identity -------------------------------------------------------------------------


def _build_t11():
    sp = _sympy()
    d = 3
    w = sp.symbols(f"w_0:{d}", real=True)
    q = sp.symbols(f"q_0:{d}", real=True)
    k = sp.symbols(f"k_0:{d}", real=True)

    def dot(a, b):
        return sum(ai * bi for ai, bi in zip(a, b))

    lhs_log = -dot(w, w) / 2 + (dot(w, q) - dot(q, q) / 2) + (dot(w, k) - dot(k, k) / 2)
    mean = [qi + ki for qi, ki in zip(q, k)]
    rhs_log = dot(q, k) - dot([wi - mi for wi, mi in zip(w, mean)], [wi - mi for wi, mi in zip(w, mean)]) / 2
    # the normalising constants (2 pi)^(-d/2) are the same on both sides
    residual = sp.expand(lhs_log - rhs_log)
    w1, q1, k1 = sp.symbols("w q k", real=True)
    lhs1 = _normal_pdf(w1, 0) * sp.exp(w1 * q1 - q1**2 / 2) * sp.exp(w1 * k1 - k1**2 / 2)
    rhs1 = sp.exp(q1 * k1) * _normal_pdf(w1, q1 + k1)
    ratio1 = sp.simplify(sp.powsimp(sp.expand(lhs1 / rhs1), combine="exp"))
    residual = residual + (ratio1 - 1)
    symbols = (w1, q1, k1)
    fn = _lambdify(symbols, rhs1)

    def vector_function(w_, q_, k_):
        """exp(q.k) N(w; q+k, I) on arrays of shape (..., d), as the product of the 1-D factors."""
        return np.prod(fn(np.asarray(w_, float), np.asarray(q_, float), np.asarray(k_, float)), axis=-1)

    return Derivation(
        label="T11",
        statement="N(w;0,I) xi(q,w) xi(k,w) = exp(q.k) N(w; q+k, I)",
        expression=rhs1,
        symbols=symbols,
        function=fn,
        residual=sp.simplify(residual),
        vector_function=vector_function,
        parts=(_part("lhs", lhs1, symbols),),
    )


# --- T14: softmax attention as an expectation ---------------------------------------------------------------


def _build_t14(num_keys):
    sp = _sympy()
    if num_keys not in (2, 3):
        raise ValueError(f"num_keys must be 2 or 3, got {num_keys}")
    M = num_keys
    w, q = sp.symbols("w q", real=True)
    k = sp.symbols(f"k_1:{M + 1}", real=True)
    v = sp.symbols(f"v_1:{M + 1}", real=True)
    Z = sum(sp.exp(q * km) for km in k)
    pi = [sp.exp(q * km) / Z for km in k]
    p_n = sum(pim * _normal_pdf(w, q + km) for pim, km in zip(pi, k))
    e = [sp.exp(w * km - km**2 / 2) for km in k]
    f = sum(em * vm for em, vm in zip(e, v)) / sum(e)
    integrand = p_n * f
    mixture = sum(pim * _normal_pdf(w, q + km) * vm for pim, km, vm in zip(pi, k, v))
    # By T11, p_n = N(w;0,1) xi(q,w) sum_m xi(k_m,w) / Z: check term by term, then cancel sum_m xi(k_m, w).
    base = _normal_pdf(w, 0) * sp.exp(w * q - q**2 / 2) / Z
    term_residual = sum(
        sp.simplify(sp.powsimp(sp.expand(pim * _normal_pdf(w, q + km) / (base * em)), combine="exp") - 1)
        for pim, km, em in zip(pi, k, e)
    )
    p_factored = base * sum(e)
    product = sp.cancel(p_factored * f)  # the denominator of f cancels
    product_residual = sp.simplify(
        sp.powsimp(sp.expand(product - base * sum(em * vm for em, vm in zip(e, v))), combine="exp")
    )
    mixture_residual = sp.simplify(
        sp.powsimp(sp.expand(base * sum(em * vm for em, vm in zip(e, v)) - mixture), combine="exp")
    )
    integral = sum(
        pim * vm * _integrate_real_line(_normal_pdf(w, q + km), w) for pim, km, vm in zip(pi, k, v)
    )
    attn = sum(pim * vm for pim, vm in zip(pi, v))
    residual = term_residual + product_residual + mixture_residual + sp.simplify(integral - attn)
    symbols = (q, *k, *v)
    fn = _lambdify(symbols, attn)
    return Derivation(
        label="T14",
        statement=(
            f"in one dimension with M = {M} keys, p_n(w) f(w) = sum_m pi_nm N(w; q+k_m, 1) v_m, whose integral "
            "is sum_m pi_nm v_m = Attn_n"
        ),
        expression=attn,
        symbols=symbols,
        function=fn,
        residual=residual,
        parts=(
            _part("integrand", integrand, (w, *symbols)),
            _part("mixture", mixture, (w, *symbols)),
            _part("target_density", p_n, (w, q, *k)),
            _part("integrand_f", f, (w, *k, *v)),
        ),
        options=(("num_keys", M),),
    )


# --- T16: weight second moment ------------------------------------------------------------------------------


def _build_t16():
    sp = _sympy()
    w, a, b, mu = sp.symbols("w a b mu", real=True)
    kernel = _integrate_real_line(_normal_pdf(w, a) * _normal_pdf(w, b) / _normal_pdf(w, mu), w)
    kernel_exponent = _exponent_of(kernel)
    lifted, pairs = _lift(kernel_exponent, (a, b, mu))
    stated_exponent = sp.expand((a - mu) * (b - mu))
    residual = sp.expand(kernel_exponent - stated_exponent)
    # the same as an inner product of a - mu and b - mu, lifted: ab - amu - bmu + mumu
    ab, amu, bmu, mumu = (_invariant_symbol(*s) for s in ((a, b), (a, mu), (b, mu), (mu, mu)))
    residual += sp.expand(lifted - (ab - amu - bmu + mumu))
    # the mixture with M = 2 in one dimension, integrated in full
    q, k1, k2 = sp.symbols("q k_1 k_2", real=True)
    P = sp.symbols("P_1:3", positive=True)  # the mixture weights, substituted at the end
    means = (q + k1, q + k2)
    p_n = sum(pm * _normal_pdf(w, m) for pm, m in zip(P, means))
    expanded = sp.Poly(sp.expand(p_n**2), *P)  # sum over (m, m') of P_m P_m' N(w; a_m) N(w; a_m')
    full = sp.Integer(0)
    for monom, coeff in expanded.terms():
        weight = sp.Mul(*(pm**e for pm, e in zip(P, monom)))
        full += weight * _integrate_real_line(coeff / _normal_pdf(w, mu), w)
    stated_mixture = sum(
        P[i] * P[j] * sp.exp((means[i] - mu) * (means[j] - mu)) for i in range(2) for j in range(2)
    )
    residual += sp.simplify(sp.expand(sp.powsimp(sp.expand(full - stated_mixture), combine="exp")))
    Z = sp.exp(q * k1) + sp.exp(q * k2)
    stated_mixture = stated_mixture.subs({P[0]: sp.exp(q * k1) / Z, P[1]: sp.exp(q * k2) / Z})
    symbols = (a, b, mu)
    fn = _lambdify(symbols, kernel)
    g = sp.Symbol("g", real=True)  # g = (q + k_m - mu).(q + k_m' - mu)
    kernel_d = _lambdify((g,), sp.exp(g))

    def vector_function(q_n, k, mu_):
        """sum_{m,m'} pi_m pi_m' exp((q+k_m-mu).(q+k_m'-mu)) for q_n (d,), k (M, d), mu (d,) (not log-space)."""
        q_n = np.asarray(q_n, float)
        k = np.asarray(k, float)
        c = q_n + k - np.asarray(mu_, float)
        logits = k @ q_n
        pi = np.exp(logits - logits.max())
        pi /= pi.sum()
        return float(pi @ kernel_d(c @ c.T) @ pi)

    return Derivation(
        label="T16",
        statement="E_{N(mu,I)}[(p_n/q)^2] = sum_{m,m'} pi_nm pi_nm' exp((q_n+k_m-mu).(q_n+k_m'-mu))",
        expression=kernel,
        symbols=symbols,
        function=fn,
        residual=sp.simplify(residual),
        vector_function=vector_function,
        parts=(
            _part("kernel_lifted", sp.exp(lifted), (ab, amu, bmu, mumu)),
            _part("second_moment_two_keys", stated_mixture, (q, k1, k2, mu)),
        ),
    )


# --- T15: first-order bias and variance of SNIS -------------------------------------------------------------


def _build_t15():
    sp = _sympy()
    e, a, b = sp.symbols("e a b", real=True)
    S = sp.Symbol("S", positive=True)
    mu = sp.Symbol("mu", real=True)
    E_w2, E_w2f, E_w2f2 = sp.symbols("E_w2 E_w2f E_w2f2", real=True)
    ratio = (mu + e * a) / (1 + e * b)
    taylor = sp.expand(sp.series(ratio, e, 0, 3).removeO())
    # moments of the rescaled fluctuations a = sqrt(S) (A - mu), b = sqrt(S) (B - 1)
    moments = {
        (0, 0): 1,
        (1, 0): 0,
        (0, 1): 0,
        (2, 0): E_w2f2 - mu**2,  # Var_q(wbar f)
        (1, 1): E_w2f - mu,  # Cov_q(wbar f, wbar), E_q[wbar f] = mu
        (0, 2): E_w2 - 1,  # Var_q(wbar), E_q[wbar] = 1
    }

    def expectation(poly_expr):
        total = sp.Integer(0)
        for (i, j), coeff in sp.Poly(sp.expand(poly_expr), a, b).terms():
            total += coeff * moments[(i, j)]
        return sp.expand(total)

    mean = expectation(taylor).subs(e, 1 / sp.sqrt(S))
    bias = sp.simplify(mean - mu)
    first_order = taylor.coeff(e, 1)  # a - mu b
    var = sp.simplify(expectation(first_order**2) / S)
    stated_bias = -(E_w2f - mu * E_w2) / S  # -(1/S) E_q[wbar^2 (f - mu)]
    stated_var = (E_w2f2 - 2 * mu * E_w2f + mu**2 * E_w2) / S  # (1/S) E_q[wbar^2 (f - mu)^2]
    residual = sp.simplify(bias - stated_bias) + sp.simplify(var - stated_var)
    symbols = (S, mu, E_w2, E_w2f, E_w2f2)
    expr = sp.Tuple(stated_bias, stated_var)
    return Derivation(
        label="T15",
        statement=(
            "SNIS with S samples: bias = -(1/S) E_q[wbar^2 (f - mu)] + O(S^-2), "
            "Var = (1/S) E_q[wbar^2 (f - mu)^2] + O(S^-2)"
        ),
        expression=expr,
        symbols=symbols,
        function=_lambdify(symbols, expr),
        residual=residual,
        parts=(_part("taylor", taylor, (e, a, b, mu)),),
    )


# --- T3: batch-force lemma ----------------------------------------------------------------------------------


def _build_t3(n, p):
    sp = _sympy()
    if not 3 <= n <= 7:
        raise ValueError(f"n must satisfy 3 <= n <= 7 (the derivation enumerates n! permutations), got {n}")
    if not 2 <= p <= n:
        raise ValueError(f"p must satisfy 2 <= p <= n = {n}, got {p}")
    K = sp.symbols(f"K_1:{n}", real=True)  # K_ij for the n - 1 particles j != i
    Kbar = sum(K) / (n - 1)
    Lam = sum((Kj - Kbar) ** 2 for Kj in K) / (n - 2)
    subsets = list(itertools.combinations(range(n - 1), p - 1))
    chis = [sum(K[j] for j in s) / (p - 1) - Kbar for s in subsets]
    mean = sp.expand(sum(chis) / len(subsets))
    second = sp.expand(sum(c**2 for c in chis) / len(subsets))
    factor = sp.Rational(1, p - 1) - sp.Rational(1, n - 1)
    stated = factor * Lam
    residual = mean + sp.expand(second - stated)

    # The RBM-1 partition: all n! permutations cut into n // p batches (sizes p or p + 1).
    from particles.batching import batch_bounds

    bounds = batch_bounds(n, p)
    counts: dict = {}
    i = n - 1  # the particle whose batch-mates we follow; the others are 0..n-2, carrying K_1..K_{n-1}
    for perm in itertools.permutations(range(n)):
        pos = perm.index(i)
        bidx = int(np.searchsorted(bounds, pos, side="right")) - 1
        mates = tuple(sorted(perm[bounds[bidx]:bounds[bidx + 1]]))
        mates = tuple(j for j in mates if j != i)
        counts[mates] = counts.get(mates, 0) + 1
    total = sum(counts.values())
    rbm_mean = sp.expand(sum(c * (sum(K[j] for j in m) / len(m) - Kbar) for m, c in counts.items()) / total)
    rbm_second = sp.expand(sum(c * (sum(K[j] for j in m) / len(m) - Kbar) ** 2 for m, c in counts.items()) / total)
    sizes = np.diff(bounds)
    rbm_factor = sum(sp.Rational(int(s), n) * sp.Rational(1, int(s) - 1) for s in sizes) - sp.Rational(1, n - 1)
    residual += rbm_mean + sp.expand(rbm_second - rbm_factor * Lam)

    symbols = tuple(K)
    fn = _lambdify(symbols, stated)

    def vector_function(values):
        """The lemma's E|chi|^2 for values of shape (..., n - 1) (the K_ij, j != i)."""
        values = np.asarray(values, float)
        return fn(*np.moveaxis(values, -1, 0))

    return Derivation(
        label="T3",
        statement=(
            f"N = {n}, p = {p}: E chi = 0 and E chi^2 = (1/(p-1) - 1/(N-1)) Lambda for a uniform (p-1)-subset; "
            "for the RBM-1 partition the factor is E[1/(|C|-1)] - 1/(N-1)"
        ),
        expression=stated,
        symbols=symbols,
        function=fn,
        residual=sp.simplify(residual),
        vector_function=vector_function,
        parts=(
            _part("factor", factor, ()),
            _part("rbm1_factor", rbm_factor, ()),
            _part("Lambda", Lam, symbols),
            _part("rbm1_second_moment", rbm_second, symbols),
        ),
        options=(("n", n), ("p", p)),
    )


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
