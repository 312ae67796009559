"""Tests of ``validation.stats._decisions``: the primitives the built-in studies decide their verdicts with.

Declared rates
--------------
The calibration tests run a decision at ALPHA_CAL = 0.05 on SEEDS independent
draws and apply a one-sided binomial meta-test at level META = 1e-3: the
false-alarm rate must not be significantly above its nominal value, and the
rejection rate of a negative control (a shift of 5 combined standard errors)
must be significantly above 0.95. Eight meta-tests: the chance that another
seed fails one of them is <= 8e-3 when the primitives are right. The binomial
bounds are checked exactly (coverage summed over the binomial distribution),
not by simulation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from validation.stats import (
    binomial_interval,
    binomial_lower,
    bonferroni_level,
    bonferroni_z,
    chi2_variance_upper,
    compare_to_prediction,
    student_t_critical,
)

ALPHA_CAL = 0.05
META = 1e-3
SEEDS = 4000
SHIFT = 5.0  # negative control, in combined standard errors


def _not_above(k, trials, rate):
    return stats.binomtest(int(k), trials, rate, alternative="greater").pvalue > META


def _above(k, trials, rate):
    return stats.binomtest(int(k), trials, rate, alternative="greater").pvalue < META


def test_critical_values_match_the_normal_table():
    # textbook quantiles: z_{0.025} = 1.959964, z_{0.05} = 1.644854, z_{0.05/8} = z_{0.00625} = 2.497705
    assert bonferroni_z(0.05) == pytest.approx(1.959963984540054, abs=1e-12)
    assert bonferroni_z(0.1, sides=1) == pytest.approx(1.2815515655446004, abs=1e-12)
    assert bonferroni_z(0.05, 4) == pytest.approx(2.4977054744, abs=1e-9)
    assert bonferroni_level(0.95, 5) == pytest.approx(0.99, abs=1e-15)
    assert bonferroni_z(0.05, 1) < bonferroni_z(0.05, 2) < bonferroni_z(0.05, 10)


def test_t_and_chi2_limits_match_the_tables():
    # table values: t_{0.975, 9} = 2.262157, chi2_{0.05, 10} = 3.940299 (lower 5% point)
    assert student_t_critical(0.95, 9) == pytest.approx(2.2621571628, abs=1e-9)
    assert chi2_variance_upper(2.0, 10, 0.05) == pytest.approx(2.0 * 10 / 3.9402991, rel=1e-7)
    assert_equal = np.testing.assert_array_equal
    assert_equal(chi2_variance_upper(np.array([1.0, 2.0]), 10, 0.05) / chi2_variance_upper(1.0, 10, 0.05), [1.0, 2.0])


def test_chi2_upper_limit_covers_normal_variances():
    rng = np.random.default_rng(13)
    n = 11
    x = rng.standard_normal((SEEDS, n))
    upper = chi2_variance_upper(x.var(axis=1, ddof=1), n - 1, ALPHA_CAL)
    misses = int(np.sum(upper < 1.0))
    assert _not_above(misses, SEEDS, ALPHA_CAL), misses
    # power: data of variance 0.16 verify the bound 1 (upper limit below it) nearly always (P = 0.994)
    small = chi2_variance_upper((0.4 * x).var(axis=1, ddof=1), n - 1, ALPHA_CAL)
    assert _above(int(np.sum(small <= 1.0)), SEEDS, 0.95)


def test_bonferroni_family_false_alarms_and_power():
    rng = np.random.default_rng(11)
    m = 8
    z = rng.standard_normal((SEEDS, m))
    crit = bonferroni_z(ALPHA_CAL, m)
    alarms = int(np.sum(np.max(np.abs(z), axis=1) > crit))
    assert _not_above(alarms, SEEDS, ALPHA_CAL), alarms
    z[:, 3] += SHIFT  # one biased comparison among m
    hits = int(np.sum(np.max(np.abs(z), axis=1) > crit))
    assert _above(hits, SEEDS, 0.95), hits


@pytest.mark.parametrize("se_pred", [0.0, 0.5])
def test_measured_vs_predicted_false_alarms_and_power(se_pred):
    rng = np.random.default_rng(12)
    se_m, truth = 0.3, 1.7
    measured = truth + se_m * rng.standard_normal(SEEDS)
    predicted = truth + se_pred * rng.standard_normal(SEEDS)
    alarms = sum(not compare_to_prediction(a, b, se_m, se_pred, alpha=ALPHA_CAL).agrees
                 for a, b in zip(measured, predicted))
    assert _not_above(alarms, SEEDS, ALPHA_CAL), alarms
    shift = SHIFT * math.hypot(se_m, se_pred)
    hits = sum(not compare_to_prediction(a + shift, b, se_m, se_pred, alpha=ALPHA_CAL).agrees
               for a, b in zip(measured[:500], predicted[:500]))
    assert _above(hits, 500, 0.95), hits


def test_comparison_reports_its_parts():
    c = compare_to_prediction(2.0, 1.0, 0.3, 0.4, alpha=0.01, m=3)
    assert c.se == pytest.approx(0.5)
    assert c.z == pytest.approx(2.0)
    assert c.z_crit == pytest.approx(stats.norm.isf(0.01 / 6))
    assert c.agrees is True
    assert c.interval == pytest.approx((2.0 - c.z_crit * 0.3, 2.0 + c.z_crit * 0.3))
    exact = compare_to_prediction(1.0, 1.0, 0.0, alpha=0.05)
    assert exact.z == 0.0 and exact.agrees
    off = compare_to_prediction(1.0 + 1e-15, 1.0, 0.0, alpha=0.05)
    assert math.isinf(off.z) and not off.agrees


def _coverage_lower(n, p, confidence):
    """P(binomial_lower(K, n) <= p) for K ~ Bin(n, p), summed exactly."""
    return sum(stats.binom.pmf(k, n, p) for k in range(n + 1) if binomial_lower(k, n, confidence) <= p)


def _coverage_interval(n, p, confidence):
    pmf = stats.binom.pmf(np.arange(n + 1), n, p)
    inside = [lo <= p <= hi for lo, hi in (binomial_interval(k, n, confidence) for k in range(n + 1))]
    return float(pmf[np.array(inside)].sum())


@pytest.mark.parametrize("n", [10, 37])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_clopper_pearson_bounds_cover_at_least_their_confidence(n, p):
    assert _coverage_lower(n, p, 0.95) >= 0.95 - 1e-12
    assert _coverage_interval(n, p, 0.9) >= 0.9 - 1e-12


def test_clopper_pearson_closed_forms():
    # all successes: the lower bound solves p^n = 1 - confidence; none: the upper bound solves (1 - p)^n = tail
    for n in (1, 5, 20):
        assert binomial_lower(n, n, 0.95) == pytest.approx(0.05 ** (1 / n), rel=1e-12)
        lo, hi = binomial_interval(0, n, 0.9)
        assert lo == 0.0 and hi == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-12)
    assert binomial_lower(0, 9, 0.95) == 0.0


def test_clopper_pearson_is_not_too_conservative():
    # negative control: a bound that ignored the data (always 0) would never exceed p; this one does
    # for a sample clearly above p
    assert binomial_lower(45, 50, 0.99) > 0.7
    lo, hi = binomial_interval(25, 50, 0.95)
    assert 0.35 < lo < 0.5 < hi < 0.65


@pytest.mark.parametrize("call, match", [
    (lambda: bonferroni_z(0.0), r"alpha must be a number in \(0, 1\)"),
    (lambda: bonferroni_z(0.05, 0), "m must be an integer >= 1"),
    (lambda: bonferroni_z(0.05, sides=3), "sides must be 1 or 2"),
    (lambda: bonferroni_level(1.0, 2), r"confidence must be a number in \(0, 1\)"),
    (lambda: compare_to_prediction(1.0, float("nan"), 0.1, alpha=0.05), "predicted must be a finite number"),
    (lambda: compare_to_prediction(1.0, 1.0, -0.1, alpha=0.05), "se_measured must be >= 0"),
    (lambda: binomial_lower(6, 5, 0.95), "successes must be <= trials"),
    (lambda: binomial_lower(2.5, 5, 0.95), "successes must be an integer"),
    (lambda: binomial_interval(1, 0, 0.95), "trials must be an integer >= 1"),
    (lambda: student_t_critical(0.95, 0), "df must be an integer >= 1"),
    (lambda: chi2_variance_upper(-1.0, 5, 0.05), "variance must be >= 0"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
