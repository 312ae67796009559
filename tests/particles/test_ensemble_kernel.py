"""The fused ensemble kernel of the cpu backend (particles/backends/_ensemble.py) against the reference backend.

Tolerance: 1e-12 in max abs difference of every saved state over 50 steps of dt = 0.1 (states on the unit
sphere, components <= 1). The kernel sums the Gram matrix four components at a time, the attention outputs four
partners at a time, uses its own exp (about 1 ulp, like libm's), and on the sphere with the self term one softmax
shift for all tokens (exact for a softmax, other roundings): the results agree with the reference's NumPy to
rounding (we see 1e-15), not to the bit. 1e-12 leaves room for rounding that grows over 50 steps and still fails
on any error of the arithmetic (a wrong weight, shift or stage is >= 1e-4 after one step).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import particles
from particles import systems
from particles.backends import cpu
from particles.solve import Plan

TOL = 1e-12
DT = 0.1
T_END = 5.0  # 50 steps


def _sphere_states(shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _system(kind, include_self, beta=1.0, sphere=True):
    s = systems.attention(beta, kind, sphere=sphere)
    if include_self:
        return s
    params = np.array(s.params)
    params[2] = 0.0
    params.setflags(write=False)
    return dataclasses.replace(s, params=params)


def _compare(system, x0, scheme, save_every=1, t_end=T_END):
    before = cpu.ensemble_calls
    fused = particles.solve(system, x0, t_end=t_end, dt=DT, scheme=scheme, save_every=save_every, backend="cpu")
    assert cpu.ensemble_calls == before + 1, "the cpu backend did not take the fused ensemble kernel"
    ref = particles.solve(system, x0, t_end=t_end, dt=DT, scheme=scheme, save_every=save_every,
                          backend="reference")
    assert fused.x.shape == ref.x.shape
    np.testing.assert_array_equal(fused.t, ref.t)
    err = float(np.max(np.abs(fused.x - ref.x)))
    assert err <= TOL, f"max abs difference {err:.3e} > {TOL}"
    return fused, ref


# (R, n, d): d < n, d = n, d > n; R in {1, 3, 17}; n in {2, 5, 32} and one not a multiple of 8 above 8
SHAPES = [(3, 5, 3), (1, 32, 32), (17, 5, 8), (3, 2, 2), (1, 13, 40), (3, 32, 4), (17, 2, 5), (1, 9, 9)]
CASES = [(kind, inc, scheme) for kind in ("SA", "USA") for inc in (True, False)
         for scheme in ("euler", "heun", "rk4", "ambient_euler")]


@pytest.mark.parametrize("k", range(len(CASES)), ids=[f"{c[0]}-{'self' if c[1] else 'noself'}-{c[2]}"
                                                       for c in CASES])
def test_fused_kernel_matches_the_reference(k):
    kind, include_self, scheme = CASES[k]
    shape = SHAPES[k % len(SHAPES)]
    _compare(_system(kind, include_self, beta=2.0), _sphere_states(shape, seed=k), scheme)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_with_save_every_and_a_short_last_step(shape):
    # 47 steps of 0.1 and a last one of 0.05, every third saved (and the last)
    fused, _ = _compare(_system("SA", True), _sphere_states(shape, seed=1), "euler", save_every=3, t_end=4.75)
    assert fused.x.shape[0] == 47 // 3 + 2


@pytest.mark.parametrize("kind, beta", [("SA", -3.0), ("SA", 0.0), ("SA", 9.0), ("USA", -3.0), ("USA", 0.0),
                                        ("USA", 2.0)])
def test_beta_of_any_sign(kind, beta):
    # SA with beta < 0 takes the per-token shift (one shift for all tokens needs beta >= 0); USA with a large
    # beta leaves the sphere at dt = 0.1 on every backend (e^beta times the step), hence 2
    _compare(_system(kind, True, beta=beta), _sphere_states((3, 6, 4), seed=2), "rk4")


def test_far_apart_norms_take_the_per_token_shift():
    # flat space, norms from 0.1 to 30 and beta = 2: the own scores beta |x_i|^2 differ by ~1800 > SHIFT_SPAN,
    # one shift for all would underflow the weights of the small tokens; the per-token shift must be used
    x0 = _sphere_states((2, 7, 3), seed=4) * np.array([0.1, 1.0, 3.0, 10.0, 30.0, 0.5, 2.0])[None, :, None]
    _compare(_system("SA", True, beta=2.0, sphere=False), x0, "euler", t_end=0.5)


def test_flat_space_unprojected():
    _compare(_system("SA", False, beta=0.5, sphere=False), _sphere_states((3, 5, 3), seed=5), "rk4")


def test_the_input_is_left_alone_and_ensemble_of_one_set_without_axis():
    x0 = _sphere_states((6, 4), seed=6)
    keep = x0.copy()
    before = cpu.ensemble_calls
    tr = particles.solve(systems.attention(1.0, "SA"), x0, t_end=1.0, dt=DT)
    assert cpu.ensemble_calls == before + 1
    np.testing.assert_array_equal(x0, keep)
    np.testing.assert_array_equal(tr.x[0], keep)
    ref = particles.solve(systems.attention(1.0, "SA"), x0, t_end=1.0, dt=DT, backend="reference")
    assert float(np.max(np.abs(tr.x - ref.x))) <= TOL


def _plan(**kw):
    base = dict(method="full", nsteps=1, save_every=1, tau_steps=1, nfine=1, dt=0.1, noise_dt=0.1, scale=0.0,
                coupling=1.0, batch_size=8, seed=0, sphere=True, A=np.zeros((1, 1)), B=np.ones(1),
                project=True, dt_last=0.1, scale_last=0.0)
    base.update(kw)
    return Plan(**base)


def test_dispatch_rule():
    sa = systems.attention(1.0, "SA")
    assert cpu.takes_ensemble_kernel(sa, _plan(), 32)
    assert cpu.takes_ensemble_kernel(systems.attention(1.0, "USA"), _plan(project=False), cpu.ENSEMBLE_MAX_N)
    assert cpu.takes_ensemble_kernel(systems.attention(1.0, "SA", sphere=False), _plan(sphere=False), 2)
    # not taken: large N, noise, random batches, non-identity Q, K, V, another family
    assert not cpu.takes_ensemble_kernel(sa, _plan(), cpu.ENSEMBLE_MAX_N + 1)
    assert not cpu.takes_ensemble_kernel(sa, _plan(scale=0.1, scale_last=0.1), 32)
    assert not cpu.takes_ensemble_kernel(sa, _plan(method="rbm1"), 32)
    assert not cpu.takes_ensemble_kernel(sa, _plan(method="rbmr"), 32)
    assert not cpu.takes_ensemble_kernel(systems.attention(1.0, "SA", Q=2.0 * np.eye(3)), _plan(), 32)
    assert not cpu.takes_ensemble_kernel(systems.confined_tanh(), _plan(sphere=False, project=False), 32)


def test_noise_and_random_batches_keep_the_general_path():
    x0 = _sphere_states((2, 8, 3), seed=7)
    before = cpu.ensemble_calls
    particles.solve(systems.attention(1.0, "SA", sigma=0.1), x0, t_end=0.2, dt=DT)
    particles.solve(systems.attention(1.0, "SA"), x0, t_end=0.2, dt=DT, method="rbm1", batch_size=4)
    assert cpu.ensemble_calls == before


def test_the_kernels_exp_against_numpy():
    # the kernel's own branch-free exp: <= 1 ulp-ish relative error where exp is a normal number, the right
    # limits (0, inf), NaN kept; np.exp (libm) is the oracle
    exp_flat = cpu.ensemble_loops().ens_exp_flat
    y = np.concatenate([np.linspace(-760.0, 720.0, 40001), [np.nan, np.inf, -np.inf, 0.0, -1e300, 1e300]])
    got = y.copy()
    exp_flat(got, got.size, 1.0, 0.0)
    with np.errstate(over="ignore"):
        want = np.exp(y)
    normal = np.isfinite(want) & (want >= 2.3e-308)
    assert float(np.max(np.abs(got[normal] / want[normal] - 1.0))) <= 4.5e-16
    tiny = np.isfinite(y) & (want < 2.3e-308)
    assert float(np.max(np.abs(got[tiny] - want[tiny]))) <= 1e-323
    np.testing.assert_array_equal(got[~np.isfinite(want)], want[~np.isfinite(want)])  # inf and the NaN
    # scale and shift: exp(scale * y - shift)
    got = np.array([1.0, -2.0, 0.5])
    exp_flat(got, 3, 2.0, 1.5)
    np.testing.assert_allclose(got, np.exp(2.0 * np.array([1.0, -2.0, 0.5]) - 1.5), rtol=4.5e-16, atol=0)
