"""Confidence intervals for means."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from validation.stats._common import (
    _as_samples,
    _check_prob,
)

__all__ = ["MeanInterval", "mean_interval", "percentile_interval"]


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
