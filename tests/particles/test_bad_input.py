"""Bad input is refused with a TypeError or ValueError that names the argument.

Every check here runs before any numerical work, so almost all of them use
the ``reference`` backend once; the few that touch a backend's state
(a refused call followed by a corrected one) use the ``backend`` fixture.
The last group checks that refused calls leave nothing corrupted: the
caller's arrays are untouched and the corrected call gives the same result
as a fresh one.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from particles import drift, solve, systems

N, D = 6, 2
GOOD = {"t_end": 0.1, "dt": 0.01, "backend": "reference"}


def _x0(n=N, d=D, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def _sphere(n=N, d=D, seed=0):
    x = _x0(n, d, seed)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _with_entry(x, value):
    x = np.array(x, dtype=np.float64)
    x.flat[3] = value
    return x


_DEFAULT = object()


def _solve(system=None, x0=_DEFAULT, **overrides):
    """A valid call on the reference backend, with some arguments replaced."""
    kw = dict(GOOD)
    kw.update(overrides)
    return solve(systems.confined_tanh() if system is None else system, _x0() if x0 is _DEFAULT else x0, **kw)


# --- x0: values, shape, dtype -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("ensemble", [False, True], ids=["single", "ensemble"])
def test_x0_non_finite(value, ensemble):
    x = _with_entry(_x0(), value)
    if ensemble:
        x = np.stack([_x0(seed=1), x])
    with pytest.raises(ValueError, match=r"^x0 must contain only finite values"):
        _solve(x0=x)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((N,), r"^x0 must have shape \(N, d\) or \(R, N, d\).*got shape \(6,\)"),
        ((1, 2, N, D), r"^x0 must have shape \(N, d\) or \(R, N, d\).*got shape \(1, 2, 6, 2\)"),
        ((), r"^x0 must have shape \(N, d\) or \(R, N, d\).*got shape \(\)"),
        ((1, D), r"^x0 must hold at least 2 particles \(axis N\), got shape \(1, 2\)"),
        ((3, 1, D), r"^x0 must hold at least 2 particles \(axis N\), got shape \(3, 1, 2\)"),
        ((N, 0), r"^x0 must have at least one replica and one dimension, got shape \(6, 0\)"),
        ((0, N, D), r"^x0 must have at least one replica and one dimension, got shape \(0, 6, 2\)"),
    ],
    ids=["1-D", "4-D", "0-D", "N=1", "ensemble-N=1", "d=0", "R=0"],
)
def test_x0_wrong_shape(shape, match):
    with pytest.raises(ValueError, match=match):
        _solve(x0=np.zeros(shape))


def test_x0_ragged():
    with pytest.raises(ValueError, match=r"^x0 must be a rectangular array"):
        _solve(x0=[[0.0, 1.0], [2.0]])


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x.astype(np.complex128),
        lambda x: x.astype(np.complex64),
        lambda x: x.astype(object),
        lambda x: x.astype(str),
        lambda x: None,
    ],
    ids=["complex128", "complex64", "object", "str", "None"],
)
def test_x0_bad_dtype(make):
    with pytest.raises(TypeError, match=r"^x0 must be an array of real numbers.*got dtype"):
        _solve(x0=make(_x0()))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_integer_x0_is_cast_to_float64(dtype):
    xi = np.arange(N * D, dtype=dtype).reshape(N, D) % 5
    xf = xi.astype(np.float64)
    ti = _solve(x0=xi, seed=3)
    tf = _solve(x0=xf, seed=3)
    assert ti.x.dtype == np.float64
    assert_array_equal(ti.x, tf.x)
    assert_array_equal(ti.t, tf.t)
    assert_array_equal(ti.x[0], xf)
    sys = systems.confined_tanh()
    di = drift(sys, xi, backend="reference")
    assert di.dtype == np.float64
    assert_array_equal(di, drift(sys, xf, backend="reference"))


# --- time grid ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dt, exc, match",
    [
        (0.0, ValueError, r"^dt must be > 0"),
        (-0.01, ValueError, r"^dt must be > 0"),
        (np.nan, ValueError, r"^dt must be finite"),
        (np.inf, ValueError, r"^dt must be finite"),
        ("0.01", TypeError, r"^dt must be a real number"),
        (None, TypeError, r"^dt must be a real number"),
    ],
    ids=["zero", "negative", "nan", "inf", "str", "None"],
)
def test_dt_invalid(dt, exc, match):
    with pytest.raises(exc, match=match):
        _solve(dt=dt)


@pytest.mark.parametrize("t_end", [0.0, -0.1], ids=["zero", "negative"])
def test_t_end_not_positive(t_end):
    with pytest.raises(ValueError, match=r"^t_end must be > 0"):
        _solve(t_end=t_end)


def test_t_end_non_finite():
    with pytest.raises(ValueError, match=r"^t_end must be finite"):
        _solve(t_end=np.nan)


def test_t_end_close_to_multiple_is_accepted():
    # 0.3 / 0.1 is not exactly 3 in floating point; the grid check has a relative tolerance.
    tr = _solve(t_end=0.3, dt=0.1)
    assert tr.x.shape == (4, N, D)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"t_end": 1e300, "dt": 1e-10}, r"^t_end/dt must be finite"),
        ({"t_end": 1.0, "dt": 5e-324}, r"^t_end/dt must be finite"),
        ({"noise_dt": 5e-324}, r"^dt/noise_dt must be finite"),
        ({"method": "rbm1", "batch_size": 2, "tau": 1e307}, r"^tau/dt must be finite"),
    ],
    ids=["t_end/dt", "denormal-dt", "dt/noise_dt", "tau/dt"],
)
def test_grid_ratio_overflow(kw, match):
    with pytest.raises(ValueError, match=match):
        _solve(**kw)


@pytest.mark.parametrize(
    "noise_dt, exc, match",
    [
        (0.003, ValueError, r"^dt must be a whole multiple of noise_dt"),
        (0.02, ValueError, r"^dt must be a whole multiple of noise_dt"),
        (0.0, ValueError, r"^noise_dt must be > 0"),
        (-0.005, ValueError, r"^noise_dt must be > 0"),
        (np.nan, ValueError, r"^noise_dt must be finite"),
    ],
    ids=["not-divisor", "larger-than-dt", "zero", "negative", "nan"],
)
def test_noise_dt_invalid(noise_dt, exc, match):
    with pytest.raises(exc, match=match):
        _solve(noise_dt=noise_dt)


@pytest.mark.parametrize(
    "tau, match",
    [
        (0.015, r"^tau must be a whole multiple of dt"),
        (0.004, r"^tau must be a whole multiple of dt"),
        (0.0, r"^tau must be > 0"),
        (np.nan, r"^tau must be finite"),
    ],
    ids=["1.5-dt", "below-dt", "zero", "nan"],
)
def test_tau_invalid(tau, match):
    with pytest.raises(ValueError, match=match):
        _solve(method="rbm1", batch_size=2, tau=tau)


@pytest.mark.parametrize(
    "save_every, exc, match",
    [
        (0, ValueError, r"^save_every must be >= 1"),
        (-2, ValueError, r"^save_every must be >= 1"),
        (2.0, TypeError, r"^save_every must be an integer"),
    ],
    ids=["zero", "negative", "float"],
)
def test_save_every_invalid(save_every, exc, match):
    with pytest.raises(exc, match=match):
        _solve(save_every=save_every)


# --- method, batch size, scheme, backend --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["rbm1", "rbmr"])
@pytest.mark.parametrize(
    "batch_size, exc, match",
    [
        (1, ValueError, r"^batch_size must be >= 2, got 1"),
        (0, ValueError, r"^batch_size must be >= 2, got 0"),
        (-3, ValueError, r"^batch_size must be >= 2, got -3"),
        (N + 1, ValueError, r"^batch_size must be <= 6, got 7"),
        (2.5, TypeError, r"^batch_size must be an integer, got float"),
        (2.0, TypeError, r"^batch_size must be an integer, got float"),
        (True, TypeError, r"^batch_size must be an integer, got bool"),
        (None, ValueError, r"^batch_size is required for method='rbm[1r]'"),
    ],
    ids=["1", "0", "negative", "N+1", "2.5", "2.0", "bool", "missing"],
)
def test_batch_size_invalid(method, batch_size, exc, match):
    with pytest.raises(exc, match=match):
        _solve(method=method, batch_size=batch_size)


@pytest.mark.parametrize("method", ["rbm1", "rbmr"])
@pytest.mark.parametrize("batch_size", [2, N, np.int64(3)], ids=["2", "N", "np.int64"])
def test_batch_size_bounds_are_inclusive(method, batch_size):
    tr = _solve(method=method, batch_size=batch_size)
    assert tr.metadata["batch_size"] == int(batch_size)


def test_batch_size_checked_for_full_too():
    with pytest.raises(ValueError, match=r"^batch_size must be <= 6"):
        _solve(method="full", batch_size=N + 1)


@pytest.mark.parametrize("batch_size", [4, np.int64(4)], ids=["int", "np.int64"])
def test_batch_size_ignored_by_full_with_a_warning(batch_size):
    with pytest.warns(UserWarning, match=r"^batch_size=4 is ignored by method='full' \(direct summation"):
        a = _solve(method="full", batch_size=batch_size)
    assert_array_equal(a.x, _solve(method="full").x)
    assert a.metadata["batch_size"] is None
    with pytest.warns(UserWarning, match=r"^batch_size=4 is ignored by method='full'"):
        drift(systems.confined_tanh(), _x0(), batch_size=batch_size, backend="reference")


@pytest.mark.parametrize("method", ["rbm2", "FULL", "", None, 1], ids=["rbm2", "FULL", "empty", "None", "int"])
def test_unknown_method(method):
    with pytest.raises(ValueError, match=r"^method must be one of 'full', 'rbm1', 'rbmr'"):
        _solve(method=method)


@pytest.mark.parametrize("backend", ["gpu", "numpy", "CPU", None], ids=["gpu", "numpy", "CPU", "None"])
def test_unknown_backend(backend):
    with pytest.raises(ValueError, match=r"^backend must be one of 'cpu', 'reference', 'cuda'"):
        _solve(backend=backend)


@pytest.mark.parametrize("scheme", ["rk5", "Euler", "milstein", None], ids=["rk5", "Euler", "milstein", "None"])
def test_unknown_scheme(scheme):
    with pytest.raises(ValueError, match=r"^scheme must be one of 'euler', 'heun', 'rk4'"):
        _solve(scheme=scheme)


@pytest.mark.parametrize("scheme", ["heun", "rk4"])
@pytest.mark.parametrize(
    "system, x0",
    [
        (systems.confined_tanh(sigma=0.5), _x0()),
        (systems.dyson(), np.linspace(-1.0, 1.0, N)[:, None]),
        (systems.attention(1.0, sigma=0.1), _sphere()),
    ],
    ids=["confined_tanh", "dyson", "attention"],
)
def test_deterministic_scheme_with_noise(scheme, system, x0):
    with pytest.raises(ValueError, match=rf"^scheme='{scheme}' is deterministic; it requires sigma = 0"):
        _solve(system=system, x0=x0, scheme=scheme)
    # the same scheme without noise is fine
    _solve(system=systems.confined_tanh(sigma=0.0), scheme=scheme)


# --- seed ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seed, exc, match",
    [
        (-1, ValueError, r"^seed must satisfy 0 <= seed < 2\*\*64, got -1"),
        (2**64, ValueError, r"^seed must satisfy 0 <= seed < 2\*\*64, got 18446744073709551616"),
        (1.0, TypeError, r"^seed must be a non-negative integer, got float"),
        ("1", TypeError, r"^seed must be a non-negative integer, got str"),
        (None, TypeError, r"^seed must be a non-negative integer, got NoneType"),
        (True, TypeError, r"^seed must be a non-negative integer, got bool"),
    ],
    ids=["negative", "2**64", "float", "str", "None", "bool"],
)
def test_seed_invalid(seed, exc, match):
    with pytest.raises(exc, match=match):
        _solve(seed=seed)
    with pytest.raises(exc, match=match):
        drift(systems.confined_tanh(), _x0(), method="rbm1", batch_size=2, seed=seed, backend="reference")


@pytest.mark.parametrize("seed", [0, 2**64 - 1, np.uint64(2**64 - 1)], ids=["0", "2**64-1", "np.uint64"])
def test_seed_bounds_are_accepted(seed):
    assert _solve(seed=seed).metadata["seed"] == int(seed)


# --- state constraints from the system ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_x0_off_sphere(kind):
    system = systems.attention(1.0, kind=kind)
    x = _sphere()
    x[2] *= 1.0 + 1e-6
    with pytest.raises(ValueError, match=rf"^x0 must lie on the unit sphere for system 'attention_{kind}'"):
        _solve(system=system, x0=x)
    with pytest.raises(ValueError, match=rf"^x must lie on the unit sphere for system 'attention_{kind}'"):
        drift(system, x, backend="reference")
    # the same points are fine for the unprojected dynamics, and normalised points are fine on the sphere
    _solve(system=systems.attention(1.0, kind=kind, sphere=False), x0=x)
    _solve(system=system, x0=_sphere())


def test_x0_dimension_must_match_attention_matrices():
    system = systems.attention(1.0, Q=np.eye(3))
    with pytest.raises(ValueError, match=r"^x0 has dimension d=2, but system 'attention_SA' requires d=3"):
        _solve(system=system, x0=_sphere(d=2))


@pytest.mark.parametrize("d", [2, 3])
def test_dyson_needs_d_1(d):
    with pytest.raises(ValueError, match=rf"^x0 has dimension d={d}, but system 'dyson' requires d=1"):
        _solve(system=systems.dyson(), x0=_x0(d=d))
    with pytest.raises(ValueError, match=rf"^x has dimension d={d}, but system 'dyson' requires d=1"):
        drift(systems.dyson(), _x0(d=d), backend="reference")


# --- system constructors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"r": 0.0}, ValueError, r"^r must be > 0"),
        ({"r": -1.0}, ValueError, r"^r must be > 0"),
        ({"r": np.nan}, ValueError, r"^r must be finite"),
        ({"r": "1"}, TypeError, r"^r must be a real number"),
        ({"sigma": -0.1}, ValueError, r"^sigma must be >= 0"),
        ({"sigma": np.inf}, ValueError, r"^sigma must be finite"),
        ({"L": -0.3}, ValueError, r"^L must be >= 0"),
    ],
    ids=["r=0", "r<0", "r=nan", "r=str", "sigma<0", "sigma=inf", "L<0"],
)
def test_confined_tanh_invalid(kw, exc, match):
    with pytest.raises(exc, match=match):
        systems.confined_tanh(**kw)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"beta": 0.0}, ValueError, r"^beta must be > 0"),
        ({"beta": np.nan}, ValueError, r"^beta must be finite"),
        ({"eps": -1e-3}, ValueError, r"^eps must be >= 0"),
    ],
    ids=["beta=0", "beta=nan", "eps<0"],
)
def test_dyson_invalid(kw, exc, match):
    with pytest.raises(exc, match=match):
        systems.dyson(**kw)


@pytest.mark.parametrize("beta", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_attention_beta_non_finite(beta):
    with pytest.raises(ValueError, match=r"^beta must be finite"):
        systems.attention(beta)


@pytest.mark.parametrize(
    "mats, match",
    [
        ({"Q": np.eye(2), "K": np.eye(3)}, r"^K has shape \(3, 3\), but the other matrices are \(2, 2\)"),
        ({"Q": np.eye(2), "V": np.eye(3)}, r"^V has shape \(3, 3\), but the other matrices are \(2, 2\)"),
        ({"K": np.eye(4), "V": np.eye(2)}, r"^V has shape \(2, 2\), but the other matrices are \(4, 4\)"),
    ],
    ids=["Q-K", "Q-V", "K-V"],
)
def test_attention_mismatched_matrices(mats, match):
    with pytest.raises(ValueError, match=match):
        systems.attention(1.0, **mats)


@pytest.mark.parametrize("name", ["Q", "K", "V"])
@pytest.mark.parametrize("shape", [(2, 3), (3,), (2, 2, 3), (1, 2, 2, 2)], ids=["2x3", "vector", "3-D", "4-D"])
def test_attention_non_square(name, shape):
    with pytest.raises(ValueError, match=rf"^{name} must be a square \(d, d\) matrix, got shape"):
        systems.attention(1.0, **{name: np.ones(shape)})


@pytest.mark.parametrize("name", ["Q", "K", "V"])
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_attention_non_finite_matrix(name, value):
    m = np.eye(3)
    m[0, 2] = value
    with pytest.raises(ValueError, match=rf"^{name} must contain only finite values"):
        systems.attention(1.0, **{name: m})


@pytest.mark.parametrize("name", ["Q", "K", "V"])
def test_attention_complex_matrix(name):
    with pytest.raises(TypeError, match=rf"^{name} must be a real numeric matrix"):
        systems.attention(1.0, **{name: np.eye(2, dtype=complex)})


@pytest.mark.parametrize("kind", ["sa", "MSA", "softmax", None], ids=["sa", "MSA", "softmax", "None"])
def test_attention_unknown_kind(kind):
    with pytest.raises(ValueError, match=r"^kind must be one of 'SA', 'USA'"):
        systems.attention(1.0, kind=kind)


def test_attention_sphere_must_be_bool():
    with pytest.raises(TypeError, match=r"^sphere must be a bool"):
        systems.attention(1.0, sphere=1)


def _kernel(x, y, params, out):
    for c in range(x.shape[0]):
        out[c] = -math.tanh(x[c] - y[c])


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"kernel": 3.0}, TypeError, r"^kernel must be a callable kernel\(x, y, params, out\), got float"),
        ({"kernel": None}, TypeError, r"^kernel must be a callable kernel\(x, y, params, out\), got NoneType"),
        ({"kernel": "tanh"}, TypeError, r"^kernel must be a callable kernel\(x, y, params, out\), got str"),
        ({"kernel": _kernel, "drift": 1}, TypeError, r"^drift must be a callable drift\(x, params, out\) or None"),
        ({"kernel": _kernel, "sigma": -1.0}, ValueError, r"^sigma must be >= 0"),
        ({"kernel": _kernel, "params": [1.0, np.nan]}, ValueError, r"^params must be finite"),
        ({"kernel": _kernel, "params": [[1.0], [2.0]]}, TypeError, r"^params must be a flat sequence"),
        ({"kernel": _kernel, "normalization": "N+1"}, ValueError, r"^normalization must be one of 'N-1', 'N'"),
    ],
    ids=["kernel-float", "kernel-None", "kernel-str", "drift-int", "sigma<0", "params-nan", "params-2-D", "norm"],
)
def test_custom_invalid(kw, exc, match):
    with pytest.raises(exc, match=match):
        systems.custom(**kw)


@pytest.mark.parametrize("system", ["confined_tanh", None, 1.0], ids=["str", "None", "float"])
def test_system_must_be_a_system(system):
    with pytest.raises(TypeError, match=r"^system must be a particles.systems.System"):
        solve(system, _x0(), **GOOD)
    with pytest.raises(TypeError, match=r"^system must be a particles.systems.System"):
        drift(system, _x0(), backend="reference")


# --- memory budget ------------------------------------------------------------------------------------------------
def test_trajectory_larger_than_max_bytes():
    kw = {"t_end": 1.0, "dt": 0.001, "max_bytes": 10_000}
    with pytest.raises(ValueError, match=r"max_bytes=10000; increase save_every to at least \d+") as err:
        _solve(x0=_x0(n=4), **kw)
    # the suggested save_every is accepted and fits the budget
    suggested = int(re.search(r"save_every to at least (\d+)", str(err.value)).group(1))
    tr = _solve(x0=_x0(n=4), save_every=suggested, **kw)
    assert tr.x.nbytes <= kw["max_bytes"]
    assert tr.t[-1] == pytest.approx(1.0)


def test_default_max_bytes_refuses_huge_request_before_work():
    # 2e9 steps of a 6 x 2 state cannot be saved under the default 2 GiB budget; refused at once.
    with pytest.raises(ValueError, match=r"^the trajectory would need \d+ bytes.*increase save_every"):
        _solve(t_end=2.0e7, dt=0.01)


def test_max_bytes_too_small_for_two_states():
    with pytest.raises(ValueError, match=r"max_bytes=100; even the initial and final states need 192 bytes"):
        _solve(max_bytes=100)


@pytest.mark.parametrize(("value", "exc"), [("x", TypeError), (float("nan"), TypeError), (0, ValueError)])
def test_max_bytes_invalid(value, exc):
    with pytest.raises(exc, match=r"^max_bytes must be"):
        _solve(max_bytes=value)


@pytest.mark.parametrize("method", ["full", "rbmr"])
def test_tau_ignored_with_a_warning_by_other_methods(method):
    """tau is ignored (with a warning naming it) by the methods that do not keep a partition; bad values still fail."""
    kw = {"method": method, "batch_size": None if method == "full" else 2}
    with pytest.warns(UserWarning, match=rf"^tau=0.02 is ignored by method='{method}': only method='rbm1'"):
        a = _solve(tau=0.02, **kw)
    assert_array_equal(a.x, _solve(**kw).x)
    with pytest.warns(UserWarning, match=r"^tau=0.02 is ignored"):  # a numpy scalar is printed as a number
        _solve(tau=np.float64(0.02), **kw)
    with pytest.raises(ValueError, match=r"^tau must be > 0"):
        _solve(tau=-1.0, **kw)


def test_tau_longer_than_the_run_means_one_partition():
    a = _solve(method="rbm1", batch_size=2, tau=1e20, backend="cpu")
    b = _solve(method="rbm1", batch_size=2, tau=a.metadata["t_end"], backend="cpu")
    np.testing.assert_array_equal(a.x, b.x)


def test_boolean_state_is_refused():
    with pytest.raises(TypeError, match=r"^x0 must be an array of real numbers"):
        _solve(x0=np.ones((N, 2), dtype=bool))


# --- drift --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["rbmr", "rbm2", None], ids=["rbmr", "rbm2", "None"])
def test_drift_method_not_allowed(method):
    with pytest.raises(ValueError, match=r"^method must be one of 'full', 'rbm1'; got"):
        drift(systems.confined_tanh(), _x0(), method=method, batch_size=2, backend="reference")


@pytest.mark.parametrize(
    "step, exc, match",
    [
        (-1, ValueError, r"^step must be >= 0, got -1"),
        (1.5, TypeError, r"^step must be an integer, got float"),
    ],
    ids=["negative", "float"],
)
def test_drift_step_invalid(step, exc, match):
    with pytest.raises(exc, match=match):
        drift(systems.confined_tanh(), _x0(), method="rbm1", batch_size=2, step=step, backend="reference")


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"x": _with_entry(_x0(), np.nan)}, ValueError, r"^x must contain only finite values"),
        ({"x": _x0()[:, 0]}, ValueError, r"^x must have shape \(N, d\) or \(R, N, d\)"),
        ({"x": _x0().astype(complex)}, TypeError, r"^x must be an array of real numbers"),
        ({"method": "rbm1"}, ValueError, r"^batch_size is required for method='rbm1'"),
        ({"method": "rbm1", "batch_size": N + 1}, ValueError, r"^batch_size must be <= 6"),
        ({"backend": "gpu"}, ValueError, r"^backend must be one of"),
    ],
    ids=["x-nan", "x-1-D", "x-complex", "batch_size-missing", "batch_size-N+1", "backend"],
)
def test_drift_other_invalid(kw, exc, match):
    args = {"x": _x0(), "backend": "reference"}
    args.update(kw)
    x = args.pop("x")
    with pytest.raises(exc, match=match):
        drift(systems.confined_tanh(), x, **args)


# --- refused calls corrupt nothing --------------------------------------------------------------------------------
BAD_SOLVE_CALLS = [
    {"dt": 0.0},
    {"t_end": -0.1},
    {"method": "rbm1", "batch_size": N + 1},
    {"method": "rbm1", "batch_size": 2, "tau": 0.015},
    {"seed": -1},
    {"scheme": "rk4"},
    {"max_bytes": 10},
]


def test_refused_calls_corrupt_nothing(backend):
    """A refused call leaves x0 untouched, and the corrected call matches a fresh one bitwise."""
    system = systems.confined_tanh(sigma=0.5)
    x0 = _x0(seed=7)
    keep = x0.copy()
    good = {"t_end": 0.05, "dt": 0.01, "method": "rbm1", "batch_size": 2, "seed": 11, "backend": backend}
    before = solve(system, x0, **good)
    for bad in BAD_SOLVE_CALLS:
        with pytest.raises((ValueError, TypeError)):
            solve(system, x0, **{**good, **bad})
        assert_array_equal(x0, keep)
    nan_x0 = _with_entry(x0, np.nan)
    with pytest.raises(ValueError, match=r"^x0 must contain only finite values"):
        solve(system, nan_x0, **good)
    after = solve(system, x0, **good)
    assert_array_equal(x0, keep)
    assert_array_equal(after.x, before.x)
    assert_array_equal(after.x[0], x0)
    assert after.metadata["seed"] == 11


def test_refused_drift_calls_corrupt_nothing(backend):
    system = systems.attention(1.5, kind="USA")
    x = _sphere(seed=5)
    keep = x.copy()
    before = drift(system, x, method="rbm1", batch_size=3, seed=2, step=4, backend=backend)
    with pytest.raises(ValueError, match=r"^step must be >= 0"):
        drift(system, x, method="rbm1", batch_size=3, seed=2, step=-4, backend=backend)
    with pytest.raises(ValueError, match=r"^method must be one of 'full', 'rbm1'"):
        drift(system, x, method="rbmr", batch_size=3, seed=2, step=4, backend=backend)
    with pytest.raises(ValueError, match=r"^x must lie on the unit sphere"):
        drift(system, 2.0 * x, method="rbm1", batch_size=3, seed=2, step=4, backend=backend)
    after = drift(system, x, method="rbm1", batch_size=3, seed=2, step=4, backend=backend)
    assert_array_equal(x, keep)
    assert_array_equal(after, before)


def test_systems_do_not_alias_caller_arrays():
    Q = np.array([[1.0, 0.2], [0.0, 1.0]])
    params = [0.5, 2.0]
    a = systems.attention(1.0, Q=Q)
    c = systems.custom(_kernel, params=params)
    keep_a, keep_c = a.params.copy(), c.params.copy()
    Q[0, 1] = np.nan
    params[0] = np.nan
    assert_array_equal(a.params, keep_a)
    assert_array_equal(c.params, keep_c)
    assert not a.params.flags.writeable
    with pytest.raises(ValueError, match=r"^Q must contain only finite values"):
        systems.attention(1.0, Q=Q)
    assert_array_equal(a.params, keep_a)
