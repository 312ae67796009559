"""T11, T14, T16, T15: the Gaussian product identity, attention as an expectation, importance sampling."""

from __future__ import annotations

import numpy as np

from attention_theory.symbolic._core import (
    Derivation,
    _exponent_of,
    _integrate_real_line,
    _invariant_symbol,
    _lambdify,
    _lift,
    _normal_pdf,
    _part,
    _sympy,
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
