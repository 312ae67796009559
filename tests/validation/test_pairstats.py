"""The incremental clustered-pair statistics equal their direct NumPy statement (Gram matrices by matmul)."""

from __future__ import annotations

import numpy as np
import pytest

import particles
from particles import initial, systems
from validation.studies._pairstats import PairTracker, pair_statistics_numpy

THR = 1 - 1e-3


def _compare(x, chunks, strict=False):
    m, R, n, d = x.shape
    tracker = PairTracker(R, n, d, THR, strict=strict)
    P = n * (n - 1) // 2
    ever, dropped = np.zeros((R, P), bool), np.zeros((R, P), bool)
    lo = 0
    for hi in chunks:
        a = tracker.update(x[lo:hi])
        b = pair_statistics_numpy(x[lo:hi], THR, ever, dropped, strict=strict)
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
        lo = hi
    np.testing.assert_array_equal(tracker.ever, ever)
    np.testing.assert_array_equal(tracker.dropped, dropped)
    return tracker


@pytest.mark.parametrize(("d", "beta", "strict"), [(2, 4.0, True), (8, 2.0, False), (32, 1.0, True)])
def test_equals_direct_computation_along_the_dynamics(d, beta, strict):
    # the phase diagram's case: tokens that cluster over 300 steps of dt = 0.1, fed in uneven chunks
    x0 = initial.uniform_sphere(32, d, rng=np.random.default_rng(d), replicas=6)
    tr = particles.solve(systems.attention(beta, "SA"), x0, t_end=30.0, dt=0.1, scheme="ambient_euler")
    tracker = _compare(tr.x, [1, 50, 51, 200, 301], strict)
    assert 0 < tracker.ever.mean()  # some pairs clustered


def test_equals_direct_computation_with_declustering():
    # tokens jittering around a few centres: pairs cross the threshold both ways between states
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((5, 3, 3))
    x = centres[:, rng.integers(0, 3, 9)][None] + 0.02 * rng.standard_normal((12, 5, 9, 3))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    tracker = _compare(x, [4, 5, 12])
    assert 0 < tracker.ever.mean() < 1 and tracker.dropped.any()


def test_counts_by_hand():
    # three tokens on the circle: 0 and 1 together, 2 apart; then all together; then 1 leaves
    t = np.array([[[0.0, 0.01, 2.0]], [[0.0, 0.0, 0.0]], [[0.0, 0.5, 0.0]]])  # (m=3, R=1, n=3)
    x = np.stack([np.cos(t), np.sin(t)], axis=-1)
    tracker = PairTracker(1, 3, 2, THR)
    count, first, allp = tracker.update(x)
    assert count[:, 0].tolist() == [1, 3, 1]
    assert first[:, 0].tolist() == [True, True, False]
    assert allp[:, 0].tolist() == [False, True, False]
    assert tracker.dropped[0].tolist() == [True, False, True]  # pairs (0,1), (0,2), (1,2): (0,2) stays clustered


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match=r"x must have shape \(saves, R, n, d\) = \(m, 2, 4, 3\)"):
        PairTracker(2, 4, 3, 0.5).update(np.zeros((2, 4, 3)))


def test_strict_threshold():
    # an inner product exactly at the threshold: clustered for >=, not for >
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0] = [1.0, 0.0]
    x[0, 0, 1] = [0.5, 0.75]  # <x_0, x_1> = 0.5 exactly
    assert PairTracker(1, 2, 2, 0.5).update(x)[0][0, 0] == 1
    assert PairTracker(1, 2, 2, 0.5, strict=True).update(x)[0][0, 0] == 0
