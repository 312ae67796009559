"""Confidence intervals for means."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from validation.stats._common import (
    _as_samples,
    _check_prob,
)

__all__ = ["MeanInterval", "mean_interval", "batch_means_interval", "percentile_interval"]


class MeanInterval(NamedTuple):
    """Result of :func:`mean_interval` (arrays of one sample's shape, or floats)."""

    mean: object
    low: object
    high: object
    std_error: object
    confidence: float
    n: int


def mean_interval(x, confidence=0.95):
    """Student-t confidence interval for the mean of i.i.d. draws, per coordinate.

    Parameters
    ----------
    x : array_like, shape (n, ...)
        n >= 2 draws along axis 0.
    confidence : float, default 0.95
        Coverage of each interval, in (0, 1) (no multiplicity correction).

    Returns
    -------
    MeanInterval
        ``mean +- t_{(1+confidence)/2, n-1} * sd / sqrt(n)``; floats for 1-d ``x``.

    Examples
    --------
    >>> mi = mean_interval([1.0, 2.0, 3.0, 4.0], 0.95)
    >>> round(mi.mean, 3), round(mi.low, 3), round(mi.high, 3)
    (2.5, 0.446, 4.554)
    """
    a = _as_samples("x", x, min_n=2)
    confidence = _check_prob("confidence", confidence)
    from scipy import stats

    n = a.shape[0]
    m = a.mean(axis=0)
    se = a.std(axis=0, ddof=1) / math.sqrt(n)
    t = float(stats.t.ppf(0.5 + confidence / 2.0, df=n - 1))

    def out(v):
        v = np.asarray(v, dtype=np.float64)
        return float(v) if v.ndim == 0 else v

    return MeanInterval(out(m), out(m - t * se), out(m + t * se), out(se), confidence, n)


def batch_means_interval(series, confidence=0.95, *, n_batches=20, burn_in=0):
    """Confidence interval for the long-run mean of a stationary, autocorrelated time series (batch means).

    The series after ``burn_in`` is cut into ``n_batches`` contiguous batches of equal length (the last
    ``len % n_batches`` points are dropped); their means are treated as i.i.d. and :func:`mean_interval`
    (Student t, ``n_batches - 1`` degrees of freedom) is applied to them. Valid when a batch is long compared
    with the autocorrelation time, so that neighbouring batch means are nearly independent: the lag-1
    autocorrelation of the batch means is returned as the check (``MeanInterval`` has no field for it, so the
    result is ``(interval, lag1)``). The i.i.d. interval of the raw points would be too narrow by about the
    square root of the integrated autocorrelation time.

    Parameters
    ----------
    series : array_like, shape (T, ...)
        Time along axis 0; further axes are independent coordinates.
    confidence : float, default 0.95
    n_batches : int, default 20
        At least 2; each batch must hold at least 2 points.
    burn_in : int, default 0
        Leading points dropped (the transient).

    Returns
    -------
    (MeanInterval, lag1) : the interval of the mean (``n`` is the number of batches), and the lag-1
        autocorrelation of the batch means (float, or array per coordinate; NaN when it is undefined).
    """
    a = np.asarray(series, dtype=np.float64)
    if isinstance(n_batches, (bool, np.bool_)) or not isinstance(n_batches, (int, np.integer)) or n_batches < 2:
        raise ValueError(f"n_batches must be an integer >= 2, got {n_batches!r}")
    if isinstance(burn_in, (bool, np.bool_)) or not isinstance(burn_in, (int, np.integer)) or burn_in < 0:
        raise ValueError(f"burn_in must be an integer >= 0, got {burn_in!r}")
    if a.ndim == 0 or a.shape[0] - burn_in < 2 * n_batches:
        raise ValueError(f"series must hold at least burn_in + 2 * n_batches = {burn_in + 2 * n_batches} points "
                         f"along axis 0, got shape {a.shape}")
    a = a[burn_in:]
    length = a.shape[0] // n_batches
    means = a[: length * n_batches].reshape(n_batches, length, *a.shape[1:]).mean(axis=1)
    c = means - means.mean(axis=0)
    den = np.sum(c * c, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        lag1 = np.sum(c[1:] * c[:-1], axis=0) / den
    lag1 = float(lag1) if np.ndim(lag1) == 0 else lag1
    return mean_interval(means, confidence), lag1


def percentile_interval(draws, alpha, axis=None):
    """Percentile (bootstrap) interval: the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of ``draws``.

    ``draws`` are resampled or simulated values of a statistic; the interval has coverage ``1 - alpha`` to the
    extent the bootstrap distribution mirrors the sampling one. Returns ``(low, high)`` as floats, or arrays
    when ``axis`` leaves dimensions.

    Examples
    --------
    >>> percentile_interval(np.arange(101.0), 0.1)
    (5.0, 95.0)
    """
    alpha = _check_prob("alpha", alpha)
    a = np.asarray(draws, dtype=np.float64)
    if a.size == 0:
        raise ValueError("draws must not be empty")
    lo, hi = np.quantile(a, [alpha / 2, 1 - alpha / 2], axis=axis)
    if np.ndim(lo) == 0:
        return float(lo), float(hi)
    return lo, hi
