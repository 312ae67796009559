"""T8-T10: positive and trigonometric random features (unbiasedness and variance)."""

from __future__ import annotations

from attention_theory.symbolic._core import (
    Derivation,
    _exponent_of,
    _integrate_real_line,
    _invariant_symbol,
    _invariants_function,
    _lambdify,
    _lift,
    _normal_pdf,
    _part,
    _sympy,
)

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
