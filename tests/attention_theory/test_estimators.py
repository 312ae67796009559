"""Attention estimators: exact identities, oracles, properties, stability and bad input.

Everything here is deterministic (fixed seeds, identities that hold for every
sample set); the statistical checks live in ``test_estimators_statistical.py``.
Naive oracles are written out in plain loops/NumPy below, independently of the
library's log-space code paths.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import warnings

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import attention_theory as at
import particles
from attention_theory import _rba
from attention_theory import estimators as est
from attention_theory.registry import EMBEDDINGS, QKV


# ---------------------------------------------------------------------------
# data and oracles
# ---------------------------------------------------------------------------
def make_qkv(seed, n=6, m=5, d=3, dv=2, scale=0.6):
    rng = np.random.default_rng(seed)
    return (
        scale * rng.standard_normal((n, d)),
        scale * rng.standard_normal((m, d)),
        rng.uniform(-1.0, 1.0, (m, dv)),
    )


def naive_softmax(q, k, v, mask=None):
    s = q @ k.T
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return (e @ v) / e.sum(axis=1, keepdims=True)


def naive_batches(q, k, v, part, include_self=True, normalize=True):
    out = np.empty((q.shape[0], v.shape[1]))
    for batch in part.batches():
        for i in batch:
            js = [j for j in batch if include_self or j != i]
            s = np.array([q[i] @ k[j] for j in js])
            if normalize:
                e = np.exp(s - s.max())
                out[i] = e @ v[js] / e.sum()
            else:
                out[i] = np.exp(s) @ v[js] / (len(batch) - 1)
    return out


def std_normal_logpdf(w):
    return -0.5 * np.sum(w * w, axis=1) - 0.5 * w.shape[1] * math.log(2 * math.pi)


def lara_oracle(q, k, v, eps, c, weights, gamma, mode):
    """T17 written out term by term, in linear (not log) space, for small inputs."""
    n, d = q.shape
    qbar = np.array([s.mean(axis=0) for s in np.array_split(q, c)])
    kbar = np.array([s.mean(axis=0) for s in np.array_split(k, c)])
    mu = qbar + kbar
    j = 1 if mode == "deterministic" else eps.shape[1]

    def gauss(w, mean):
        return (2 * math.pi) ** (-d / 2) * math.exp(-0.5 * float((w - mean) @ (w - mean)))

    logits = qbar @ q.T  # (C, N)
    r = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # softmax over queries n
    r = r.T  # (N, C)
    out = np.zeros((n, v.shape[1]))
    for i in range(n):
        num = np.zeros(v.shape[1])
        den = 0.0
        for cc in range(c):
            for jj in range(j):
                w = mu[cc] if mode == "deterministic" else mu[cc] + eps[cc, jj]
                xi_k = np.exp(k @ w - 0.5 * np.sum(k * k, axis=1))
                p_tilde = gauss(w, 0.0) * math.exp(w @ q[i] - 0.5 * q[i] @ q[i]) * xi_k.sum()
                f = xi_k @ v / xi_k.sum()
                dens = np.array([gauss(w, mu[c2]) for c2 in range(c)])
                bh = dens[cc] / dens.sum()
                alpha = bh if weights == "balance" else max(bh + gamma * (r[i, cc] - r[i].mean()), 1e-8)
                wt = alpha / j * p_tilde / dens[cc]
                num += wt * f
                den += wt
        out[i] = num / den
    return out


def mp_softmax(q, k, v, digits=50):
    """Softmax attention in mpmath with ``digits`` significant digits."""
    with mpmath.workdps(digits):
        out = np.empty((q.shape[0], v.shape[1]))
        for i in range(q.shape[0]):
            s = [mpmath.fsum(mpmath.mpf(float(a)) * mpmath.mpf(float(b)) for a, b in zip(q[i], kk)) for kk in k]
            e = [mpmath.exp(x) for x in s]
            z = mpmath.fsum(e)
            for t in range(v.shape[1]):
                out[i, t] = float(mpmath.fsum(ej * mpmath.mpf(float(v[j, t])) for j, ej in enumerate(e)) / z)
    return out


# ---------------------------------------------------------------------------
# import hygiene and registry
# ---------------------------------------------------------------------------
def test_import_compiles_nothing():
    code = (
        "import sys, attention_theory\n"
        "assert 'numba' not in sys.modules, 'importing attention_theory imported numba'\n"
        "assert 'attention_theory._rba' not in sys.modules\n"
        "assert 'sympy' not in sys.modules, 'sympy must stay in attention_theory.symbolic'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_declarations():
    reg = at.REGISTRY
    assert {"softmax", "rfa", "randomized_attention", "lara", "lara_deterministic", "random_batch_attention",
            "random_batch_sum"} <= set(reg)
    for name, info in reg.items():
        assert info.name == name
        assert callable(info.function)
        assert info.time.startswith("O(") and info.memory.startswith("O(")
        assert info.equation and info.reference
        if info.randomized and info.consistent:
            assert info.size_parameter is not None
    assert reg["randomized_attention"].unbiased and reg["random_batch_sum"].unbiased
    assert not reg["rfa"].unbiased and not reg["lara"].unbiased and not reg["random_batch_attention"].unbiased
    assert not reg["lara_deterministic"].consistent
    with pytest.raises(TypeError):
        reg["rfa"] = reg["lara"]  # read-only mapping
    table = at.property_table()
    assert len(table) == len(reg) + 1 and all(len(row) == len(table[0]) for row in table)


@pytest.mark.parametrize("name", sorted(at.REGISTRY))
def test_registry_entries_run(name):
    info = at.REGISTRY[name]
    q, k, v = make_qkv(1, n=6, m=6)
    kwargs = dict(info.options)
    if info.randomized or name == "lara_deterministic":
        kwargs["rng"] = 3
    size = {"num_features": 8, "num_samples": 2, "samples_per_proposal": 2, "batch_size": 3}
    if info.size_parameter:
        kwargs[info.size_parameter] = size[info.size_parameter]
    if info.function is at.lara:
        kwargs["num_proposals"] = 2
    if info.inputs == EMBEDDINGS:  # token embeddings (6, 3) and two heads' projections (d_k = 4, d_v = 3)
        w = np.random.default_rng(2).standard_normal((4, 2, 3, 4)) * 0.5
        args = (q[:, :3], w[0], w[1], w[2, :, :, :3], w[3, :, :3, :2])
    else:
        assert info.inputs == QKV
        args = (q, k, v)
    out = info.function(*args, **kwargs)
    assert out.shape == (6, 2) and out.dtype == np.float64 and np.all(np.isfinite(out))


# ---------------------------------------------------------------------------
# exact softmax
# ---------------------------------------------------------------------------
def test_softmax_matches_naive():
    q, k, v = make_qkv(2, n=9, m=11, d=4, dv=3)
    assert_allclose(at.softmax_attention(q, k, v), naive_softmax(q, k, v), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("max_scores", [1, 2, 7, 10, 11, 12, 33, 99, 10**9])
def test_chunked_softmax_equals_unchunked(max_scores):
    q, k, v = make_qkv(3, n=9, m=11, d=4, dv=3, scale=2.0)
    full = at.softmax_attention(q, k, v, max_scores=10**9)
    assert_allclose(at.softmax_attention(q, k, v, max_scores=max_scores), full, rtol=1e-13, atol=1e-15)


def test_softmax_high_precision_large_logits():
    rng = np.random.default_rng(4)
    q = 25.0 * rng.standard_normal((5, 3))
    k = 25.0 * rng.standard_normal((7, 3))  # scores of several hundred to ~2e3
    v = rng.uniform(-1, 1, (7, 2))
    assert np.abs(q @ k.T).max() > 1e3
    ref = mp_softmax(q, k, v)
    for ms in (10**9, 3):
        out = at.softmax_attention(q, k, v, max_scores=ms)
        assert np.all(np.isfinite(out))
        assert_allclose(out, ref, rtol=1e-12, atol=1e-13)


def test_stability_dominant_key_analytic():
    """Scores 1000, 999, -1000 (and the mirror image): analytic answers."""
    q = np.array([[10.0, 0.0], [-10.0, 0.0]])
    k = np.array([[100.0, 0.0], [99.9, 0.0], [-100.0, 0.0]])
    v = np.array([[1.0, -2.0], [3.0, 0.5], [-1.0, 4.0]])
    e = math.exp(-1.0)
    expected = np.array([(v[0] + e * v[1]) / (1 + e), v[2]])
    assert_allclose(at.softmax_attention(q, k, v), expected, rtol=1e-13)
    # RA: pi is a point mass on the dominant key and f(w) ~ its value for w ~ p_n (margin > 1e4)
    q2 = np.array([[10.0, 0.0], [-10.0, 0.0]])
    k2 = np.array([[100.0, 0.0], [-100.0, 0.0]])
    v2 = v[:2]
    assert_allclose(at.randomized_attention(q2, k2, v2, rng=5, num_samples=4), v2, rtol=1e-13)


def test_rfa_lara_finite_at_huge_logits():
    rng = np.random.default_rng(6)
    q = 30.0 * rng.standard_normal((8, 3))
    k = 30.0 * rng.standard_normal((8, 3))
    v = rng.uniform(-1, 1, (8, 2))
    assert np.abs(q @ k.T).max() > 1e3
    outs = [
        at.rfa(q, k, v, num_features=16, rng=1),
        at.rfa(q, k, v, num_features=16, rng=1, orthogonal=True),
        at.lara(q, k, v, num_proposals=4, rng=1),
        at.lara(q, k, v, num_proposals=4, rng=1, weights="optimal"),
        at.lara(q, k, v, num_proposals=4, rng=None, mode="deterministic"),
        at.randomized_attention(q, k, v, rng=1),
        at.random_batch_attention(q, k, v, batch_size=3, rng=1),
    ]
    for out in outs:
        assert np.all(np.isfinite(out))
        assert np.all(out >= v.min(axis=0) - 1e-12) and np.all(out <= v.max(axis=0) + 1e-12)


# ---------------------------------------------------------------------------
# random batch attention and the batch sum
# ---------------------------------------------------------------------------
def test_rba_full_batch_equals_softmax():
    q, k, v = make_qkv(7, n=13, m=13, d=3, dv=2, scale=1.5)
    assert_allclose(at.random_batch_attention(q, k, v, batch_size=13, rng=11), at.softmax_attention(q, k, v),
                    rtol=1e-12, atol=1e-12)
    no_self = at.random_batch_attention(q, k, v, batch_size=13, rng=11, include_self=False)
    assert_allclose(no_self, naive_softmax(q, k, v, mask=~np.eye(13, dtype=bool)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [2, 3, 5, 7, 23])
@pytest.mark.parametrize("include_self", [True, False])
def test_rba_matches_partition_oracle(p, include_self):
    q, k, v = make_qkv(8, n=23, m=23, d=3, dv=2, scale=1.2)
    part = particles.partition(23, p, seed=19, step=0)
    out = at.random_batch_attention(q, k, v, batch_size=p, rng=19, include_self=include_self)
    assert_allclose(out, naive_batches(q, k, v, part, include_self), rtol=1e-12, atol=1e-14)
    # a Generator is turned into the seed rng.integers(2**63)
    seed = int(np.random.default_rng(4).integers(2**63))
    out_g = at.random_batch_attention(q, k, v, batch_size=p, rng=np.random.default_rng(4), include_self=include_self)
    assert_array_equal(out_g, at.random_batch_attention(q, k, v, batch_size=p, rng=seed, include_self=include_self))


def test_random_batch_sum_matches_oracle():
    q, k, v = make_qkv(9, n=11, m=11, scale=1.0)
    part = particles.partition(11, 3, seed=2, step=0)
    assert_allclose(at.random_batch_sum(q, k, v, batch_size=3, rng=2),
                    naive_batches(q, k, v, part, include_self=False, normalize=False), rtol=1e-12)
    s = q @ k.T
    np.fill_diagonal(s, -np.inf)
    assert_allclose(at.exact_batch_sum_target(q, k, v), np.exp(s) @ v / 10, rtol=1e-12)
    assert_allclose(at.exact_batch_sum_target(q, k, v, max_scores=5), np.exp(s) @ v / 10, rtol=1e-12)
    # p = N: the batch sum is the target itself
    assert_allclose(at.random_batch_sum(q, k, v, batch_size=11, rng=0), at.exact_batch_sum_target(q, k, v),
                    rtol=1e-12)


@pytest.mark.parametrize("n,p", [(5, 2), (6, 3), (5, 4)])
def test_batch_sum_unbiased_exactly_over_all_permutations(n, p):
    """Lemma T3, E chi_i = 0, by enumerating all n! equally likely permutations of the RBM-1 partition."""
    q, k, v = make_qkv(10, n=n, m=n, scale=0.8)
    bounds = particles.batching.batch_bounds(n, p)
    total = np.zeros((n, v.shape[1]))
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        total += _rba.run(q, k, v, np.array(perm, dtype=np.int64), bounds, False, False)
    assert_allclose(total / len(perms), at.exact_batch_sum_target(q, k, v), rtol=1e-12)


def test_rba_result_independent_of_driver_and_grouping():
    q, k, v = make_qkv(12, n=97, m=97, d=5, dv=3, scale=1.0)
    part = particles.partition(97, 6, seed=1)
    for normalize, include_self in [(True, True), (True, False), (False, False)]:
        ref = _rba.run(q, k, v, part.perm, part.bounds, include_self, normalize, driver="serial")
        for ngroups in (1, 2, 5, 16):
            out = _rba.run(q, k, v, part.perm, part.bounds, include_self, normalize, driver="parallel", ngroups=ngroups)
            assert_array_equal(out, ref)


def test_batch_sum_overflow_range():
    # scores up to ~700: representable, accurate
    q = np.array([[10.0, 0.0], [5.0, 1.0], [-3.0, 2.0]])
    k = np.array([[70.0, 0.0], [69.0, 1.0], [1.0, -1.0]])
    v = np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0]])
    ref = np.zeros((3, 2))
    for i in range(3):
        with mpmath.workdps(40):
            for t in range(2):
                ref[i, t] = float(mpmath.fsum(mpmath.exp(mpmath.mpf(float(q[i] @ k[j]))) * float(v[j, t])
                                              for j in range(3) if j != i) / 2)
    assert_allclose(at.exact_batch_sum_target(q, k, v), ref, rtol=1e-12)
    assert_allclose(at.random_batch_sum(q, k, v, batch_size=3, rng=0), ref, rtol=1e-12)
    # scores of 1e3: not representable -> inf and a RuntimeWarning (never silently)
    with pytest.warns(RuntimeWarning, match="not representable"):
        out = at.random_batch_sum(10 * q, k, v, batch_size=3, rng=0)
    assert not np.all(np.isfinite(out))
    with pytest.warns(RuntimeWarning, match="not representable"):
        at.exact_batch_sum_target(10 * q, k, v)


# ---------------------------------------------------------------------------
# random features and RFA
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("orthogonal", [False, True])
def test_rfa_positive_matches_feature_formula(orthogonal):
    q, k, v = make_qkv(13, n=7, m=9, d=3, dv=2, scale=0.7)
    w = at.draw_features(20, 3, rng=5, orthogonal=orthogonal)
    xq, xk = at.positive_features(q, w), at.positive_features(k, w)
    expected = (xq @ (xk.T @ v)) / (xq @ xk.sum(axis=0))[:, None]
    out = at.rfa(q, k, v, num_features=20, rng=5, orthogonal=orthogonal)
    assert_allclose(out, expected, rtol=1e-12)


def test_rfa_trig_matches_feature_formula():
    q, k, v = make_qkv(14, n=7, m=9, d=3, dv=2, scale=0.5)
    w = at.draw_features(400, 3, rng=6)
    pq, pk = at.trig_features(q, w), at.trig_features(k, w)
    den = pq @ pk.sum(axis=0)
    assert np.all(den > 0)
    out = at.rfa(q, k, v, num_features=400, rng=6, kind="trig")
    assert_allclose(out, (pq @ (pk.T @ v)) / den[:, None], rtol=1e-10)


def test_trig_nonpositive_denominator_is_reported_not_hidden():
    q = np.array([[3.0, 0.0], [0.0, 3.0]])
    k = np.array([[-3.0, 0.5], [2.0, -3.0], [0.5, 0.5]])
    v = np.array([[1.0], [0.0], [-1.0]])
    warned = 0
    for seed in range(20):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            out = at.rfa(q, k, v, num_features=1, rng=seed, kind="trig")
        hits = [r for r in rec if issubclass(r.category, at.NonPositiveDenominatorWarning)]
        w = at.draw_features(1, 2, rng=seed)
        pq, pk = at.trig_features(q, w), at.trig_features(k, w)
        den = pq @ pk.sum(axis=0)
        assert bool(hits) == bool(np.any(den <= 0))
        if hits:
            warned += 1
            bad = den <= 0
            assert out.shape == (2, 1)  # the raw ratio is returned, not masked
            with np.errstate(divide="ignore", invalid="ignore"):
                raw = (pq @ (pk.T @ v)) / den[:, None]
            assert_allclose(out[bad], raw[bad], rtol=1e-10)
    assert warned > 0


def test_features_pieces():
    rng = np.random.default_rng(15)
    x, y = 0.4 * rng.standard_normal((3, 2)), 0.4 * rng.standard_normal((4, 2))
    w = at.draw_features(5, 2, rng=1)
    assert_allclose(np.exp(at.positive_features(x, w, log=True)), at.positive_features(x, w), rtol=1e-14)
    assert at.positive_features(x[0], w).shape == (5,)
    px, py = at.trig_features(x, w), at.trig_features(y, w)
    # phi(x).phi(y) = e^{(|x|^2+|y|^2)/2} sum_s cos(w_s.(x - y))
    for i, j in itertools.product(range(3), range(4)):
        expected = math.exp(0.5 * (x[i] @ x[i] + y[j] @ y[j])) * np.cos(w @ (x[i] - y[j])).sum()
        assert_allclose(px[i] @ py[j], expected, rtol=1e-12)
    # T11: N(w;0,I) xi(q,w) xi(k,w) = exp(q.k) N(w; q+k, I)
    lhs = np.exp(std_normal_logpdf(w)) * at.positive_features(x[0], w) * at.positive_features(y[0], w)
    rhs = math.exp(x[0] @ y[0]) * np.exp(std_normal_logpdf(w - x[0] - y[0]))
    assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("s,d", [(8, 4), (10, 4), (3, 5), (1, 1)])
def test_orthogonal_features_structure(s, d):
    w = at.draw_features(s, d, rng=3, orthogonal=True)
    assert w.shape == (s, d)
    norms = np.linalg.norm(w, axis=1)
    assert np.all(norms > 0)
    u = w / norms[:, None]
    for start in range(0, s, d):
        block = u[start:start + d]
        assert_allclose(block @ block.T, np.eye(block.shape[0]), atol=1e-12)
    assert_array_equal(at.draw_features(s, d, rng=3, orthogonal=True), w)


# ---------------------------------------------------------------------------
# target mixture, integrand, SNIS pieces
# ---------------------------------------------------------------------------
def test_target_mixture_logpdf_is_the_normalised_product_identity():
    """log p_n (mixture form, T12) = log ptilde_n - log Z_n (product form, T11)."""
    q, k, _ = make_qkv(16, n=3, m=4, d=2, scale=0.8)
    w = 1.5 * np.random.default_rng(0).standard_normal((50, 2))
    for n in range(3):
        log_z = math.log(np.exp(k @ q[n]).sum())
        log_pt = (std_normal_logpdf(w) + np.log(at.positive_features(q[n], w))
                  + np.log(at.positive_features(k, w).sum(axis=0)))
        assert_allclose(at.target_mixture_logpdf(w, q[n], k), log_pt - log_z, rtol=1e-12, atol=1e-12)
    assert isinstance(at.target_mixture_logpdf(w[0], q[0], k), float)


def test_t14_by_quadrature():
    """Attn_n = int p_n(w) f(w) dw (T14), on a 2-D grid (the integrand decays like a Gaussian)."""
    q, k, v = make_qkv(17, n=3, m=4, d=2, dv=2, scale=0.6)
    g = np.linspace(-9, 9, 361)
    h = g[1] - g[0]
    ww = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    f = at.integrand_f(ww, k, v)
    for n in range(3):
        p = np.exp(at.target_mixture_logpdf(ww, q[n], k))
        assert_allclose(p.sum() * h * h, 1.0, rtol=1e-10)
        assert_allclose(p @ f * h * h, at.softmax_attention(q, k, v)[n], rtol=1e-10, atol=1e-12)


def test_randomized_attention_uses_target_mixture_sample():
    q, k, v = make_qkv(18, n=5, m=4)
    w = at.target_mixture_sample(q, k, 7, 3)
    assert w.shape == (5, 3, 3)
    expected = at.integrand_f(w.reshape(-1, 3), k, v).reshape(5, 3, 2).mean(axis=1)
    assert_allclose(at.randomized_attention(q, k, v, rng=7, num_samples=3), expected, rtol=1e-14)
    # one query alone: the same stream as a one-row batch
    assert_array_equal(at.target_mixture_sample(q[0], k, 7, 3), at.target_mixture_sample(q[:1], k, 7, 3)[0])
    # chunking does not change the draws
    assert_array_equal(at.target_mixture_sample(q, k, 7, 3, max_scores=1), w)


def test_snis_weights():
    lt = np.array([[0.0, 1.0, -np.inf, 2.0], [800.0, 801.0, 799.0, -3.0]])
    lp = np.array([0.5, -0.5, 0.0, 0.0])
    w = at.snis_weights(lt, lp)
    assert_allclose(w.sum(axis=1), 1.0, rtol=1e-15)
    assert w[0, 2] == 0.0 and np.all(np.isfinite(w))
    assert_allclose(at.snis_weights(lt + 1234.5, lp), w, rtol=1e-14)
    e = np.exp(lt[0] - lp)
    assert_allclose(w[0], e / e.sum(), rtol=1e-14)


# ---------------------------------------------------------------------------
# the identities of THEORY B2-B4, on the same samples
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("c,j", [(1, 7), (3, 2), (4, 1)])
def test_lara_with_standard_normal_proposals_is_rfa(c, j):
    """q_c = N(0, I) for all c and constant alpha = 1/C: LARA = RFA on the same draws."""
    q, k, v = make_qkv(19, n=6, m=7, d=3, scale=0.8)
    s = c * j
    rfa = at.rfa(q, k, v, num_features=s, rng=21)
    w = at.draw_features(s, 3, rng=21)
    assert_allclose(at.snis_attention(q, k, v, w, std_normal_logpdf(w)), rfa, rtol=1e-12)
    # the same through lara itself: means overridden to 0, balance weights are then exactly 1/C
    out = at.lara(q, k, v, num_proposals=c, samples_per_proposal=j, rng=21, proposal_means=np.zeros((c, 3)))
    assert_allclose(out, rfa, rtol=1e-12)


def test_lara_with_target_proposals_and_delta_weights_is_ra():
    """C = N proposals q_n = p_n, alpha_nc = delta_nc: LARA = RA on the same draws."""
    q, k, v = make_qkv(20, n=6, m=5, d=3, scale=0.8)
    w = at.target_mixture_sample(q, k, 33, 1)[:, 0]
    log_prop = np.array([at.target_mixture_logpdf(w[n], q[n], k) for n in range(6)])
    log_alpha = np.where(np.eye(6, dtype=bool), 0.0, -np.inf)
    out = at.snis_attention(q, k, v, w, log_prop, log_alpha=log_alpha)
    assert_allclose(out, at.randomized_attention(q, k, v, rng=33), rtol=1e-12)
    # and with the exact Z_n the single weight is p_n/p_n = 1: the same number again
    out_exact = at.snis_attention(q, k, v, w, log_prop, log_alpha=log_alpha, normalization="exact")
    assert_allclose(out_exact, out, rtol=1e-10)


def test_log_weight_shift_invariance():
    """Adding a constant to all log-weights of a query changes nothing (RFA/LARA are ratios)."""
    q, k, v = make_qkv(21, n=5, m=6, d=2, scale=0.8)
    w = 1.3 * at.draw_features(9, 2, rng=1)
    log_prop = std_normal_logpdf(w / 1.3) - 2 * math.log(1.3)
    la = np.log(np.random.default_rng(2).uniform(0.1, 1.0, (5, 9)))
    shift = np.array([-700.0, -1.0, 0.0, 3.5, 900.0])[:, None]
    base = at.snis_attention(q, k, v, w, log_prop, log_alpha=la)
    assert_allclose(at.snis_attention(q, k, v, w, log_prop, log_alpha=la + shift), base, rtol=1e-12)
    # RFA as SNIS: per-query constants in the log weights leave it unchanged too
    w0 = at.draw_features(9, 2, rng=4)
    assert_allclose(at.snis_attention(q, k, v, w0, std_normal_logpdf(w0), log_alpha=np.zeros((5, 9)) + shift),
                    at.rfa(q, k, v, num_features=9, rng=4), rtol=1e-12)


@pytest.mark.parametrize("weights", ["balance", "optimal"])
@pytest.mark.parametrize("mode,j", [("sampled", 1), ("sampled", 3), ("deterministic", 1)])
def test_lara_matches_term_by_term_oracle(weights, mode, j):
    q, k, v = make_qkv(22, n=7, m=5, d=2, scale=0.9)
    c = 3
    eps = np.random.default_rng(8).standard_normal((c, j, 2))  # the documented draw
    rng = None if mode == "deterministic" else 8
    out = at.lara(q, k, v, num_proposals=c, samples_per_proposal=j, rng=rng, weights=weights, gamma=0.7, mode=mode)
    assert_allclose(out, lara_oracle(q, k, v, eps, c, weights, 0.7, mode), rtol=1e-11)


def test_lara_optimal_clamp_engages_for_large_gamma():
    q, k, v = make_qkv(23, n=7, m=5, d=2, scale=0.9)
    eps = np.random.default_rng(8).standard_normal((3, 1, 2))
    out = at.lara(q, k, v, num_proposals=3, rng=8, weights="optimal", gamma=50.0)
    assert_allclose(out, lara_oracle(q, k, v, eps, 3, "optimal", 50.0, "sampled"), rtol=1e-11)


def test_lara_segments_follow_array_split():
    q, k, v = make_qkv(24, n=10, m=7, d=2)
    # with C = 3 the means are over segments of sizes (4, 3, 3) of q and (3, 2, 2) of k
    mu = np.array([a.mean(0) for a in np.array_split(q, 3)]) + np.array([a.mean(0) for a in np.array_split(k, 3)])
    assert_allclose(at.lara(q, k, v, num_proposals=3, rng=1),
                    at.lara(q, k, v, num_proposals=3, rng=1, proposal_means=mu), rtol=1e-14)
    assert_allclose(at.lara(q, k, v, num_proposals=7, rng=None, mode="deterministic"),
                    lara_oracle(q, k, v, None, 7, "balance", 0.0, "deterministic"), rtol=1e-11)


# ---------------------------------------------------------------------------
# convex hull, dtypes, reproducibility
# ---------------------------------------------------------------------------
HULL_ESTIMATORS = {
    "softmax": lambda q, k, v: at.softmax_attention(q, k, v),
    "softmax_chunked": lambda q, k, v: at.softmax_attention(q, k, v, max_scores=3),
    "ra": lambda q, k, v: at.randomized_attention(q, k, v, rng=1, num_samples=3),
    "rba": lambda q, k, v: at.random_batch_attention(q, k, v, batch_size=3, rng=1),
    "rba_no_self": lambda q, k, v: at.random_batch_attention(q, k, v, batch_size=2, rng=1, include_self=False),
    "rfa": lambda q, k, v: at.rfa(q, k, v, num_features=5, rng=1),
    "rfa_orthogonal": lambda q, k, v: at.rfa(q, k, v, num_features=5, rng=1, orthogonal=True),
    "lara": lambda q, k, v: at.lara(q, k, v, num_proposals=3, rng=1, samples_per_proposal=2),
    "lara_optimal": lambda q, k, v: at.lara(q, k, v, num_proposals=3, rng=1, weights="optimal", gamma=3.0),
    "lara_deterministic": lambda q, k, v: at.lara(q, k, v, num_proposals=3, rng=None, mode="deterministic"),
}


@pytest.mark.parametrize("name", sorted(HULL_ESTIMATORS))
@pytest.mark.parametrize("scale", [0.3, 3.0, 20.0])
def test_outputs_in_convex_hull_of_values(name, scale):
    q, k, v = make_qkv(25, n=9, m=9, d=3, dv=4, scale=scale)
    out = HULL_ESTIMATORS[name](q, k, v)
    assert out.shape == (9, 4) and np.all(np.isfinite(out))
    tol = 1e-12 * np.abs(v).max()
    assert np.all(out >= v.min(axis=0) - tol) and np.all(out <= v.max(axis=0) + tol)


@pytest.mark.parametrize("name", sorted(HULL_ESTIMATORS))
def test_float32_and_int_inputs_computed_in_float64(name):
    q, k, v = make_qkv(26, n=6, m=6, d=3, dv=2, scale=0.7)
    f = HULL_ESTIMATORS[name]
    ref = f(q.astype(np.float32).astype(np.float64), k.astype(np.float32).astype(np.float64),
            v.astype(np.float32).astype(np.float64))
    out = f(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32))
    assert out.dtype == np.float64
    assert_array_equal(out, ref)
    qi, ki, vi = (np.rint(4 * a).astype(np.int32) for a in (q, k, v))
    assert f(qi, ki, vi).dtype == np.float64
    assert_array_equal(f(qi, ki, vi), f(qi.astype(float), ki.astype(float), vi.astype(float)))


@pytest.mark.parametrize("fn", ["rfa", "ra", "lara", "rba"])
def test_seed_and_generator_reproducibility(fn):
    q, k, v = make_qkv(27, n=6, m=6)
    call = {
        "rfa": lambda r: at.rfa(q, k, v, num_features=4, rng=r),
        "ra": lambda r: at.randomized_attention(q, k, v, rng=r),
        "lara": lambda r: at.lara(q, k, v, num_proposals=2, rng=r),
        "rba": lambda r: at.random_batch_attention(q, k, v, batch_size=2, rng=r),
    }[fn]
    assert_array_equal(call(5), call(5))
    g = np.random.default_rng(9)
    a, b = call(g), call(g)  # a Generator is advanced: two calls, two draws
    assert not np.array_equal(a, b)
    assert_array_equal(a, call(np.random.default_rng(9)))


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
Q, K, V = make_qkv(28, n=6, m=6, d=3, dv=2)


def _with(arr, idx, val):
    out = arr.copy()
    out[idx] = val
    return out


ALL_FUNCS = {
    "softmax": lambda q, k, v: at.softmax_attention(q, k, v),
    "rfa": lambda q, k, v: at.rfa(q, k, v, num_features=4, rng=0),
    "ra": lambda q, k, v: at.randomized_attention(q, k, v, rng=0),
    "lara": lambda q, k, v: at.lara(q, k, v, num_proposals=2, rng=0),
    "rba": lambda q, k, v: at.random_batch_attention(q, k, v, batch_size=2, rng=0),
    "batch_sum": lambda q, k, v: at.random_batch_sum(q, k, v, batch_size=2, rng=0),
    "batch_target": lambda q, k, v: at.exact_batch_sum_target(q, k, v),
    "snis": lambda q, k, v: at.snis_attention(q, k, v, np.zeros((2, q.shape[-1] if np.ndim(q) == 2 else 3)),
                                              np.zeros(2)),
}

BAD_ARRAYS = [
    # (q, k, v, exception, message fragment naming the argument)
    (Q[0], K, V, ValueError, "q must have shape"),
    (Q[None], K, V, ValueError, "q must have shape"),
    (Q, K[:, :2], V, ValueError, "k must have the same dimension"),
    (Q, K, V[:5], ValueError, "v must have one row per key"),
    (_with(Q, (0, 0), np.nan), K, V, ValueError, "q must contain only finite"),
    (Q, _with(K, (1, 1), np.inf), V, ValueError, "k must contain only finite"),
    (Q, K, _with(V, (2, 0), -np.inf), ValueError, "v must contain only finite"),
    (Q.astype(complex), K, V, TypeError, "q must be an array of real numbers"),
    (Q, K > 0, V, TypeError, "k must be an array of real numbers"),
    (Q[:0], K, V, ValueError, "q must have at least 1 row"),
    (Q, K, np.array(["a"] * 6)[:, None], TypeError, "v must be an array of real numbers"),
]


@pytest.mark.parametrize("fname", sorted(ALL_FUNCS))
@pytest.mark.parametrize("case", range(len(BAD_ARRAYS)))
def test_bad_arrays(fname, case):
    q, k, v, exc, msg = BAD_ARRAYS[case]
    with pytest.raises(exc, match=msg):
        ALL_FUNCS[fname](q, k, v)


BAD_ARGS = [
    (lambda: at.rfa(Q, K, V, num_features=0, rng=0), ValueError, "num_features"),
    (lambda: at.rfa(Q, K, V, num_features=2.0, rng=0), TypeError, "num_features"),
    (lambda: at.rfa(Q, K, V, num_features=True, rng=0), TypeError, "num_features"),
    (lambda: at.rfa(Q, K, V, num_features=2, rng=0, kind="cos"), ValueError, "kind"),
    (lambda: at.rfa(Q, K, V, num_features=2, rng=0, orthogonal="yes"), TypeError, "orthogonal"),
    (lambda: at.rfa(Q, K, V, num_features=2, rng=None), TypeError, "rng"),
    (lambda: at.rfa(Q, K, V, num_features=2, rng=-1), ValueError, "rng"),
    (lambda: at.rfa(Q, K, V, num_features=2, rng=2**64), ValueError, "rng"),
    (lambda: at.rfa(Q, K, V, num_features=2, rng=np.random.RandomState(0)), TypeError, "rng"),
    (lambda: at.rfa(Q, K, V, num_features=2, rng="0"), TypeError, "rng"),
    (lambda: at.randomized_attention(Q, K, V, rng=0, num_samples=0), ValueError, "num_samples"),
    (lambda: at.randomized_attention(Q, K, V, rng=0, max_scores=0), ValueError, "max_scores"),
    (lambda: at.softmax_attention(Q, K, V, max_scores=0), ValueError, "max_scores"),
    (lambda: at.softmax_attention(Q, K, V, max_scores=1.5), TypeError, "max_scores"),
    (lambda: at.random_batch_attention(Q, K, V, batch_size=1, rng=0), ValueError, "batch_size"),
    (lambda: at.random_batch_attention(Q, K, V, batch_size=7, rng=0), ValueError, "batch_size"),
    (lambda: at.random_batch_attention(Q, K, V, batch_size=0, rng=0), ValueError, "batch_size"),
    (lambda: at.random_batch_attention(Q, K[:5], V[:5], batch_size=2, rng=0), ValueError, "k must have as many"),
    (lambda: at.random_batch_attention(Q[:1], K[:1], V[:1], batch_size=1, rng=0), ValueError, "batch_size"),
    (lambda: at.random_batch_attention(Q, K, V, batch_size=2, rng=0, include_self=1), TypeError, "include_self"),
    (lambda: at.random_batch_attention(Q, K, V, batch_size=2, rng=None), TypeError, "rng"),
    (lambda: at.random_batch_sum(Q, K, V, batch_size=1, rng=0), ValueError, "batch_size"),
    (lambda: at.lara(Q, K, V, num_proposals=0, rng=0), ValueError, "num_proposals"),
    (lambda: at.lara(Q, K, V, num_proposals=7, rng=0), ValueError, "num_proposals"),
    (lambda: at.lara(Q, K[:3], V[:3], num_proposals=4, rng=0), ValueError, "num_proposals"),
    (lambda: at.lara(Q, K, V, num_proposals=2, rng=0, samples_per_proposal=0), ValueError, "samples_per_proposal"),
    (lambda: at.lara(Q, K, V, num_proposals=2, rng=0, weights="bh"), ValueError, "weights"),
    (lambda: at.lara(Q, K, V, num_proposals=2, rng=0, mode="eval"), ValueError, "mode"),
    (lambda: at.lara(Q, K, V, num_proposals=2, rng=0, gamma=np.nan), ValueError, "gamma"),
    (lambda: at.lara(Q, K, V, num_proposals=2, rng=0, normalization="none"), ValueError, "normalization"),
    (lambda: at.lara(Q, K, V, num_proposals=2, rng=0, proposal_means=np.zeros((3, 3))), ValueError,
     "proposal_means"),
    (lambda: at.lara(Q, K, V, num_proposals=2, rng=0, mode="deterministic", samples_per_proposal=2), ValueError,
     "samples_per_proposal"),
    (lambda: at.lara(Q, K, V, num_proposals=2, rng=0, mode="deterministic", normalization="exact"), ValueError,
     "normalization"),
    (lambda: at.lara(Q, K, V, num_proposals=2, rng=None), TypeError, "rng"),
    (lambda: at.snis_attention(Q, K, V, np.zeros((4, 2)), np.zeros(4)), ValueError, "w has 2 columns"),
    (lambda: at.snis_attention(Q, K, V, np.zeros((4, 3)), np.zeros(3)), ValueError, "log_proposal"),
    (lambda: at.snis_attention(Q, K, V, np.zeros((4, 3)), np.zeros(4), log_alpha=np.full(4, -np.inf)), ValueError,
     "log_alpha"),
    (lambda: at.snis_attention(Q, K, V, np.zeros((4, 3)), np.zeros(4), log_alpha=np.zeros((5, 4))), ValueError,
     "log_alpha"),
    (lambda: at.snis_attention(Q, K, V, np.zeros((4, 3)), np.zeros(4), log_alpha=np.full(4, np.nan)), ValueError,
     "log_alpha"),
    (lambda: at.snis_weights(np.array([np.nan, 0.0]), np.zeros(2)), ValueError, "log_target"),
    (lambda: at.snis_weights(np.full(2, -np.inf), np.zeros(2)), ValueError, "log_target"),
    (lambda: at.snis_weights(np.zeros(2), np.array([0.0, np.inf])), ValueError, "log_proposal"),
    (lambda: at.draw_features(0, 2, rng=0), ValueError, "num_features"),
    (lambda: at.draw_features(2, 0, rng=0), ValueError, "dim"),
    (lambda: at.target_mixture_sample(Q[0], K, 0, 0), ValueError, "size"),
    (lambda: at.target_mixture_sample(Q[0], K[:, :2], 0, 1), ValueError, "k has 2 columns"),
    (lambda: at.target_mixture_logpdf(np.zeros((2, 2)), Q[0], K), ValueError, "w has 2 columns"),
    (lambda: at.integrand_f(np.zeros((2, 3)), K, V[:4]), ValueError, "v must have one row per key"),
    (lambda: at.positive_features(Q, np.zeros((2, 2))), ValueError, "same dimension"),
    (lambda: at.exact_batch_sum_target(Q[:1], K[:1], V[:1]), ValueError, "at least 2 tokens"),
]


@pytest.mark.parametrize("case", range(len(BAD_ARGS)))
def test_bad_arguments(case):
    call, exc, msg = BAD_ARGS[case]
    with pytest.raises(exc, match=msg):
        call()


# ---------------------------------------------------------------------------
# properties (hypothesis)
# ---------------------------------------------------------------------------
sizes = st.integers(1, 6)
seeds = st.integers(0, 2**32 - 1)
scales = st.floats(0.05, 3.0)


@given(seed=seeds, n=sizes, m=sizes, d=st.integers(1, 4), scale=scales)
def test_softmax_permutation_equivariance(seed, n, m, d, scale):
    q, k, v = make_qkv(seed, n=n, m=m, d=d, dv=2, scale=scale)
    rng = np.random.default_rng(seed + 1)
    pq, pk = rng.permutation(n), rng.permutation(m)
    base = at.softmax_attention(q, k, v)
    assert_allclose(at.softmax_attention(q[pq], k, v), base[pq], rtol=1e-12, atol=1e-14)
    assert_allclose(at.softmax_attention(q, k[pk], v[pk]), base, rtol=1e-12, atol=1e-14)


@given(seed=seeds, n=sizes, m=sizes, d=st.integers(1, 4), scale=scales, s=st.integers(1, 9))
def test_rfa_and_lara_permutation_equivariance_on_fixed_samples(seed, n, m, d, scale, s):
    """RFA and LARA with fixed proposal means draw samples that do not depend on the order of the
    tokens, so on a fixed seed they are equivariant over queries and invariant over key-value pairs.
    (LARA's default means are segment means, which depend on the order by design; RA's per-query
    draws are assigned in query order; RBA's partition is of positions: none of them is exactly
    equivariant for a fixed seed, only in distribution.)"""
    q, k, v = make_qkv(seed, n=n, m=m, d=d, dv=2, scale=scale)
    rng = np.random.default_rng(seed + 1)
    pq, pk = rng.permutation(n), rng.permutation(m)
    base = at.rfa(q, k, v, num_features=s, rng=seed)
    assert_allclose(at.rfa(q[pq], k, v, num_features=s, rng=seed), base[pq], rtol=1e-11, atol=1e-13)
    assert_allclose(at.rfa(q, k[pk], v[pk], num_features=s, rng=seed), base, rtol=1e-11, atol=1e-13)
    c = min(n, m, 3)
    mu = rng.standard_normal((c, d))
    kw = dict(num_proposals=c, rng=seed, proposal_means=mu, samples_per_proposal=2)
    base = at.lara(q, k, v, **kw)
    assert_allclose(at.lara(q[pq], k, v, **kw), base[pq], rtol=1e-11, atol=1e-13)
    assert_allclose(at.lara(q, k[pk], v[pk], **kw), base, rtol=1e-11, atol=1e-13)
    # the RA integrand and target density are symmetric in the key-value pairs
    w = rng.standard_normal((4, d))
    assert_allclose(at.integrand_f(w, k[pk], v[pk]), at.integrand_f(w, k, v), rtol=1e-11, atol=1e-13)
    assert_allclose(at.target_mixture_logpdf(w, q[0], k[pk]), at.target_mixture_logpdf(w, q[0], k), rtol=1e-11,
                    atol=1e-11)


@given(seed=seeds, n=st.integers(2, 12), scale=scales, p=st.integers(2, 12), c=st.floats(-500, 500))
def test_softmax_shift_invariance(seed, n, scale, p, c):
    """Adding c to every score of a query leaves softmax (and RBA) unchanged.

    Realised as q -> q + c u / a with all keys sharing the component a along u, so that
    q_i.k_j -> q_i.k_j + c for every j.
    """
    p = min(p, n)
    q, k, v = make_qkv(seed, n=n, m=n, d=3, dv=2, scale=scale)
    k[:, 0] = 0.5
    q2 = q.copy()
    q2[:, 0] += c / 0.5
    tol = dict(rtol=1e-9, atol=1e-9)  # q.k + c loses the low bits of q.k when |c| is large
    assert_allclose(at.softmax_attention(q2, k, v), at.softmax_attention(q, k, v), **tol)
    assert_allclose(at.random_batch_attention(q2, k, v, batch_size=p, rng=seed),
                    at.random_batch_attention(q, k, v, batch_size=p, rng=seed), **tol)


@given(seed=seeds, n=st.integers(1, 5), m=st.integers(1, 7), c=st.floats(-1e3, 1e3))
def test_log_space_kernels_shift_exactly(seed, n, m, c):
    """The internal kernels: logsumexp(s + c) = logsumexp(s) + c and softmax(s + c) = softmax(s)."""
    rng = np.random.default_rng(seed)
    # dyadic scores and an integer shift: s + c is exact, so max-subtraction makes the kernels
    # invariant bit for bit (with general floats, s + c rounds and only ~1e-13 relative holds)
    s = np.round(50.0 * rng.standard_normal((n, m)) * 1024) / 1024
    c = float(np.round(c))
    assert_array_equal(est._softmax_rows(s + c), est._softmax_rows(s))
    assert_array_equal(at.snis_weights(s + c, np.zeros(m)), at.snis_weights(s, np.zeros(m)))
    assert_allclose(est._logsumexp(s + c, axis=1), est._logsumexp(s, axis=1) + c, rtol=1e-15, atol=1e-12)
    # general floats, general shift
    s2 = 50.0 * rng.standard_normal((n, m))
    assert_allclose(est._softmax_rows(s2 + c), est._softmax_rows(s2), rtol=1e-11, atol=1e-300)
