"""The backend registry: a user's backend is dispatched to; an incomplete one is refused by name."""

from __future__ import annotations

import types

import numpy as np
import pytest

import particles
from particles import backends, systems


class _Toy:
    """A backend that records its calls and writes marker values (no integration)."""

    def __init__(self):
        self.calls = []

    def run(self, system, x, traj, plan):
        self.calls.append(("run", x.shape, traj.shape, plan.method, plan.seed))
        traj[...] = 7.0
        x[...] = 7.0

    def drift(self, system, x, out, *, method, batch_size, seed, step, coupling):
        self.calls.append(("drift", method, batch_size, seed, step, coupling))
        out[...] = -1.0


@pytest.fixture
def toy():
    backend = _Toy()
    backends.register_backend("toy", backend)
    yield backend
    backends.unregister_backend("toy")


def test_a_registered_backend_is_dispatched_to(toy):
    system = systems.confined_tanh()
    x0 = np.zeros((5, 2))
    tr = particles.solve(system, x0, t_end=0.3, dt=0.1, method="rbm1", batch_size=2, seed=4, backend="toy")
    assert toy.calls == [("run", (1, 5, 2), (4, 1, 5, 2), "rbm1", 4)]
    assert tr.metadata["backend"] == "toy"
    assert np.all(tr.x == 7.0)
    out = particles.drift(system, x0, method="rbm1", batch_size=2, seed=3, step=1, backend="toy")
    assert toy.calls[-1] == ("drift", "rbm1", 2, 3, 1, 1.0)
    assert np.all(out == -1.0)
    assert "toy" in backends.available_backends()
    assert backends.get_backend("toy") is toy


def test_the_builtin_backends_come_from_the_registry():
    from particles.backends import cpu, reference

    assert backends.get_backend("cpu") is cpu
    assert backends.get_backend("reference") is reference
    assert backends.available_backends()[:3] == backends.BUILTIN_BACKENDS == ("cpu", "reference", "cuda")
    for module in (cpu, reference):
        assert not backends._missing(module)


def test_an_incomplete_backend_is_refused_naming_what_is_missing():
    only_run = types.SimpleNamespace(run=lambda system, x, traj, plan: None)
    with pytest.raises(TypeError, match=r"backend 'half' is incomplete: .*drift\(system, x, out, \*, method, "
                                        r"batch_size, seed, step, coupling\) \(no callable 'drift'\)"):
        backends.register_backend("half", only_run)
    wrong = types.SimpleNamespace(run=lambda system, x: None,
                                  drift=lambda system, x, out, *, method, seed: None)
    with pytest.raises(TypeError) as err:
        backends.register_backend("wrong", wrong)
    msg = str(err.value)
    assert "'run' does not accept these arguments" in msg and "'drift' does not accept these arguments" in msg
    assert "half" not in backends.available_backends() and "wrong" not in backends.available_backends()


def test_registry_names(toy):
    with pytest.raises(ValueError, match="built-in backend"):
        backends.register_backend("cpu", toy)
    with pytest.raises(ValueError, match="already registered"):
        backends.register_backend("toy", toy)
    backends.register_backend("toy", toy, replace=True)
    with pytest.raises(ValueError, match="non-empty string"):
        backends.register_backend("", toy)
    with pytest.raises(ValueError, match=r"^backend must be one of 'cpu', 'reference', 'cuda', 'toy'; got 'gpu'"):
        particles.solve(systems.confined_tanh(), np.zeros((3, 1)), t_end=0.1, dt=0.1, backend="gpu")
    with pytest.raises(KeyError):
        backends.unregister_backend("nothing")


def test_a_backend_require_is_called_before_use():
    class Unavailable(_Toy):
        def require(self):
            raise RuntimeError("the toy device is switched off")

    backends.register_backend("off", Unavailable())
    try:
        with pytest.raises(RuntimeError, match="switched off"):
            particles.drift(systems.confined_tanh(), np.zeros((3, 1)), backend="off")
    finally:
        backends.unregister_backend("off")
