"""The batch-force lemma (T3), exactly by enumeration and by Monte Carlo.

chi_i = (1/(|C|-1)) sum_{j in C(i)} K_ij - (1/(N-1)) sum_{j != i} K_ij has
mean zero and E|chi_i|^2 = (E[1/(|C(i)|-1)] - 1/(N-1)) Lambda_i, with
Lambda_i the finite-population variance of the K_ij (THEORY A2). Both ways of
cutting the batches when p does not divide N are checked: ``"spread"`` and
``"pad"``, whose lone particle (N mod p == 1) has its batch widened to all N.

Statistical decisions here share ALPHA_FAMILY = 1e-3 (Bonferroni inside
each test over coordinates); the negative control uses a wrong batch
weight 1/|C| and must be rejected by the same decision rule.
"""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats

import particles
from particles import systems
from particles.backends import reference
from particles.integrators import batch_variance_factor
from tests.oracles import cut_batches, kernel_batch_force, lambda_i, member_batches

ALPHA_FAMILY = 1e-3


def _interaction(system, x, method, p=None, seed=0, backend="cpu"):
    """Interaction part of the drift: total drift minus b(x)."""
    no_interaction = systems.confined_tanh(r=system.info["r"], L=0.0)
    d = particles.drift(system, x, method=method, batch_size=p, seed=seed, backend=backend)
    return d - particles.drift(no_interaction, x, method="full", backend=backend)


@pytest.mark.parametrize(("n", "p"), [(6, 2), (6, 3), (7, 3), (7, 2), (5, 4)])
def test_lemma_exact_by_enumerating_all_partitions(n, p):
    system = systems.confined_tanh(r=1.0, L=0.7)
    x = np.random.default_rng(n * 10 + p).standard_normal((n, 2))
    full = reference._force(system, x, np.arange(n), n, 1.0, system.sphere)
    chis = np.array([reference._force(system, x, np.array(perm), p, 1.0, system.sphere) - full
                     for perm in permutations(range(n))])
    # every permutation is equally likely, so the plain average is the exact expectation
    assert_allclose(chis.mean(axis=0), 0.0, atol=1e-14)
    second = np.mean(np.sum(chis**2, axis=2), axis=0)
    # atol: when p > n/2 there is one batch (the full system) and chi is rounding noise (~1e-32)
    assert_allclose(second, batch_variance_factor(n, p) * lambda_i(system, x), rtol=1e-12, atol=1e-28)


# (n, p, remainder): p | n, a remainder of 2 or 3, and a lone particle (n mod p == 1) under "pad"
ENUMERATED = [(5, 2, "spread"), (5, 2, "pad"), (7, 3, "spread"), (7, 3, "pad"), (7, 2, "pad"), (7, 6, "pad"),
              (6, 4, "pad"), (7, 4, "pad"), (7, 5, "pad"), (6, 3, "pad"), (6, 4, "spread")]


def _enumerate_chis(system, x, p, remainder, widen=True):
    """chi_i = batch force - full force, for every permutation of range(n) (the oracle's forces)."""
    n = x.shape[0]
    full = kernel_batch_force(system, x, [np.arange(n)] * n)
    chis = []
    for perm in permutations(range(n)):
        batches = cut_batches(np.array(perm), p, remainder)
        F = kernel_batch_force(system, x, member_batches(batches, n))
        if not widen:  # negative control: a lone particle keeps its batch of one, so it feels the drift alone
            for members in batches:
                if len(members) == 1:
                    F[members] = system.drift_np(x[members], system.params)
        chis.append(F - full)
    return np.array(chis)


@pytest.mark.parametrize(("n", "p", "remainder"), ENUMERATED)
def test_lemma_exact_for_both_remainders_by_enumeration(n, p, remainder):
    system = systems.confined_tanh(r=1.0, L=0.7)
    x = np.random.default_rng(n * 10 + p).standard_normal((n, 2))
    chis = _enumerate_chis(system, x, p, remainder)
    # every permutation is equally likely, so the plain average is the exact expectation
    assert_allclose(chis.mean(axis=0), 0.0, atol=1e-14)
    second = np.mean(np.sum(chis**2, axis=2), axis=0)
    assert_allclose(second, batch_variance_factor(n, p, remainder) * lambda_i(system, x), rtol=1e-12, atol=1e-28)


@pytest.mark.parametrize(("n", "p"), [(7, 3), (5, 2)])
def test_a_lone_particle_left_alone_would_break_the_lemma(n, p):
    # the control of the widening: without it the lone particle's interaction is 0, not its mean
    system = systems.confined_tanh(r=1.0, L=0.7)
    x = np.random.default_rng(n * 10 + p).standard_normal((n, 2))
    chis = _enumerate_chis(system, x, p, "pad", widen=False)
    assert np.abs(chis.mean(axis=0)).max() > 1e-3


@pytest.mark.parametrize(("n", "p", "remainder"), [(7, 3, "pad"), (7, 4, "pad"), (7, 3, "spread")])
def test_the_reference_force_is_the_oracle_on_every_permutation(n, p, remainder):
    system = systems.confined_tanh(r=1.0, L=0.7)
    x = np.random.default_rng(3).standard_normal((n, 2))
    for perm in permutations(range(n)):
        perm = np.array(perm)
        want = kernel_batch_force(system, x, member_batches(cut_batches(perm, p, remainder), n))
        assert_allclose(reference._force(system, x, perm, p, 1.0, False, remainder), want, rtol=1e-13, atol=1e-15)


def test_variance_factor_under_pad_by_hand():
    # (7, 3): batches 3, 3, 1 (lone, widened: contributes 0): (6/7)(1/2) - (6/7)(1/6) = 2/7
    assert batch_variance_factor(7, 3, "pad") == pytest.approx(2 / 7, rel=1e-14)
    # (10, 4): batches 4, 4, 2: (8/10)(1/3 - 1/9) + (2/10)(1 - 1/9)
    assert batch_variance_factor(10, 4, "pad") == pytest.approx(0.8 * (1 / 3 - 1 / 9) + 0.2 * (1 - 1 / 9), rel=1e-14)
    # spread (10, 4): batches 5, 5
    assert batch_variance_factor(10, 4) == pytest.approx(1 / 4 - 1 / 9, rel=1e-14)
    for n, p in ((12, 3), (12, 4), (64, 8), (9, 9)):
        assert batch_variance_factor(n, p, "pad") == batch_variance_factor(n, p)
    with pytest.raises(ValueError, match="remainder must be one of 'spread', 'pad'"):
        batch_variance_factor(7, 3, "crop")


def test_variance_factor_reduces_to_the_textbook_form():
    for n, p in ((12, 3), (100, 5), (64, 2)):
        assert batch_variance_factor(n, p) == pytest.approx(1 / (p - 1) - 1 / (n - 1), rel=1e-14)
    assert batch_variance_factor(10, 10) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.statistical
@pytest.mark.parametrize("p", [2, 5])
def test_lemma_monte_carlo_with_negative_control(p):
    n, d, draws = 40, 2, 3000
    system = systems.confined_tanh(r=1.0, L=0.6)
    x = np.random.default_rng(p).standard_normal((n, d))
    ens = np.broadcast_to(x, (draws, n, d))
    full = _interaction(system, x, "full")
    batch = _interaction(system, ens, "rbm1", p=p, seed=17)  # replica r uses its own permutation stream
    chi = batch - full
    m = n * d
    alpha = ALPHA_FAMILY / 4  # four decisions in this test (two checks, each on the estimator and the control)

    def unbiased(samples):
        z = samples.mean(axis=0) / (samples.std(axis=0, ddof=1) / math.sqrt(draws))
        pvals = 2 * stats.norm.sf(np.abs(z)).ravel()
        return pvals.min() > alpha / m  # Bonferroni over coordinates

    assert unbiased(chi)
    # negative control: weight 1/|C| instead of 1/(|C|-1) (scales the batch sum by (p-1)/p)
    assert not unbiased(batch * (p - 1) / p - full)

    sq = np.sum(chi**2, axis=2)
    predicted = batch_variance_factor(n, p) * lambda_i(system, x)
    z = (sq.mean(axis=0) - predicted) / (sq.std(axis=0, ddof=1) / math.sqrt(draws))
    assert (2 * stats.norm.sf(np.abs(z))).min() > alpha / n
    # the same check rejects the variance of the wrong weight
    sq_bad = np.sum((batch * (p - 1) / p - full) ** 2, axis=2)
    z_bad = (sq_bad.mean(axis=0) - predicted) / (sq_bad.std(axis=0, ddof=1) / math.sqrt(draws))
    assert (2 * stats.norm.sf(np.abs(z_bad))).min() < alpha / n
