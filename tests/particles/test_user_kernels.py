"""A user's kernel and drift (``systems.custom``): checked before use, never silently wrong.

Four layers, each tested here: the signature and a pure-Python probe call at
construction (and again in the state's dimension at the first ``solve``),
Numba's typing of the functions alone before the loops are compiled (one
``TypeError`` naming the function), ``out`` zeroed before every call on
every backend (a component left unwritten counts as 0, checked against a
NumPy oracle), and the on-disk cache of the compiled loops (keyed on what
Numba compiles in; reused by a second process).

Only two user systems are compiled into the cpu loops here (``GATED`` and
the ``_kern_sin`` system of test_backends, which that module compiles too);
both are cached on disk after the first run.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

import particles
from particles import systems
from particles.backends import cpu
from tests._inputs import _drift_cubic, _kern_sin

RTOL = 1e-12  # agreement to rounding (the backends sum in the same order; the oracle in another)
ROOT = Path(__file__).resolve().parents[2]


def _x0(n=7, d=2, seed=0, replicas=None):
    shape = (n, d) if replicas is None else (replicas, n, d)
    return np.random.default_rng(seed).standard_normal(shape)


# --- the signature ----------------------------------------------------------------------------------------------
def _k3(x, y, out):
    out[0] = 0.0


def _d4(x, y, params, out):
    out[0] = 0.0


def _kern_ok(x, y, p, out):
    for c in range(x.shape[0]):
        out[c] = y[c] - x[c]


def test_kernel_with_the_wrong_signature_is_refused():
    with pytest.raises(TypeError, match=r"^custom system 'custom': the kernel '_k3' has the signature "
                                        r"_k3\(x, y, out\); a kernel takes 4 positional arguments, "
                                        r"kernel\(x, y, params, out\)$"):
        systems.custom(_k3)


def test_drift_with_the_wrong_signature_is_refused():
    with pytest.raises(TypeError, match=r"^custom system 'mine': the drift '_d4' has the signature "
                                        r"_d4\(x, y, params, out\); a drift takes 3 positional arguments, "
                                        r"drift\(x, params, out\)$"):
        systems.custom(_kern_ok, _d4, name="mine")


def test_a_builtin_callable_is_refused_by_its_signature():
    with pytest.raises(TypeError, match=r"^custom system 'custom': the kernel 'sin' has the signature sin\(x, /\)"):
        systems.custom(math.sin)


def test_defaults_and_a_numba_dispatcher_are_accepted():
    import numba

    def kern(x, y, p, out, scale=1.0):
        for c in range(x.shape[0]):
            out[c] = scale * (y[c] - x[c])

    system = systems.custom(numba.njit(kern))
    assert system.kernel is kern  # the pure-Python function behind the dispatcher


# --- the probe: contract violations ---------------------------------------------------------------------------------
def _k_returns(x, y, p, out):
    return -math.sin(x[0] - y[0])


def _k_silent(x, y, p, out):
    z = x[0] - y[0]  # noqa: F841  (computes and forgets)


def _k_misses_middle(x, y, p, out):
    out[0] = x[0] - y[0]
    out[2] = x[2] - y[2]


def _k_first_only(x, y, p, out):
    out[0] = y[0] - x[0]


def _k_params3(x, y, p, out):
    for c in range(x.shape[0]):
        out[c] = p[3] * (y[c] - x[c])


def _k_params_neg(x, y, p, out):
    for c in range(x.shape[0]):
        out[c] = p[-2] * (y[c] - x[c])


def _d_params1(x, p, out):
    for c in range(x.shape[0]):
        out[c] = -p[1] * x[c]


def _k_writes_x(x, y, p, out):
    for c in range(x.shape[0]):
        x[c] = 0.0
        out[c] = y[c]


def _k_writes_params(x, y, p, out):
    p[0] = 2.0
    for c in range(x.shape[0]):
        out[c] = y[c] - x[c]


def _k_inplace_y(x, y, p, out):
    y += 1.0
    for c in range(x.shape[0]):
        out[c] = y[c] - x[c]


def _k_name_error(x, y, p, out):
    for c in range(x.shape[0]):
        out[c] = undefined_helper(x[c] - y[c])  # noqa: F821  (the bug under test)


def _d_returns(x, p, out):
    return -x[0]


PROBED = r" \(probed in pure Python at d = 2, x = \[0.3, 0.55\], y = \[-0.45, -0.35\], params = \[1.0\]\)$"


@pytest.mark.parametrize(
    "kernel, match",
    [
        (_k_returns, r"the kernel '_k_returns' returns a value \(-0.68163876\d*\) instead of writing K\(x, y\) into "
                     r"out \(it must write out\[0\], ..., out\[d-1\] and return nothing\); a kernel is "
                     r"kernel\(x, y, params, out\)" + PROBED),
        (_k_silent, r"the kernel '_k_silent' never writes into out \(it must write K\(x, y\) into out\[0\], ..., "
                    r"out\[d-1\]\)" + r"; a kernel is kernel\(x, y, params, out\)" + PROBED),
        (_k_params3, r"the kernel '_k_params3' reads params\[3\], but params has 1 entry;" + ".*" + PROBED),
        (_k_params_neg, r"the kernel '_k_params_neg' reads params\[-2\], but params has 1 entry;"),
        (_k_writes_x, r"the kernel '_k_writes_x' writes into its input x \(the inputs are read-only"),
        (_k_writes_params, r"the kernel '_k_writes_params' writes into its input params"),
        (_k_inplace_y, r"the kernel '_k_inplace_y' writes into one of its inputs \(x, y and params are read-only"),
        (_k_name_error, r"the kernel '_k_name_error' raised NameError: name 'undefined_helper' is not defined;"
                        + ".*" + PROBED),
    ],
    ids=["returns", "never-writes", "params[3]", "params[-2]", "writes-x", "writes-params", "y+=1", "NameError"],
)
def test_a_kernel_breaking_its_contract_is_refused_at_construction(kernel, match):
    with pytest.raises(ValueError, match=r"^custom system 'custom': " + match) as info:
        systems.custom(kernel, params=[1.0])
    if kernel is _k_name_error:  # the user's own exception stays attached, with its traceback
        assert isinstance(info.value.__cause__, NameError)


def test_a_drift_breaking_its_contract_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"^custom system 'custom': the drift '_d_returns' returns a value \(-0.3\) "
                                         r"instead of writing b\(x\) into out.*; a drift is drift\(x, params, out\) "
                                         r"\(probed in pure Python at d = 2, x = \[0.3, 0.55\], params = \[\]\)$"):
        systems.custom(_kern_ok, _d_returns)
    with pytest.raises(ValueError, match=r"^custom system 'custom': the drift '_d_params1' reads params\[1\], but "
                                         r"params has 1 entry"):
        systems.custom(_kern_ok, _d_params1, params=[0.5])


def test_negative_params_indices_within_range_are_accepted():
    """params[-1] is the last entry in NumPy and in Numba alike: not an error."""
    systems.custom(_k_params_neg, params=[1.0, 2.0])


def test_a_kernel_writing_only_some_components_is_refused():
    # with dim=: at construction
    with pytest.raises(ValueError, match=r"^custom system 'custom': the kernel '_k_first_only' does not write "
                                         r"out\[1\] \(every component out\[0\], ..., out\[d-1\] of K\(x, y\) must be "
                                         r"written; pass dim= if it is written for one dimension\)"):
        systems.custom(_k_first_only, dim=2)
    # without dim=: a kernel that misses a component in every dimension it can run in (here only d = 3)
    with pytest.raises(ValueError, match=r"^custom system 'custom': the kernel '_k_misses_middle' does not write "
                                         r"out\[1\] .*at d = 3, x = \[0.3, 0.55, 0.8\]"):
        systems.custom(_k_misses_middle)


def test_a_one_dimensional_kernel_is_accepted_and_checked_again_in_the_state_dimension(monkeypatch):
    """Writing out[0] only is right in d = 1: accepted without dim=, refused at the first solve in d = 2,
    before anything is compiled or computed (the cpu loops are never asked for)."""
    system = systems.custom(_k_first_only)
    tr = particles.solve(system, _x0(d=1), t_end=0.02, dt=0.01, backend="reference")
    assert np.all(np.isfinite(tr.x))

    def no_loops(*args):
        raise AssertionError("compiled before the probe")

    monkeypatch.setattr(cpu, "loops_for", no_loops)
    monkeypatch.setattr(cpu, "compile_user_functions", no_loops)
    for call in (lambda: particles.solve(system, _x0(d=2), t_end=0.02, dt=0.01, backend="cpu"),
                 lambda: particles.drift(system, _x0(d=2), backend="cpu")):
        with pytest.raises(ValueError, match=r"^custom system 'custom': the kernel '_k_first_only' does not write "
                                             r"out\[1\] .*at d = 2"):
            call()


def _k_cross(x, y, p, out):
    """x cross y: written for d = 3 only."""
    out[0] = x[1] * y[2] - x[2] * y[1]
    out[1] = x[2] * y[0] - x[0] * y[2]
    out[2] = x[0] * y[1] - x[1] * y[0]


def _k_five(x, y, p, out):
    for c in range(5):
        out[c] = y[c] - x[c]


def test_kernels_written_for_one_dimension():
    systems.custom(_k_cross)  # passes in d = 3 of the probed 2, 1, 3
    systems.custom(_k_five)  # indexes past the end in d = 1, 2, 3 only: taken to be written for a larger d
    with pytest.raises(ValueError, match=r"the kernel '_k_cross' indexes y\[2\], but y has d = 2 components"):
        particles.solve(systems.custom(_k_cross), _x0(d=2), t_end=0.01, dt=0.01, backend="reference")
    with pytest.raises(ValueError, match=r"the kernel '_k_five' indexes \w\[4\], but \w has d = 4 components"):
        particles.drift(systems.custom(_k_five), _x0(d=4), backend="reference")
    five = systems.custom(_k_five, dim=5)
    assert five.dim == 5
    f = particles.drift(five, _x0(d=5), backend="reference")
    x = _x0(d=5)
    assert_allclose(f, (x.sum(axis=0) - 7 * x) / 6, rtol=RTOL, atol=RTOL)  # mean of y - x_i over the others
    with pytest.raises(ValueError, match=r"^x has dimension d=4, but system 'custom' requires d=5"):
        particles.drift(five, _x0(d=4), backend="reference")
    with pytest.raises(ValueError, match=r"the kernel '_k_cross' indexes y\[2\], but y has d = 2 components"):
        systems.custom(_k_cross, dim=2)
    with pytest.raises(ValueError, match=r"^dim must be >= 1, got 0"):
        systems.custom(_kern_ok, dim=0)


def _k_dyson(x, y, p, out):
    out[0] = 1.0 / (x[0] - y[0])


def _d_sqrt(x, p, out):
    for c in range(x.shape[0]):
        out[c] = math.sqrt(0.5 - x[c])


def test_non_finite_values_at_the_sample_points_only_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        systems.custom(_k_dyson, dim=1)  # singular at x = y: the sample points are distinct
        systems.custom(_k_dyson, dim=1, sphere=True)  # on S^0 = {-1, 1}
    with pytest.warns(RuntimeWarning, match=r"^custom system 'custom': the drift '_d_sqrt' gives ValueError: math "
                                            r"domain error \(inf or nan in compiled code\) at the sample inputs "
                                            r"\(d = 2, x = \[0.3, 0.55\], params = \[\]\); the trajectory will not "
                                            r"stay finite if the particles get there"):
        system = systems.custom(_kern_ok, _d_sqrt)
    assert not system.builtin


def test_a_non_finite_value_in_out_only_warns():
    def kern(x, y, p, out):
        for c in range(x.shape[0]):
            out[c] = (y[c] - x[c]) / (x[c] - 0.3)  # 0/0 in component 0 at the first sample point

    with pytest.warns(RuntimeWarning, match=r"the kernel '.*kern' gives out\[0\] = -inf at the sample inputs"):
        systems.custom(kern)


def test_return_out_after_writing_it_is_accepted():
    def kern(x, y, p, out):
        for c in range(x.shape[0]):
            out[c] = y[c] - x[c]
        return out

    systems.custom(kern)


# --- out is zeroed before every call: a partial write cannot leak scratch memory ------------------------------------
def _kern_gated(x, y, p, out):
    """-p0 sin(x_c - y_c), but component 1 only when x_0 > y_0 (true at the probe's sample points)."""
    for c in range(x.shape[0]):
        if c != 1 or x[0] > y[0]:
            out[c] = -p[0] * math.sin(x[c] - y[c])


def _drift_gated(x, p, out):
    """-x_c^3, but component 0 only when x_1 > 0 (true at the probe's sample point)."""
    for c in range(x.shape[0]):
        if c != 0 or x[1] > 0.0:
            out[c] = -x[c] * x[c] * x[c]


GATED = systems.custom(_kern_gated, _drift_gated, sigma=0.3, params=[0.8], name="gated")


def _oracle_gated(x, p0=0.8):
    """The full drift of GATED in NumPy, unwritten components counting as 0."""
    z = x[..., :, None, :] - x[..., None, :, :]  # (.., i, j, c) = x_i - x_j
    K = -p0 * np.sin(z)
    K[..., 1] *= z[..., 0] > 0
    n = x.shape[-2]
    K[..., np.arange(n), np.arange(n), :] = 0.0
    b = -(x**3)
    b[..., 0] *= x[..., 1] > 0
    return K.sum(axis=-2) / (n - 1) + b


def test_the_gated_oracle_has_unwritten_components_to_catch():
    """The test below is only meaningful if some pairs and particles do leave a component unwritten."""
    x = _x0(replicas=2)
    z0 = x[:, :, None, 0] - x[:, None, :, 0]
    assert 0 < np.sum(z0 < 0) and 0 < np.sum(x[..., 1] <= 0) < x[..., 1].size


def test_zeroed_out_makes_every_backend_equal_the_oracle(backend):
    x = _x0(replicas=2)
    assert_allclose(particles.drift(GATED, x, backend=backend), _oracle_gated(x), rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("method", ["full", "rbm1", "rbmr"])
def test_zeroed_out_makes_cpu_equal_reference_along_a_run(method):
    x0 = _x0(n=9, replicas=2, seed=3)
    kw = dict(t_end=0.06, dt=0.02, method=method, batch_size=None if method == "full" else 3, seed=11)
    a = particles.solve(GATED, x0, backend="cpu", **kw)
    b = particles.solve(GATED, x0, backend="reference", **kw)
    assert_allclose(a.x, b.x, rtol=RTOL, atol=RTOL)


# --- a correct kernel runs everywhere and agrees ----------------------------------------------------------------------
SINE = systems.custom(_kern_sin, _drift_cubic, sigma=0.2, params=[0.8, 0.1])  # the functions of test_backends


def _oracle_sine(x, p=(0.8, 0.1)):
    z = x[..., :, None, :] - x[..., None, :, :]
    K = -p[0] * np.sin(z) - p[1] * z  # the diagonal (z = 0) contributes 0
    return K.sum(axis=-2) / (x.shape[-2] - 1) - x**3


def test_a_correct_kernel_agrees_with_the_oracle_on_every_backend(backend):
    x = _x0(replicas=2, d=3, seed=5)
    assert_allclose(particles.drift(SINE, x, backend=backend), _oracle_sine(x), rtol=RTOL, atol=RTOL)
    kw = dict(t_end=0.04, dt=0.02, method="rbm1", batch_size=3, seed=2)
    assert_allclose(particles.solve(SINE, x, backend=backend, **kw).x,
                    particles.solve(SINE, x, backend="reference", **kw).x, rtol=RTOL, atol=RTOL)


# --- Numba's errors: one message, before the loops -------------------------------------------------------------------
class _Gain:
    value = 2.0


_GAIN = _Gain()


def _kern_untyped(x, y, p, out):
    for c in range(x.shape[0]):
        out[c] = _GAIN.value * (y[c] - x[c])


UNTYPED = systems.custom(_kern_untyped, name="untyped")  # plain Python runs it: the probe passes


@pytest.mark.parametrize("backend_name", ["cpu", "cuda"])
def test_a_kernel_numba_cannot_compile_gets_one_clear_message(backend_name, monkeypatch):
    if backend_name == "cuda":
        pytest.importorskip("numba_cuda")
    monkeypatch.setattr(cpu, "_compile_family", lambda *a, **k: pytest.fail("the loops were compiled"))
    with pytest.raises(TypeError) as info:
        particles.solve(UNTYPED, _x0(), t_end=0.02, dt=0.01, backend=backend_name)
    msg = str(info.value)
    assert msg.startswith("custom system 'untyped': Numba cannot compile the kernel '_kern_untyped': Untyped global "
                          "name '_GAIN': Cannot determine Numba type of <class ")
    assert "test_user_kernels.py, line " in msg and ": out[c] = _GAIN.value * (y[c] - x[c])]" in msg
    assert msg.endswith("Run it with backend='reference' (plain Python, nothing compiled) to debug it; Numba's full "
                        "message is in this exception's numba_error attribute")
    assert "\n" not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert info.value.numba_error.startswith("Failed in nopython mode pipeline")
    # the hint works: the reference backend runs it
    tr = particles.solve(UNTYPED, _x0(), t_end=0.02, dt=0.01, backend="reference")
    assert np.all(np.isfinite(tr.x))


def test_numba_summary_of_a_resolution_failure():
    text = ("Failed in nopython mode pipeline (step: nopython frontend)\n"
            "No implementation of function Function(<built-in function add>) found for signature:\n \n"
            " >>> add(float64, Literal[str](a))\n \nThere are 20 candidate implementations:\n"
            " - Of which 18 did not match due to:\n\nDuring: typing of intrinsic-call at /u/k.py (13)\n\n"
            'File "k.py", line 13:\ndef k(x, y, p, out):\n    <source elided>\n    out[0] = x[0] + l[1]\n    ^\n\n'
            "During: Pass nopython_type_inference")
    reason, where = cpu._numba_summary(text)
    assert reason == ("No implementation of function Function(<built-in function add>) found for signature: "
                      "add(float64, Literal[str](a))")
    assert where == "k.py, line 13: out[0] = x[0] + l[1]"
    reason, where = cpu._numba_summary("Failed in nopython mode pipeline (step: nopython frontend)\n"
                                       "NameError: name 'h' is not defined\nDuring: Pass nopython_type_inference")
    assert (reason, where) == ("NameError: name 'h' is not defined", None)


# --- the on-disk cache of a user's loops ----------------------------------------------------------------------------
def _fp(fn):
    return cpu._fingerprint(fn, _drift_cubic)


def _make_kernel(lam):
    def kern(x, y, p, out):
        for c in range(x.shape[0]):
            out[c] = lam * (y[c] - x[c])

    return kern


_SCALE = 1.0


def _kern_global(x, y, p, out):
    for c in range(x.shape[0]):
        out[c] = _SCALE * (y[c] - x[c])


def test_the_cache_key_follows_what_numba_compiles_in(monkeypatch):
    assert _fp(_make_kernel(1.0)) == _fp(_make_kernel(1.0))  # a closure: keyed on the captured value
    assert _fp(_make_kernel(1.0)) != _fp(_make_kernel(2.0))
    before = _fp(_kern_global)
    monkeypatch.setattr(sys.modules[__name__], "_SCALE", 3.0)  # a global's value is compiled in as a constant
    assert _fp(_kern_global) != before
    src = "def kern(x, y, p, out):\n    out[0] = y[0] - x[0]\n"
    first, again, edited = {}, {}, {}
    exec(compile(src, "<notebook cell>", "exec"), first)
    exec(compile(src, "<notebook cell>", "exec"), again)
    exec(compile(src.replace("y[0] - x[0]", "x[0] - y[0]"), "<notebook cell>", "exec"), edited)
    assert _fp(first["kern"]) == _fp(again["kern"])  # no source file needed: the code itself is hashed
    assert _fp(first["kern"]) != _fp(edited["kern"])
    assert cpu._fingerprint(_kern_gated, _drift_gated) != cpu._fingerprint(_kern_gated, _drift_cubic)


def test_a_kernel_the_key_cannot_hash_is_compiled_uncached_with_one_warning(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu, "_compile_family", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(cpu, "_uncached_said", set())
    opaque = systems.custom(_kern_untyped, name="untyped")
    monkeypatch.setattr(cpu, "compile_user_functions", lambda system: ("k", "d"))  # typing is tested above
    with pytest.warns(systems.CompileCostWarning, match=r"^custom system 'untyped': the engine's loops compiled with "
                                                        r"its kernel and drift cannot be cached on disk \(the global "
                                                        r"'_GAIN' of '_kern_untyped' is an object of type _Gain, "
                                                        r"which the cache key cannot hash\); every process compiles "
                                                        r"them again"):
        cpu._compile_user(opaque)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu._compile_user(opaque)  # said once
        cpu._compile_user(GATED)
    assert [c[0][2:4] for c in calls] == [("user", False), ("user", False),
                                          (f"user_{cpu._fingerprint(_kern_gated, _drift_gated)}", True)]
    assert all(c[1]["user"] == ("k", "d") for c in calls)


def test_a_second_process_loads_the_compiled_loops_from_the_disk_cache():
    x0 = _x0(n=9, replicas=2, seed=3)
    particles.solve(GATED, x0, t_end=0.02, dt=0.02, seed=1)  # compiled here (or loaded from an earlier run)
    code = ("import time, numpy as np, particles\n"
            "from particles.backends import cpu\n"
            "from tests.particles.test_user_kernels import GATED, _x0\n"
            "t = time.perf_counter()\n"
            "particles.solve(GATED, _x0(n=9, replicas=2, seed=3), t_end=0.02, dt=0.02, seed=1)\n"
            "loops = cpu.loops_for(GATED)\n"
            "print(sum(loops.run_batched.stats.cache_hits.values()), len(loops.run_batched.stats.cache_misses),\n"
            "      f'{time.perf_counter() - t:.2f}')\n")
    env = dict(os.environ, NUMBA_NUM_THREADS=os.environ.get("NUMBA_NUM_THREADS", "2"))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600, check=True).stdout.split()
    hits, misses, seconds = int(out[0]), int(out[1]), float(out[2])
    assert (hits, misses) == (1, 0), f"run_batched: {hits} cache hits, {misses} misses ({seconds} s)"


# --- plain numbers in messages ----------------------------------------------------------------------------------------
def _drift_explodes(x, p, out):
    for c in range(x.shape[0]):
        out[c] = 1e200 * x[c] * x[c] * x[c]


def test_the_non_finite_warning_prints_plain_numbers():
    system = systems.custom(_kern_ok, _drift_explodes, name="explodes")
    with np.errstate(over="ignore", invalid="ignore"), pytest.warns(
            RuntimeWarning, match=r"^the state became non-finite by t=0.02 \(save index 2\); reduce dt "
                                  r"\(system 'explodes'\)$"):
        particles.solve(system, np.full((3, 1), 2.0), t_end=0.05, dt=0.01, backend="reference")


def test_no_tutorial_names_a_variable_sys():
    for path in [*sorted((ROOT / "docs" / "tutorials").glob("*.rst")), ROOT / "README.md"]:
        text = path.read_text()
        assert "sys = " not in text and "(sys," not in text, path.name
