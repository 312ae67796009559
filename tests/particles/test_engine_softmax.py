"""One batch softmax, written once (``particles.device.softmax_step``), against one NumPy oracle.

Its compiled users -- the ``cpu`` loops' attention forces (tiles and per
member), the ``cuda`` kernels (under the simulator here) and the random batch
attention estimator (CPU drivers and CUDA) -- each agree with
``tests/oracles.batch_softmax_attention`` to rounding.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

import attention_theory as at
import particles
from particles import _layout, device, systems
from tests.oracles import batch_softmax_attention, softmax_rows

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
needs_numba_cuda = pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed (extra 'cuda')")
RTOL = 1e-12


def _fold(scores, values, mx):
    acc = np.zeros(values.shape[1])
    den = 0.0
    seen = []
    for s, v in zip(scores, values):
        mx, den = device.softmax_step(float(s), mx, den, acc, v, values.shape[1])
        seen.append(mx)
    return acc / den, seen


def test_softmax_step_online_and_two_pass_give_the_softmax():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=40) * 30.0  # spread: exp(s) alone would overflow
    values = rng.normal(size=(40, 3))
    want = (softmax_rows(scores[None]) @ values)[0]
    online, _ = _fold(scores, values, -math.inf)
    m = float(scores.max())
    two_pass, maxima = _fold(scores, values, m)
    assert_allclose(online, want, rtol=1e-13)
    assert_allclose(two_pass, want, rtol=1e-13)
    assert maxima == [m] * 40  # started at the maximum: never rescaled


def test_softmax_step_rescales_when_a_larger_score_comes():
    acc = np.zeros(1)
    mx, den = device.softmax_step(0.0, -math.inf, 0.0, acc, np.array([2.0]), 1)
    assert (mx, den, acc[0]) == (0.0, 1.0, 2.0)
    mx, den = device.softmax_step(math.log(4.0), mx, den, acc, np.array([1.0]), 1)
    assert mx == math.log(4.0)
    assert_allclose([den, acc[0]], [1.25, 1.5], rtol=1e-15)  # old sums times e^-log 4, plus the new term


def test_softmax_step_nan_score_gives_nan():
    for start in (-math.inf, 1.0):
        out, _ = _fold(np.array([0.5, np.nan, 1.0]), np.ones((3, 2)), start)
        assert np.isnan(out).all()


def _attention(include_self, d=3):
    rng = np.random.default_rng(5)
    Q, K, V = (np.eye(d) + 0.3 * rng.normal(size=(d, d)) for _ in range(3))
    system = systems.attention(0.8, "SA", Q=Q, K=K, V=V, sphere=False)
    if not include_self:
        system = dataclasses.replace(system, params=_layout.pack_attention(0.8, _layout.ATTN_SOFTMAX, False, Q, K, V))
    return system, Q, K, V


def _oracle_force(system, Q, K, V, x, batches, include_self):
    beta = system.info["beta"]
    return batch_softmax_attention(beta * (x @ Q.T), x @ K.T, x @ V.T, batches, include_self)


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("n, p", [(40, 3), (40, 7), (40, 40), (600, 600)])
def test_cpu_attention_tiles_match_the_oracle(n, p, include_self):
    system, Q, K, V = _attention(include_self)
    x = np.random.default_rng(n + p).normal(size=(n, 3))
    if p == n:
        got = particles.drift(system, x, method="full")
        batches = [np.arange(n)]
    else:
        got = particles.drift(system, x, method="rbm1", batch_size=p, seed=3, step=2)
        batches = particles.partition(n, p, seed=3, step=2).batches()
    assert_allclose(got, _oracle_force(system, Q, K, V, x, batches, include_self), rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("include_self", [True, False])
def test_cpu_attention_member_force_matches_the_oracle(include_self):
    """The per-member force (RBM-r's, and the one the cuda kernels compile) on one batch."""
    from particles.backends import cpu

    system, Q, K, V = _attention(include_self)
    n, d = 9, 3
    x = np.random.default_rng(1).normal(size=(n, d))
    loops = cpu.loops_for(system)
    params = np.ascontiguousarray(system.params)
    work = np.empty((n, 3 * d))
    for i in range(n):
        loops.prepare_row(x[i], params, work[i])
    idx = np.random.default_rng(2).permutation(n).astype(np.int64)
    got = np.empty((n, d))
    for a in range(n):
        loops.member_force(x, idx, 0, n, a, params, 1.0, work, got[idx[a]])
    assert_allclose(got, _oracle_force(system, Q, K, V, x, [np.arange(n)], include_self), rtol=RTOL, atol=1e-14)


def _qkv(n, d=4, dv=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.normal(size=(n, dv))


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_rba_kernel_matches_the_oracle(driver, include_self):
    from attention_theory import _rba

    q, k, v = _qkv(50)
    part = particles.partition(50, 6, seed=4)
    got = _rba.run(q, k, v, part.perm, part.bounds, include_self, True, driver=driver)
    assert_allclose(got, batch_softmax_attention(q, k, v, part.batches(), include_self), rtol=RTOL, atol=1e-14)
    public = at.random_batch_attention(q, k, v, batch_size=6, rng=4, include_self=include_self)
    assert_allclose(public, batch_softmax_attention(q, k, v, part.batches(), include_self), rtol=RTOL, atol=1e-14)


@needs_numba_cuda
@pytest.mark.parametrize("include_self", [True, False])
def test_cuda_users_match_the_oracle(include_self):
    q, k, v = _qkv(13, seed=3)
    part = particles.partition(13, 4, seed=9)
    got = at.random_batch_attention(q, k, v, batch_size=4, rng=9, include_self=include_self, backend="cuda")
    assert_allclose(got, batch_softmax_attention(q, k, v, part.batches(), include_self), rtol=RTOL, atol=1e-14)
    if include_self:
        exact = at.softmax_attention(q, k, v, backend="cuda")
        assert_allclose(exact, batch_softmax_attention(q, k, v, [np.arange(13)]), rtol=RTOL, atol=1e-14)
    system, Q, K, V = _attention(include_self)
    x = np.random.default_rng(7).normal(size=(10, 3))
    force = particles.drift(system, x, method="rbm1", batch_size=3, seed=1, step=0, backend="cuda")
    batches = particles.partition(10, 3, seed=1, step=0).batches()
    assert_allclose(force, _oracle_force(system, Q, K, V, x, batches, include_self), rtol=RTOL, atol=1e-14)
