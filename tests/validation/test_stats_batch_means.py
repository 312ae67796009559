"""validation.stats.batch_means_interval: the long-run mean of an autocorrelated series.

AR(1) series x_t = phi x_{t-1} + e_t with known mean 0 (phi = 0.9, integrated autocorrelation time
(1 + phi)/(1 - phi) = 19): the batch-means interval covers 0 at its declared rate, while the i.i.d. interval of
the raw points (the negative control) covers far less, by the binomial test at alpha = 1e-3 each.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from validation.stats import batch_means_interval, binomial_interval, mean_interval

PHI, T, SERIES, CONF = 0.9, 20_000, 400, 0.95


def _ar1(seed):
    e = np.random.default_rng(seed).standard_normal(T)
    x0 = e[0] / np.sqrt(1 - PHI**2)  # start stationary
    return lfilter([1.0], [1.0, -PHI], np.concatenate([[x0], e[1:]]))


def test_batch_means_cover_at_the_declared_rate_and_the_iid_interval_does_not():
    batch, iid, lag1 = 0, 0, []
    for s in range(SERIES):
        x = _ar1(1000 + s)
        bm, r = batch_means_interval(x, CONF, n_batches=20)
        batch += bm.low <= 0.0 <= bm.high
        lag1.append(r)
        mi = mean_interval(x, CONF)
        iid += mi.low <= 0.0 <= mi.high
    lo, hi = binomial_interval(batch, SERIES, 1 - 1e-3)
    assert lo <= CONF <= hi
    lo, hi = binomial_interval(iid, SERIES, 1 - 1e-3)
    assert hi < CONF  # the negative control: too narrow by about sqrt(19)
    assert abs(np.mean(lag1)) < 0.1  # batches of 1000 points are nearly independent at tau = 19


def test_burn_in_drops_the_transient_and_coordinates_are_independent():
    x = np.column_stack([_ar1(1), _ar1(2) + 5.0])
    x[:500] += 100.0  # a transient
    bm, lag1 = batch_means_interval(x, 0.99, n_batches=10, burn_in=500)
    assert bm.n == 10 and np.shape(bm.mean) == (2,) and np.shape(lag1) == (2,)
    # by hand: 19500 points after the burn-in, 10 batches of 1950, the Student interval of their means
    means = x[500:].reshape(10, 1950, 2).mean(axis=1)
    ref = mean_interval(means, 0.99)
    np.testing.assert_allclose([bm.mean, bm.low, bm.high], [ref.mean, ref.low, ref.high], rtol=1e-14)
    c = means - means.mean(axis=0)
    np.testing.assert_allclose(lag1, (c[1:] * c[:-1]).sum(axis=0) / (c * c).sum(axis=0), rtol=1e-12)
    with_transient, _ = batch_means_interval(x, 0.99, n_batches=10)
    # the transient adds 100 * 500 / 20000 = 2.5 to coordinate 0's mean, nothing to coordinate 1's
    np.testing.assert_allclose(with_transient.mean[0] - x[:, 0].mean(), 0.0, atol=1e-12)
    assert with_transient.mean[0] - x[500:, 0].mean() > 2.0


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="n_batches"):
        batch_means_interval(np.zeros(100), n_batches=1)
    with pytest.raises(ValueError, match="burn_in"):
        batch_means_interval(np.zeros(100), burn_in=-1)
    with pytest.raises(ValueError, match="at least"):
        batch_means_interval(np.zeros(30), n_batches=20)
