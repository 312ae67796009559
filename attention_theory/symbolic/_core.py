"""What every derivation shares: the result types, lambdify, the Gaussian lemma, the lift to d dimensions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


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
