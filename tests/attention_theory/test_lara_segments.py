"""LARA's segment layouts: the default (longer segments first) and the authors' (longer segments last).

The authors' layout was read in HKUNLP/efficient-attention, file
``efficient-attention/efficient_attention/lara.py`` (``LinearRA._proposal_gen_1d``
and ``LinearRA.forward``), commit 531ff5169b56fcec9d0a361125cffb62ab5e8781; the
1-d segment code is the same in all three commits that touch that file. The
oracle below restates that code in NumPy, slice for slice, with the authors'
scale ``head_dim ** -0.5`` kept, instead of reusing the library's formula.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import attention_theory as at


def _qkv(seed, n, d=4, dv=3, scale=0.8):
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((n, d)), scale * rng.standard_normal((n, d)), rng.uniform(-1, 1, (n, dv))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _logsumexp(x, axis):
    top = x.max(axis=axis, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))


def authors_segment_means(x, landmarks):
    """``_proposal_gen_1d``: ``num_k`` segments of ``n // C`` rows, then the rest of one more."""
    n, d = x.shape
    segs = n // landmarks
    if n % landmarks == 0:
        return x.reshape(landmarks, segs, d).mean(axis=1)
    num_k = (segs + 1) * landmarks - n
    first = x[: num_k * segs].reshape(num_k, segs, d).mean(axis=1)
    last = x[num_k * segs:].reshape(landmarks - num_k, segs + 1, d).mean(axis=1)
    return np.concatenate((first, last), axis=0)


def authors_eval_lara(q, k, v, landmarks, mis_type, alpha_coeff=1.0):
    """``LinearRA.forward`` in eval mode (weights = mu), one head, no mask, before the output projection."""
    scale = q.shape[1] ** -0.5

    def prm_projection(data, proj):  # normalize=False: [c, l]
        return proj @ (scale * data).T - scale * np.sum(data**2, axis=1)[None, :] / 2.0

    q_bar, k_bar = authors_segment_means(q, landmarks), authors_segment_means(k, landmarks)
    mu = q_bar + k_bar
    weights = mu
    log_proj_q = prm_projection(q, weights)
    log_proj_k = prm_projection(k, weights)
    kv_stats = _softmax(log_proj_k, axis=-1) @ v  # [c, dv]
    log_proj_mu = prm_projection(mu, weights)  # [c, c_mu]
    if mis_type == "mis-bh":
        log_alpha = 0.0
        log_proposal = _logsumexp(log_proj_mu, axis=-1)
    else:  # "mis-opt"
        t_nc = _softmax(scale * q_bar @ q.T, axis=-1)  # [c, lq], over queries
        log_proposal = np.diagonal(log_proj_mu)[:, None]
        balanced = np.exp(log_proposal - _logsumexp(log_proj_mu, axis=-1))
        alpha_prev = balanced + alpha_coeff * (t_nc - t_nc.mean(axis=-2, keepdims=True))
        log_alpha = np.log(np.maximum(alpha_prev, 1e-8))
    log_true_prob = log_proj_q + _logsumexp(log_proj_k, axis=-1)
    sniw = _softmax(log_alpha + log_true_prob - log_proposal, axis=-2)  # [c, lq]
    return sniw.T @ kv_stats


def _lara_det(q, k, v, c, **kw):
    return at.lara(q, k, v, num_proposals=c, rng=None, mode="deterministic", **kw)


def test_authors_segment_oracle_puts_longer_segments_last():
    x = np.arange(37.0)[:, None]
    # 37 = 5 * 7 + 2: rows 0-6, 7-13, 14-20, then 21-28 and 29-36
    assert_array_equal(authors_segment_means(x, 5)[:, 0], [3.0, 10.0, 17.0, 24.5, 32.5])
    assert_array_equal(authors_segment_means(x[:35], 5)[:, 0], [3.0, 10.0, 17.0, 24.0, 31.0])


@pytest.mark.parametrize("weights,mis_type,gamma", [("balance", "mis-bh", 0.0), ("optimal", "mis-opt", 0.7)])
def test_trailing_equals_authors_formula_and_leading_does_not(weights, mis_type, gamma):
    n, c = 37, 5
    q, k, v = _qkv(5, n)
    ref = authors_eval_lara(q, k, v, c, mis_type, alpha_coeff=gamma)
    # the authors scale q and k inside every exponent by head_dim ** -0.5; the library takes them pre-scaled
    root = q.shape[1] ** -0.25
    kw = dict(weights=weights, gamma=gamma)
    trailing = _lara_det(root * q, root * k, v, c, segments="trailing", **kw)
    leading = _lara_det(root * q, root * k, v, c, **kw)
    assert_allclose(trailing, ref, rtol=1e-12, atol=1e-14)
    # negative control: the default layout is a different estimate at N mod C != 0
    assert np.max(np.abs(leading - ref)) / np.max(np.abs(ref)) > 1e-3


def test_default_layout_is_array_split():
    n, c = 37, 5
    q, k, v = _qkv(6, n)
    mu = np.array([s.mean(axis=0) for s in np.array_split(q, c)]) + np.array(
        [s.mean(axis=0) for s in np.array_split(k, c)])
    default = at.lara(q, k, v, num_proposals=c, rng=11)
    assert_array_equal(default, at.lara(q, k, v, num_proposals=c, rng=11, segments="leading"))
    assert_allclose(default, at.lara(q, k, v, num_proposals=c, rng=11, proposal_means=mu), rtol=1e-13)
    # the layouts really differ here, so the comparison above can fail
    assert not np.allclose(default, at.lara(q, k, v, num_proposals=c, rng=11, segments="trailing"), rtol=1e-6)


@pytest.mark.parametrize("n,m,c", [(35, 35, 5), (12, 8, 4), (6, 6, 6), (9, 9, 1)])
@pytest.mark.parametrize("mode", ["sampled", "deterministic"])
def test_layouts_agree_exactly_when_c_divides(n, m, c, mode):
    rng = np.random.default_rng(7)
    q, k, v = rng.standard_normal((n, 3)), rng.standard_normal((m, 3)), rng.standard_normal((m, 2))
    seed = None if mode == "deterministic" else 3
    kw = dict(num_proposals=c, mode=mode, weights="optimal")
    assert_array_equal(at.lara(q, k, v, rng=seed, segments="trailing", **kw), at.lara(q, k, v, rng=seed, **kw))


def test_layout_applies_to_queries_and_keys_separately():
    """N = 10 and M = 7 with C = 3: query segments (3, 3, 4), key segments (2, 2, 3) under "trailing"."""
    rng = np.random.default_rng(8)
    q, k, v = rng.standard_normal((10, 2)), rng.standard_normal((7, 2)), rng.standard_normal((7, 2))
    mu = (np.array([q[:3].mean(0), q[3:6].mean(0), q[6:].mean(0)])
          + np.array([k[:2].mean(0), k[2:4].mean(0), k[4:].mean(0)]))
    assert_allclose(at.lara(q, k, v, num_proposals=3, rng=2, segments="trailing"),
                    at.lara(q, k, v, num_proposals=3, rng=2, proposal_means=mu), rtol=1e-13)


@pytest.mark.parametrize("bad", ["last", "Trailing", None, 1])
def test_bad_segments_named(bad):
    q, k, v = _qkv(9, 6)
    with pytest.raises(ValueError, match=r"^segments must be one of 'leading', 'trailing'; got"):
        at.lara(q, k, v, num_proposals=2, rng=0, segments=bad)
