"""RBM-1 with ``remainder="pad"`` in the engine: the batches of the pad-and-crop, on every backend.

Under ``"pad"`` the permutation is cut into ceil(N/p) batches of p, the last one
holding N mod p particles; when that is a single particle (the lone one) its batch
is widened to all N, so it feels the exact force. The forces are checked against
NumPy oracles written from the definitions (``tests/oracles.py``) for the
partition that ``particles.partition`` returns, the backends against each other,
and ``"pad"`` against ``"spread"`` where they must coincide (p | N, p = N).
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import particles
from particles import backends, systems
from tests._inputs import _drift_cubic, _kern_sin
from tests.oracles import attention_batch_force, cut_batches, kernel_batch_force, member_batches, tangent

RTOL = 1e-12  # agreement "to rounding": summation order may differ between backends

Q3 = np.diag([1.0, 0.5, 2.0])
K3 = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.1, 0.0, 1.0]])
V3 = -np.eye(3)
# the attention systems with their matrices, for the oracle: (system, beta, kind, Q, K, V)
ATTENTION = {
    "SA": (systems.attention(1.5, "SA", K=K3, sigma=0.2), 1.5, "SA", np.eye(3), K3, np.eye(3)),
    "USA": (systems.attention(1.0, "USA", Q=Q3, V=V3, sigma=0.1), 1.0, "USA", Q3, np.eye(3), V3),
    "SA_identity": (systems.attention(2.0, "SA"), 2.0, "SA", np.eye(3), np.eye(3), np.eye(3)),
}
SYSTEMS = {"tanh": systems.confined_tanh(r=1.0, L=0.4, sigma=0.6), **{k: v[0] for k, v in ATTENTION.items()}}
# (N, p): p | N, N mod p == 1 (a lone particle), N mod p == 2
SIZES = [(9, 3), (10, 3), (11, 3)]


def _states(system, shape, seed):
    z = np.random.default_rng(seed).standard_normal(shape)
    return z / np.linalg.norm(z, axis=-1, keepdims=True) if system.sphere else z


def _dim(name):
    return 2 if name == "tanh" else 3


def _oracle_drift(name, x, perm, p, remainder):
    """The drift of the RBM-1 partition ``perm`` cut by ``remainder``, from the oracles."""
    system = SYSTEMS[name]
    n = x.shape[0]
    of = member_batches(cut_batches(perm, p, remainder), n)
    if name == "tanh":
        return kernel_batch_force(system, x, of)
    _, beta, kind, Q, K, V = ATTENTION[name]
    return tangent(x, attention_batch_force(x, of, beta, kind, Q, K, V, system.coupling_for(n)))


# --- 1. the forces of one partition ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SYSTEMS))
@pytest.mark.parametrize(("n", "p"), SIZES + [(7, 2), (8, 5)])
@pytest.mark.parametrize("remainder", ["pad", "spread"])
def test_drift_is_the_oracle_force_of_the_partition(name, n, p, remainder, backend):
    system = SYSTEMS[name]
    R, seed, step = 2, 5, 3
    x = _states(system, (R, n, _dim(name)), seed=n + p)
    got = particles.drift(system, x, method="rbm1", batch_size=p, seed=seed, step=step, backend=backend,
                          remainder=remainder)
    for r in range(R):
        part = particles.partition(n, p, seed=seed, step=step, replica=r, remainder=remainder)
        assert_array_equal(part.bounds, np.concatenate([[0], np.cumsum([len(b) for b in
                                                                        cut_batches(part.perm, p, remainder)])]))
        assert_allclose(got[r], _oracle_drift(name, x[r], part.perm, p, remainder), rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_the_lone_particle_feels_the_full_force(name, backend):
    system = SYSTEMS[name]
    n, p, seed, step = 10, 3, 2, 1
    x = _states(system, (n, _dim(name)), seed=1)
    part = particles.partition(n, p, seed=seed, step=step, remainder="pad")
    assert part.lone >= 0
    pad = particles.drift(system, x, method="rbm1", batch_size=p, seed=seed, step=step, backend=backend,
                          remainder="pad")
    full = particles.drift(system, x, method="full", backend=backend)
    assert_allclose(pad[part.lone], full[part.lone], rtol=RTOL, atol=RTOL)
    # the others keep their batch of p: not the full force
    others = np.setdiff1d(np.arange(n), [part.lone])
    assert np.abs(pad[others] - full[others]).max() > 1e-3


# --- 2. the backends agree -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tanh", "SA", "USA"])
@pytest.mark.parametrize(("n", "p"), SIZES)
def test_backends_agree_under_pad(name, n, p, backend):
    if backend == "reference":
        pytest.skip("the reference is what the others are compared with")
    system = SYSTEMS[name]
    x0 = _states(system, (2, n, _dim(name)), seed=n)
    # a reshuffle every 2 steps and a save every 2 of 5 steps (the last save is the final state)
    kw = dict(t_end=0.1, dt=0.02, method="rbm1", batch_size=p, seed=7, tau=0.04, save_every=2, remainder="pad")
    a = particles.solve(system, x0, backend=backend, **kw)
    b = particles.solve(system, x0, backend="reference", **kw)
    assert a.x.shape == b.x.shape == (4, 2, n, _dim(name))
    assert a.metadata["remainder"] == "pad"
    assert_allclose(a.x, b.x, rtol=RTOL, atol=RTOL)
    if n % p:  # the batches differ from spread's, and so does the trajectory
        spread = particles.solve(system, x0, backend=backend, **{**kw, "remainder": "spread"})
        assert np.abs(spread.x[-1] - a.x[-1]).max() > 1e-4


@pytest.mark.parametrize("scheme", ["heun", "rk4"])
@pytest.mark.parametrize("name", ["tanh", "USA"])
def test_backends_agree_under_pad_with_runge_kutta_stages(scheme, name, backend):
    # the lone particle's widened batch at every stage reads the stage states of all N
    if backend == "reference":
        pytest.skip("the reference is what the others are compared with")
    system = systems.confined_tanh(r=1.0, L=0.4, sigma=0.0) if name == "tanh" else systems.attention(
        1.0, "USA", Q=Q3, V=V3)
    x0 = _states(system, (10, _dim(name)), seed=4)
    kw = dict(t_end=0.1, dt=0.05, method="rbm1", batch_size=3, seed=2, scheme=scheme, remainder="pad")
    assert_allclose(particles.solve(system, x0, backend=backend, **kw).x,
                    particles.solve(system, x0, backend="reference", **kw).x, rtol=RTOL, atol=RTOL)


def test_a_user_defined_system_under_pad(backend):
    # the loops compiled for a user's kernel (zeroed scratch) give the lone particle its widened batch too
    if backend == "reference":
        pytest.skip("the reference is what the others are compared with")
    system = systems.custom(_kern_sin, _drift_cubic, sigma=0.2, params=[0.8, 0.1])
    x0 = np.random.default_rng(6).standard_normal((2, 10, 2))
    kw = dict(t_end=0.06, dt=0.02, method="rbm1", batch_size=3, seed=4, remainder="pad")
    assert_allclose(particles.solve(system, x0, backend=backend, **kw).x,
                    particles.solve(system, x0, backend="reference", **kw).x, rtol=RTOL, atol=RTOL)
    dkw = dict(method="rbm1", batch_size=3, seed=4, step=1, remainder="pad")
    assert_allclose(particles.drift(system, x0, backend=backend, **dkw),
                    particles.drift(system, x0, backend="reference", **dkw), rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize(("R", "n", "p"), [(1, 100, 7), (1, 300, 20), (1, 50, 20), (3, 60, 7), (1, 40, 17),
                                           (2, 43, 7), (1, 301, 20), (1, 41, 20), (1, 21, 20)])
@pytest.mark.parametrize("name", ["tanh", "dyson"])
def test_the_cpu_kernel_fast_paths_under_pad(R, n, p, name):
    # the built-in kernels in flat space: the chunked step (small and large batches) and the phased step (few
    # batches), without and with a lone particle (43 = 6 * 7 + 1, 301, 41, 21), which they step on their own
    system = systems.confined_tanh(r=1.0, L=0.4, sigma=0.6) if name == "tanh" else systems.dyson(eps=1e-3)
    x0 = np.random.default_rng(n).standard_normal((R, n, 1 if name == "dyson" else 2))
    kw = dict(t_end=0.06, dt=0.02, method="rbm1", batch_size=p, seed=3, remainder="pad", tau=0.04)
    assert_allclose(particles.solve(system, x0, backend="cpu", **kw).x,
                    particles.solve(system, x0, backend="reference", **kw).x, rtol=RTOL, atol=RTOL)


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed")
@pytest.mark.parametrize(("R", "n", "p"), [(2, 43, 7), (1, 41, 20), (1, 21, 20), (2, 12, 5)])
def test_the_cpu_kernel_fast_paths_under_pad_bitwise(R, n, p):
    # the cuda kernels do the per-particle arithmetic of the general loops, which the fast path reproduces bit
    # for bit; under the simulator (Python floats, the same libm) the results are the same bits
    from particles.backends import cuda

    cuda.require()
    if not cuda.simulator_enabled():
        pytest.skip("on a GPU the results agree to rounding only (fused multiply-adds)")
    system = systems.confined_tanh(r=1.0, L=0.4, sigma=0.6)
    x0 = np.random.default_rng(n).standard_normal((R, n, 2))
    kw = dict(t_end=0.06, dt=0.02, method="rbm1", batch_size=p, seed=3, remainder="pad")
    assert_array_equal(particles.solve(system, x0, backend="cpu", **kw).x,
                       particles.solve(system, x0, backend="cuda", **kw).x)


# --- 3. where pad and spread coincide --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tanh", "SA", "USA"])
def test_pad_equals_spread_bitwise_when_p_divides_n(name, backend):
    system = SYSTEMS[name]
    x0 = _states(system, (2, 12, _dim(name)), seed=3)
    for p in (3, 4, 12):
        kw = dict(t_end=0.06, dt=0.02, method="rbm1", batch_size=p, seed=1)
        assert_array_equal(particles.solve(system, x0, backend=backend, remainder="pad", **kw).x,
                           particles.solve(system, x0, backend=backend, **kw).x)
        dkw = dict(method="rbm1", batch_size=p, seed=1, step=2, backend=backend)
        assert_array_equal(particles.drift(system, x0, remainder="pad", **dkw), particles.drift(system, x0, **dkw))


@pytest.mark.parametrize("name", ["tanh", "SA"])
def test_pad_with_p_equal_to_n_is_the_full_step(name, backend):
    system = SYSTEMS[name]
    x0 = _states(system, (7, _dim(name)), seed=2)
    kw = dict(t_end=0.06, dt=0.02, seed=1, backend=backend)
    pad = particles.solve(system, x0, method="rbm1", batch_size=7, remainder="pad", **kw)
    assert_array_equal(pad.x, particles.solve(system, x0, method="rbm1", batch_size=7, **kw).x)
    assert_allclose(pad.x, particles.solve(system, x0, method="full", **kw).x, rtol=RTOL, atol=RTOL)


def _k_spans(n, nbat, pad, out):
    pos = cuda.grid(1)  # noqa: F821  (bound by the compiler)
    if pos < n:
        start, stop = member_span(pos, n, nbat, pad)  # noqa: F821
        out[pos, 0] = start
        out[pos, 1] = stop


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed")
@pytest.mark.parametrize(("n", "p"), [(7, 3), (10, 3), (11, 3), (12, 4), (9, 8), (5, 5)])
def test_the_device_batch_spans(n, p):
    # particles.gpu's namespace: member_span(pos, n, nbat, 0) is spread's batch, (.., p) pad's with the lone widened
    from particles import gpu

    k = gpu.kernels([_k_spans], "pad_spans_test")
    perm = np.arange(n)
    for remainder, pad in (("spread", 0), ("pad", p)):
        dev = gpu.empty((n, 2), np.int64)
        gpu.launch(k._k_spans, n, n, n // p, pad, dev)
        got = gpu.to_host(dev, np.empty((n, 2), np.int64))
        of = member_batches(cut_batches(perm, p, remainder), n)
        assert_array_equal(got, [[m.min(), m.max() + 1] for m in of])


# --- 4. bad input, the other methods, registered backends ------------------------------------------------------------
@pytest.mark.parametrize("bad", ["x", "Pad", "", None, 1])
def test_a_bad_remainder_names_the_argument_and_the_choices(bad):
    system = SYSTEMS["tanh"]
    x0 = np.zeros((6, 2))
    with pytest.raises(ValueError, match=r"remainder must be one of 'spread', 'pad'"):
        particles.solve(system, x0, t_end=0.1, dt=0.05, method="rbm1", batch_size=2, remainder=bad)
    with pytest.raises(ValueError, match=r"remainder must be one of 'spread', 'pad'"):
        particles.drift(system, x0, method="rbm1", batch_size=2, remainder=bad)
    with pytest.raises(ValueError, match=r"remainder must be one of 'spread', 'pad'"):
        particles.solve(system, x0, t_end=0.1, dt=0.05, method="full", remainder=bad)


@pytest.mark.parametrize("method", ["full", "rbmr"])
def test_the_other_methods_ignore_pad_with_a_warning(method):
    system = SYSTEMS["tanh"]
    x0 = np.random.default_rng(0).standard_normal((7, 2))
    kw = dict(t_end=0.06, dt=0.02, method=method, batch_size=None if method == "full" else 3, seed=2)
    with pytest.warns(UserWarning, match=rf"remainder='pad' is ignored by method='{method}'"):
        ignored = particles.solve(system, x0, remainder="pad", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = particles.solve(system, x0, **kw)
    assert_array_equal(ignored.x, default.x)
    assert ignored.metadata["remainder"] is None
    if method == "full":
        with pytest.warns(UserWarning, match="remainder='pad' is ignored by method='full'"):
            d = particles.drift(system, x0, method="full", remainder="pad")
        assert_array_equal(d, particles.drift(system, x0, method="full"))


def test_metadata_records_the_remainder():
    system = SYSTEMS["tanh"]
    x0 = np.random.default_rng(0).standard_normal((7, 2))
    kw = dict(t_end=0.04, dt=0.02, method="rbm1", batch_size=3)
    assert particles.solve(system, x0, **kw).metadata["remainder"] == "spread"
    assert particles.solve(system, x0, remainder="pad", **kw).metadata["remainder"] == "pad"


class _OldBackend:
    """A backend written before ``remainder`` existed: its drift takes the contract's keywords only."""

    def __init__(self):
        self.calls = []

    def run(self, system, x, traj, plan):
        self.calls.append(("run", plan.remainder))
        traj[...] = 0.0

    def drift(self, system, x, out, *, method, batch_size, seed, step, coupling):
        self.calls.append(("drift", method))
        out[...] = 0.0


class _NewBackend(_OldBackend):
    def drift(self, system, x, out, *, method, batch_size, seed, step, coupling, **kw):
        self.calls.append(("drift", method, kw))
        out[...] = 0.0


@pytest.fixture
def registered():
    made = {"old": _OldBackend(), "new": _NewBackend()}
    for name, b in made.items():
        backends.register_backend(f"pad_test_{name}", b)
    yield made
    for name in made:
        backends.unregister_backend(f"pad_test_{name}")


def test_registered_backends_and_the_remainder_keyword(registered):
    system = SYSTEMS["tanh"]
    x0 = np.zeros((7, 2))
    kw = dict(t_end=0.04, dt=0.02, method="rbm1", batch_size=3)
    old, new = registered["old"], registered["new"]
    # the default reaches an old backend as before: no remainder keyword
    particles.solve(system, x0, backend="pad_test_old", **kw)
    particles.drift(system, x0, method="rbm1", batch_size=3, backend="pad_test_old")
    assert old.calls == [("run", "spread"), ("drift", "rbm1")]
    with pytest.raises(TypeError, match="backend 'pad_test_old' does not accept the keyword 'remainder'"):
        particles.solve(system, x0, backend="pad_test_old", remainder="pad", **kw)
    with pytest.raises(TypeError, match="backend 'pad_test_old' does not accept the keyword 'remainder'"):
        particles.drift(system, x0, method="rbm1", batch_size=3, backend="pad_test_old", remainder="pad")
    assert len(old.calls) == 2  # refused before any work
    # a backend that accepts it gets remainder= only when it is not the default
    particles.drift(system, x0, method="rbm1", batch_size=3, backend="pad_test_new")
    particles.drift(system, x0, method="rbm1", batch_size=3, backend="pad_test_new", remainder="pad")
    particles.solve(system, x0, backend="pad_test_new", remainder="pad", **kw)
    assert new.calls == [("drift", "rbm1", {}), ("drift", "rbm1", {"remainder": "pad"}), ("run", "pad")]
