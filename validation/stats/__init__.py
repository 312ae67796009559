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
2000/2000 (Hotelling) seeds (``tests/validation/test_stats.py``).

Every result states its **minimum detectable bias** per coordinate
(``min_detectable_bias``, at ``power``, default 80%): a test that does not
reject then says how large a bias it would have seen, e.g. "with n = 4000 a
bias of at least 0.0115 would have been detected with 80% power at
family-wise alpha 0.01" (see :func:`unbiasedness_test`, Notes, for the
formulas; the numbers are checked by simulation in ``tests/validation/test_stats.py``).

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
  ``tests/validation/test_stats.py`` pin these numbers.
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

**Decisions**. The critical values,
measured-vs-predicted z-tests and binomial bounds every built-in study's
verdict is decided with: :func:`bonferroni_z`, :func:`bonferroni_level`,
:func:`compare_to_prediction`, :func:`binomial_lower`,
:func:`binomial_interval`, :func:`student_t_critical`,
:func:`chi2_variance_upper`, :func:`two_sided_p`,
:func:`percentile_interval`.

Every function validates its inputs and names the offending argument.
"""

from validation.stats._common import DEFAULT_POWER, INTERVALS, METHODS, REDUCTIONS, _plain  # noqa: F401
from validation.stats._decisions import (
    Comparison,
    binomial_interval,
    binomial_lower,
    bonferroni_level,
    bonferroni_z,
    chi2_variance_upper,
    compare_to_prediction,
    student_t_critical,
    two_sided_p,
)
from validation.stats._intervals import MeanInterval, batch_means_interval, mean_interval, percentile_interval
from validation.stats._multiple import adjust_pvalues
from validation.stats._unbiasedness import UnbiasednessTest, unbiasedness_test
from validation.stats._variance import VarianceCheck, mse_check, variance_check

__all__ = [
    "UnbiasednessTest",
    "VarianceCheck",
    "MeanInterval",
    "unbiasedness_test",
    "variance_check",
    "mse_check",
    "mean_interval",
    "batch_means_interval",
    "adjust_pvalues",
    "METHODS",
    "INTERVALS",
    "DEFAULT_POWER",
    "REDUCTIONS",
    "Comparison",
    "binomial_interval",
    "binomial_lower",
    "bonferroni_level",
    "bonferroni_z",
    "compare_to_prediction",
    "chi2_variance_upper",
    "student_t_critical",
    "two_sided_p",
    "percentile_interval",
]
