"""Variance and MSE with confidence intervals against bounds and closed forms."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from validation.stats._common import (
    INTERVALS,
    REDUCTIONS,
    _as_samples,
    _as_target,
    _check_choice,
    _check_prob,
)

__all__ = ["VarianceCheck", "variance_check", "mse_check"]


@dataclass(frozen=True, eq=False)
class VarianceCheck:
    """Result of :func:`variance_check` or :func:`mse_check`.

    Attributes
    ----------
    kind : {"variance", "mse"}
    estimate : ndarray or float
        Empirical variance (denominator n - 1) or MSE, per coordinate
        (``reduce="none"``, shape of one sample) or reduced to a float.
    ci_low, ci_high : same as ``estimate``
        Confidence limits, each at confidence ``confidence``.
    confidence : float
        Per-interval confidence, 1 - alpha / K (Bonferroni over K intervals).
    alpha : float
        Declared family-wise false-alarm rate.
    interval : {"asymptotic", "chi2"}
    reduce : {"none", "sum", "mean"}
    n : int
    bound, closed_form : ndarray or float or None
        As given (broadcast to the estimate's shape).
    bound_verified : bool or None
        Every upper confidence limit <= its bound (THEORY Part D).
    bound_violated : bool or None
        Some lower confidence limit > its bound: evidence that the bound fails.
    closed_form_verified : bool or None
        Every closed-form value inside its interval.
    verified : bool or None
        All the checks that were asked for passed (None when neither a bound
        nor a closed form was given).
    """

    kind: str
    estimate: object
    ci_low: object
    ci_high: object
    confidence: float
    alpha: float
    interval: str
    reduce: str
    n: int
    bound: object = None
    closed_form: object = None
    bound_verified: bool | None = None
    bound_violated: bool | None = None
    closed_form_verified: bool | None = None
    verified: bool | None = None

    @property
    def bound_status(self):
        """``"verified"``, ``"violated"``, ``"inconclusive"`` or None (no bound given)."""
        if self.bound is None:
            return None
        if self.bound_verified:
            return "verified"
        return "violated" if self.bound_violated else "inconclusive"

    def summary(self):
        """One line per check."""

        def fmt(a):
            a = np.asarray(a)
            return f"{float(a):.6g}" if a.ndim == 0 else np.array2string(a, precision=4, threshold=12)

        s = (
            f"{self.kind} ({self.reduce}, n={self.n}): {fmt(self.estimate)}, {self.interval} interval "
            f"[{fmt(self.ci_low)}, {fmt(self.ci_high)}] at confidence {self.confidence:.6g} "
            f"(family-wise alpha={self.alpha:g})"
        )
        if self.bound is not None:
            s += f"; upper bound {fmt(self.bound)}: {self.bound_status}"
        if self.closed_form is not None:
            s += f"; closed form {fmt(self.closed_form)}: {'inside' if self.closed_form_verified else 'OUTSIDE'}"
        return s


def _interval_core(kind, x, center, *, bound, closed_form, alpha, interval, reduce):
    from scipy import stats

    n = x.shape[0]
    shape = tuple(x.shape[1:])
    xf = x.reshape(n, -1)
    y = (xf - center.reshape(1, -1)) ** 2  # (n, K)
    if reduce != "none":
        y = y.sum(axis=1, keepdims=True)
        if reduce == "mean":
            y = y / xf.shape[1]
        if interval == "chi2":
            raise ValueError(
                f"interval='chi2' is for one coordinate at a time (reduce='none'); the {reduce} of "
                f"several variances is not chi-square distributed. Use interval='asymptotic'"
            )
    k = y.shape[1]
    conf = 1.0 - alpha / k
    denom = n - 1 if kind == "variance" else n
    ysum = y.sum(axis=0)
    est = ysum / denom
    if interval == "chi2":
        lo = ysum / stats.chi2.ppf(1.0 - (1.0 - conf) / 2.0, df=denom)
        hi = ysum / stats.chi2.ppf((1.0 - conf) / 2.0, df=denom)
    elif kind == "variance" and reduce == "none":
        # Bonett (2006): log scale, kurtosis estimated about a trimmed mean, small-sample factor c.
        zq = float(stats.norm.ppf(1.0 - (1.0 - conf) / 2.0))
        if n <= zq + 1:
            raise ValueError(
                f"samples: the asymptotic interval at confidence {conf:.6g} needs n > {zq + 1:.3g}, got n={n}"
            )
        c = n / (n - zq)
        m_trim = stats.trim_mean(xf, 1.0 / (2.0 * math.sqrt(n - 4)), axis=0) if n > 4 else xf.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            g4 = n * np.sum((xf - m_trim) ** 4, axis=0) / ysum**2
            se = np.where(ysum > 0, c * np.sqrt(np.maximum(g4 - (n - 3) / n, 0.0) / (n - 1)), 0.0)
        lo, hi = c * est * np.exp(-zq * se), c * est * np.exp(zq * se)
    else:
        # Delta method on the log scale for a mean of squared deviations (fourth moment).
        ymean = y.mean(axis=0)
        ysd = y.std(axis=0, ddof=1)
        zq = float(stats.norm.ppf(1.0 - (1.0 - conf) / 2.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            half = np.where(ymean > 0, zq * ysd / (math.sqrt(n) * ymean), 0.0)
        lo, hi = est * np.exp(-half), est * np.exp(half)
    out_shape = shape if reduce == "none" else ()

    def shaped(a):
        a = np.asarray(a, dtype=np.float64).reshape(out_shape)
        return float(a) if a.ndim == 0 else a

    est, lo, hi = shaped(est), shaped(lo), shaped(hi)
    b = _as_target("bound", bound, out_shape, optional=True)
    cf = _as_target("closed_form", closed_form, out_shape, optional=True)
    bv = bviol = cfv = None
    if b is not None:
        if np.any(b < 0):
            raise ValueError("bound must be >= 0 (it bounds a variance or an MSE)")
        bv = bool(np.all(np.asarray(hi) <= b))
        bviol = bool(np.any(np.asarray(lo) > b))
        b = float(b) if b.ndim == 0 else b
    if cf is not None:
        if np.any(cf < 0):
            raise ValueError("closed_form must be >= 0 (it is a variance or an MSE)")
        cfv = bool(np.all((np.asarray(lo) <= cf) & (cf <= np.asarray(hi))))
        cf = float(cf) if cf.ndim == 0 else cf
    checks = [c for c in (bv, cfv) if c is not None]
    verified = all(checks) if checks else None
    return VarianceCheck(
        kind=kind,
        estimate=est,
        ci_low=lo,
        ci_high=hi,
        confidence=conf,
        alpha=alpha,
        interval=interval,
        reduce=reduce,
        n=n,
        bound=b,
        closed_form=cf,
        bound_verified=bv,
        bound_violated=bviol,
        closed_form_verified=cfv,
        verified=verified,
    )


def variance_check(samples, bound=None, closed_form=None, *, alpha=1e-3, interval="asymptotic", reduce="none"):
    r"""Empirical variance with a confidence interval, checked against a bound or a closed form.

    Parameters
    ----------
    samples : array_like, shape (n, ...)
        n >= 3 i.i.d. draws (axis 0); the other axes are coordinates.
    bound : float or array_like, optional
        Upper bound on the variance (per coordinate for ``reduce="none"``,
        broadcastable to one sample's shape; a number otherwise).
    closed_form : float or array_like, optional
        The exact variance predicted by theory (same shapes as ``bound``).
    alpha : float, default 1e-3
        Family-wise false-alarm rate; each of the K intervals has confidence
        1 - alpha/K.
    interval : {"asymptotic", "chi2"}, default "asymptotic"
        Fourth-moment (delta method, log scale) interval, valid for
        non-normal data; or the chi-square interval, exact for normal data
        only. See the module docstring.
    reduce : {"none", "sum", "mean"}, default "none"
        Per-coordinate variances, or their sum (the trace of the covariance,
        :math:`E|X - EX|^2`) or mean, as one number with one interval.

    Returns
    -------
    VarianceCheck

    Raises
    ------
    ValueError
        Naming the argument (samples too few or not finite, bound or
        closed_form negative or of the wrong shape, alpha outside (0, 1),
        unknown interval or reduce, chi2 with a reduction).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(1).uniform(-1.0, 1.0, size=(20000, 2))  # variance 1/3
    >>> res = variance_check(x, bound=0.35, closed_form=1.0 / 3.0)
    >>> res.bound_status, res.closed_form_verified, res.verified
    ('verified', True, True)
    >>> variance_check(x, bound=0.3).bound_status
    'violated'
    """
    x = _as_samples("samples", samples, min_n=3)
    alpha = _check_prob("alpha", alpha)
    interval = _check_choice("interval", interval, INTERVALS)
    reduce = _check_choice("reduce", reduce, REDUCTIONS)
    center = np.asarray(x.mean(axis=0))
    return _interval_core(
        "variance", x, center, bound=bound, closed_form=closed_form, alpha=alpha, interval=interval, reduce=reduce
    )


def mse_check(samples, target, bound=None, closed_form=None, *, alpha=1e-3, interval="asymptotic", reduce="none"):
    r"""Mean squared error :math:`\frac1n \sum_i (X_i - \theta)^2` against ``target``, with an interval.

    Same as :func:`variance_check` with the known ``target`` in place of the
    sample mean (the MSE includes the squared bias). The chi-square interval
    (n degrees of freedom) is exact only for normal, *unbiased* outputs.

    Parameters
    ----------
    samples : array_like, shape (n, ...)
        n >= 3 i.i.d. estimator outputs.
    target : float or array_like broadcastable to ``samples.shape[1:]``
        The exact value.
    bound, closed_form, alpha, interval, reduce
        As in :func:`variance_check`.

    Returns
    -------
    VarianceCheck
        With ``kind="mse"``.

    Examples
    --------
    >>> import numpy as np
    >>> x = 0.1 + np.random.default_rng(2).standard_normal(50000)  # bias 0.1, variance 1
    >>> res = mse_check(x, 0.0, closed_form=1.01, interval="chi2")
    >>> res.closed_form_verified
    True
    """
    x = _as_samples("samples", samples, min_n=3)
    tgt = _as_target("target", target, tuple(x.shape[1:]))
    alpha = _check_prob("alpha", alpha)
    interval = _check_choice("interval", interval, INTERVALS)
    reduce = _check_choice("reduce", reduce, REDUCTIONS)
    return _interval_core(
        "mse", x, tgt, bound=bound, closed_form=closed_form, alpha=alpha, interval=interval, reduce=reduce
    )
