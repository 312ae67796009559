"""Convergence rates: log-log fits with confidence intervals.

A rate is *verified* (THEORY, Part D) when the slope of a log-log fit over a
range of levels (step sizes, batch sizes, sample sizes) has a confidence
interval that contains the predicted order, widened by a documented
tolerance. This module provides the fit and the interval; choosing the
levels, the tolerance and the theory value is the caller's business.

Two intervals are offered:

- ``"regression"``: the classical interval of ordinary least squares on
  ``log(error) = intercept + slope * log(level)``, slope +- t_{n-2} * SE.
  It treats the residuals of different levels as independent, which is
  *wrong* when the levels share random numbers (common random numbers /
  one Brownian path for all step sizes, THEORY A3): then the residuals are
  correlated and the interval can be far too narrow or too wide.
- ``"bootstrap"``: given the per-replicate squared errors of every level
  (replicates are independent, levels within one replicate are not), the
  replicates are resampled with replacement, the RMS error per level is
  recomputed from the resample and the line refitted. The percentile interval
  of the refitted slopes respects the dependence between levels. This is the
  honest interval for coupled strong-error studies.

>>> import numpy as np
>>> h = 2.0 ** -np.arange(2, 8)
>>> fit = fit_rate(h, 3.0 * h**0.5)
>>> round(fit.slope, 12), fit.contains(0.5)
(0.5, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from validation.stats import _plain

__all__ = ["RateFit", "WindowSlope", "fit_rate", "fit_rate_resampled", "preasymptotic_flag"]


@dataclass(frozen=True)
class RateFit:
    """Result of :func:`fit_rate`.

    Attributes
    ----------
    slope : float
        Fitted exponent k in error ~ C * level**k.
    intercept : float
        log(C), natural logarithm.
    ci_low, ci_high : float
        Confidence interval of the slope.
    confidence : float
        Its nominal level, e.g. 0.95.
    r2 : float
        Coefficient of determination of the log-log fit (1 for an exact power
        law; defined as 1 when the errors do not vary at all).
    levels_used : tuple of float
        (min, max) of the levels entering the fit.
    method : {"regression", "bootstrap"}
        How the interval was obtained (see the module docstring).
    n_levels : int
        Number of levels in the fit.
    """

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    confidence: float
    r2: float
    levels_used: tuple[float, float]
    method: str
    n_levels: int

    def contains(self, order, tol=0.0):
        """Whether ``[ci_low - tol, ci_high + tol]`` contains ``order``.

        Parameters
        ----------
        order : float
            The predicted rate (e.g. ``particles.RBM1.strong_order``).
        tol : float, default 0.0
            Documented tolerance, >= 0, added on both sides of the interval.

        Returns
        -------
        bool
        """
        order = float(order)
        tol = float(tol)
        if not math.isfinite(order):
            raise ValueError(f"order must be a finite number, got {_plain(order)!r}")
        if not (math.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be a finite number >= 0, got {_plain(tol)!r}")
        return bool(self.ci_low - tol <= order <= self.ci_high + tol)

    def as_dict(self):
        """A JSON-serialisable dictionary of the fields."""
        return {
            "slope": self.slope, "intercept": self.intercept, "ci_low": self.ci_low, "ci_high": self.ci_high,
            "confidence": self.confidence, "r2": self.r2, "levels_used": list(self.levels_used),
            "method": self.method, "n_levels": self.n_levels,
        }


class WindowSlope(NamedTuple):
    """Local slope of :func:`preasymptotic_flag` on one window of levels."""

    level_min: float
    level_max: float
    slope: float


def _as_positive_vector(name, values):
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-d sequence of positive finite numbers") from exc
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite; got {a.tolist()}")
    if not np.all(a > 0):
        raise ValueError(f"{name} must be positive (a log-log fit needs log({name})); got {a.tolist()}")
    return a


def _check_levels_errors(levels, errors, min_len=3):
    lv = _as_positive_vector("levels", levels)
    er = _as_positive_vector("errors", errors)
    if lv.shape != er.shape:
        raise ValueError(f"levels and errors must have the same length; got {lv.size} and {er.size}")
    if lv.size < min_len:
        raise ValueError(f"levels must have at least {min_len} entries for a fit with an interval; got {lv.size}")
    if np.unique(lv).size != lv.size:
        raise ValueError(f"levels must be distinct; got {lv.tolist()}")
    return lv, er


def _ols(x, y):
    """Least-squares line through (x, y); returns slope, intercept, residual sum of squares, sxx, r2."""
    xm = x.mean()
    ym = y.mean()
    xc = x - xm
    sxx = float(xc @ xc)
    slope = float(xc @ (y - ym)) / sxx
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    sse = float(resid @ resid)
    syy = float((y - ym) @ (y - ym))
    r2 = 1.0 if syy == 0.0 else 1.0 - sse / syy
    return slope, intercept, sse, sxx, r2


def fit_rate(levels, errors, *, replicate_errors=None, confidence=0.95, n_boot=2000, rng=0):
    r"""Fit ``log(error) = intercept + slope * log(level)`` with a confidence interval on the slope.

    Parameters
    ----------
    levels : array_like, shape (n_levels,)
        Step sizes (or batch sizes, sample sizes), positive, finite,
        distinct; n_levels >= 3.
    errors : array_like, shape (n_levels,), or None
        Positive finite errors at these levels (e.g. RMS strong errors).
        May be None when ``replicate_errors`` is given; it is then the RMS
        ``sqrt(mean(replicate_errors, axis=0))``.
    replicate_errors : array_like, shape (n_replicates, n_levels), optional
        Per-replicate *squared* errors (non-negative), replicates independent,
        levels within a replicate possibly dependent (common random numbers).
        When given, the interval is a percentile bootstrap over replicates and
        ``errors`` (if given) must equal their RMS per level.
    confidence : float, default 0.95
        Nominal coverage of the interval, in (0, 1).
    n_boot : int, default 2000
        Bootstrap resamples (only with ``replicate_errors``), >= 100.
    rng : int or numpy.random.Generator, default 0
        Seed or generator for the bootstrap; the default makes the interval
        reproducible.

    Returns
    -------
    RateFit
        ``method="regression"`` without replicates: ci = slope +- t * SE
        with t the ``(1 + confidence)/2`` quantile of Student's t with
        n_levels - 2 degrees of freedom and
        SE = sqrt(SSE / (n_levels - 2) / sum (log h - mean log h)^2).
        ``method="bootstrap"`` with replicates.

    Raises
    ------
    ValueError
        Naming the offending argument: lengths differ or are < 3, values not
        positive/finite, levels not distinct, replicate shape mismatch,
        errors inconsistent with the replicates, confidence outside (0, 1).

    Notes
    -----
    With common random numbers across levels (THEORY A3) the regression
    interval is not valid; pass ``replicate_errors``. The slope itself is the
    same in both methods (least squares on the given ``errors``).
    """
    confidence = _check_confidence(confidence)
    rep = None
    if replicate_errors is not None:
        try:
            rep = np.asarray(replicate_errors, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError("replicate_errors must be a 2-d array of non-negative squared errors") from exc
        if rep.ndim != 2:
            raise ValueError(f"replicate_errors must have shape (n_replicates, n_levels), got shape {rep.shape}")
        if rep.shape[0] < 2:
            raise ValueError(f"replicate_errors needs at least 2 replicates to resample, got {rep.shape[0]}")
        if not np.all(np.isfinite(rep)) or np.any(rep < 0):
            raise ValueError("replicate_errors must be finite and >= 0 (they are squared errors)")
        if rep.shape[1] != np.size(levels):
            raise ValueError(f"replicate_errors must have one column per level: shape {rep.shape}, "
                             f"{np.size(levels)} levels")
        if errors is None:
            errors = np.sqrt(rep.mean(axis=0))
    elif errors is None:
        raise ValueError("errors is required when replicate_errors is not given")
    lv, er = _check_levels_errors(levels, errors)
    n = lv.size
    x = np.log(lv)
    y = np.log(er)
    slope, intercept, sse, sxx, r2 = _ols(x, y)
    alpha = 1.0 - confidence
    if rep is None:
        from scipy import stats

        se = math.sqrt(sse / (n - 2) / sxx)
        t = float(stats.t.ppf(1.0 - alpha / 2.0, df=n - 2))
        lo, hi = slope - t * se, slope + t * se
        method = "regression"
    else:
        rms = np.sqrt(rep.mean(axis=0))
        if not np.allclose(rms, er, rtol=1e-8, atol=0.0):
            raise ValueError("errors must be the RMS of replicate_errors per level, sqrt(mean(replicate_errors, "
                             "axis=0)); pass errors=None to have it computed")
        if not isinstance(n_boot, int | np.integer) or isinstance(n_boot, bool) or n_boot < 100:
            raise ValueError(f"n_boot must be an integer >= 100, got {_plain(n_boot)!r}")
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        slopes = _bootstrap_slopes(x, rep, int(n_boot), gen)
        lo, hi = (float(v) for v in np.quantile(slopes, [alpha / 2.0, 1.0 - alpha / 2.0]))
        method = "bootstrap"
    return RateFit(slope=slope, intercept=intercept, ci_low=float(lo), ci_high=float(hi), confidence=confidence,
                   r2=float(r2), levels_used=(float(lv.min()), float(lv.max())), method=method, n_levels=n)


def _check_confidence(confidence):
    try:
        conf = float(confidence)
    except (TypeError, ValueError):
        conf = math.nan
    if isinstance(confidence, bool) or not (0.0 < conf < 1.0):
        raise ValueError(f"confidence must be a number in (0, 1), got {_plain(confidence)!r}")
    return conf


def fit_rate_resampled(levels, errors, resampled_errors, *, confidence=0.95):
    r"""Log-log slope of ``errors`` vs ``levels`` with a percentile interval from errors recomputed on resamples.

    For errors that are not a mean of per-replicate squared errors (so :func:`fit_rate`'s bootstrap does not
    apply), e.g. the error of a quantile or of a crossing time of an ensemble average: the caller resamples
    its independent units (initialisations) with replacement, keeps the levels of one resample coupled
    (common random numbers), recomputes the error at every level and passes those rows here. The slope is
    least squares on ``log(errors)``; the interval is the percentile interval of the slopes refitted to the
    rows of ``resampled_errors``.

    Parameters
    ----------
    levels : array_like, shape (n_levels,)
        Positive, finite, distinct; n_levels >= 3.
    errors : array_like, shape (n_levels,)
        Positive finite errors of the full sample.
    resampled_errors : array_like, shape (n_boot, n_levels)
        Positive finite errors of each resample, n_boot >= 100.
    confidence : float, default 0.95
        Nominal coverage, in (0, 1).

    Returns
    -------
    RateFit
        ``method="bootstrap"``.

    Raises
    ------
    ValueError
        Naming the argument: shapes, fewer than 3 levels or 100 resamples, values not positive and finite,
        levels not distinct, confidence outside (0, 1).

    Examples
    --------
    >>> h = np.array([0.1, 0.05, 0.025])
    >>> rows = np.outer(np.linspace(0.9, 1.1, 200), 2.0 * h)  # the constant varies, the order does not
    >>> fit = fit_rate_resampled(h, 2.0 * h, rows)
    >>> round(fit.slope, 12), round(fit.ci_low, 12), round(fit.ci_high, 12)
    (1.0, 1.0, 1.0)
    """
    conf = _check_confidence(confidence)
    lv, er = _check_levels_errors(levels, errors)
    try:
        rows = np.asarray(resampled_errors, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError("resampled_errors must be a 2-d array of positive errors") from exc
    if rows.ndim != 2 or rows.shape[1] != lv.size:
        raise ValueError(f"resampled_errors must have shape (n_boot, {lv.size}) (one column per level), got "
                         f"shape {rows.shape}")
    if rows.shape[0] < 100:
        raise ValueError(f"resampled_errors must have at least 100 rows (resamples), got {rows.shape[0]}")
    if not (np.all(np.isfinite(rows)) and np.all(rows > 0)):
        raise ValueError("resampled_errors must be finite and > 0 (a log-log fit needs their logarithm)")
    x = np.log(lv)
    slope, intercept, _, sxx, r2 = _ols(x, np.log(er))
    xc = x - x.mean()
    ly = np.log(rows)
    slopes = (ly - ly.mean(axis=1, keepdims=True)) @ xc / sxx
    alpha = 1.0 - conf
    lo, hi = (float(v) for v in np.quantile(slopes, [alpha / 2.0, 1.0 - alpha / 2.0]))
    return RateFit(slope=slope, intercept=intercept, ci_low=lo, ci_high=hi, confidence=conf, r2=float(r2),
                   levels_used=(float(lv.min()), float(lv.max())), method="bootstrap", n_levels=int(lv.size))


def _bootstrap_slopes(x, rep, n_boot, gen, chunk=512):
    """Least-squares slopes of log RMS vs x for ``n_boot`` resamples of the rows of ``rep``."""
    n_rep = rep.shape[0]
    xc = x - x.mean()
    sxx = float(xc @ xc)
    out = np.empty(n_boot)
    probs = np.full(n_rep, 1.0 / n_rep)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        counts = gen.multinomial(n_rep, probs, size=m).astype(np.float64)  # (m, n_rep): resample weights
        ms = counts @ rep / n_rep  # (m, n_levels): mean squared error per level
        if np.any(ms <= 0):
            raise ValueError("replicate_errors: a bootstrap resample has zero error at some level (too many "
                             "exact zeros among the replicates); a log-log fit is not possible")
        ly = 0.5 * np.log(ms)
        out[start:start + m] = (ly - ly.mean(axis=1, keepdims=True)) @ xc / sxx
    return out


def preasymptotic_flag(levels, errors, order, tol):
    """Flag windows of levels where the local log-log slope departs from ``order``.

    The levels are sorted and a least-squares slope is fitted on every window
    of 3 successive levels. A window whose slope differs from ``order`` by
    more than ``tol`` is reported: the error there is not (yet) in the
    asymptotic regime the theory describes, or has hit a floor (round-off,
    bias). Only the point slopes are compared (no interval), so this is a
    diagnostic, not a verdict.

    Parameters
    ----------
    levels, errors : array_like, shape (n_levels,)
        As in :func:`fit_rate` (n_levels >= 3).
    order : float
        The predicted rate.
    tol : float
        Allowed departure, >= 0.

    Returns
    -------
    list of WindowSlope
        ``(level_min, level_max, slope)`` for every flagged window, ordered by
        level; empty when every local slope is within ``tol`` of ``order``.

    Examples
    --------
    >>> import numpy as np
    >>> h = 2.0 ** -np.arange(1, 9)
    >>> e = h**0.5 + 0.05  # an error floor shows up at small h
    >>> [(w.level_min, w.level_max) for w in preasymptotic_flag(h, e, 0.5, 0.1)]
    [(0.00390625, 0.015625), (0.0078125, 0.03125), (0.015625, 0.0625)]
    """
    lv, er = _check_levels_errors(levels, errors)
    order = float(order)
    tol = float(tol)
    if not math.isfinite(order):
        raise ValueError(f"order must be a finite number, got {_plain(order)!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {_plain(tol)!r}")
    idx = np.argsort(lv)
    x = np.log(lv[idx])
    y = np.log(er[idx])
    flagged = []
    for i in range(lv.size - 2):
        s = _ols(x[i:i + 3], y[i:i + 3])[0]
        if abs(s - order) > tol:
            flagged.append(WindowSlope(float(lv[idx][i]), float(lv[idx][i + 2]), float(s)))
    return flagged
