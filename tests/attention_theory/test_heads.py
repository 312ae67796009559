"""Heads: ``softmax_attention`` and ``random_batch_attention`` on (H, N, .) inputs, and ``multi_head_attention``.

Oracles: one head at a time (the 2-D call, bit for bit, or
:func:`tests.oracles.batch_softmax_attention` on the batches of the partition
the head must use), and a plain NumPy multi-head layer (projections, dense
softmax per head, concatenation, W_O).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import attention_theory as at
import particles
from tests.oracles import batch_softmax_attention, softmax_rows

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
needs_numba_cuda = pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed (extra 'cuda')")
RTOL, ATOL = 1e-13, 1e-14


def _heads(seed, h, n, m=None, d=3, dv=2, scale=0.8):
    rng = np.random.default_rng(seed)
    m = n if m is None else m
    return (scale * rng.standard_normal((h, n, d)), scale * rng.standard_normal((h, m, d)),
            rng.standard_normal((h, m, dv)))


# --- exact softmax ------------------------------------------------------------------------------------------------
def test_softmax_heads_are_the_one_head_calls_bit_for_bit():
    q, k, v = _heads(0, 3, 6, m=9)
    out = at.softmax_attention(q, k, v)
    assert out.shape == (3, 6, 2)
    for h in range(3):
        assert_array_equal(out[h], at.softmax_attention(q[h], k[h], v[h]))
    assert_array_equal(at.softmax_attention(q[:1], k[:1], v[:1])[0], at.softmax_attention(q[0], k[0], v[0]))
    # with key chunking too
    assert_array_equal(at.softmax_attention(q, k, v, max_scores=4)[2], at.softmax_attention(q[2], k[2], v[2],
                                                                                           max_scores=4))


@needs_numba_cuda
def test_softmax_heads_on_cuda():
    q, k, v = _heads(1, 2, 5, m=7)
    out = at.softmax_attention(q, k, v, backend="cuda")
    assert out.shape == (2, 5, 2)
    for h in range(2):
        assert_allclose(out[h], softmax_rows(q[h] @ k[h].T) @ v[h], rtol=1e-12, atol=1e-14)


# --- random batch attention ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=needs_numba_cuda)])
@pytest.mark.parametrize("remainder", ["spread", "pad"])
@pytest.mark.parametrize("head_partitions", ["shared", "independent"])
def test_one_head_equals_the_2d_call_bit_for_bit(head_partitions, remainder, backend):
    q, k, v = _heads(2, 1, 10)  # p = 4: spread 5 + 5, pad 4 + 4 + 2 (no lone token)
    for include_self in (True, False):
        kw = dict(batch_size=4, rng=7, include_self=include_self, remainder=remainder, backend=backend)
        out = at.random_batch_attention(q, k, v, head_partitions=head_partitions, **kw)
        assert out.shape == (1, 10, 2)
        assert_array_equal(out[0], at.random_batch_attention(q[0], k[0], v[0], **kw))


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=needs_numba_cuda)])
@pytest.mark.parametrize("remainder", ["spread", "pad"])
@pytest.mark.parametrize("include_self", [True, False])
def test_independent_heads_use_replica_h(include_self, remainder, backend):
    heads, n, p, seed = 3, 10, 4, 21
    q, k, v = _heads(3, heads, n)
    out = at.random_batch_attention(q, k, v, batch_size=p, rng=seed, include_self=include_self, remainder=remainder,
                                    head_partitions="independent", backend=backend)
    for h in range(heads):
        part = particles.partition(n, p, seed=seed, step=0, replica=h, remainder=remainder)
        assert_allclose(out[h], batch_softmax_attention(q[h], k[h], v[h], part.batches(), include_self),
                        rtol=RTOL, atol=ATOL)
    # head 0 is today's single call
    assert_array_equal(out[0], at.random_batch_attention(q[0], k[0], v[0], batch_size=p, rng=seed,
                                                         include_self=include_self, remainder=remainder,
                                                         backend=backend))


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=needs_numba_cuda)])
def test_shared_heads_all_use_replica_0(backend):
    heads, n, p, seed = 3, 9, 3, 5
    q, k, v = _heads(4, heads, n)
    part = particles.partition(n, p, seed=seed)
    shared = at.random_batch_attention(q, k, v, batch_size=p, rng=seed, backend=backend)  # the default: shared
    for h in range(heads):
        assert_allclose(shared[h], batch_softmax_attention(q[h], k[h], v[h], part.batches()), rtol=RTOL, atol=ATOL)
    # the heads' partitions differ when independent (same inputs in every head make it visible)
    same = tuple(np.ascontiguousarray(np.broadcast_to(a[0], a.shape)) for a in (q, k, v))
    a = at.random_batch_attention(*same, batch_size=p, rng=seed, head_partitions="shared", backend=backend)
    b = at.random_batch_attention(*same, batch_size=p, rng=seed, head_partitions="independent", backend=backend)
    assert all(np.array_equal(a[h], a[0]) for h in range(heads))
    assert not np.allclose(b[1], b[0]) and not np.allclose(b[2], b[0])


def test_a_generator_draws_one_seed_for_all_heads():
    q, k, v = _heads(5, 2, 8)
    seed = int(np.random.default_rng(9).integers(2**63))
    for hp in ("shared", "independent"):
        assert_array_equal(
            at.random_batch_attention(q, k, v, batch_size=3, rng=np.random.default_rng(9), head_partitions=hp),
            at.random_batch_attention(q, k, v, batch_size=3, rng=seed, head_partitions=hp))


# --- multi_head_attention -----------------------------------------------------------------------------------------
def _layer(seed, n=7, d_model=5, heads=3, d_k=4, d_v=2, d_out=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d_model))
    wq, wk = (0.4 * rng.standard_normal((heads, d_model, d_k)) for _ in range(2))
    wv = rng.standard_normal((heads, d_model, d_v))
    wo = rng.standard_normal((heads * d_v, d_out))
    return x, wq, wk, wv, wo


def mha_numpy(x, wq, wk, wv, wo):
    """Plain multi-head attention: per head softmax((x Wq)(x Wk)^T)(x Wv), heads concatenated, times W_O."""
    outs = []
    for h in range(wq.shape[0]):
        qh, kh, vh = x @ wq[h], x @ wk[h], x @ wv[h]
        outs.append(softmax_rows(qh @ kh.T) @ vh)
    return np.concatenate(outs, axis=1) @ wo


def test_multi_head_exact_equals_numpy():
    x, wq, wk, wv, wo = _layer(0)
    expected = mha_numpy(x, wq, wk, wv, wo)
    out = at.multi_head_attention(x, wq, wk, wv, wo)
    assert out.shape == (7, 3)
    assert_allclose(out, expected, rtol=1e-12, atol=1e-13)
    # W_O given as its H row blocks (H, d_v, d_out): the same map
    assert_allclose(at.multi_head_attention(x, wq, wk, wv, wo.reshape(3, 2, 3)), expected, rtol=1e-12, atol=1e-13)


def test_multi_head_rba_runs_rba_in_every_head():
    x, wq, wk, wv, wo = _layer(1, n=8)
    # p = N is exact attention in every head
    assert_allclose(at.multi_head_attention(x, wq, wk, wv, wo, method="rba", batch_size=8, rng=0),
                    mha_numpy(x, wq, wk, wv, wo), rtol=1e-12, atol=1e-13)
    for hp in ("shared", "independent"):
        out = at.multi_head_attention(x, wq, wk, wv, wo, method="rba", batch_size=3, rng=4, include_self=False,
                                      remainder="pad", head_partitions=hp)
        heads = []
        for h in range(3):
            part = particles.partition(8, 3, seed=4, replica=h if hp == "independent" else 0, remainder="pad")
            heads.append(batch_softmax_attention(x @ wq[h], x @ wk[h], x @ wv[h], part.batches(), False))
        assert_allclose(out, np.concatenate(heads, axis=1) @ wo, rtol=1e-12, atol=1e-13)


@needs_numba_cuda
def test_multi_head_on_cuda():
    x, wq, wk, wv, wo = _layer(2, n=6, heads=2)
    assert_allclose(at.multi_head_attention(x, wq, wk, wv, wo, backend="cuda"), mha_numpy(x, wq, wk, wv, wo),
                    rtol=1e-12, atol=1e-13)


# --- bad shapes ---------------------------------------------------------------------------------------------------
def test_bad_head_shapes_are_named():
    q, k, v = _heads(6, 2, 6)
    with pytest.raises(ValueError, match=r"^v must have shape \(H, \., \.\)"):
        at.softmax_attention(q, k, v[0])
    with pytest.raises(ValueError, match="same number of heads"):
        at.softmax_attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match="k must have the same dimension d"):
        at.random_batch_attention(q, k[:, :, :2], v, batch_size=2, rng=0)
    with pytest.raises(ValueError, match="k must have as many rows as q"):
        at.random_batch_attention(q, k[:, :5], v[:, :5], batch_size=2, rng=0)
    with pytest.raises(ValueError, match="head_partitions"):
        at.random_batch_attention(q, k, v, batch_size=2, rng=0, head_partitions="per-head")
    with pytest.raises(ValueError, match="random_batch_sum takes one head"):
        at.random_batch_sum(q, k, v, batch_size=2, rng=0)
    with pytest.raises(ValueError, match="q must have shape"):
        at.softmax_attention(q[:, :, :, None], k, v)


def test_bad_layer_shapes_are_named():
    x, wq, wk, wv, wo = _layer(3)
    mha = at.multi_head_attention
    with pytest.raises(ValueError, match=r"wq must have shape \(H, d_model, \.\) with d_model = 5"):
        mha(x, wq[:, :4], wk, wv, wo)
    with pytest.raises(ValueError, match="wk must have the shape of wq"):
        mha(x, wq, wk[:, :, :3], wv, wo)
    with pytest.raises(ValueError, match="wv must have H = 3 heads"):
        mha(x, wq, wk, wv[:2], wo)
    with pytest.raises(ValueError, match=r"wo must have shape \(H \* d_v, d_out\) = \(6, \.\)"):
        mha(x, wq, wk, wv, wo[:5])
    with pytest.raises(ValueError, match=r"wo must have shape \(H, d_v, d_out\) = \(3, 2, \.\)"):
        mha(x, wq, wk, wv, wo.reshape(2, 3, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        mha(x[0], wq, wk, wv, wo)
    with pytest.raises(ValueError, match="batch_size is an argument of method='rba'"):
        mha(x, wq, wk, wv, wo, batch_size=3)
    with pytest.raises(ValueError, match="method='rba' needs batch_size and rng"):
        mha(x, wq, wk, wv, wo, method="rba", batch_size=3)
    with pytest.raises(ValueError, match="method"):
        mha(x, wq, wk, wv, wo, method="linear")
