r"""Statistical checks: unbiasedness at a declared false-alarm rate, variance and MSE against bounds.

THEORY, Part D says what "verified" means; this module implements the two
statistical parts of it.

**Unbiasedness** (:func:`unbiasedness_test`). Given n i.i.d. outputs
:math:`X_1, \dots, X_n` of an estimator (each of any shape, flattened to K
coordinates) and the value :math:`\theta` they should average to, test
:math:`H_0: E X = \theta`. Two families of tests:

- coordinate-wise: :math:`z_j = (\bar X_j - \theta_j) / (s_j / \sqrt n)` with
  two-sided p-values from Student's t with n - 1 degrees of freedom (exact for
  normal data, the normal approximation by the CLT otherwise), adjusted for the
  K comparisons by Holm's step-down procedure (``"holm"``, the default) or by
  Bonferroni (``"bonferroni"``). "Some coordinate is biased" is declared when
  the smallest adjusted p-value is <= alpha. For that global decision the two
  corrections coincide (Holm's first step *is* Bonferroni); Holm rejects more
  *individual* coordinates. The family-wise false-alarm rate is <= alpha for
  any dependence between the coordinates.
- ``"hotelling"``: :math:`T^2 = n\, \bar d^\top S^{-1} \bar d` with S the sample
  covariance, referred to :math:`\frac{(n-1) r}{n-r} F(r, n-r)` (r the
  dimension, n > r required). Exact for multivariate normal data, with
  false-alarm rate alpha; it uses the correlations and has more power
  against biases spread over many correlated coordinates.

A test is only as good as its power: THEORY, Part D asks that the same check
also *reject* a deliberately biased negative control. The test suite of this
module measures both on randomized attention (6 output coordinates, n = 200
draws, 2000 seeds, alpha = 0.05): false alarms 3.1% (Holm, Bonferroni:
conservative, as a union bound is) and 5.2% (Hotelling), none significantly
above 0.05; a bias of 0.4 single-draw standard deviations in one coordinate
(5.7 standard errors) is rejected in 1999/2000 (Holm, Bonferroni) and
2000/2000 (Hotelling) seeds (``tests/test_stats.py``).

Every result states its **minimum detectable bias** per coordinate
(``min_detectable_bias``, at ``power``, default 80%): a test that does not
reject then says how large a bias it would have seen, e.g. "with n = 4000 a
bias of at least 0.0115 would have been detected with 80% power at
family-wise alpha 0.01" (see :func:`unbiasedness_test`, Notes, for the
formulas; the numbers are checked by simulation in ``tests/test_stats.py``).

Declared false-alarm rate: ``alpha`` per call (default 1e-3), family-wise over
the K coordinates; the coordinate-wise tests need the sample mean to be nearly
normal in its far tail (alpha / K), so skewed outputs need n in the
thousands.

**Constant coordinates.** A coordinate whose samples are all equal (spread
``max - min <= atol``, default: exactly equal) has no sampling variability:
its z is 0 when its value equals the target to within ``atol``, and
:math:`\pm\infty` (p-value 0, rejected) otherwise. A deterministic output that
differs from the target is a bias however small; one that matches it is not
evidence of anything. Outputs that are deterministic *up to rounding* (they
wobble by an ulp) should be given ``atol`` of a few ulps of their size, or be
compared with :func:`numpy.testing.assert_allclose` instead. For Hotelling, a
linear combination of the non-constant coordinates that does not vary in the
samples (a covariance eigenvalue below 1e-10 of the largest, e.g. outputs
constrained to a line) is treated in the same way: the test runs in the
remaining r dimensions, and a deviation along the constant combination larger
than 1e-6 standard deviations rejects.

**Variance and MSE** (:func:`variance_check`, :func:`mse_check`). The
empirical variance (denominator n - 1) or mean squared error
:math:`\frac1n\sum_i |X_i - \theta|^2` comes with a confidence interval:

- ``interval="asymptotic"`` (default, for non-normal data). Both estimates
  are means of squared deviations :math:`Y_i = (X_i - c)^2` (c the sample mean
  or the target), whose variance involves the fourth moment,
  :math:`\mathrm{Var}\,Y = \mu_4 - \sigma^4`; the interval is built on the
  log scale, so it stays positive and follows the right skew of
  :math:`\bar Y`. For one variance per coordinate it is Bonett's interval
  (D. G. Bonett, Comput. Stat. Data Anal. 50 (2006) 775-782):
  :math:`c s^2 \exp(\pm z\, c \sqrt{(\hat\gamma_4 - (n-3)/n)/(n-1)})`,
  :math:`c = n/(n - z)`, with the kurtosis :math:`\hat\gamma_4` taken about
  a trimmed mean (trim :math:`1/(2\sqrt{n-4})`), which corrects most of the
  under-coverage of the plain delta method for skewed data. For the MSE and
  for sums of variances it is the plain delta method,
  :math:`\hat v \exp(\pm z\, s_Y / (\sqrt n\, \bar Y))`. Coverage is
  asymptotic: a finite fourth moment is needed, and heavier tails need
  larger n. Measured miss rates of nominal 95% intervals (2000 seeds):
  normal data 5%; exponential data (excess kurtosis 6), n = 1000: 5.8%
  (variance) and 6.7% (MSE) -- slightly anti-conservative; the tests in
  ``tests/test_stats.py`` pin these numbers.
- ``interval="chi2"``: the classical interval
  :math:`((n-1)s^2/\chi^2_{1-a/2,n-1},\ (n-1)s^2/\chi^2_{a/2,n-1})` (for the
  MSE: n degrees of freedom, exact only for unbiased outputs). Exact for
  normal data and badly wrong otherwise: for exponential data the nominal
  95% interval misses the variance about 32% of the time, because it ignores
  the excess kurtosis. Use it only for normal data.

We chose the asymptotic interval over a bootstrap because it is cheap for
many coordinates and large n and needs no resampling seed.

Verdicts (THEORY, Part D): an upper ``bound`` is *verified* when the upper
confidence limit is <= the bound, *violated* when the lower confidence limit
is > the bound, and inconclusive otherwise; a ``closed_form`` is verified when
it lies inside the interval. With K coordinates the intervals are Bonferroni
intervals at confidence 1 - alpha/K each, so the family-wise false-alarm rate
of a closed-form check, and the probability of "verifying" a bound that is in
fact exceeded, are at most alpha (the latter at most alpha/2).

Every function validates its inputs and names the offending argument.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "UnbiasednessTest",
    "VarianceCheck",
    "MeanInterval",
    "unbiasedness_test",
    "variance_check",
    "mse_check",
    "mean_interval",
    "adjust_pvalues",
    "METHODS",
    "INTERVALS",
    "DEFAULT_POWER",
    "REDUCTIONS",
]

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
        raise TypeError(f"{name} must be an array of estimator outputs, shape (n, ...), got a callable "
                        f"(draw the samples first, or use validation.testing.assert_unbiased)")
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
        raise ValueError(f"{name} with shape {t.shape} cannot be broadcast to the shape of one sample, "
                         f"{shape}") from exc
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


# --------------------------------------------------------------------------- p-value adjustment


def adjust_pvalues(p, method="holm"):
    """Family-wise adjusted p-values (Holm step-down or Bonferroni).

    Parameters
    ----------
    p : array_like
        Raw p-values in [0, 1], any shape (flattened for the adjustment).
    method : {"holm", "bonferroni"}

    Returns
    -------
    ndarray, same shape as ``p``
        Bonferroni: ``min(1, K p)``. Holm: with the p-values sorted,
        ``p_adj[(i)] = max_{j <= i} min(1, (K - j) p[(j)])`` (0-based j), so
        ``p_adj <= alpha`` is Holm's rejection rule at family-wise level alpha.

    Examples
    --------
    >>> adjust_pvalues([0.01, 0.04, 0.03], "holm").round(6).tolist()
    [0.03, 0.06, 0.06]
    >>> adjust_pvalues([0.01, 0.04, 0.03], "bonferroni").round(6).tolist()
    [0.03, 0.12, 0.09]
    """
    method = _check_choice("method", method, ("holm", "bonferroni"))
    try:
        a = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError("p must be an array of p-values in [0, 1]") from exc
    if a.size == 0 or not np.all((a >= 0) & (a <= 1)):
        raise ValueError("p must be a non-empty array of p-values in [0, 1]")
    flat = a.ravel()
    k = flat.size
    if method == "bonferroni":
        return np.minimum(1.0, k * a)
    order = np.argsort(flat, kind="stable")
    stepped = np.minimum(1.0, (k - np.arange(k)) * flat[order])
    out = np.empty(k)
    out[order] = np.maximum.accumulate(stepped)
    return out.reshape(a.shape)


# --------------------------------------------------------------------------- unbiasedness


@functools.lru_cache(maxsize=256)
def _hotelling_noncentrality(r, n, alpha, power):
    """The non-centrality lambda at which Hotelling's test (F(r, n - r) at level alpha) has the given power."""
    from scipy import optimize, stats

    crit = float(stats.f.isf(alpha, r, n - r))

    def gap(lam):
        return float(stats.ncf.sf(crit, r, n - r, lam)) - power

    if gap(0.0) >= 0:  # power <= alpha: no bias is needed
        return 0.0
    hi = 1.0
    while gap(hi) < 0:
        hi *= 2.0
    return float(optimize.brentq(gap, hi / 2 if hi > 1 else 0.0, hi, xtol=1e-12, rtol=1e-12))


@dataclass(frozen=True, eq=False)
class UnbiasednessTest:
    """Result of :func:`unbiasedness_test`.

    Attributes
    ----------
    method : {"holm", "bonferroni", "hotelling"}
    alpha : float
        Declared family-wise false-alarm rate.
    n : int
        Number of samples.
    shape : tuple of int
        Shape of one sample; K = prod(shape) coordinates.
    rejected : bool
        True when the estimator is declared biased at level alpha.
    p_value : float
        The p-value of the global decision: the smallest adjusted p-value
        (coordinate-wise methods) or the p-value of T^2 (``rejected`` is
        ``p_value <= alpha``).
    statistic : ndarray of shape ``shape``, or float
        The z (t) statistics per coordinate, or T^2 for Hotelling.
    p_values : ndarray of shape ``shape``, or float
        Adjusted p-values per coordinate (Holm or Bonferroni), or the
        p-value of T^2.
    rejected_coordinates : ndarray of bool, shape ``shape``, or None
        Coordinates with adjusted p-value <= alpha (None for Hotelling).
    z : ndarray, shape ``shape``
        Standardized deviations ``(mean - target) / (sd / sqrt(n))`` for every
        method (0 or +-inf on constant coordinates).
    max_abs_z : float
        The largest ``|z|``.
    worst_index : tuple of int
        Index (into one sample) of the coordinate with the largest ``|z|``.
    worst_z : float
        Its signed z.
    worst_p : float
        Its raw two-sided p-value (Student t, n - 1 degrees of freedom).
    mean, target, std_error : ndarray, shape ``shape``
        Sample mean, target, and standard error of the mean per coordinate.
    constant : ndarray of bool, shape ``shape``
        Coordinates treated as constant (see the module docstring).
    df : tuple of int or None
        Hotelling: (r, n - r) of the F distribution, r the dimension used.
    note : str
        Why a degenerate case was decided as it was (empty otherwise).
    power : float
        The power at which :attr:`min_detectable_bias` is stated (default 0.8).
    min_detectable_bias : ndarray, shape ``shape``
        Per coordinate, the smallest bias (in the coordinate's own units, the other coordinates unbiased)
        that this test, at this n, rejects with probability ``power`` at family-wise level ``alpha``,
        from the estimated standard errors (see :func:`unbiasedness_test`, Notes); ``atol`` on constant
        coordinates (a larger deviation is rejected with certainty).
    """

    method: str
    alpha: float
    n: int
    shape: tuple
    rejected: bool
    p_value: float
    statistic: object
    p_values: object
    rejected_coordinates: object
    z: np.ndarray
    max_abs_z: float
    worst_index: tuple
    worst_z: float
    worst_p: float
    mean: np.ndarray
    target: np.ndarray
    std_error: np.ndarray
    constant: np.ndarray
    df: tuple | None = None
    note: str = ""
    power: float = 0.8
    min_detectable_bias: np.ndarray | None = None

    def power_statement(self):
        """What the test could have seen, e.g. "with n = 4000 a bias of at least 0.0115 would have been
        detected with 80% power at family-wise alpha 0.01" (with several coordinates: in any one of them,
        with the range across the coordinates)."""
        mdb = np.asarray(self.min_detectable_bias, dtype=float).ravel()
        k = mdb.size
        where = "" if k == 1 else " in any one coordinate"
        spread = "" if k == 1 or f"{mdb.min():.3g}" == f"{mdb.max():.3g}" else (
            f" ({mdb.min():.3g} to {mdb.max():.3g} across the {k} coordinates)")
        return (f"with n = {self.n} a bias of at least {mdb.max():.3g}{where}{spread} would have been detected "
                f"with {100 * self.power:g}% power at family-wise alpha {self.alpha:g}")

    def __str__(self):
        return self.summary()

    def summary(self):
        """One paragraph saying what was tested and what was found."""
        verdict = "REJECTED (looks biased)" if self.rejected else "not rejected"
        k = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        head = (f"unbiasedness test ({self.method}, alpha={self.alpha:g}, n={self.n}, K={k} coordinate(s)): "
                f"{verdict}, p = {self.p_value:.3g}")
        if self.method == "hotelling":
            head += f"; T^2 = {float(self.statistic):.4g} on F{self.df}"
        else:
            head += f"; {int(np.count_nonzero(self.rejected_coordinates))} coordinate(s) rejected"
        idx = self.worst_index
        worst = (f"worst coordinate {idx}: mean {self.mean[idx]:.6g} vs target {self.target[idx]:.6g} "
                 f"(std. error {self.std_error[idx]:.3g}), z = {self.worst_z:.3g}, raw p = {self.worst_p:.3g}")
        if self.method != "hotelling":
            worst += f", adjusted p = {float(np.asarray(self.p_values)[idx]):.3g}"
        nconst = int(np.count_nonzero(self.constant))
        tail = f"; {nconst} constant coordinate(s)" if nconst else ""
        if self.note:
            tail += f"; {self.note}"
        if not self.rejected and self.min_detectable_bias is not None:
            tail += f"; no bias detected: {self.power_statement()}"
        return f"{head}; {worst}{tail}"


def unbiasedness_test(samples, target, *, alpha=1e-3, method="holm", atol=0.0, power=DEFAULT_POWER):
    r"""Test that i.i.d. estimator outputs average to ``target``.

    Parameters
    ----------
    samples : array_like, shape (n, ...)
        n >= 2 i.i.d. outputs of the estimator (axis 0 indexes the draws; the
        remaining axes are the K coordinates of one output).
    target : float or array_like broadcastable to ``samples.shape[1:]``
        The value the outputs should average to (computed exactly).
    alpha : float, default 1e-3
        Declared family-wise false-alarm rate, in (0, 1).
    method : {"holm", "bonferroni", "hotelling"}, default "holm"
        Coordinate-wise t statistics with Holm or Bonferroni correction, or
        Hotelling's T^2 (needs n greater than the number of non-constant
        coordinates). See the module docstring.
    atol : float, default 0.0
        Coordinates whose samples spread by at most ``atol`` are treated as
        constant: not rejected when ``|value - target| <= atol``, rejected
        otherwise. The default treats only exactly constant coordinates so.
    power : float, default 0.8
        The power at which the minimum detectable bias is stated, in (0, 1).

    Returns
    -------
    UnbiasednessTest
        With ``min_detectable_bias`` per coordinate (see Notes).

    Raises
    ------
    ValueError
        Naming the argument: samples not finite or fewer than 2, target not
        broadcastable or not finite, alpha outside (0, 1), unknown method,
        negative atol, Hotelling with n <= dimension.
    TypeError
        samples not real numbers (or a callable).

    Notes
    -----
    The p-values of the coordinate-wise methods use Student's t with n - 1
    degrees of freedom; for non-normal outputs this is the CLT approximation,
    whose error in the far tail (alpha / K) shrinks like skewness / sqrt(n):
    use n in the thousands for skewed outputs and small alpha. Hotelling's
    F reference distribution is exact for normal data and asymptotically
    valid otherwise.

    *Minimum detectable bias.* A test that does not reject says little
    unless one knows what it could have seen. For coordinate j, with the
    estimated standard error :math:`\mathrm{se}_j = s_j/\sqrt n`, the
    coordinate-wise methods reject when :math:`|z_j| > z_{1-\alpha'/2}` with
    :math:`\alpha' = \alpha/K` (Bonferroni, and Holm's first step, which
    decides the global verdict), so a bias b in that coordinate alone is
    rejected with probability about ``power`` when

    .. math:: b = (z_{1-\alpha'/2} + z_{\mathrm{power}})\, \mathrm{se}_j

    (normal quantiles; the test's Student t quantile differs from the normal
    one by less than 1% for n >= 200; the other tail and the false alarms of
    the other coordinates only add power). For Hotelling a bias b in
    coordinate j alone has non-centrality
    :math:`\lambda = n b^2 (R^{-1})_{jj} / s_j^2` (R the sample correlation
    matrix on the tested dimensions, pseudo-inverse when some linear
    combination is constant: then the number is an upper bound, since those
    directions are tested more strictly); the stated bias solves
    :math:`P(F'(r, n-r, \lambda) > F_{1-\alpha}(r, n-r)) =` ``power`` for
    :math:`\lambda` (non-central F). ``tests/test_stats.py`` checks both by
    simulation: an estimator biased by the stated amount is rejected in about
    ``power`` of the seeds.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).exponential(size=(2000, 3))  # mean 1
    >>> unbiasedness_test(x, 1.0).rejected
    False
    >>> unbiasedness_test(x, [1.0, 1.0, 1.2]).rejected
    True
    >>> unbiasedness_test(x, 1.0, method="hotelling").rejected
    False
    """
    x = _as_samples("samples", samples, min_n=2)
    n = x.shape[0]
    shape = tuple(x.shape[1:])
    tgt = _as_target("target", target, shape)
    alpha = _check_prob("alpha", alpha)
    method = _check_choice("method", method, METHODS)
    atol = _check_nonneg("atol", atol)
    power = _check_prob("power", power)

    xf = x.reshape(n, -1)
    tf = tgt.ravel()
    k = xf.shape[1]
    spread = np.ptp(xf, axis=0)
    mean = xf.mean(axis=0)
    sd = xf.std(axis=0, ddof=1)
    constant = (spread <= atol) | (sd == 0)
    # A constant coordinate's value is its first sample (the mean of equal values can be off by an ulp).
    mean = np.where(constant, xf[0], mean)
    dev = mean - tf
    const_bad = constant & (np.abs(dev) > atol)
    se = sd / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(constant, np.where(const_bad, np.copysign(np.inf, dev), 0.0), dev / np.where(constant, 1, se))

    from scipy import stats

    p_raw = np.where(np.isinf(z), 0.0, 2.0 * stats.t.sf(np.abs(z), df=n - 1))
    p_raw = np.where(constant & ~const_bad, 1.0, p_raw)
    worst = int(np.argmax(np.abs(z)))
    common = dict(alpha=alpha, n=n, shape=shape, z=z.reshape(shape), max_abs_z=float(np.abs(z[worst])), power=power,
                  worst_index=tuple(int(i) for i in np.unravel_index(worst, shape)) if shape else (),
                  worst_z=float(z[worst]), worst_p=float(p_raw[worst]), mean=mean.reshape(shape), target=tgt,
                  std_error=np.where(constant, 0.0, se).reshape(shape), constant=constant.reshape(shape))

    if method in ("holm", "bonferroni"):
        z_sum = float(stats.norm.isf(alpha / (2.0 * k)) + stats.norm.ppf(power))
        common["min_detectable_bias"] = np.where(constant, atol, z_sum * se).reshape(shape)
        p_adj = adjust_pvalues(p_raw, method)
        p_glob = float(p_adj.min())
        rej = p_adj <= alpha
        note = (f"{int(np.count_nonzero(const_bad))} constant coordinate(s) differ from the target"
                if np.any(const_bad) else "")
        return UnbiasednessTest(method=method, rejected=bool(rej.any()), p_value=p_glob, statistic=z.reshape(shape),
                                p_values=p_adj.reshape(shape), rejected_coordinates=rej.reshape(shape), note=note,
                                **common)

    # Hotelling T^2 on the non-constant coordinates, in standardized units (correlation matrix).
    free = ~constant
    dim = int(np.count_nonzero(free))
    if n <= dim:
        raise ValueError(f"samples: Hotelling's T^2 needs more samples than dimensions, n > {dim} (the number of "
                         f"non-constant coordinates of the K={k}); got n={n}. Draw more samples or use "
                         f"method='holm'")
    note = ""
    mdb = np.full(k, atol)  # constant coordinates: a deviation beyond atol is rejected with certainty
    if dim:
        zs = (xf[:, free] - mean[free]) / sd[free]
        w, vecs = np.linalg.eigh(zs.T @ zs / (n - 1))
        keep = w > _RANK_RTOL * w.max()
        # diagonal of the (pseudo-)inverse correlation matrix on the tested dimensions
        prec = np.einsum("ij,j,ij->i", vecs[:, keep], 1.0 / w[keep], vecs[:, keep])
        lam = _hotelling_noncentrality(int(np.count_nonzero(keep)), n, alpha, power)
        with np.errstate(divide="ignore"):
            mdb[free] = np.sqrt(lam / (n * prec)) * sd[free]
    common["min_detectable_bias"] = mdb.reshape(shape)
    if np.any(const_bad):
        t2, p_val, df = math.inf, 0.0, (dim, n - dim)
        note = f"{int(np.count_nonzero(const_bad))} constant coordinate(s) differ from the target"
    elif dim == 0:
        t2, p_val, df = 0.0, 1.0, (0, n)
    else:
        u = dev[free] / sd[free]
        r = int(np.count_nonzero(keep))
        null_dev = vecs[:, ~keep].T @ u
        if null_dev.size and np.max(np.abs(null_dev)) > _NULL_TOL_SD:
            t2, p_val = math.inf, 0.0
            note = (f"a linear combination of coordinates that is constant in the samples differs from the "
                    f"target's by {np.max(np.abs(null_dev)):.3g} standard deviations")
        else:
            if r < dim:
                note = f"covariance of rank {r} < {dim}: tested in {r} dimension(s)"
            y = (vecs[:, keep].T @ u) / np.sqrt(w[keep])
            t2 = float(n * (y @ y))
            f = (n - r) / (r * (n - 1)) * t2
            p_val = float(stats.f.sf(f, r, n - r))
        df = (r, n - r)
    return UnbiasednessTest(method=method, rejected=bool(p_val <= alpha), p_value=float(p_val), statistic=float(t2),
                            p_values=float(p_val), rejected_coordinates=None, df=df, note=note, **common)


# --------------------------------------------------------------------------- variance / MSE


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

        s = (f"{self.kind} ({self.reduce}, n={self.n}): {fmt(self.estimate)}, {self.interval} interval "
             f"[{fmt(self.ci_low)}, {fmt(self.ci_high)}] at confidence {self.confidence:.6g} "
             f"(family-wise alpha={self.alpha:g})")
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
            raise ValueError(f"interval='chi2' is for one coordinate at a time (reduce='none'); the {reduce} of "
                             f"several variances is not chi-square distributed. Use interval='asymptotic'")
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
            raise ValueError(f"samples: the asymptotic interval at confidence {conf:.6g} needs n > {zq + 1:.3g}, "
                             f"got n={n}")
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
    return VarianceCheck(kind=kind, estimate=est, ci_low=lo, ci_high=hi, confidence=conf, alpha=alpha,
                         interval=interval, reduce=reduce, n=n, bound=b, closed_form=cf, bound_verified=bv,
                         bound_violated=bviol, closed_form_verified=cfv, verified=verified)


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
    return _interval_core("variance", x, center, bound=bound, closed_form=closed_form, alpha=alpha,
                          interval=interval, reduce=reduce)


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
    return _interval_core("mse", x, tgt, bound=bound, closed_form=closed_form, alpha=alpha, interval=interval,
                          reduce=reduce)


# --------------------------------------------------------------------------- means


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
