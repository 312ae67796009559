"""Heads, self-exclusion and the padded partition together: every backend against the reference.

The three features were built apart (heads and ``include_self`` in the attention forces, ``remainder="pad"``
and the lone particle in the batch boundaries); this checks that they compose: a lone particle of a multi-head
system gets the multi-head force over all N particles, the others their batch's, on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

import particles
from particles import systems

D, H, N, P = 3, 2, 7, 3  # N mod P == 1: pad leaves a lone particle


def _system(kind, include_self):
    rng = np.random.default_rng(11)
    Q, K, V = (0.5 * rng.standard_normal((H, D, D)) for _ in range(3))
    return systems.attention(1.0, kind, Q, K, V, include_self=include_self, sigma=0.1)


def _start():
    x = np.random.default_rng(12).standard_normal((N, D))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["SA", "USA"])
@pytest.mark.parametrize("include_self", [True, False])
def test_heads_under_pad_agree_with_the_reference(backend, kind, include_self):
    system, x0 = _system(kind, include_self), _start()
    kw = {"t_end": 0.2, "dt": 0.05, "method": "rbm1", "batch_size": P, "remainder": "pad", "seed": 3}
    ref = particles.solve(system, x0, backend="reference", **kw).x
    got = particles.solve(system, x0, backend=backend, **kw).x
    assert_allclose(got, ref, rtol=0, atol=1e-13)


def test_the_lone_particle_of_a_multi_head_system_feels_the_full_force(backend):
    system, x = _system("SA", False), _start()
    part = particles.partition(N, P, seed=5, step=0, remainder="pad")
    assert part.lone >= 0
    full = particles.drift(system, x, backend=backend)
    rbm = particles.drift(system, x, method="rbm1", batch_size=P, seed=5, step=0, remainder="pad", backend=backend)
    assert_allclose(rbm[part.lone], full[part.lone], rtol=0, atol=1e-14)
    others = np.setdiff1d(np.arange(N), [part.lone])
    assert np.abs(rbm[others] - full[others]).max() > 1e-3  # the others feel their batch only
