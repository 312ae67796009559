"""The sympy derivations of :mod:`attention_theory.symbolic`, checked against numbers.

Each derivation must (i) confirm the statement of THEORY.md symbolically
(its residual simplifies to 0) and (ii) agree with an independent numerical
oracle written here: quadrature (``scipy.integrate``), exact enumeration, or
plain NumPy Monte Carlo with fixed seeds.

False-alarm control. Every statistical test function below is one family of
z-tests with a family-wise false-alarm rate ALPHA_FAMILY = 1e-3: with K
z-statistics in the family, each |z| is compared with the two-sided
Bonferroni threshold ``z_crit(K) = Phi^{-1}(1 - ALPHA_FAMILY / (2K))``, and the
family accepts the formula when no |z| exceeds it. (Over the six statistical
test functions of this module the probability of any false alarm under
re-seeding is at most 6e-3, by the union bound.) Every family has a negative
control -- the same decision rule applied to a formula with a deliberate
error (a wrong constant, a dropped term, a wrong sign) -- which must be
rejected, so that a pass is not merely a lack of power.

Inputs are small (norms of at most about 0.6) so that the heavy-tailed
products of exponential features have finite, well-estimated fourth moments
and the z-statistics are close to normal.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import integrate, stats

from attention_theory.symbolic import DERIVATIONS, Derivation, derivation
from particles.batching import batch_bounds
from particles.integrators import batch_variance_factor

ALPHA_FAMILY = 1e-3

symbolic = pytest.mark.symbolic


def z_crit(num_tests):
    """Two-sided Bonferroni threshold for a family of ``num_tests`` z-tests."""
    return stats.norm.isf(ALPHA_FAMILY / (2 * num_tests))


def accepts(z):
    """The family decision: True when no |z| exceeds the Bonferroni threshold."""
    z = np.ravel(z)
    return bool(np.all(np.abs(z) <= z_crit(z.size)))


def ball(rng, n, d, radius):
    """n points with norms uniform in [radius/2, radius], directions uniform."""
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x * rng.uniform(radius / 2, radius, size=(n, 1))


def mean_z(samples, predicted):
    """z-statistic of the sample mean (axis 0) against a predicted mean."""
    n = samples.shape[0]
    return (samples.mean(axis=0) - predicted) / (samples.std(axis=0, ddof=1) / np.sqrt(n))


def variance_z(samples, predicted):
    """z-statistic of the sample variance (axis 0); its standard error is sqrt((m4 - m2^2)/n)."""
    n = samples.shape[0]
    c = samples - samples.mean(axis=0)
    m2 = np.mean(c**2, axis=0)
    m4 = np.mean(c**4, axis=0)
    return (m2 * n / (n - 1) - predicted) / np.sqrt((m4 - m2**2) / n)


def softmax_attention(q, k, v):
    logits = q @ k.T
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return p @ v


# --- laziness, registry -------------------------------------------------------------------------------------


def test_importing_the_package_does_not_import_sympy():
    code = (
        "import sys\n"
        "import attention_theory, attention_theory.symbolic, attention_theory.bounds\n"
        "assert 'sympy' not in sys.modules, sorted(m for m in sys.modules if m.startswith('sympy'))[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@symbolic
def test_registry_cache_and_dataclass():
    assert set(DERIVATIONS) == {"T3", "T8", "T9", "T10", "T11", "T14", "T15", "T16"}
    d = derivation("T9")
    assert isinstance(d, Derivation)
    assert derivation("T9") is d  # cached
    with pytest.raises(AttributeError):
        d.label = "T10"  # frozen
    assert d.free_symbols <= set(d.symbols)
    assert d.part("second_moment").function(0.0, 0.0, 0.0) == pytest.approx(1.0)
    with pytest.raises(KeyError, match="no part"):
        d.part("nope")
    assert derivation("T3", n=6, p=2) is derivation("T3", p=2, n=6)
    assert derivation("T3").options == (("n", 5), ("p", 3))


@symbolic
@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: derivation("T99"), ValueError, "label"),
        (lambda: derivation("T8", n=3), ValueError, "takes options"),
        (lambda: derivation("T3", n=2.5), TypeError, "n must be an integer"),
        (lambda: derivation("T3", n=9), ValueError, "n must satisfy"),
        (lambda: derivation("T3", n=5, p=6), ValueError, "p must satisfy"),
        (lambda: derivation("T14", num_keys=5), ValueError, "num_keys"),
    ],
)
def test_bad_labels_and_options(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@symbolic
@pytest.mark.parametrize("label", DERIVATIONS)
def test_every_derivation_confirms_the_stated_formula(label):
    d = derivation(label)
    assert d.verified, f"{label}: residual {d.residual}"
    assert d.label == label
    assert d.statement and "\n" not in d.statement
    assert d.free_symbols <= set(d.symbols)
    for part in d.parts:
        assert part.expression.free_symbols <= set(part.symbols), part.name


@symbolic
@pytest.mark.parametrize(("label", "options"), [("T14", {"num_keys": 3}), ("T3", {"n": 6, "p": 2}),
                                                ("T3", {"n": 5, "p": 2}), ("T3", {"n": 7, "p": 3})])
def test_derivations_with_options_confirm_the_stated_formula(label, options):
    assert derivation(label, **options).verified


# --- T8, T9: positive random features -----------------------------------------------------------------------


def _xi(x, w):
    """Positive features exp(w.x - |x|^2/2) for x (d,), w (n, d)."""
    return np.exp(w @ x - 0.5 * x @ x)


@symbolic
@pytest.mark.statistical
def test_t8_t9_positive_features_monte_carlo():
    rng = np.random.default_rng(8)
    d, pairs, n = 3, 4, 200_000
    xs, ys = ball(rng, pairs, d, 0.5), ball(rng, pairs, d, 0.5)
    w = rng.standard_normal((n, d))  # shared draws: Bonferroni does not need independence
    samples = np.stack([_xi(x, w) * _xi(y, w) for x, y in zip(xs, ys)], axis=1)  # (n, pairs)
    t8, t9 = derivation("T8"), derivation("T9")
    mean_pred = t8.vector_function(xs, ys)
    var_pred = t9.vector_function(xs, ys)
    z = np.concatenate([mean_z(samples, mean_pred), variance_z(samples, var_pred)])
    assert accepts(z), z
    # negative controls: a wrong constant in the exponent of T8, and T9 without its "- 1" (the second moment)
    xy = np.sum(xs * ys, axis=1)
    wrong_mean = np.exp(1.2 * xy)
    wrong_var = np.exp(2 * xy) * np.exp(np.sum((xs + ys) ** 2, axis=1))
    assert not accepts(np.concatenate([mean_z(samples, wrong_mean), variance_z(samples, var_pred)]))
    assert not accepts(np.concatenate([mean_z(samples, mean_pred), variance_z(samples, wrong_var)]))


@symbolic
def test_t8_t9_one_dimensional_quadrature():
    rng = np.random.default_rng(80)
    t8, t9 = derivation("T8"), derivation("T9")
    one_dim = t8.part("one_dim").function
    second = t9.part("second_moment_one_dim").function
    for x, y in rng.uniform(-1.5, 1.5, size=(4, 2)):
        # exponents combined, so that nothing overflows; the mass lies within 15 of the mode
        def m(power, x=x, y=y):
            def integrand(w):
                return np.exp(power * (w * (x + y) - (x * x + y * y) / 2) - w * w / 2) / np.sqrt(2 * np.pi)

            centre = power * (x + y)
            return integrate.quad(integrand, centre - 15, centre + 15, epsabs=0, epsrel=1e-11)[0]

        m1, m2 = m(1), m(2)
        assert_allclose(one_dim(x, y), m1, rtol=1e-8)
        assert_allclose(second(x, y), m2, rtol=1e-8)


@symbolic
def test_t9_two_dimensional_quadrature():
    """The lift from one to d dimensions, checked by a genuine 2-D integral."""
    rng = np.random.default_rng(90)
    t9 = derivation("T9")
    for _ in range(2):
        x, y = rng.uniform(-0.8, 0.8, size=(2, 2))

        def f(w2, w1, power, x=x, y=y):
            w = np.array([w1, w2])
            prod = np.exp(w @ (x + y) - (x @ x + y @ y) / 2)
            return prod**power * np.exp(-(w @ w) / 2) / (2 * np.pi)

        lim = 12.0
        m1 = integrate.dblquad(f, -lim, lim, -lim, lim, args=(1,), epsabs=1e-12, epsrel=1e-10)[0]
        m2 = integrate.dblquad(f, -lim, lim, -lim, lim, args=(2,), epsabs=1e-12, epsrel=1e-10)[0]
        assert_allclose(m2 - m1**2, t9.vector_function(x, y), rtol=1e-7)


# --- T10: trigonometric features ----------------------------------------------------------------------------


@symbolic
@pytest.mark.statistical
def test_t10_trig_features_monte_carlo():
    rng = np.random.default_rng(10)
    d, pairs, n = 3, 4, 200_000
    xs, ys = ball(rng, pairs, d, 0.9), ball(rng, pairs, d, 0.9)
    w = rng.standard_normal((n, d))
    # the feature product phi(x,w).phi(y,w) equals the stated per-sample estimator
    x, y = xs[0], ys[0]
    phi_x = np.exp(x @ x / 2) * np.stack([np.cos(w @ x), np.sin(w @ x)], axis=1)
    phi_y = np.exp(y @ y / 2) * np.stack([np.cos(w @ y), np.sin(w @ y)], axis=1)
    assert_allclose(np.sum(phi_x * phi_y, axis=1), np.exp((x @ x + y @ y) / 2) * np.cos(w @ (x - y)),
                    rtol=1e-12, atol=1e-14)
    samples = np.stack(
        [np.exp((x @ x + y @ y) / 2) * np.cos(w @ (x - y)) for x, y in zip(xs, ys)], axis=1
    )
    t10 = derivation("T10")
    mean_pred = t10.part("mean").function(*(np.einsum("ij,ij->i", a, b) for a, b in ((xs, ys), (xs, xs), (ys, ys))))
    assert_allclose(mean_pred, np.exp(np.sum(xs * ys, axis=1)), rtol=1e-12)
    var_pred = t10.vector_function(xs, ys)
    z = np.concatenate([mean_z(samples, mean_pred), variance_z(samples, var_pred)])
    assert accepts(z), z
    # negative control: (1 - exp(-|x-y|^2)) not squared
    u = np.sum((xs - ys) ** 2, axis=1)
    wrong = 0.5 * np.exp(np.sum((xs + ys) ** 2, axis=1) - 2 * np.sum(xs * ys, axis=1)) * (1 - np.exp(-u))
    assert not accepts(np.concatenate([mean_z(samples, mean_pred), variance_z(samples, wrong)]))


@symbolic
def test_t10_characteristic_function_quadrature():
    char = derivation("T10").part("characteristic_one_dim").function
    for u in (0.0, 0.3, 1.7, 3.0):
        val = integrate.quad(lambda w, u=u: np.cos(w * u) * np.exp(-w * w / 2) / np.sqrt(2 * np.pi), -15, 15,
                             limit=200)[0]
        assert_allclose(char(u), val, rtol=1e-9, atol=1e-14)


# --- T11: Gaussian product identity -------------------------------------------------------------------------


@symbolic
def test_t11_identity_on_random_inputs_and_by_quadrature():
    rng = np.random.default_rng(11)
    t11 = derivation("T11")
    w, q, k = rng.standard_normal((3, 50, 4))
    lhs = (2 * np.pi) ** -2 * np.exp(-np.sum(w * w, 1) / 2 + np.sum(w * q, 1) - np.sum(q * q, 1) / 2
                                     + np.sum(w * k, 1) - np.sum(k * k, 1) / 2)
    assert_allclose(t11.vector_function(w, q, k), lhs, rtol=1e-12)
    rhs = np.exp(np.sum(q * k, 1)) * (2 * np.pi) ** -2 * np.exp(-np.sum((w - q - k) ** 2, 1) / 2)
    assert_allclose(t11.vector_function(w, q, k), rhs, rtol=1e-12)
    # one-dimensional: the left-hand side integrates to exp(q k)
    lhs1 = t11.part("lhs").function
    for qq, kk in rng.uniform(-2, 2, size=(3, 2)):
        total = integrate.quad(lambda x, qq=qq, kk=kk: lhs1(x, qq, kk), qq + kk - 15, qq + kk + 15,
                               epsabs=0, epsrel=1e-11)[0]
        assert_allclose(total, np.exp(qq * kk), rtol=1e-9)


# --- T14: attention is an expectation -----------------------------------------------------------------------


@symbolic
@pytest.mark.parametrize("num_keys", [2, 3])
def test_t14_quadrature_in_one_dimension(num_keys):
    rng = np.random.default_rng(14 + num_keys)
    t14 = derivation("T14", num_keys=num_keys)
    integrand = t14.part("integrand").function
    mixture = t14.part("mixture").function
    for _ in range(3):
        q = rng.uniform(-1.5, 1.5)
        k = rng.uniform(-1.5, 1.5, size=num_keys)
        v = rng.standard_normal(num_keys)
        args = (q, *k, *v)
        total = integrate.quad(lambda w, a=args: integrand(w, *a), -20, 20, points=[q + kk for kk in k],
                               epsabs=1e-13, limit=200)[0]
        attn = softmax_attention(np.array([[q]]), k[:, None], v[:, None])[0, 0]
        assert_allclose(t14.function(*args), attn, rtol=1e-12)
        assert_allclose(total, attn, rtol=1e-8, atol=1e-12)
        ws = rng.uniform(-4, 4, size=20)
        assert_allclose(integrand(ws, *args), mixture(ws, *args), rtol=1e-10, atol=1e-15)


@pytest.mark.statistical
def test_t14_monte_carlo_in_two_dimensions():
    """E_{w ~ p_n}[f(w)] = Attn_n in d = 2 (ancestral sampling from the mixture T12)."""
    rng = np.random.default_rng(1414)
    n_q, m, d, n = 2, 3, 2, 100_000
    q, k = ball(rng, n_q, d, 1.0), ball(rng, m, d, 1.0)
    v = rng.standard_normal((m, 2))
    attn = softmax_attention(q, k, v)

    def f(w):
        logits = w @ k.T - 0.5 * np.sum(k * k, axis=1)
        logits -= logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=-1, keepdims=True)) @ v

    pi = np.exp(q @ k.T)
    pi /= pi.sum(axis=1, keepdims=True)
    z, z_control = [], []
    for i in range(n_q):
        comp = rng.choice(m, size=n, p=pi[i])
        w = q[i] + k[comp] + rng.standard_normal((n, d))
        z.append(mean_z(f(w), attn[i]))
        z_control.append(mean_z(f(rng.standard_normal((n, d))), attn[i]))  # wrong measure: N(0, I)
    assert accepts(np.array(z)), z
    assert not accepts(np.array(z_control))


# --- T16: weight second moment ------------------------------------------------------------------------------


@symbolic
def test_t16_kernel_and_mixture_by_quadrature():
    rng = np.random.default_rng(16)
    t16 = derivation("T16")

    def npdf(w, m):
        return np.exp(-((w - m) ** 2) / 2) / np.sqrt(2 * np.pi)

    for a, b, mu in rng.uniform(-1.5, 1.5, size=(4, 3)):
        # N(w;a) N(w;b) / N(w;mu) with the exponents combined (a Gaussian in w centred at a + b - mu)
        def ratio(w, a=a, b=b, mu=mu):
            return np.exp(-((w - a) ** 2) / 2 - (w - b) ** 2 / 2 + (w - mu) ** 2 / 2) / np.sqrt(2 * np.pi)

        c = a + b - mu
        val = integrate.quad(ratio, c - 15, c + 15, epsabs=0, epsrel=1e-11)[0]
        assert_allclose(t16.function(a, b, mu), val, rtol=1e-9)
    two = t16.part("second_moment_two_keys").function
    for q, k1, k2, mu in rng.uniform(-1, 1, size=(3, 4)):
        pi = np.exp([q * k1, q * k2])
        pi /= pi.sum()

        def p_n(w, q=q, k1=k1, k2=k2, pi=pi):
            return pi[0] * npdf(w, q + k1) + pi[1] * npdf(w, q + k2)

        val = integrate.quad(lambda w, mu=mu, p_n=p_n: p_n(w) ** 2 / npdf(w, mu), -20, 20, epsabs=0, epsrel=1e-11,
                             limit=200)[0]
        assert_allclose(two(q, k1, k2, mu), val, rtol=1e-9)
        assert_allclose(t16.vector_function(np.array([q]), np.array([[k1], [k2]]), np.array([mu])), val, rtol=1e-9)


@symbolic
@pytest.mark.statistical
def test_t16_monte_carlo_in_two_dimensions():
    rng = np.random.default_rng(1616)
    d, m, n, cases = 2, 3, 200_000, 3
    t16 = derivation("T16")
    z, z_control = [], []
    for _ in range(cases):
        q, k, mu = ball(rng, 1, d, 0.5)[0], ball(rng, m, d, 0.5), ball(rng, 1, d, 0.5)[0]
        pi = np.exp(k @ q)
        pi /= pi.sum()
        w = mu + rng.standard_normal((n, d))
        centres = q + k  # (m, d)
        # p_n(w)/q(w) = sum_m pi_m exp(-|w - c_m|^2/2 + |w - mu|^2/2)
        log_ratio = -0.5 * np.sum((w[:, None, :] - centres) ** 2, -1) + 0.5 * np.sum((w - mu) ** 2, -1)[:, None]
        ratio = np.exp(log_ratio) @ pi
        samples = ratio**2
        z.append(mean_z(samples, t16.vector_function(q, k, mu)))
        z_control.append(mean_z(samples, t16.vector_function(q, k, np.zeros(d))))  # mu forgotten
    assert accepts(np.array(z)), z
    assert not accepts(np.array(z_control))


# --- T15: first-order bias and variance of SNIS -------------------------------------------------------------


@symbolic
@pytest.mark.statistical
def test_t15_snis_bias_and_variance_on_a_gaussian_toy():
    """T15 on a toy with closed-form moments: p = N(a, 1), q = N(0, 1), f(w) = w.

    E_q[wbar^2] = e^{a^2}, E_q[wbar^2 f] = 2a e^{a^2}, E_q[wbar^2 f^2] = (1 + 4a^2) e^{a^2}, so T15 predicts
    bias = -a e^{a^2} / S and Var = (1 + a^2) e^{a^2} / S.

    T15 is a statement about the 1/S coefficient. S * bias(S) = b_1 + b_2/S + b_3/S^2 + ...
    and S * Var(S) likewise; with Monte Carlo at S = 4, 8, 16 the quadratic in 1/S through the
    three points is extrapolated to 1/S = 0 (Richardson), which removes the O(S^-2) and O(S^-3)
    terms that a direct comparison at one S would resolve, and b_1 is compared with T15.
    """
    a, reps = 0.5, 400_000
    e = np.exp(a * a)
    bias1, var1 = derivation("T15").function(1.0, a, e, 2 * a * e, (1 + 4 * a * a) * e)
    assert_allclose([bias1, var1], [-a * e, (1 + a * a) * e], rtol=1e-14)
    sizes = np.array([4.0, 8.0, 16.0])
    rng = np.random.default_rng(15)
    scaled_bias, scaled_bias_se, scaled_var, scaled_var_se = [], [], [], []
    for s in sizes.astype(int):
        w = rng.standard_normal((reps, s))
        wbar = np.exp(a * w - a * a / 2)
        est = np.sum(wbar * w, axis=1) / np.sum(wbar, axis=1)
        c = est - est.mean()
        m2, m4 = np.mean(c**2), np.mean(c**4)
        scaled_bias.append(s * (est.mean() - a))
        scaled_bias_se.append(s * est.std(ddof=1) / np.sqrt(reps))
        scaled_var.append(s * m2)
        scaled_var_se.append(s * np.sqrt((m4 - m2**2) / reps))
    # Lagrange weights of the quadratic through (1/S_i, y_i), evaluated at 1/S = 0
    x = 1.0 / sizes
    weights = np.array([np.prod([-x[j] / (x[i] - x[j]) for j in range(3) if j != i]) for i in range(3)])

    def extrapolate(y, se):
        return weights @ np.asarray(y), np.sqrt(weights**2 @ np.asarray(se) ** 2)

    b1, b1_se = extrapolate(scaled_bias, scaled_bias_se)
    c1, c1_se = extrapolate(scaled_var, scaled_var_se)
    assert accepts([(b1 - bias1) / b1_se, (c1 - var1) / c1_se]), (b1, bias1, c1, var1)
    # negative controls: the wrong sign of the bias, no bias at all, twice the variance
    assert not accepts([(b1 + bias1) / b1_se, (c1 - var1) / c1_se])
    assert not accepts([b1 / b1_se, (c1 - var1) / c1_se])
    assert not accepts([(b1 - bias1) / b1_se, (c1 - 2 * var1) / c1_se])


# --- T3: batch-force lemma ----------------------------------------------------------------------------------


@symbolic
@pytest.mark.parametrize(("n", "p"), [(5, 3), (6, 2), (5, 2), (7, 3)])
def test_t3_against_numeric_enumeration(n, p):
    t3 = derivation("T3", n=n, p=p)
    rng = np.random.default_rng(n * 10 + p)
    values = rng.standard_normal(n - 1)
    kbar = values.mean()
    lam = np.sum((values - kbar) ** 2) / (n - 2)
    # uniform (p - 1)-subsets of the others
    chis = np.array([values[list(s)].mean() - kbar for s in itertools.combinations(range(n - 1), p - 1)])
    assert_allclose(chis.mean(), 0.0, atol=1e-14)
    assert_allclose(t3.function(*values), np.mean(chis**2), rtol=1e-12)
    assert_allclose(t3.vector_function(values), np.mean(chis**2), rtol=1e-12)
    assert_allclose(t3.part("Lambda").function(*values), lam, rtol=1e-12)
    assert float(t3.part("factor").expression) == pytest.approx(1 / (p - 1) - 1 / (n - 1), rel=1e-15)
    # the RBM-1 partition: all permutations, batches cut by batch_bounds (sizes p or p + 1)
    bounds = batch_bounds(n, p)
    sq = []
    for perm in itertools.permutations(range(n)):
        pos = perm.index(n - 1)
        b = np.searchsorted(bounds, pos, side="right") - 1
        mates = [j for j in perm[bounds[b]:bounds[b + 1]] if j != n - 1]
        sq.append((values[mates].mean() - kbar) ** 2)
    factor = float(t3.part("rbm1_factor").expression)
    assert factor == pytest.approx(batch_variance_factor(n, p), rel=1e-14)
    assert_allclose(t3.part("rbm1_second_moment").function(*values), np.mean(sq), rtol=1e-12, atol=1e-15)
    assert_allclose(np.mean(sq), factor * lam, rtol=1e-12, atol=1e-15)
