"""The ``cuda`` backend: the numbers of the ``cpu`` backend, computed by numba-cuda kernels.

By default these tests run under the CUDA simulator (``tests/conftest.py`` sets
``NUMBA_ENABLE_CUDASIM=1`` unless ``PARTICLES_CUDA_DEVICE=1``), at small sizes:
the simulator runs every GPU thread as a Python thread. The block size is
patched to 4 threads so that every kernel runs on several blocks with a ragged
last block. Tests marked ``cuda`` need a real GPU and are skipped without one.
The rest of the suite runs the ``cuda`` backend too, through the ``backend``
fixture.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import particles
from attention_theory import estimators
from particles import systems
from particles.backends import reference

# the user-defined kernel of test_backends: the same functions, so the cpu loops compiled for them are shared
from tests._inputs import _drift_cubic, _kern_sin

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
needs_numba_cuda = pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed (extra 'cuda')")

# cuda vs cpu: the same sums in the same order and the same counter-based random numbers, so the only
# differences are roundings: under the simulator none at all (Python floats, the same libm: checked bitwise
# below); on a GPU, fused multiply-adds and libdevice's exp/sin, an ulp here and there, which over these few
# steps of contracting dynamics stays orders of magnitude below 1e-12.
RTOL = 1e-12
ATOL = 1e-13
BLOCK = 4  # threads per block in these tests: R * N = 9, 18, ... gives several blocks and a ragged last one


def _backend():
    from particles.backends import cuda

    return cuda


def _real_device():
    if not HAVE_NUMBA_CUDA:
        return False
    cb = _backend()
    try:
        cuda = cb.require()
    except (ImportError, RuntimeError):
        return False
    return not cb.simulator_enabled() and cuda.is_available()


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    if HAVE_NUMBA_CUDA:
        monkeypatch.setattr(_backend(), "BLOCK_SIZE", BLOCK)
    # the cuda kernels mirror the cpu backend's general loops (_loops), sum for sum; its fused kernel for small
    # attention token sets (_ensemble, tested against the reference in test_ensemble_kernel) sums in another
    # order, so the comparisons here take the general path
    from particles.backends import cpu

    monkeypatch.setattr(cpu, "ENSEMBLE_MAX_N", 0)


def _simulated():
    return _backend().simulator_enabled()


def _assert_same(a, b):
    assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    if _simulated():
        assert_array_equal(a, b)  # the simulator executes the very same arithmetic


def _states(system, shape, seed):
    z = np.random.default_rng(seed).standard_normal(shape)
    return z / np.linalg.norm(z, axis=-1, keepdims=True) if system.sphere else z


SYSTEMS = {
    "tanh": systems.confined_tanh(r=1.0, L=0.3, sigma=0.7),
    "dyson": systems.dyson(eps=1e-3),
    "SA": systems.attention(1.5, "SA"),
    "USA": systems.attention(1.0, "USA", Q=np.diag([1.0, 0.5, 2.0]), V=-np.eye(3)),
    "noisy_SA_flat": systems.attention(0.5, "SA", sphere=False, sigma=0.3,
                                       K=np.array([[1.0, 0.2, 0], [0, 1, 0], [0.1, 0, 1]])),
    "custom": systems.custom(_kern_sin, _drift_cubic, sigma=0.2, params=[0.8, 0.1]),
}


def _dim(system):
    return 1 if system.dim == 1 else 3


# --- trajectories ----------------------------------------------------------------------------------------------
@needs_numba_cuda
@pytest.mark.parametrize("name", list(SYSTEMS))
@pytest.mark.parametrize("method", ["full", "rbm1", "rbmr"])
def test_cuda_matches_cpu(name, method):
    system = SYSTEMS[name]
    x0 = _states(system, (2, 9, _dim(system)), seed=len(name))
    assert (2 * 9) % BLOCK and 2 * 9 > 2 * BLOCK  # several blocks, the last one ragged
    kw = dict(t_end=0.1, dt=0.02, method=method, batch_size=None if method == "full" else 3, seed=7)
    a = particles.solve(system, x0, backend="cuda", **kw)
    b = particles.solve(system, x0, backend="cpu", **kw)
    assert a.x.shape == b.x.shape == (6, 2, 9, _dim(system))
    assert a.metadata["backend"] == "cuda"
    _assert_same(a.x, b.x)
    assert not np.array_equal(a.x[-1], a.x[0])


@needs_numba_cuda
@pytest.mark.parametrize("scheme", ["heun", "rk4", "ambient_euler"])
@pytest.mark.parametrize("method", ["full", "rbm1", "rbmr"])
def test_cuda_matches_cpu_deterministic_schemes(scheme, method):
    system = SYSTEMS["USA"]
    x0 = _states(system, (10, 3), seed=1)
    # rbmr with p = 6 > BLOCK: the block's threads loop over the members
    kw = dict(t_end=0.1, dt=0.05, method=method, batch_size=None if method == "full" else 6, seed=2, scheme=scheme)
    _assert_same(particles.solve(system, x0, backend="cuda", **kw).x,
                 particles.solve(system, x0, backend="cpu", **kw).x)


@needs_numba_cuda
def test_cuda_reshuffle_interval_and_noise_grid():
    system = SYSTEMS["tanh"]
    x0 = _states(system, (11, 2), seed=3)
    kw = dict(t_end=0.12, dt=0.04, noise_dt=0.02, method="rbm1", batch_size=4, tau=0.08, seed=5, save_every=2)
    _assert_same(particles.solve(system, x0, backend="cuda", **kw).x, particles.solve(system, x0, **kw).x)


@needs_numba_cuda
@pytest.mark.parametrize("name", ["tanh", "SA", "USA", "custom"])
def test_cuda_drift_matches_cpu(name):
    system = SYSTEMS[name]
    x = _states(system, (3, 10, 3), seed=5)
    for method, p in (("full", None), ("rbm1", 3), ("rbm1", 4)):
        kw = dict(method=method, batch_size=p, seed=1, step=3)
        _assert_same(particles.drift(system, x, backend="cuda", **kw), particles.drift(system, x, backend="cpu", **kw))


def test_cuda_agrees_across_block_sizes(monkeypatch):
    pytest.importorskip("numba_cuda")
    cb = _backend()
    system = SYSTEMS["noisy_SA_flat"]
    x0 = _states(system, (13, 3), seed=2)
    kw = dict(t_end=0.04, dt=0.02, method="rbm1", batch_size=3, seed=9, backend="cuda")
    ref = particles.solve(system, x0, **kw).x
    for bs in (1, 7, 32):
        monkeypatch.setattr(cb, "BLOCK_SIZE", bs)
        assert_array_equal(particles.solve(system, x0, **kw).x, ref)  # the thread layout changes no sum


# --- the permutation -------------------------------------------------------------------------------------------
@needs_numba_cuda
@pytest.mark.parametrize("n", [2, 31, 64, 97, 200])
def test_device_permutation_is_the_cpu_one(n, monkeypatch):
    cb = _backend()
    # a scan chunk of 2 makes the multi-level scan run at these small sizes (n = 200: 6 buckets, 3 levels)
    monkeypatch.setattr(cb, "SCAN_CHUNK", 2)
    for seed, step in ((5, 0), (5, 2), (2**64 - 1, 7)):
        dev = cb.permutations(seed, step, n, replicas=2)
        assert dev.dtype == np.int64 and dev.shape == (2, n)
        for r in range(2):
            assert_array_equal(dev[r], reference.permutation(seed, r, step, n))
        assert_array_equal(dev[0], particles.partition(n, 2, seed=seed, step=step).perm)
    if n > 2:
        assert not np.array_equal(cb.permutations(5, 1, n)[0], cb.permutations(5, 2, n)[0])


@needs_numba_cuda
def test_bucket_pass_restores_the_stable_order():
    """The atomic scatter may leave a bucket in any order (the simulator's threads happen to keep it
    sorted, a GPU's do not): the bucket pass must sort it back before shuffling."""
    from particles import _batches, _rng

    cb = _backend()
    n, seed, m = 97, 3, 2
    key = _rng.combine_np(_rng.root_key_np(seed, 0, _rng.STREAM_PERM), m)
    nb = _batches.num_buckets(n)
    bucket = (_rng.to_unit_np(_rng.draw_np(key, np.arange(n))) * nb).astype(np.int64)
    bstart = np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=nb))]).astype(np.int32)
    reversed_buckets = np.concatenate([np.flatnonzero(bucket == b)[::-1] for b in range(nb)]).astype(np.int32)
    kern = cb._perm_kernels()
    keys = cb.empty(1, np.uint64)
    cb.launch(kern.k_perm_keys, 1, np.uint64(seed), np.int64(m), keys)
    cursor = cb.to_device(np.ones((1, nb), dtype=np.int32))
    idx = cb.to_device(reversed_buckets[None])
    cb.launch(kern.k_perm_buckets, nb, keys, nb, cb.to_device(bstart[None]), cursor, idx)
    out = cb.to_host(idx, np.empty((1, n), dtype=np.int32))[0]
    assert_array_equal(out, reference.permutation(seed, 0, m, n))
    assert not cb.to_host(cursor, np.empty((1, nb), dtype=np.int32)).any()  # reset for the next histogram


@needs_numba_cuda
def test_device_permutation_reuses_its_scratch():
    cb = _backend()
    n = 70
    perms = cb.Permutations(2, n)
    idx = cb.empty((2, n), np.int32)
    out = np.empty((2, n), dtype=np.int32)
    for m in (0, 1, 0, 3):  # the bucket counts must be back to zero after each build
        cb.to_host(perms.build(11, m, idx), out)
        assert_array_equal(out[1], reference.permutation(11, 1, m, n))


# --- transfers ---------------------------------------------------------------------------------------------------
@needs_numba_cuda
@pytest.mark.parametrize("method", ["full", "rbm1", "rbmr"])
def test_only_snapshots_come_back(method, monkeypatch):
    cb = _backend()
    system = SYSTEMS["tanh"]
    x0 = _states(system, (2, 9, 2), seed=1)
    counts = {}
    for nsteps in (3, 7):
        monkeypatch.setattr(cb, "TRANSFERS", type(cb.TRANSFERS)())
        tr = particles.solve(system, x0, t_end=0.01 * nsteps, dt=0.01, save_every=3, method=method,
                             batch_size=None if method == "full" else 3, seed=1, backend="cuda")
        saved = tr.x.shape[0] - 1  # the initial state is the caller's: never copied back
        assert cb.TRANSFERS["to_host"] == saved
        assert cb.TRANSFERS["bytes_to_host"] == saved * x0.nbytes
        counts[nsteps] = cb.TRANSFERS["to_device"]
    assert counts[3] == counts[7]  # uploads happen once, whatever the number of steps
    assert counts[3] <= 5  # state, parameters, two Butcher arrays; nothing else


@needs_numba_cuda
def test_launch_refuses_host_arrays():
    cb = _backend()
    kern = cb._perm_kernels()
    with pytest.raises(TypeError, match="host array"):
        cb.launch(kern.k_identity, 4, np.zeros((1, 4), dtype=np.int32))


# --- attention estimators ------------------------------------------------------------------------------------------
def _qkv(n, d=4, dv=3, seed=0):
    g = np.random.default_rng(seed)
    return 0.5 * g.standard_normal((n, d)), 0.5 * g.standard_normal((n, d)), g.standard_normal((n, dv))


@needs_numba_cuda
@pytest.mark.parametrize("include_self", [True, False])
def test_random_batch_attention_cuda_matches_cpu(include_self):
    q, k, v = _qkv(23)
    for p, rng in ((5, 3), (4, 2**40), (23, 0)):
        kw = dict(batch_size=p, rng=rng, include_self=include_self)
        _assert_same(estimators.random_batch_attention(q, k, v, backend="cuda", **kw),
                     estimators.random_batch_attention(q, k, v, **kw))
    # a Generator is consumed the same way
    a = estimators.random_batch_attention(q, k, v, batch_size=5, rng=np.random.default_rng(4), backend="cuda")
    b = estimators.random_batch_attention(q, k, v, batch_size=5, rng=np.random.default_rng(4))
    _assert_same(a, b)


@needs_numba_cuda
def test_softmax_attention_cuda_matches_cpu():
    q, k, v = _qkv(13)
    kk, vv = 3.0 * k[:7], v[:7]  # M != N, larger scores
    # BLAS on the CPU sums in another order: agreement to rounding only
    assert_allclose(estimators.softmax_attention(q, kk, vv, backend="cuda"), estimators.softmax_attention(q, kk, vv),
                    rtol=1e-12, atol=1e-14)


def test_estimators_reject_unknown_backends():
    q, k, v = _qkv(6)
    with pytest.raises(ValueError, match=r"^backend must be one of 'cpu', 'cuda'"):
        estimators.random_batch_attention(q, k, v, batch_size=2, rng=0, backend="gpu")
    with pytest.raises(ValueError, match=r"^backend must be one of 'cpu', 'cuda'"):
        estimators.softmax_attention(q, k, v, backend="reference")


# --- unavailable numba-cuda / device -------------------------------------------------------------------------------
def _fresh_backend(monkeypatch):
    from particles.backends import cuda

    monkeypatch.setattr(cuda, "_state", {})
    return cuda


def test_missing_numba_cuda_says_how_to_install(monkeypatch):
    _fresh_backend(monkeypatch)
    monkeypatch.setitem(sys.modules, "numba_cuda", None)  # makes `import numba_cuda` fail
    x0 = np.zeros((4, 2))
    with pytest.raises(ImportError, match=r"numba-cuda.*pip install 'particle-attention\[cuda\]'"):
        particles.solve(systems.confined_tanh(), x0, t_end=0.1, dt=0.1, backend="cuda")
    with pytest.raises(ImportError, match="numba-cuda"):
        particles.drift(systems.confined_tanh(), x0, backend="cuda")
    q, k, v = _qkv(6)
    with pytest.raises(ImportError, match="numba-cuda"):
        estimators.random_batch_attention(q, k, v, batch_size=2, rng=0, backend="cuda")
    with pytest.raises(ImportError, match="numba-cuda"):
        estimators.softmax_attention(q, k, v, backend="cuda")


@needs_numba_cuda
def test_no_device_without_simulator_says_how_to_enable_it(monkeypatch):
    cb = _fresh_backend(monkeypatch)
    from numba import cuda

    monkeypatch.setattr(cb, "simulator_enabled", lambda: False)
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"no usable CUDA device.*NUMBA_ENABLE_CUDASIM=1.*before Python starts"):
        particles.solve(systems.confined_tanh(), np.zeros((4, 2)), t_end=0.1, dt=0.1, backend="cuda")


@needs_numba_cuda
def test_no_device_error_end_to_end():
    """A fresh interpreter with the simulator off: on this machine (no GPU) the error, not a crash."""
    code = ("import numpy as np, particles\n"
            "from numba import cuda\n"
            "if cuda.is_available(): print('HAS-DEVICE'); raise SystemExit\n"
            "particles.solve(particles.systems.confined_tanh(), np.zeros((4, 2)), t_end=0.1, dt=0.1, backend='cuda')\n")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    if "HAS-DEVICE" in out.stdout:
        pytest.skip("a CUDA device is available here")
    assert out.returncode != 0
    assert "RuntimeError: backend='cuda' found no usable CUDA device" in out.stderr
    assert "NUMBA_ENABLE_CUDASIM=1" in out.stderr


def test_importing_the_backend_imports_no_numba_cuda():
    code = "import sys, particles.backends.cuda, attention_theory; print('numba.cuda' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


@needs_numba_cuda
def test_simulator_block_size_default(monkeypatch):
    cb = _backend()
    monkeypatch.setattr(cb, "BLOCK_SIZE", None)
    assert cb.block_size() == (cb.SIMULATOR_BLOCK if cb.simulator_enabled() else cb.DEVICE_BLOCK)


# --- on a real GPU ---------------------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not _real_device(), reason="needs a CUDA device (run with PARTICLES_CUDA_DEVICE=1 on a GPU)")
@pytest.mark.parametrize("method", ["full", "rbm1", "rbmr"])
def test_device_matches_cpu_at_larger_sizes(method, monkeypatch):
    cb = _backend()
    monkeypatch.setattr(cb, "BLOCK_SIZE", None)  # the production block size, grids of many blocks
    system = systems.confined_tanh(r=1.0, L=0.3, sigma=1.0)
    x0 = np.random.default_rng(0).standard_normal((2, 3001, 3))
    kw = dict(t_end=0.05, dt=0.005, method=method, batch_size=None if method == "full" else 7, seed=3)
    a = particles.solve(system, x0, backend="cuda", **kw)
    b = particles.solve(system, x0, backend="cpu", **kw)
    assert_allclose(a.x, b.x, rtol=1e-11, atol=1e-12)  # FMA and libdevice roundings over 10 steps


@pytest.mark.cuda
@pytest.mark.skipif(not _real_device(), reason="needs a CUDA device (run with PARTICLES_CUDA_DEVICE=1 on a GPU)")
def test_device_permutation_at_scale(monkeypatch):
    cb = _backend()
    monkeypatch.setattr(cb, "BLOCK_SIZE", None)
    n = 100_003  # 3125 buckets: a three-level scan with the production chunk
    from particles.backends import cpu

    assert_array_equal(cb.permutations(8, 5, n, replicas=2), cpu.permutations(8, 5, n, replicas=2))


@pytest.mark.cuda
@pytest.mark.skipif(not _real_device(), reason="needs a CUDA device (run with PARTICLES_CUDA_DEVICE=1 on a GPU)")
def test_device_attention_estimators_match_cpu(monkeypatch):
    monkeypatch.setattr(_backend(), "BLOCK_SIZE", None)
    q, k, v = _qkv(5003, d=16, dv=8, seed=3)
    kw = dict(batch_size=32, rng=9)
    assert_allclose(estimators.random_batch_attention(q, k, v, backend="cuda", **kw),
                    estimators.random_batch_attention(q, k, v, **kw), rtol=1e-12, atol=1e-14)
    assert_allclose(estimators.softmax_attention(q[:700], k, v, backend="cuda"),
                    estimators.softmax_attention(q[:700], k, v), rtol=1e-11, atol=1e-14)
