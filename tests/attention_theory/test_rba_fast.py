"""The BLAS path of random batch attention and the lone-token rule of ``attention_theory._rba``.

Every expected value is a plain-NumPy oracle written here: batch softmax attention (or the batch sum of lemma
T3) over the batches ``perm[bounds[b]:bounds[b + 1]]``, a batch of one token widened to all N tokens.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import particles
from attention_theory import _rba

RTOL = 1e-12
ATOL = 1e-14


def _qkv(n, d, dv, seed, scale=1.0):
    g = np.random.default_rng(seed)
    s = scale * d**-0.25
    return s * g.standard_normal((n, d)), s * g.standard_normal((n, d)), g.standard_normal((n, dv))


def oracle(q, k, v, perm, bounds, include_self, normalize):
    n = q.shape[0]
    out = np.full((n, v.shape[1]), np.nan)
    for b in range(len(bounds) - 1):
        members = np.asarray(perm[bounds[b]:bounds[b + 1]])
        cols = np.arange(n) if members.size == 1 else members  # a lone token attends to all N
        for i in members:
            s = k[cols] @ q[i]
            keep = np.ones(cols.size, dtype=bool) if include_self else cols != i
            s, vals = s[keep], v[cols][keep]
            if normalize:
                w = np.exp(s - s.max())
                out[i] = w @ vals / w.sum()
            else:
                out[i] = np.exp(s) @ vals / (cols.size - 1)
    return out


def _partition(n, p, remainder, seed=3):
    part = particles.partition(n, p, seed=seed, step=0, remainder=remainder)
    return np.asarray(part.perm, dtype=np.int64), np.asarray(part.bounds, dtype=np.int64)


CASES = [  # (N, p, d, dv): tiny, uneven, p = N, lone (pad with N mod p == 1), moderate, chunked rows
    (2, 2, 3, 2),
    (7, 2, 3, 2),
    (13, 13, 3, 2),
    (17, 4, 5, 3),
    (33, 8, 4, 4),
    (97, 6, 5, 3),
    (200, 100, 64, 64),
    (301, 300, 64, 8),
    (1025, 64, 16, 16),
]


@pytest.mark.parametrize("remainder", ["spread", "pad"])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("n,p,d,dv", CASES)
def test_blas_path_matches_oracle(n, p, d, dv, include_self, remainder):
    q, k, v = _qkv(n, d, dv, seed=n + p)
    perm, bounds = _partition(n, p, remainder)
    want = oracle(q, k, v, perm, bounds, include_self, True)
    for kernel in ("blas", "auto", "loops"):
        got = _rba.run(q, k, v, perm, bounds, include_self, True, kernel=kernel)
        assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"kernel={kernel}")


def test_chunked_rows_cover_the_batch():
    # 300 tokens, d = 64: chunks of 32 query rows with a ragged last one; 100: three even chunks
    assert _rba.chunk_rows(300, 64, 8) == 32
    assert _rba.chunk_rows(100, 64, 64) == 34
    assert _rba.chunk_rows(64, 64, 64) == 64  # one product per batch at the benchmark's sizes
    assert _rba.chunk_rows(5, 3, 2) == 5


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("kernel", ["blas", "loops"])
def test_lone_token_gets_exact_attention(include_self, kernel):
    n, p = 21, 4  # pad: batches of 4, 4, 4, 4, 4 and one lone token
    q, k, v = _qkv(n, 3, 2, seed=5, scale=1.5)
    perm, bounds = _partition(n, p, "pad")
    assert np.diff(bounds)[-1] == 1
    lone = perm[-1]
    got = _rba.run(q, k, v, perm, bounds, include_self, True, kernel=kernel)
    s = q[lone] @ k.T
    if not include_self:
        s[lone] = -np.inf
    w = np.exp(s - s.max())
    assert_allclose(got[lone], w @ v / w.sum(), rtol=RTOL, atol=ATOL)
    assert_allclose(got, oracle(q, k, v, perm, bounds, include_self, True), rtol=RTOL, atol=ATOL)


def test_lone_token_batch_sum_is_the_exact_target():
    n = 9
    q, k, v = _qkv(n, 3, 2, seed=6)
    perm, bounds = _partition(n, 4, "pad")
    got = _rba.run(q, k, v, perm, bounds, False, False)
    lone = perm[-1]
    s = np.exp(q[lone] @ k.T)
    s[lone] = 0.0
    assert_allclose(got[lone], s @ v / (n - 1), rtol=RTOL)
    assert_allclose(got, oracle(q, k, v, perm, bounds, False, False), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("n,p", [(5, 2), (7, 3), (5, 4)])
def test_batch_sum_with_lone_token_unbiased_over_all_permutations(n, p):
    """Lemma T3 under "pad" with N mod p == 1: the mean over all N! permutations is the exact target."""
    q, k, v = _qkv(n, 3, 2, seed=10 + n, scale=0.8)
    bounds = np.asarray(particles.batching.batch_bounds(n, p, remainder="pad"), dtype=np.int64)
    assert np.diff(bounds)[-1] == 1
    total = np.zeros((n, v.shape[1]))
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        total += _rba.run(q, k, v, np.array(perm, dtype=np.int64), bounds, False, False)
    s = np.exp(q @ k.T)
    np.fill_diagonal(s, 0.0)
    assert_allclose(total / len(perms), s @ v / (n - 1), rtol=1e-12)


def test_driver_and_grouping_do_not_change_the_bits():
    q, k, v = _qkv(700, 16, 8, seed=2)
    for remainder in ("spread", "pad"):
        perm, bounds = _partition(700, 9, remainder)
        for include_self in (True, False):
            ref = _rba.run(q, k, v, perm, bounds, include_self, True, driver="serial", kernel="blas")
            for ngroups in (1, 3, 16):
                out = _rba.run(q, k, v, perm, bounds, include_self, True, driver="parallel", ngroups=ngroups,
                               kernel="blas")
                assert_array_equal(out, ref)


def test_threads_do_not_change_the_bits(tmp_path):
    """Numba threads 1 vs 2 and BLAS threads 1 vs 2, in a fresh process allowed two threads."""
    script = textwrap.dedent(
        """
        import sys
        import numba
        import numpy as np
        from threadpoolctl import threadpool_limits
        import attention_theory as at
        import particles
        from attention_theory import _rba

        g = np.random.default_rng(0)
        outs = []
        for n, p, d in ((4096, 64, 64), (3001, 100, 32), (2049, 16, 8)):
            q, k, v = 0.4 * g.standard_normal((n, d)), 0.4 * g.standard_normal((n, d)), g.standard_normal((n, d))
            part = particles.partition(n, p, seed=1, step=0, remainder="pad")
            for threads in (1, 2):
                numba.set_num_threads(threads)
                for blas in (1, 2):
                    with threadpool_limits(limits=blas, user_api="blas"):
                        outs.append((n, at.random_batch_attention(q, k, v, batch_size=p, rng=1),
                                     _rba.run(q, k, v, part.perm, part.bounds, False, True)))
        for n, a, b in outs:
            ref = next(o for o in outs if o[0] == n)
            assert np.array_equal(a, ref[1]) and np.array_equal(b, ref[2]), n
        print("same bits")
        """
    )
    env = {**__import__("os").environ, "NUMBA_NUM_THREADS": "2"}
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "same bits" in res.stdout


def test_bad_kernel_and_driver():
    q, k, v = _qkv(4, 2, 2, seed=0)
    perm, bounds = _partition(4, 2, "spread")
    with pytest.raises(ValueError, match="kernel"):
        _rba.run(q, k, v, perm, bounds, True, True, kernel="gpu")
    with pytest.raises(ValueError, match="driver"):
        _rba.run(q, k, v, perm, bounds, True, True, driver="threads")
