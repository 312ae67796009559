"""The ``cpu`` backend: Numba, parallel over particles and replicas.

The loop bodies live in :mod:`particles.backends._loops` as plain Python.
:func:`loops_for` compiles them with the free names bound to one system
family's scalar functions:

- the built-in kernel systems share one set of loops whose kernel switches
  on a model code (compiled once, cached on disk with ``cache=True``);
- the attention systems share another cached set;
- each user-defined system gets its own set, compiled on first use after
  its scalar functions were compiled alone (so that a function Numba cannot
  compile is reported by name within seconds, see
  :func:`compile_user_functions`). It is cached on disk under a key made of
  everything Numba compiles into it (:func:`_fingerprint`: the functions'
  code, and the values of the globals and closure variables they use,
  recursively), so that an edit selects fresh entries; a function whose
  key cannot be made (it uses a global of a kind the key cannot hash) is
  compiled in every process, which :class:`particles.systems.CompileCostWarning`
  says once.

The built-in kernel systems (confined tanh, Dyson) in flat space take a
fast path for ``full`` and ``rbm1`` (``run_fast_*`` in ``_fast``): the
particles of a batch are gathered into component rows so that the pair
loops vectorise (with the branch-free ``_kernels.fast_tanh``), and an RBM-1
step is done chunk by chunk (gather, forces, noise, update, scatter) while
the chunk is in cache. The attention family computes the scores of a block
of partners at once from keys gathered per batch. Both give the same bits
as the plain per-particle loops (which serve RBM-r, ``drift``, the
user-defined systems and an RBM-1 partition with a lone particle under
``remainder="pad"``) and as each other for any number of threads.

``fastmath`` is off: convergence studies must not be polluted by
re-association. Loops are compiled with Numba's ``numpy`` error model (a
float division by zero gives inf/nan, as in the reference backend, and the
loops carry no exception branch that would block vectorisation). Nothing is
compiled at import time.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import marshal
import re
import sys
import threading
import types
import warnings

import numpy as np

from particles import _batches, _kernels, _layout, _rng, device
from particles.backends import _ensemble, _loops, _perms
from particles.systems import CompileCostWarning

name = "cpu"

_RNG_FUNCS = ("mix64", "combine", "root_key", "draw", "to_unit", "to_unit_open", "normal", "normal_first")
_BATCH_FUNCS = ("build_permutation", "draw_subset")
_KERNEL_FUNCS = ("fast_tanh", "tanh_pair", "dyson_pair", "tanh_drift1", "dyson_drift1")
_DEVICE_FUNCS = ("softmax_step",)
_LOOP_ORDER = (
    "project_tangent", "normalise", "gather_keys", "attn_tile_force", "force_all",
    "particle_noise", "stage_particle", "advance_particle", "stage_all", "advance_all", "save_state", "lone_force",
    "run_batched", "run_rbmr",
)
# the RBM-1 permutations (_perms): they use nothing of a system, so they are compiled once, on their own
# (permutation_loops), and every family's loops call those
_PERM_ORDER = ("perm_draws", "perm_scan", "perm_scatter", "perm_shuffle", "permute_replica", "build_perms")
# the fast path of the built-in kernel systems (see _fast)
_FAST_ORDER = (
    "seg_slots", "seg_gather", "block_forces", "seg_forces", "stage_rows", "seg_noise", "seg_advance", "seg_step",
    "fused_step", "phased_forces", "phased_step", "lone_forces", "lone_advance", "run_fast_fused", "run_fast_phased",
)
_PARALLEL = {"force_all", "permute_replica", "build_perms", "stage_all", "advance_all", "save_state", "lone_force",
             "run_rbmr", "fused_step", "phased_forces", "phased_step"}
# per built-in model code: (pair_fn, pair_const, drift1, drift_const) in particles._kernels
_MODELS = {
    _layout.MODEL_TANH: ("tanh", ("tanh_pair", "tanh_pair_const", "tanh_drift1", "tanh_drift_const")),
    _layout.MODEL_DYSON: ("dyson", ("dyson_pair", "dyson_pair_const", "dyson_drift1", "dyson_drift_const")),
}
# numpy's error model: a float division by zero gives inf/nan (as in the reference backend) instead of
# raising, and leaves the loops free of exception branches, so that they vectorise
_JIT = {"error_model": "numpy"}

_CHUNK_POS = 1024  # positions per chunk of the fused RBM-1 step of the fast path
_FUSED_MIN = 8  # fewer batches (R * N // p) than this: phased step, parallel inside batches

# the fused ensemble kernel (see _ensemble): token sets up to this size. Measured (benchmarks/README.md,
# "Ensembles of small token sets"): faster than the general path at every N tried, 50x at N <= 128, 8x at
# N = 512, 4x at N = 1024 (d = 32); its scratch grows as 4 N^2 doubles per set and thread (8 MB at 512), and
# it runs one set per thread, so larger sets keep the general path, which tiles and parallelises within a set
ENSEMBLE_MAX_N = 512
_ENSEMBLE_ORDER = ("ens_exp_flat", "ens_gram", "ens_accumulate", "ens_forces", "ens_save", "run_ensemble")

_lock = threading.RLock()
_ensemble_ns: types.SimpleNamespace | None = None
_perm_ns: types.SimpleNamespace | None = None
ensemble_calls = 0  # runs that took the fused ensemble kernel (read by the tests)
_shared: dict | None = None
_tag: str | None = None
_families: dict = {}


def _numba():
    import numba

    return numba


def _source_tag():
    """Short hash of the sources compiled into the loops.

    Numba's on-disk cache checks only the timestamp of the file that defines
    each function, but the loops inline functions from other files (the RNG,
    the kernels) and this module decides what is bound into them (options,
    ``ZERO_OUT``): the tag in every qualified name below makes an edit of any
    of them select fresh cache entries.
    """
    global _tag
    if _tag is None:
        h = hashlib.sha1()
        for module in (_layout, _rng, _batches, _kernels, device, _loops, *_loops.SOURCES, _ensemble,
                       sys.modules[__name__]):
            h.update(inspect.getsource(module).encode())
        _tag = h.hexdigest()[:10]
    return _tag


def _rebind(fn, namespace, family=None):
    """A copy of ``fn`` whose global names resolve in ``namespace``.

    ``family`` goes into the qualified name, which keys Numba's on-disk
    cache: the same loop body bound to different families must not share
    cache entries (their signatures are identical). So does the source tag.
    """
    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    prefix = f"s{_source_tag()}" if family is None else f"{family}_{_source_tag()}"
    new.__qualname__ = f"{prefix}.{fn.__qualname__}"
    return new


def _shared_namespace():
    """RNG and batch helpers, compiled once (leaf functions, cached)."""
    global _shared
    with _lock:
        if _shared is None:
            numba = _numba()
            ns = dict(vars(_rng))
            ns.update(vars(_batches))
            for fname in _RNG_FUNCS:
                ns[fname] = numba.njit(cache=True, **_JIT)(_rebind(getattr(_rng, fname), ns))
            for fname in _BATCH_FUNCS:
                ns[fname] = numba.njit(cache=True, **_JIT)(_rebind(getattr(_batches, fname), ns))
            for fname in _DEVICE_FUNCS:
                # inlined in Numba's IR: as a call (LLVM does not inline it) the attention forces ran 1.5x slower
                ns[fname] = numba.njit(cache=True, inline="always", **_JIT)(
                    _rebind(getattr(device, fname), dict(vars(device))))
            kns = dict(vars(_kernels))
            for fname in _KERNEL_FUNCS:
                kns[fname] = ns[fname] = numba.njit(cache=True, **_JIT)(_rebind(getattr(_kernels, fname), kns))
            _shared = ns
        return _shared


def _compile_family(kernel_fn, drift_fn, family, cache, model=None, user=None, zero_out=True):
    """Compile the loops for one family; ``model`` names the built-in model of the fast path.

    ``user``: the (kernel, drift) dispatchers of a user-defined system (see
    :func:`_compile_user`), compiled with their own globals; their loops zero
    ``out`` before each call (``ZERO_OUT``) unless ``zero_out`` is False
    (only for measuring what the zeroing costs: benchmarks/bench_user_kernels.py).
    """
    numba = _numba()
    shared = _shared_namespace()
    ns = _loops.namespace()
    for key in (*_RNG_FUNCS, *_BATCH_FUNCS, *_KERNEL_FUNCS, *_DEVICE_FUNCS):
        ns[key] = shared[key]
    ns["build_perms"] = permutation_loops().build_perms
    kns = dict(vars(_kernels))
    for key in _KERNEL_FUNCS:
        kns[key] = shared[key]
    if user is not None:
        ns["kernel_fn"], ns["drift_fn"] = user
        ns["ZERO_OUT"] = bool(zero_out)
    elif kernel_fn is not None:
        ns["kernel_fn"] = numba.njit(cache=cache, **_JIT)(_rebind(kernel_fn, kns))
        ns["drift_fn"] = numba.njit(cache=cache, **_JIT)(_rebind(drift_fn, kns))
    if family == "attention":
        ns["prepare_row"] = numba.njit(cache=cache, **_JIT)(_rebind(_loops.attn_prepare_row, ns, family))
        ns["attn_head_force"] = numba.njit(cache=cache, **_JIT)(_rebind(_loops.attn_head_force, ns, family))
        ns["member_force"] = numba.njit(cache=cache, **_JIT)(_rebind(_loops.attn_member_force, ns, family))
        ns["HAS_PREPARE"] = True
        ns["TRANSPOSED_KEYS"] = True
    else:
        ns["prepare_row"] = numba.njit(cache=cache, **_JIT)(_rebind(_loops.kernel_prepare_row, ns, family))
        ns["member_force"] = numba.njit(cache=cache, **_JIT)(_rebind(_loops.kernel_member_force, ns, family))
        ns["HAS_PREPARE"] = False
        ns["TRANSPOSED_KEYS"] = False
    order = _LOOP_ORDER
    if model is not None:
        for key, fname in zip(("pair_fn", "pair_const", "drift1", "drift_const"), _MODELS[model][1]):
            ns[key] = shared[fname] if fname in shared else numba.njit(cache=True, **_JIT)(
                _rebind(getattr(_kernels, fname), kns))
        order = _LOOP_ORDER + _FAST_ORDER
    for fname in order:
        fn = _rebind(getattr(_loops, fname), ns, family)
        ns[fname] = numba.njit(parallel=fname in _PARALLEL, cache=cache, **_JIT)(fn)
    return types.SimpleNamespace(**{k: ns[k] for k in (*order, "build_perms", "prepare_row", "member_force")})


def permutation_loops():
    """The compiled RBM-1 permutation loops (``_perms``; compiled lazily, once, on their own; cached on disk).

    Drawing a partition compiles these and the RNG helpers only, never a
    system's loops.
    """
    global _perm_ns
    with _lock:
        if _perm_ns is None:
            numba = _numba()
            shared = _shared_namespace()
            ns = dict(vars(_perms))
            for key in _RNG_FUNCS:
                ns[key] = shared[key]
            for fname in _PERM_ORDER:
                fn = _rebind(getattr(_perms, fname), ns, "perms")
                ns[fname] = numba.njit(parallel=fname in _PARALLEL, cache=True, **_JIT)(fn)
            _perm_ns = types.SimpleNamespace(**{k: ns[k] for k in _PERM_ORDER})
        return _perm_ns


# --- user-defined systems ----------------------------------------------------------------------------------------
# modules whose objects a user's function may use without being hashed into the cache key (their code is the
# library's; Numba keys its cache on its own version)
_LIBRARY_ROOTS = frozenset({"numpy", "numba", "math", "cmath", "builtins", "particles"})
_uncached_said: set = set()
_NUMBA_FROZEN_ARRAY_BYTES = 10**6  # Numba compiles a global array up to this size in as a constant


def compile_user_functions(system):
    """A user system's kernel and drift as Numba dispatchers, compiled alone for the loops' argument types.

    A few seconds, against a minute for the loops: a function that Numba
    cannot compile is reported at once, as a ``TypeError`` naming it and
    giving Numba's reason, instead of a page of Numba's error after the
    loops' compilation. The arguments are 1-D C-contiguous float64 arrays,
    ``params`` read-only.
    """
    numba = _numba()
    arr = numba.types.Array(numba.types.float64, 1, "C")
    ro = numba.types.Array(numba.types.float64, 1, "C", readonly=True)
    compiled = []
    for role, fn, sig in (("kernel", system.kernel, (arr, arr, ro, arr)), ("drift", system.drift, (arr, ro, arr))):
        dispatcher = numba.njit(**_JIT)(fn)
        try:
            dispatcher.compile(sig)
        except numba.core.errors.NumbaError as e:
            raise user_compile_error(system, f"the {role} {fn.__qualname__!r}", e, fn) from None
        compiled.append(dispatcher)
    return tuple(compiled)


def _numba_summary(text, fn=None):
    """Numba's reason (its first line that says something) and the user's source line it points at."""
    lines = [line.rstrip() for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()]
    said = [line.strip() for line in lines
            if line.strip() and not line.startswith(("Failed in ", "During: ")) and not line.strip().startswith("^")]
    reason = said[0] if said else text.strip()
    if reason.endswith("found for signature:") and len(said) > 1:
        reason = f"{reason} {said[1].lstrip('> ')}"
    where = None
    user_file = getattr(getattr(fn, "__code__", None), "co_filename", None)
    for k, line in enumerate(lines):
        m = re.match(r'\s*File "(.+)", line (\d+):', line)
        if not m:
            continue
        caret = next((j for j in range(k + 1, len(lines)) if lines[j].strip() == "^"), None)
        if caret is not None:
            here = f"{m.group(1)}, line {m.group(2)}: {lines[caret - 1].strip()}"
            if where is None or (user_file and user_file.endswith(m.group(1))):
                where = here
    return reason, where


def user_compile_error(system, what, err, fn=None):
    """One ``TypeError`` for a Numba error met compiling a user system; Numba's full text in ``numba_error``."""
    reason, where = _numba_summary(str(err), fn)
    if where is None and fn is not None and hasattr(fn, "__code__"):
        where = f"{fn.__code__.co_filename}, line {fn.__code__.co_firstlineno} (the function)"
    e = TypeError(f"custom system {system.name!r}: Numba cannot compile {what}: {reason}"
                  + (f" [{where}]" if where else "")
                  + ". Run it with backend='reference' (plain Python, nothing compiled) to debug it; Numba's full "
                    "message is in this exception's numba_error attribute")
    e.numba_error = str(err)
    return e


def _reports_user_errors(fn):
    """Numba errors raised compiling the loops of a user system (at their first call), as one ``TypeError``."""

    @functools.wraps(fn)
    def wrapper(system, *args, **kwargs):
        if system.builtin:
            return fn(system, *args, **kwargs)
        numba = _numba()
        try:
            return fn(system, *args, **kwargs)
        except numba.core.errors.NumbaError as e:
            raise user_compile_error(system, f"the engine's loops with the kernel {system.kernel.__qualname__!r} "
                                     f"and the drift {system.drift.__qualname__!r}", e, system.kernel) from None

    return wrapper


class _Uncachable(Exception):
    pass


def _code_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _fingerprint(*fns):
    """Hex key of what Numba compiles from ``fns``: code, defaults, globals and closure variables, recursively.

    Numba freezes the globals and closure variables of a function as
    constants, so their values are part of the key (numbers, strings,
    arrays, tuples of them, functions, which are followed, and the objects
    of numpy, numba, math and particles, by name). Raises
    :class:`_Uncachable` naming what cannot be hashed.
    """
    h = hashlib.sha1()
    seen = set()

    def library(v):
        return (getattr(getattr(v, "py_func", v), "__module__", None) or "").split(".")[0] in _LIBRARY_ROOTS

    def value(v, where, names):
        if v is None or isinstance(v, (bool, int, float, complex, str, bytes, np.generic)):
            h.update(f"{type(v).__name__}:{v!r};".encode())
        elif isinstance(v, np.ndarray):
            if v.nbytes > _NUMBA_FROZEN_ARRAY_BYTES or not (v.flags.c_contiguous or v.flags.f_contiguous):
                raise _Uncachable(f"{where} is an array that Numba reads by address (larger than 1 MB or not "
                                  "contiguous), and Numba does not cache code that does")
            h.update(f"array:{v.dtype.str}:{v.shape};".encode())
            h.update(np.ascontiguousarray(v).tobytes())
        elif isinstance(v, tuple):
            for item in v:
                value(item, where, names)
        elif isinstance(v, types.ModuleType):
            h.update(f"module:{v.__name__};".encode())
            if v.__name__.split(".")[0] not in _LIBRARY_ROOTS:  # mymodule.helper, mymodule.CONSTANT
                for name in sorted(names):
                    if hasattr(v, name):
                        value(getattr(v, name), f"{where}.{name}", names)
        elif isinstance(getattr(v, "py_func", v), types.FunctionType) and not library(v):
            visit(getattr(v, "py_func", v))
        elif library(v) or isinstance(v, types.BuiltinFunctionType):
            h.update(f"object:{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', type(v).__name__)};"
                     .encode())
        else:
            raise _Uncachable(f"{where} is an object of type {type(v).__name__}, which the cache key cannot hash")

    def visit(fn):
        if id(fn) in seen:
            return
        seen.add(id(fn))
        code = fn.__code__
        h.update(f"function:{fn.__module__}.{fn.__qualname__};".encode())
        h.update(marshal.dumps(code))
        names = _code_names(code)
        value(fn.__defaults__, f"the defaults of {fn.__qualname__!r}", names)
        for var, cell in zip(code.co_freevars, fn.__closure__ or ()):
            value(cell.cell_contents, f"the closure variable {var!r} of {fn.__qualname__!r}", names)
        for name in sorted(names):
            if name in fn.__globals__:
                value(fn.__globals__[name], f"the global {name!r} of {fn.__qualname__!r}", names)

    for fn in fns:
        visit(getattr(fn, "py_func", fn))
    return h.hexdigest()[:16]


def _compile_user(system):
    user = compile_user_functions(system)
    try:
        family, cache = f"user_{_fingerprint(system.kernel, system.drift)}", True
    except _Uncachable as e:
        family, cache = "user", False
        said = (system.kernel, system.drift)
        if said not in _uncached_said:
            _uncached_said.add(said)
            warnings.warn(f"custom system {system.name!r}: the engine's loops compiled with its kernel and drift "
                          f"cannot be cached on disk ({e}); every process compiles them again (30-60 s on a 2-core "
                          "machine)", CompileCostWarning, stacklevel=5)
    return _compile_family(None, None, family, cache, user=user)


def loops_for(system):
    """Compiled loops for ``system`` (compiled lazily, once per family)."""
    with _lock:
        if system.family == "attention":
            key = "attention"
        elif system.builtin:
            key = float(system.params[_layout.MODEL])
        else:
            key = (system.kernel, system.drift)
        if key not in _families:
            if system.family == "attention":
                _families[key] = _compile_family(None, None, "attention", cache=True)
            elif system.builtin:
                _families[key] = _compile_family(_kernels.builtin_kernel, _kernels.builtin_drift,
                                                 f"kernel_{_MODELS[key][0]}", True, model=key)
            else:
                _families[key] = _compile_user(system)
        return _families[key]


def ensemble_loops():
    """The compiled fused ensemble kernel (compiled lazily, once; cached on disk)."""
    global _ensemble_ns
    with _lock:
        if _ensemble_ns is None:
            numba = _numba()
            ns = dict(vars(_ensemble))
            for fname in _ENSEMBLE_ORDER:
                fn = _rebind(getattr(_ensemble, fname), ns, "ensemble")
                ns[fname] = numba.njit(parallel=fname == "run_ensemble", cache=True, **_JIT)(fn)
            _ensemble_ns = types.SimpleNamespace(**{k: ns[k] for k in _ENSEMBLE_ORDER})
        return _ensemble_ns


def takes_ensemble_kernel(system, plan, n):
    """Whether :func:`run` integrates with the fused ensemble kernel (:mod:`particles.backends._ensemble`).

    Attention family with Q = K = V = I (one head: the kernel has no heads), ``method="full"``, no noise,
    and token sets of at most :data:`ENSEMBLE_MAX_N` tokens.
    """
    return (system.family == "attention" and system.builtin
            and float(system.params[_layout.ATTN_IDENTITY]) == _layout.ATTN_FORM_IDENTITY
            and plan.method == "full" and plan.scale == 0.0 and plan.scale_last == 0.0
            and 1 <= n <= ENSEMBLE_MAX_N)


def work_width(system, d):
    """Per-particle scratch of the loops: d for a kernel system, see ``_layout.attention_work_width``."""
    return _layout.attention_work_width(system.params, d) if system.family == "attention" else d


@_reports_user_errors
def run(system, x, traj, plan):
    """Integrate in place: ``x`` (R, N, d) is advanced, ``traj`` (K, R, N, d) filled."""
    global ensemble_calls
    R, N, d = x.shape
    if takes_ensemble_kernel(system, plan, N):
        numba = _numba()
        # sets handed out a few at a time as threads free up (a thread that the OS holds back on a shared
        # machine does not hold the others up), about 8 chunks per thread
        chunk = max(1, R // (8 * numba.get_num_threads()))
        old = numba.set_parallel_chunksize(chunk)
        try:
            ensemble_loops().run_ensemble(x, traj, plan.nsteps, plan.save_every, plan.A, plan.B, plan.dt,
                                          plan.dt_last, np.ascontiguousarray(system.params), plan.coupling,
                                          plan.sphere, plan.project)
        finally:
            numba.set_parallel_chunksize(old)
        ensemble_calls += 1
        return
    loops = loops_for(system)
    S = plan.B.shape[0]
    params = np.ascontiguousarray(system.params)
    if plan.method == "rbmr":
        work = np.empty((R, N, work_width(system, d)))
        K = np.empty((S, R, N, d))
        xs = np.empty((R, N, d))
        pool = np.tile(np.arange(N, dtype=np.int64), (R, 1))
        clock = np.zeros((R, N), dtype=np.int64)
        loops.run_rbmr(x, traj, plan.nsteps, plan.save_every, plan.batch_size, plan.A, plan.B, plan.dt,
                       plan.scale, plan.dt_last, plan.scale_last, plan.nfine, np.uint64(plan.seed), params,
                       plan.coupling, plan.sphere, plan.project, work, K, xs, pool, clock)
        return
    full = plan.method == "full"
    p = N if full else plan.batch_size
    remainder = "spread" if full else plan.remainder
    bounds = _batches.batch_bounds(N, p, remainder)
    lone = _batches.lone_position(N, p, remainder)
    nb = _batches.num_buckets(N)
    idx = np.tile(np.arange(N, dtype=np.int64), (R, 1))
    perm_scratch = _perm_scratch(R, N, full)
    # a lone particle (remainder="pad", N mod p == 1) interacts with all N at every stage: the fast path steps
    # it on its own with the Euler scheme (its bounds stop before it), the general loops with several stages
    if system.family == "kernel" and system.builtin and not plan.sphere and (lone < 0 or S == 1):
        # RBM-1 with enough batches: chunks of about _CHUNK_POS positions, one worker per thread with
        # its own scratch; otherwise (full, few large batches) phase by phase with scratch per replica
        if lone >= 0:
            bounds = bounds[:-1].copy()
        nbat = bounds.size - 1
        fused = not full and R * nbat >= _FUSED_MIN
        per_chunk = max(1, _CHUNK_POS // (bounds[1] - bounds[0]))
        if fused:
            rows = max(1, min(_numba().get_num_threads(), R * -(-nbat // per_chunk)))
            width = per_chunk * (bounds[1] - bounds[0])
        else:
            rows, width = R, N
        xg = np.empty((rows, d * width))
        kg = np.empty((S, rows, d * width))
        sg = np.empty((rows, d * width))
        ip = np.empty((rows, width), dtype=np.int64)
        kp = np.empty((rows, width), dtype=np.uint64)
        lone_scratch = (np.empty((R, d)), np.empty((R, d)))
        if fused:
            loops.run_fast_fused(x, traj, plan.nsteps, plan.save_every, plan.tau_steps, per_chunk, plan.A, plan.B,
                                 plan.dt, plan.scale, plan.dt_last, plan.scale_last, plan.nfine, np.uint64(plan.seed),
                                 bounds, lone, nb, params, plan.coupling, xg, kg, sg, ip, kp, *lone_scratch, idx,
                                 *perm_scratch)
        else:
            loops.run_fast_phased(x, traj, plan.nsteps, plan.save_every, plan.tau_steps, full, plan.A, plan.B,
                                  plan.dt, plan.scale, plan.dt_last, plan.scale_last, plan.nfine, np.uint64(plan.seed),
                                  bounds, lone, nb, params, plan.coupling, xg, kg, sg, ip, kp, *lone_scratch, idx,
                                  *perm_scratch)
        return
    work = np.empty((R, N, work_width(system, d)))
    K = np.empty((S, R, N, d))
    xs = np.empty((R, N, d))
    bop = _batches.batch_of_position(N, p, remainder)
    loops.run_batched(x, traj, plan.nsteps, plan.save_every, plan.tau_steps, full, plan.A, plan.B, plan.dt,
                      plan.scale, plan.dt_last, plan.scale_last, plan.nfine, np.uint64(plan.seed), bounds, bop, lone,
                      nb, params, plan.coupling, plan.sphere, plan.project, work, K, xs,
                      *_force_scratch(system, R, N, d), idx, *perm_scratch)


def _force_scratch(system, R, N, d):
    """``kt`` and ``sbuf`` of ``force_all``: transposed keys and per-worker scores (attention only)."""
    if system.family != "attention":
        return np.empty((1, 1)), np.empty((1, 1))
    workers = max(1, min(_numba().get_num_threads(), R * N))
    return np.empty((R, d * N)), np.empty((workers, _loops.SCORE_BLOCK + 2 * _loops.ATTN_TILE))


def _perm_scratch(R, n, empty=False):
    """Scratch of ``build_perms``: bucket, uniforms, per-chunk histograms, bucket starts.

    The number of histogram chunks follows the number of threads (more
    chunks than threads only cost memory); the permutation does not depend on it.
    """
    nb = _batches.num_buckets(n)
    if empty:
        n = nb = 1
    chunks = max(1, min(_numba().get_num_threads(), n // 4096))
    return (np.empty((R, n), dtype=np.int64), np.empty((R, n)), np.empty((R, chunks, nb), dtype=np.int64),
            np.empty((R, nb + 1), dtype=np.int64))


@_reports_user_errors
def drift(system, x, out, *, method, batch_size, seed, step, coupling, remainder="spread"):
    """Drift at frozen positions (full or one RBM-1 partition), written into ``out``."""
    loops = loops_for(system)
    R, N, d = x.shape
    work = np.empty((R, N, work_width(system, d)))
    idx = np.tile(np.arange(N, dtype=np.int64), (R, 1))
    p = N if method == "full" else batch_size
    if method == "full":
        remainder = "spread"
    else:
        loops.build_perms(np.uint64(seed), step, _batches.num_buckets(N), idx, *_perm_scratch(R, N))
    params = np.ascontiguousarray(system.params)
    loops.force_all(x, idx, _batches.batch_bounds(N, p, remainder), _batches.batch_of_position(N, p, remainder),
                    params, coupling, system.sphere, work, out, *_force_scratch(system, R, N, d))
    lone = _batches.lone_position(N, p, remainder)
    if lone >= 0:
        loops.lone_force(x, idx, lone, params, coupling, system.sphere, work, out)


def permutations(seed, step, n, replicas=1):
    """The RBM-1 permutations of reshuffle ``step``, (replicas, n) int64 (compiles no system's loops)."""
    nb = _batches.num_buckets(n)
    idx = np.empty((replicas, n), dtype=np.int64)
    permutation_loops().build_perms(np.uint64(seed), step, nb, idx, *_perm_scratch(replicas, n))
    return idx
