"""Counter-based random numbers and random batches.

Statistical tests in this file share a family-wise false-alarm rate of
ALPHA_FAMILY = 1e-3, split by Bonferroni over the N_TESTS decisions below;
each has a negative control that the same decision rule must reject.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from itertools import permutations

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from scipy import stats

from particles import _batches, _rng
from particles.backends import cpu, reference

ALPHA_FAMILY = 1e-3
N_TESTS = 4
ALPHA = ALPHA_FAMILY / N_TESTS


@pytest.fixture(scope="module")
def compiled():
    return cpu._shared_namespace()


def test_scalar_and_vectorised_hash_agree_bitwise(compiled):
    keys = _rng.mix64_np(np.arange(1, 200, dtype=np.uint64))
    for k in keys[:50]:
        for c in (0, 1, 7, 2**31, 2**40):
            assert compiled["draw"](np.uint64(k), c) == _rng.draw_np(k, c)
            assert compiled["combine"](np.uint64(k), c) == _rng.combine_np(k, c)
    assert compiled["root_key"](np.uint64(5), 3, 1) == _rng.root_key_np(5, 3, 1)


def test_scalar_and_vectorised_normals_agree(compiled):
    keys = _rng.mix64_np(np.arange(1, 4001, dtype=np.uint64))
    z_np = _rng.normal_np(keys[:, None], np.arange(3)[None, :])
    z_nb = np.array([[compiled["normal"](np.uint64(k), c) for c in range(3)] for k in keys])
    # identical draws; tails and wedges use exp/log, where libm and NumPy may differ in the last ulp
    np.testing.assert_allclose(z_nb, z_np, rtol=1e-14, atol=0)


def test_ziggurat_table_is_closed():
    # equal-area layers: the recurrence must reach the top of the density
    v = _rng.ZIG_X[0] * _rng.ZIG_F[1]
    top = _rng.ZIG_X[255] * (1.0 - _rng.ZIG_F[255])
    assert abs(top - v) < 1e-12
    assert _rng.ZIG_X[1] == _rng.ZIG_R


@pytest.mark.statistical
def test_normals_are_standard_normal_with_negative_control():
    keys = _rng.mix64_np(np.arange(1, 100_001, dtype=np.uint64))
    z = _rng.normal_np(keys[:, None], np.arange(2)[None, :]).ravel()
    assert stats.kstest(z, "norm").pvalue > ALPHA
    # the tail beyond the ziggurat base (|z| > R) carries the right mass
    n_tail = int(np.sum(np.abs(z) > _rng.ZIG_R))
    p_tail = 2 * stats.norm.sf(_rng.ZIG_R)
    assert stats.binomtest(n_tail, z.size, p_tail).pvalue > ALPHA
    # negative control: a 2% scale error must be rejected by the same rule
    assert stats.kstest(1.02 * z, "norm").pvalue < ALPHA


def test_permutations_are_permutations_and_match_numpy_twin():
    for n in (2, 3, 31, 32, 33, 100, 1000):
        numba_perm = cpu.permutations(seed=9, step=4, n=n, replicas=3)
        for r in range(3):
            assert_array_equal(np.sort(numba_perm[r]), np.arange(n))
            assert_array_equal(numba_perm[r], reference.permutation(9, r, 4, n))


def _chi2_uniform(counts):
    expected = counts.sum() / counts.size
    return stats.chisquare(counts, np.full(counts.size, expected)).pvalue


@pytest.mark.statistical
def test_permutations_are_uniform_with_negative_control():
    n, draws = 4, 24_000
    index = {p: k for k, p in enumerate(permutations(range(n)))}
    perms = cpu.permutations(seed=11, step=0, n=n, replicas=draws)
    counts = np.bincount([index[tuple(p)] for p in perms], minlength=24)
    assert _chi2_uniform(counts) > ALPHA
    # negative control: the classic wrong shuffle (swap with any position) is not uniform
    rng = np.random.default_rng(1)
    bad = np.zeros(24, dtype=np.int64)
    for _ in range(draws):
        p = list(range(n))
        for k in range(n):
            j = rng.integers(n)
            p[k], p[j] = p[j], p[k]
        bad[index[tuple(p)]] += 1
    assert _chi2_uniform(bad) < ALPHA


@pytest.mark.statistical
def test_batch_mates_are_uniform_when_p_does_not_divide_n():
    # n = 11, p = 3: batches of sizes 4, 4, 3; P(j in C(0)) must be the same for all j != 0
    n, p, draws = 11, 3, 20_000
    perms = cpu.permutations(seed=3, step=7, n=n, replicas=draws)
    bop = _batches.batch_of_position(n, p)
    pos = np.argsort(perms, axis=1)
    same = bop[pos[:, 1:]] == bop[pos[:, [0]]]
    counts = same.sum(axis=0)
    assert _chi2_uniform(counts) > ALPHA


def test_batch_sizes_are_p_or_p_plus_one():
    for n in range(2, 60):
        for p in range(2, n + 1):
            sizes = _batches.batch_sizes(n, p)
            assert sizes.sum() == n
            assert sizes.max() - sizes.min() <= 1
            if n % p <= n // p:
                assert set(sizes.tolist()) <= {p, p + 1}


def test_results_do_not_depend_on_thread_count(tmp_path):
    script = textwrap.dedent(
        """
        import sys, numpy as np, particles
        s = particles.systems.confined_tanh()
        x0 = np.random.default_rng(0).standard_normal((3, 200, 2))
        out = []
        for m in ("full", "rbm1", "rbmr"):
            tr = particles.solve(s, x0, t_end=0.2, dt=0.01, method=m,
                                 batch_size=None if m == "full" else 3, seed=4)
            out.append(tr.x)
        a = particles.systems.attention(2.0, "SA")
        y0 = np.random.default_rng(1).standard_normal((150, 4))
        y0 /= np.linalg.norm(y0, axis=1, keepdims=True)
        out.append(particles.solve(a, y0, t_end=0.1, dt=0.05, method="rbm1", batch_size=4, seed=2).x)
        np.save(sys.argv[1], np.concatenate([o.ravel() for o in out]))
        """
    )
    blobs = []
    for threads in ("1", "2"):
        path = tmp_path / f"run{threads}.npy"
        env = {**__import__("os").environ, "NUMBA_NUM_THREADS": threads}
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env, timeout=600)
        blobs.append(path.read_bytes())
    assert blobs[0] == blobs[1]
