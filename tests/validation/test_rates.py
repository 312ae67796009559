"""validation.rates: log-log fits, their intervals, and the pre-asymptotic diagnostic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from validation.rates import RateFit, WindowSlope, fit_rate, preasymptotic_flag

H = 2.0 ** -np.arange(2, 10)  # 8 levels, as in a strong-order study
NOISE_SEED = 20261123
exponents = st.floats(0.25, 2.0)
constants = st.floats(-3.0, 3.0).map(lambda e: 10.0**e)


def _noise(sd=0.02, n=H.size, seed=NOISE_SEED):
    return np.random.default_rng(seed).normal(0.0, sd, n)


def _replicates(k, c, n_rep=64, seed=NOISE_SEED, corr=0.9):
    """Squared errors (n_rep, n_levels) whose per-level mean is exactly (c h^k)^2 in expectation.

    Each replicate has a level-independent factor (common random numbers: the
    levels of one replicate are strongly correlated) times a small
    level-specific one; both have mean one.
    """
    rng = np.random.default_rng(seed)
    shared = rng.exponential(1.0, (n_rep, 1))
    own = rng.exponential(1.0, (n_rep, H.size))
    z = corr * shared + (1 - corr) * own
    return (c * H**k) ** 2 * z


# ----------------------------------------------------------------------------- regression path


@given(k=exponents, c=constants)
def test_noiseless_power_law_recovers_slope(k, c):
    fit = fit_rate(H, c * H**k)
    assert_allclose(fit.slope, k, rtol=0, atol=1e-10)
    assert_allclose(fit.intercept, np.log(c), rtol=0, atol=1e-8)
    assert_allclose(fit.r2, 1.0, rtol=0, atol=1e-12)
    assert fit.method == "regression"
    assert fit.levels_used == (H.min(), H.max())
    assert fit.n_levels == H.size


@given(k=exponents, c=constants)
def test_small_noise_interval_contains_true_slope(k, c):
    # With a fixed noise draw the fit's error (slope - k) does not depend on k or c, so this checks
    # the interval at one draw under every (k, c); coverage itself is checked below over many draws.
    fit = fit_rate(H, c * H**k * np.exp(_noise()))
    assert fit.ci_low < fit.slope < fit.ci_high
    assert fit.contains(k)
    assert fit.ci_high - fit.ci_low < 0.1


@given(k=exponents, c=constants)
def test_negative_control_other_slope_not_contained(k, c):
    # Data whose true slope is k + 0.5: the interval must reject k (the check has power) and keep k + 0.5.
    fit = fit_rate(H, c * H ** (k + 0.5) * np.exp(_noise()))
    assert not fit.contains(k)
    assert not fit.contains(k, tol=0.2)
    assert fit.contains(k + 0.5)


@pytest.mark.statistical
def test_regression_interval_coverage():
    # Independent log-normal noise satisfies the regression model exactly: nominal coverage 0.95.
    # 2000 fixed seeds; binomial sd 0.005, accept +-0.015 (3 sd, false alarm ~0.3%, deterministic here).
    k = 0.5
    hits = [fit_rate(H, H**k * np.exp(_noise(sd=0.1, seed=s))).contains(k) for s in range(2000)]
    assert abs(np.mean(hits) - 0.95) < 0.015


def test_confidence_level_widens_interval():
    y = H**0.7 * np.exp(_noise())
    f90 = fit_rate(H, y, confidence=0.90)
    f99 = fit_rate(H, y, confidence=0.99)
    assert f99.ci_low < f90.ci_low < f90.slope < f90.ci_high < f99.ci_high
    assert_allclose(f90.slope, f99.slope, rtol=0, atol=0)


def test_contains_tolerance():
    fit = RateFit(slope=0.5, intercept=0.0, ci_low=0.45, ci_high=0.55, confidence=0.95, r2=1.0,
                  levels_used=(0.1, 1.0), method="regression", n_levels=3)
    assert fit.contains(0.5) and fit.contains(0.45) and fit.contains(0.55)
    assert not fit.contains(0.62)
    assert fit.contains(0.62, tol=0.1)
    assert not fit.contains(0.3, tol=0.1)
    with pytest.raises(ValueError, match="tol"):
        fit.contains(0.5, tol=-0.1)
    with pytest.raises(ValueError, match="order"):
        fit.contains(float("nan"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.slope = 1.0


# ----------------------------------------------------------------------------- bootstrap path


@given(k=exponents, c=constants)
def test_bootstrap_with_replicates(k, c):
    rep = _replicates(k, c)
    rms = np.sqrt(rep.mean(axis=0))
    fit = fit_rate(H, rms, replicate_errors=rep)
    assert fit.method == "bootstrap"
    assert_allclose(fit.slope, fit_rate(H, rms).slope, rtol=0, atol=1e-12)  # same point estimate
    assert fit.ci_low <= fit.slope <= fit.ci_high
    assert fit.contains(k)
    assert not fit.contains(k + 0.5)


def test_bootstrap_reproducible_and_errors_optional():
    rep = _replicates(0.5, 1.0)
    a = fit_rate(H, None, replicate_errors=rep, rng=3)
    b = fit_rate(H, np.sqrt(rep.mean(axis=0)), replicate_errors=rep, rng=np.random.default_rng(3))
    assert a == b
    c = fit_rate(H, None, replicate_errors=rep, rng=4)
    assert c.slope == a.slope and (c.ci_low, c.ci_high) != (a.ci_low, a.ci_high)


def test_bootstrap_respects_common_random_numbers():
    # Perfectly shared replicate factors: every resample is an exact power law, so the honest interval
    # collapses onto the true slope, while the regression interval ignores that structure.
    rng = np.random.default_rng(NOISE_SEED)
    rep = (H**0.5) ** 2 * rng.exponential(1.0, (32, 1))
    fit = fit_rate(H, None, replicate_errors=rep)
    assert_allclose([fit.ci_low, fit.slope, fit.ci_high], 0.5, rtol=0, atol=1e-10)


@pytest.mark.statistical
def test_bootstrap_interval_coverage():
    # 200 data sets with known slope; percentile bootstrap with 64 replicates is close to nominal.
    # Accept coverage >= 0.88 (nominal 0.95; a 95% one-sided binomial margin for slight undercoverage).
    hits = [fit_rate(H, None, replicate_errors=_replicates(0.5, 1.0, seed=s, corr=0.5), n_boot=500, rng=s)
            .contains(0.5) for s in range(200)]
    assert np.mean(hits) >= 0.88


# ----------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("levels", "errors", "match"),
    [
        ([0.1, 0.2, 0.3], [1.0, 2.0], "same length"),
        ([0.1, 0.2], [1.0, 2.0], "at least 3"),
        ([0.1, -0.2, 0.3], [1.0, 2.0, 3.0], "levels must be positive"),
        ([0.1, 0.2, 0.3], [1.0, 0.0, 3.0], "errors must be positive"),
        ([0.1, 0.2, np.nan], [1.0, 2.0, 3.0], "levels must be finite"),
        ([0.1, 0.2, 0.3], [1.0, np.inf, 3.0], "errors must be finite"),
        ([0.1, 0.1, 0.3], [1.0, 2.0, 3.0], "levels must be distinct"),
        ([[0.1, 0.2, 0.3]], [1.0, 2.0, 3.0], "levels must be 1-d"),
        ([0.1, 0.2, 0.3], ["a", "b", "c"], "errors"),
    ],
)
def test_bad_inputs(levels, errors, match):
    with pytest.raises(ValueError, match=match):
        fit_rate(levels, errors)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1, "high", True])
def test_bad_confidence(confidence):
    with pytest.raises(ValueError, match="confidence"):
        fit_rate(H, H, confidence=confidence)


def test_bad_replicates():
    rep = _replicates(0.5, 1.0)
    with pytest.raises(ValueError, match="replicate_errors"):
        fit_rate(H, None, replicate_errors=rep[:, :-1])
    with pytest.raises(ValueError, match="replicate_errors"):
        fit_rate(H, None, replicate_errors=rep[0])
    with pytest.raises(ValueError, match="replicate_errors"):
        fit_rate(H, None, replicate_errors=rep[:1])
    with pytest.raises(ValueError, match="replicate_errors"):
        fit_rate(H, None, replicate_errors=-rep)
    with pytest.raises(ValueError, match="errors must be the RMS"):
        fit_rate(H, 2 * np.sqrt(rep.mean(axis=0)), replicate_errors=rep)
    with pytest.raises(ValueError, match="n_boot"):
        fit_rate(H, None, replicate_errors=rep, n_boot=10)
    with pytest.raises(ValueError, match="errors is required"):
        fit_rate(H, None)


# ----------------------------------------------------------------------------- pre-asymptotic diagnostic


@given(k=exponents, c=constants)
def test_preasymptotic_none_for_pure_power_law(k, c):
    assert preasymptotic_flag(H, c * H**k, k, 0.05) == []


def test_preasymptotic_flags_floor_and_order_of_levels():
    e = H**0.5 + 0.05  # an error floor bends the curve at small h
    flagged = preasymptotic_flag(H[::-1], e[::-1], 0.5, 0.1)  # input order does not matter
    assert flagged and all(isinstance(w, WindowSlope) for w in flagged)
    assert all(w.slope < 0.4 for w in flagged)
    assert flagged[0].level_min == H.min()  # the finest levels are the flagged ones
    assert max(w.level_max for w in flagged) < H.max()
    with pytest.raises(ValueError, match="tol"):
        preasymptotic_flag(H, e, 0.5, -1.0)
    with pytest.raises(ValueError, match="levels"):
        preasymptotic_flag(H[:2], e[:2], 0.5, 0.1)
