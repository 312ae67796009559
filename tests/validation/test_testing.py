"""Tests of ``validation.testing``: the assertions and strategies offered to users.

Declared rates
--------------
Every statistical assertion here runs at alpha = 1e-3 with fixed seeds (and
hypothesis examples derandomized), so every verdict is reproducible. The
NULL_DECISIONS assertions expected to pass (unbiased estimators, correct
orders with bootstrap intervals) would each fail with probability <= 1e-3
for another seed (convergence orders: <= 5% before the tolerance widening,
much less after it); the negative controls must fail, which shows that the
same checks have power.

The hypothesis test of randomized attention makes RA_EXAMPLES independent
decisions at alpha = 1e-3 on derandomized inputs: a false alarm for another
set of examples has probability <= RA_EXAMPLES * 1e-3.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import attention_theory as at
import particles
import validation.stats
import validation.stats._decisions
import validation.stats._intervals
import validation.stats._multiple
import validation.stats._unbiasedness
import validation.stats._variance
import validation.testing
from attention_theory.bounds import weight_second_moment
from particles import integrators, systems
from validation.testing import (
    assert_convergence_order,
    assert_unbiased,
    batch_sizes,
    draw_samples,
    particle_states,
    qkv_triples,
    step_sizes,
    t16_bound,
)

NULL_DECISIONS = 7
RA_EXAMPLES = 10


# --------------------------------------------------------------------------- assert_convergence_order


def test_exact_power_law_passes_and_returns_the_fit():
    h = 2.0 ** -np.arange(2, 9)
    fit = assert_convergence_order(h, 3.0 * h**0.5, 0.5, tol=0.0)
    assert fit.slope == pytest.approx(0.5) and fit.method == "regression"
    assert assert_convergence_order(h, lambda level: 3.0 * level**2, 2.0).slope == pytest.approx(2.0)


def test_wrong_order_fails_with_a_diagnostic_message():
    h = 2.0 ** -np.arange(2, 9)
    with pytest.raises(AssertionError) as info:
        assert_convergence_order(h, 3.0 * h**0.5, 1.0, err_msg="RBM-1 strong order")
    msg = str(info.value)
    assert msg.startswith("RBM-1 strong order\n")
    for part in ("fitted slope 0.5", "interval [0.5, 0.5]", "widened by tol=0.1 to [0.4, 0.6]",
                 "expected order 1", "levels: [0.25, 0.125,", "errors: [1.5,", "local slopes"):
        assert part in msg, (part, msg)


def test_tolerance_is_applied_on_both_sides():
    h = 2.0 ** -np.arange(2, 9)
    e = h**1.08
    assert_convergence_order(h, e, 1.0, tol=0.1)
    with pytest.raises(AssertionError):
        assert_convergence_order(h, e, 1.0, tol=0.05)
    assert_convergence_order(h, e, 1.15, tol=0.1)


def test_user_integrator_euler_is_first_order():
    """A user's own explicit Euler for dX = -X dt, X(0) = 1, against exp(-1): order 1, not 2."""

    def euler_error(h):
        x = 1.0
        for _ in range(round(1.0 / h)):
            x -= h * x
        return abs(x - np.exp(-1.0))

    levels = 2.0 ** -np.arange(4, 11)
    assert_convergence_order(levels, euler_error, integrators.EULER.order)
    with pytest.raises(AssertionError, match="expected order 2"):
        assert_convergence_order(levels, euler_error, 2.0)


def test_replicate_errors_use_the_bootstrap_interval():
    g = np.random.default_rng(1)
    h = 2.0 ** -np.arange(3, 9)
    # Common random numbers: one random constant per replicate, shared by all levels, plus small level noise.
    c = g.lognormal(0.0, 0.5, size=(64, 1))
    sq = (c * h**0.5 * g.lognormal(0.0, 0.05, size=(64, h.size))) ** 2
    fit = assert_convergence_order(h, None, 0.5, replicate_errors=sq)
    assert fit.method == "bootstrap" and fit.ci_low < 0.5 < fit.ci_high
    with pytest.raises(AssertionError, match="bootstrap interval"):
        assert_convergence_order(h, None, 1.0, replicate_errors=sq)


@pytest.mark.statistical
def test_euler_maruyama_strong_order_with_particles_solve():
    """particles.solve, Euler-Maruyama, additive noise: strong order 1 (declared by the scheme).

    Confined tanh system (sigma = 1, additive). Each step size is compared with a
    fine run (h = 2^-10) on the same Brownian path (noise on the 2^-10 grid,
    THEORY A3); the per-replicate squared errors give a bootstrap interval.
    The classical order 1/2 of Euler-Maruyama for multiplicative noise is the
    negative control: it must be rejected.
    """
    system = systems.confined_tanh(r=1.0, L=0.3, sigma=1.0)
    x0 = np.random.default_rng(12).standard_normal((64, 4, 1))  # 64 replicas of 4 particles
    fine = 2.0**-10
    dts = 2.0 ** -np.arange(3, 8)
    kw = dict(t_end=1.0, seed=5, noise_dt=fine, save_every=10**9)
    ref = particles.solve(system, x0, dt=fine, **kw).final
    sq = np.stack([np.mean((particles.solve(system, x0, dt=float(h), **kw).final - ref) ** 2, axis=(1, 2))
                   for h in dts], axis=1)
    assert_convergence_order(dts, None, integrators.EULER.strong_order_additive, replicate_errors=sq)
    with pytest.raises(AssertionError):
        assert_convergence_order(dts, None, 0.5, replicate_errors=sq)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(expected_order=None), "expected_order is None"),
        (dict(expected_order=float("nan")), "expected_order must be a finite number"),
        (dict(tol=0.9), "tol must be a number in"),
        (dict(tol=-0.1), "tol must be a number in"),
        (dict(errors=lambda h: 0.0), "errors: the callable returned 0.0"),
        (dict(errors=lambda h: "x"), "errors: the callable returned 'x'"),
        (dict(errors=lambda h: h, replicate_errors=np.ones((3, 3))), "not both"),
        (dict(levels=[0.1, 0.2], errors=[1.0, 2.0]), "at least 3"),
        (dict(levels=[0.1, -0.2, 0.4], errors=lambda h: h), "levels must be a 1-d sequence of positive"),
        (dict(errors=[1.0, -1.0, 2.0]), "errors must be positive"),
    ],
)
def test_convergence_bad_input(kwargs, match):
    args = dict(levels=[0.1, 0.2, 0.4], errors=[0.1, 0.2, 0.4], expected_order=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        assert_convergence_order(args.pop("levels"), args.pop("errors"), args.pop("expected_order"), **args)


def test_rbmr_declares_no_strong_order_and_the_message_says_so():
    with pytest.raises(ValueError, match="declares no such order"):
        assert_convergence_order([0.1, 0.2, 0.4], [1.0, 2.0, 4.0], particles.RBMR.strong_order)


# --------------------------------------------------------------------------- assert_unbiased


def mc_estimator(rng):
    """Monte Carlo estimate of (E Z, E Z^2, E exp(Z)) = (0, 1, e^{1/2}) from 8 draws."""
    z = rng.standard_normal(8)
    return np.array([z.mean(), np.mean(z**2), np.mean(np.exp(z))])


MC_TARGET = [0.0, 1.0, np.exp(0.5)]


@pytest.mark.statistical
@pytest.mark.parametrize("method", ["holm", "bonferroni", "hotelling"])
def test_unbiased_monte_carlo_passes_and_biased_control_fails(method):
    res = assert_unbiased(mc_estimator, MC_TARGET, n_samples=3000, method=method, rng=2)
    assert not res.rejected and res.n == 3000 and res.method == method

    def biased(rng):  # a plausible bug: the plug-in variance with denominator n instead of n - 1
        z = rng.standard_normal(8)
        return np.array([z.mean(), z.var(), np.mean(np.exp(z))])

    with pytest.raises(AssertionError) as info:
        assert_unbiased(biased, MC_TARGET, n_samples=3000, method=method, rng=2)
    msg = str(info.value)
    assert "estimator looks biased" in msg and "worst coordinate (1,)" in msg and "z = -" in msg and "p = " in msg


def test_samples_and_seed_modes():
    x = draw_samples(mc_estimator, 500, rng=3)
    res = assert_unbiased(x, MC_TARGET)
    assert res.n == 500
    with pytest.raises(ValueError, match="n_samples applies to a callable"):
        assert_unbiased(x, MC_TARGET, n_samples=500)

    def needs_int_seed(seed):
        assert isinstance(seed, int) and 0 <= seed < 2**63
        return mc_estimator(np.random.default_rng(seed))

    assert not assert_unbiased(needs_int_seed, MC_TARGET, n_samples=500, pass_as="seed", rng=4).rejected


def test_draws_are_reproducible_and_independent():
    a = draw_samples(lambda g: g.standard_normal(2), 50, rng=7)
    np.testing.assert_array_equal(a, draw_samples(lambda g: g.standard_normal(2), 50, rng=7))
    assert np.unique(a[:, 0]).size == 50
    b = draw_samples(lambda g: g.standard_normal(2), 50, rng=np.random.default_rng(7))
    c = draw_samples(lambda g: g.standard_normal(2), 50, rng=np.random.SeedSequence(7))
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)
    seeds = draw_samples(lambda s: float(s), 100, rng=0, pass_as="seed")
    assert np.unique(seeds).size == 100


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: draw_samples(np.ones(3), 10), TypeError, "estimator must be callable"),
        (lambda: draw_samples(lambda g: 1.0, 1), ValueError, "n_samples must be an integer >= 2"),
        (lambda: draw_samples(lambda g: 1.0, 10, rng=-1), ValueError, "rng must be"),
        (lambda: draw_samples(lambda g: 1.0, 10, pass_as="int"), ValueError, "pass_as must be"),
        (lambda: draw_samples(lambda g: np.ones(int(g.integers(1, 3))), 10), ValueError, "same shape"),
        (lambda: draw_samples(lambda g: np.nan, 10), ValueError, "non-finite values at call 0"),
        (lambda: draw_samples(lambda g: "a", 10), TypeError, "real numbers"),
        (lambda: assert_unbiased(mc_estimator, MC_TARGET, method="z"), ValueError, "method must be one of"),
        (lambda: assert_unbiased(mc_estimator, [0.0, 1.0], n_samples=10), ValueError, "target with shape"),
    ],
)
def test_unbiased_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.statistical
@settings(max_examples=RA_EXAMPLES, derandomize=True, database=None, deadline=None)
@given(qkv_triples())
def test_randomized_attention_is_unbiased(qkv):
    """RA (B3) averages to softmax attention (T14) on inputs from qkv_triples.

    ``atol=1e-12``: with equal values (e.g. one key, or constant v) an output
    is deterministic up to rounding and is compared to the target at that
    tolerance.
    """
    q, k, v = qkv
    assert_unbiased(lambda g: at.randomized_attention(q, k, v, rng=g), at.softmax_attention(q, k, v),
                    n_samples=600, rng=5, atol=1e-12)


@pytest.mark.statistical
def test_rfa_with_one_feature_is_caught_as_biased():
    """Negative control: RFA with S = 1 (a ratio estimator, biased, T15) on moderate inputs (|q|, |k| <= 0.5)."""
    g = np.random.default_rng(20261124)
    q = g.uniform(-0.35, 0.35, size=(3, 2))
    k = g.uniform(-0.35, 0.35, size=(4, 2))
    v = g.uniform(-1.0, 1.0, size=(4, 2))
    target = at.softmax_attention(q, k, v)
    assert_unbiased(lambda r: at.randomized_attention(q, k, v, rng=r), target, n_samples=2000, rng=6)
    with pytest.raises(AssertionError, match="estimator looks biased"):
        assert_unbiased(lambda r: at.rfa(q, k, v, num_features=1, rng=r), target, n_samples=2000, rng=6)


# --------------------------------------------------------------------------- strategies


@given(particle_states(n=st.integers(2, 5), d=3, replicas=2))
def test_particle_states_shapes(x):
    assert x.shape[0] == 2 and 2 <= x.shape[1] <= 5 and x.shape[2] == 3
    assert x.dtype == np.float64 and np.all(np.isfinite(x)) and np.all(np.abs(x) <= 3.0)


@given(particle_states(on_sphere=True))
def test_particle_states_on_the_sphere(x):
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, rtol=1e-12)


@settings(max_examples=5, deadline=None)
@given(particle_states(n=6, d=2))
def test_particle_states_feed_the_engine(x0):
    tr = particles.solve(systems.confined_tanh(sigma=0.0), x0, t_end=0.1, dt=0.05, backend="reference")
    assert tr.x.shape == (3, 6, 2)


@given(qkv_triples(max_norm=0.7))
def test_qkv_triples_respect_the_norm_bound(qkv):
    q, k, v = qkv
    assert q.shape[1] == k.shape[1] and v.shape[0] == k.shape[0]
    assert np.all(np.linalg.norm(q, axis=1) <= 0.7 + 1e-12) and np.all(np.linalg.norm(k, axis=1) <= 0.7 + 1e-12)
    assert np.all(np.abs(v) <= 1.0)
    t16 = weight_second_moment(q, k, np.zeros(q.shape[1]))
    assert np.all(t16 <= t16_bound(0.7) * (1 + 1e-12))


@given(st.integers(2, 50).flatmap(lambda n: st.tuples(st.just(n), batch_sizes(n))))
def test_batch_sizes_are_valid_for_the_partition(n_p):
    n, p = n_p
    assert 2 <= p <= n
    part = particles.partition(n, p, seed=1, backend="reference")
    assert sorted(part.perm.tolist()) == list(range(n))


@given(step_sizes(t_end=2.0, min_steps=4, max_steps=100))
def test_step_sizes_divide_the_horizon(h):
    n = 2.0 / h
    assert n == round(n) and 4 <= n <= 64


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: particle_states(n=0), "n must be an integer >= 1"),
        (lambda: particle_states(d=1.5), "d must be an integer"),
        (lambda: particle_states(max_abs=0.0), "max_abs must be a positive"),
        (lambda: particle_states(on_sphere=1), "on_sphere must be True or False"),
        (lambda: qkv_triples(max_norm=-1.0), "max_norm must be a positive"),
        (lambda: qkv_triples(dv=0), "dv must be an integer >= 1"),
        (lambda: batch_sizes(1), "n must be an integer >= 2"),
        (lambda: step_sizes(min_steps=0), "min_steps must be an integer >= 1"),
        (lambda: step_sizes(min_steps=5, max_steps=7), "no power of two"),
    ],
)
def test_strategy_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- docstring examples


_DOCTESTED = [validation.testing, validation.stats._unbiasedness, validation.stats._variance,
              validation.stats._multiple, validation.stats._intervals, validation.stats._decisions]


@pytest.mark.parametrize("module", _DOCTESTED, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0
