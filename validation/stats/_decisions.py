r"""The primitives every verdict is decided with: critical values, measured-vs-predicted, binomial bounds.

A study's verdict is one of three shapes, and each has one function here, so
that the calibration tests of ``tests/validation/test_stats.py`` cover the decisions the
report prints:

- **a family of z-tests** at family-wise level alpha over m comparisons:
  :func:`bonferroni_z` gives the critical value :math:`z_{\alpha/(s m)}`
  (s = 2 two-sided, 1 one-sided) and :func:`bonferroni_level` the per-test
  confidence :math:`1 - \alpha/m`;
- **a measurement against a prediction** that carries its own Monte Carlo
  error: :func:`compare_to_prediction` forms
  :math:`z = (\hat m - \hat p)/\sqrt{se_m^2 + se_p^2}` and says whether
  ``|z| <= z_crit``; the interval it reports is the measurement's;
- **a proportion against a bound**: :func:`binomial_lower` and
  :func:`binomial_interval` are Clopper-Pearson (exact, conservative) bounds.

Declared false-alarm rate: ``alpha`` per call, family-wise over ``m``.
Errors name the argument at fault.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from validation.stats._common import _check_prob, _plain

__all__ = [
    "Comparison",
    "binomial_interval",
    "binomial_lower",
    "bonferroni_level",
    "bonferroni_z",
    "chi2_variance_upper",
    "compare_to_prediction",
    "student_t_critical",
    "two_sided_p",
]


def _count(name, value, low=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {_plain(value)!r}")
    return int(value)


def bonferroni_z(alpha, m=1, *, sides=2):
    """Critical value of m normal tests at family-wise level ``alpha``: ``norm.isf(alpha / (sides * m))``.

    Examples
    --------
    >>> round(bonferroni_z(0.05), 4), round(bonferroni_z(0.05, 4), 4), round(bonferroni_z(0.05, sides=1), 4)
    (1.96, 2.4977, 1.6449)
    """
    from scipy import stats

    alpha = _check_prob("alpha", alpha)
    m = _count("m", m, 1)
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 or 2, got {_plain(sides)!r}")
    return float(stats.norm.isf(alpha / (sides * m)))


def bonferroni_level(confidence, m=1):
    """Per-claim confidence that keeps m claims jointly at ``confidence``: ``1 - (1 - confidence) / m``.

    Examples
    --------
    >>> bonferroni_level(0.95, 5)
    0.99
    """
    confidence = _check_prob("confidence", confidence)
    m = _count("m", m, 1)
    return 1.0 - (1.0 - confidence) / m


class Comparison(NamedTuple):
    """Result of :func:`compare_to_prediction`."""

    z: float
    z_crit: float
    agrees: bool
    interval: tuple  # the measurement +- z_crit * its own standard error
    se: float  # the combined standard error


def compare_to_prediction(measured, predicted, se_measured, se_predicted=0.0, *, alpha, m=1):
    """Two-sided z-test of a measurement against a prediction, both with standard errors.

    ``z = (measured - predicted) / sqrt(se_measured^2 + se_predicted^2)``;
    they agree when ``|z| <= bonferroni_z(alpha, m)``. With both errors 0 the
    two must be equal (z is 0 or infinite).

    Examples
    --------
    >>> c = compare_to_prediction(1.02, 1.0, 0.01, 0.0, alpha=0.05)
    >>> round(c.z, 6), c.agrees
    (2.0, False)
    >>> compare_to_prediction(1.02, 1.0, 0.01, 0.01, alpha=0.05).agrees
    True
    """
    values = {}
    for name, v in (("measured", measured), ("predicted", predicted), ("se_measured", se_measured),
                    ("se_predicted", se_predicted)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {_plain(v)!r}")
        values[name] = float(v)
    for name in ("se_measured", "se_predicted"):
        if values[name] < 0:
            raise ValueError(f"{name} must be >= 0, got {values[name]!r}")
    zc = bonferroni_z(alpha, m)
    se = math.hypot(values["se_measured"], values["se_predicted"])
    diff = values["measured"] - values["predicted"]
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    half = zc * values["se_measured"]
    return Comparison(z, zc, bool(abs(z) <= zc), (values["measured"] - half, values["measured"] + half), se)


def binomial_lower(successes, trials, confidence):
    """One-sided Clopper-Pearson lower confidence bound of a binomial proportion (0 when no successes).

    Examples
    --------
    >>> round(binomial_lower(20, 20, 0.95), 4)
    0.8609
    >>> binomial_lower(0, 5, 0.95)
    0.0
    """
    from scipy import stats

    trials = _count("trials", trials, 1)
    successes = _count("successes", successes, 0)
    if successes > trials:
        raise ValueError(f"successes must be <= trials ({trials}), got {successes}")
    confidence = _check_prob("confidence", confidence)
    if successes == 0:
        return 0.0
    return float(stats.beta.ppf(1.0 - confidence, successes, trials - successes + 1))


def binomial_interval(successes, trials, confidence):
    """Two-sided Clopper-Pearson interval ``(low, high)`` at ``confidence`` (each tail ``(1 - confidence)/2``).

    Examples
    --------
    >>> tuple(round(v, 4) for v in binomial_interval(5, 10, 0.95))
    (0.1871, 0.8129)
    """
    from scipy import stats

    trials = _count("trials", trials, 1)
    successes = _count("successes", successes, 0)
    if successes > trials:
        raise ValueError(f"successes must be <= trials ({trials}), got {successes}")
    confidence = _check_prob("confidence", confidence)
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if successes == 0 else float(stats.beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.isf(tail, successes + 1, trials - successes))
    return low, high


def student_t_critical(confidence, df):
    """Two-sided Student-t critical value ``t.ppf(0.5 + confidence / 2, df)`` (a mean of ``df + 1`` draws).

    Examples
    --------
    >>> round(student_t_critical(0.95, 9), 4)
    2.2622
    """
    from scipy import stats

    confidence = _check_prob("confidence", confidence)
    df = _count("df", df, 1)
    return float(stats.t.ppf(0.5 + confidence / 2.0, df=df))


def chi2_variance_upper(variance, dof, alpha):
    """One-sided upper confidence limit at level ``1 - alpha`` of a sample variance with ``dof`` degrees of
    freedom (normal data): ``variance * dof / chi2.ppf(alpha, dof)``; ``variance`` may be an array.

    Examples
    --------
    >>> round(float(chi2_variance_upper(1.0, 99, 0.05)), 4)
    1.2849
    """
    from scipy import stats

    alpha = _check_prob("alpha", alpha)
    dof = _count("dof", dof, 1)
    v = np.asarray(variance, dtype=np.float64)
    if np.any(v < 0):  # NaN passes through: a study may keep undefined cells
        raise ValueError("variance must be >= 0")
    out = v * dof / stats.chi2.ppf(alpha, dof)
    return float(out) if out.ndim == 0 else out


def two_sided_p(z):
    """Two-sided normal p-value ``2 * norm.sf(|z|)`` of a z statistic.

    Examples
    --------
    >>> round(two_sided_p(1.959963984540054), 6)
    0.05
    """
    from scipy import stats

    if isinstance(z, bool) or not isinstance(z, numbers.Real) or math.isnan(z):
        raise ValueError(f"z must be a real number, got {_plain(z)!r}")
    return float(2 * stats.norm.sf(abs(z)))
