"""Argument checks and named choices shared by the statistical checks."""

from __future__ import annotations

import math
import numbers

import numpy as np

#: Multiple-comparison procedures of :func:`unbiasedness_test`.
METHODS = ("holm", "bonferroni", "hotelling")
#: Confidence intervals of :func:`variance_check` and :func:`mse_check`.
INTERVALS = ("asymptotic", "chi2")
#: How :func:`variance_check` combines coordinates.
REDUCTIONS = ("none", "sum", "mean")

#: Power at which :func:`unbiasedness_test` states its minimum detectable bias by default.
DEFAULT_POWER = 0.8

_RANK_RTOL = 1e-10  # covariance eigenvalues below this fraction of the largest are "constant directions"
_NULL_TOL_SD = 1e-6  # a deviation along a constant direction larger than this (in sd units) is a bias


# --------------------------------------------------------------------------- argument checks
def _plain(value):
    """A NumPy scalar as the Python number it holds, so that messages show ``2.0``, not ``np.float64(2.0)``."""
    item = getattr(value, "item", None)
    return item() if item is not None and getattr(value, "shape", None) == () else value


def _as_samples(name, samples, min_n):
    if callable(samples) and not isinstance(samples, np.ndarray):
        raise TypeError(
            f"{name} must be an array of estimator outputs, shape (n, ...), got a callable "
            f"(draw the samples first, or use validation.testing.assert_unbiased)"
        )
    try:
        a = np.asarray(samples)
    except ValueError as exc:  # ragged
        raise ValueError(f"{name} must be a rectangular array of shape (n, ...): {exc}") from exc
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers (int or float), got dtype {a.dtype}")
    if a.ndim < 1:
        raise ValueError(f"{name} must have shape (n, ...) with one row per estimator output, got a scalar")
    if a.shape[0] < min_n:
        raise ValueError(f"{name} must have at least {min_n} samples along axis 0, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} has no coordinates: shape {a.shape}")
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        raise ValueError(f"{name} must be finite; {bad} value(s) are NaN or infinite")
    return a


def _as_target(name, target, shape, *, optional=False):
    if target is None:
        if optional:
            return None
        raise ValueError(f"{name} is required")
    try:
        t = np.asarray(target, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real number or an array broadcastable to {shape}") from exc
    try:
        t = np.broadcast_to(t, shape)
    except ValueError as exc:
        raise ValueError(
            f"{name} with shape {t.shape} cannot be broadcast to the shape of one sample, {shape}"
        ) from exc
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{name} must be finite")
    return np.array(t, dtype=np.float64)


def _check_prob(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0.0 < float(value) < 1.0):
        raise ValueError(f"{name} must be a number in (0, 1), got {_plain(value)!r}")
    return float(value)


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {_plain(value)!r}")
    return value


def _check_nonneg(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {_plain(value)!r}")
    return float(value)
