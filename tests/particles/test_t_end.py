"""``solve`` with a t_end that is not a whole number of steps: the last step is shortened."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import particles
from particles import initial, integrators, systems


def _sphere(shape, seed):
    z = np.random.default_rng(seed).standard_normal(shape)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


@pytest.mark.parametrize("scheme", ["euler", "rk4", "ambient_euler"])
def test_shortened_last_step_is_a_step_of_the_remaining_length(backend, scheme):
    # 0.25 = 2 steps of 0.1 and one of 0.05: the same as stopping at 0.2 and taking one step of 0.05
    system = systems.attention(1.5, "SA")
    x0 = _sphere((2, 7, 3), seed=1)
    tr = particles.solve(system, x0, t_end=0.25, dt=0.1, scheme=scheme, backend=backend)
    head = particles.solve(system, x0, t_end=0.2, dt=0.1, scheme=scheme, backend=backend)
    h_last = tr.metadata["dt_last"]  # 0.25 - 2 * 0.1 in floating point
    tail = particles.solve(system, head.final, t_end=h_last, dt=h_last, scheme=scheme, backend=backend)
    assert tr.x.shape == (4, 2, 7, 3)
    np.testing.assert_array_equal(tr.x[:3], head.x)
    np.testing.assert_array_equal(tr.final, tail.final)
    assert tr.t.tolist() == [0.0, 0.1, 0.2, 0.25]
    assert tr.metadata["t_end"] == 0.25 and tr.metadata["dt_last"] == pytest.approx(0.05, abs=1e-15)


def test_t_end_below_dt_is_one_step_of_t_end():
    system = systems.confined_tanh(sigma=0.0)
    x0 = np.random.default_rng(2).standard_normal((6, 2))
    a = particles.solve(system, x0, t_end=0.03, dt=0.1)
    b = particles.solve(system, x0, t_end=0.03, dt=0.03)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.t.tolist() == [0.0, 0.03]


def test_save_every_keeps_the_final_time():
    system = systems.confined_tanh(sigma=0.0)
    x0 = np.random.default_rng(3).standard_normal((5, 1))
    tr = particles.solve(system, x0, t_end=1.05, dt=0.1, save_every=4)  # 11 steps, the last of 0.05
    assert tr.t.tolist() == pytest.approx([0.0, 0.4, 0.8, 1.05], abs=1e-15)
    assert tr.t[-1] == 1.05


def test_whole_multiples_are_unchanged():
    # a ratio within the grid tolerance of an integer is that many whole steps (0.3 / 0.1 != 3 in floating point)
    system = systems.confined_tanh(sigma=1.0)
    x0 = np.random.default_rng(4).standard_normal((6, 2))
    tr = particles.solve(system, x0, t_end=0.3, dt=0.1, seed=3)
    assert tr.x.shape[0] == 4 and tr.metadata["dt_last"] == 0.1
    assert tr.t[-1] == 3 * 0.1


def test_noise_of_the_shortened_step_is_the_whole_step_increment_scaled():
    # Euler-Maruyama on dX = -r X dt + sigma dW (L = 0): the last increment of the 0.25 run is sqrt(0.5) times
    # step 2's increment of the 0.3 run (the same fine normals), so both can be recovered exactly
    r, sigma, dt = 1.0, 0.7, 0.1
    system = systems.confined_tanh(r=r, L=0.0, sigma=sigma)
    x0 = np.random.default_rng(5).standard_normal((4, 9, 2))
    kw = dict(dt=dt, seed=11, noise_dt=0.05)
    short = particles.solve(system, x0, t_end=0.25, **kw)
    whole = particles.solve(system, x0, t_end=0.3, **kw)
    x2 = whole.x[2]
    np.testing.assert_array_equal(short.x[2], x2)
    dw_whole = whole.x[3] - (x2 - dt * r * x2)
    dw_short = short.x[3] - (x2 - 0.05 * r * x2)
    np.testing.assert_allclose(dw_short, math.sqrt(0.5) * dw_whole, rtol=0, atol=1e-14)
    # and its law is N(0, sigma^2 h_last): two-sided chi-square test of the variance on the 72 increments,
    # false-alarm rate 1% (fixed seed); negative control: the unshortened variance sigma^2 dt is rejected
    h_last = short.metadata["dt_last"]
    k = dw_short.size
    lo, hi = stats.chi2.ppf([0.005, 0.995], k)
    assert lo <= np.sum(dw_short**2) / (sigma**2 * h_last) <= hi
    assert not lo <= np.sum(dw_short**2) / (sigma**2 * dt) <= hi


@pytest.mark.parametrize("method", ["rbm1", "rbmr"])
def test_random_batches_with_a_shortened_step_match_reference(method):
    system = systems.confined_tanh(sigma=0.5)
    x0 = np.random.default_rng(6).standard_normal((2, 10, 2))
    kw = dict(t_end=0.33, dt=0.1, method=method, batch_size=3, seed=4,
              tau=0.2 if method == "rbm1" else None)
    a = particles.solve(system, x0, backend="cpu", **kw)
    b = particles.solve(system, x0, backend="reference", **kw)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-12, atol=1e-12)
    assert a.t[-1] == 0.33


def test_rbm1_shortened_step_uses_the_partition_of_its_reshuffle_interval():
    # tau = 0.2: steps 0, 1 share partition 0, step 2 (the shortened one) uses partition 1, as a whole step would;
    # checked against one Euler step written out with the reference backend's permutation of reshuffle index 1
    from particles.backends import reference

    system = systems.confined_tanh(sigma=0.0)
    x0 = np.random.default_rng(7).standard_normal((8, 1))
    kw = dict(dt=0.1, method="rbm1", batch_size=2, seed=9, tau=0.2)
    tr = particles.solve(system, x0, t_end=0.25, **kw)
    x2 = particles.solve(system, x0, t_end=0.2, **kw).final
    perm = reference.permutation(9, 0, 1, 8)
    force = reference._force(system, x2, perm, 2, system.coupling_for(8), False)
    np.testing.assert_allclose(tr.final, x2 + tr.metadata["dt_last"] * force, rtol=0, atol=1e-15)


def test_order_is_kept_with_a_shortened_last_step():
    # RK4 with t_end = 1 and steps that do not divide it: the declared order is still what the error shows
    system = systems.attention(2.0, "SA")
    x0 = initial.uniform_sphere(5, 3, rng=np.random.default_rng(8))
    ref = particles.solve(system, x0, t_end=1.0, dt=2.0**-9, scheme="rk4", save_every=10**9).final
    dts = [1 / 2.5, 1 / 4.5, 1 / 8.5, 1 / 16.5]
    errs = [np.abs(particles.solve(system, x0, t_end=1.0, dt=h, scheme="rk4", save_every=10**9).final - ref).max()
            for h in dts]
    slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
    assert abs(slope - integrators.RK4.order) <= 0.3
