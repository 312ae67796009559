"""The ``cpu`` backend: Numba, parallel over particles and replicas.

The loop bodies live in :mod:`particles.backends._loops` as plain Python.
:func:`loops_for` compiles them with the free names bound to one system
family's scalar functions:

- the built-in kernel systems share one set of loops whose kernel switches
  on a model code (compiled once, cached on disk with ``cache=True``);
- the attention systems share another cached set;
- each user-defined system gets its own set (compiled on first use and kept
  for the session; Numba cannot cache code that closes over a user's
  function).

``fastmath`` is off: convergence studies must not be polluted by
re-association. Nothing is compiled at import time.
"""

from __future__ import annotations

import threading
import types

import numpy as np

from particles import _batches, _kernels, _rng
from particles.backends import _loops

name = "cpu"

_RNG_FUNCS = ("mix64", "combine", "root_key", "draw", "to_unit", "to_unit_open", "normal")
_BATCH_FUNCS = ("build_permutation", "draw_subset")
_LOOP_ORDER = (
    "project_tangent", "normalise", "force_all", "build_perms", "particle_noise", "stage_particle",
    "advance_particle", "stage_all", "advance_all", "save_state", "run_batched", "run_rbmr",
)
_PARALLEL = {"force_all", "build_perms", "stage_all", "advance_all", "save_state", "run_rbmr"}

_lock = threading.RLock()
_shared: dict | None = None
_families: dict = {}


def _numba():
    import numba

    return numba


def _rebind(fn, namespace, family=None):
    """A copy of ``fn`` whose global names resolve in ``namespace``.

    ``family`` goes into the qualified name, which keys Numba's on-disk
    cache: the same loop body bound to different families must not share
    cache entries (their signatures are identical).
    """
    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    if family is not None:
        new.__qualname__ = f"{family}.{fn.__qualname__}"
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
                ns[fname] = numba.njit(cache=True)(_rebind(getattr(_rng, fname), ns))
            ns["fast_tanh"] = numba.njit(cache=True)(_rebind(_kernels.fast_tanh, ns))
            for fname in _BATCH_FUNCS:
                ns[fname] = numba.njit(cache=True)(_rebind(getattr(_batches, fname), ns))
            _shared = ns
        return _shared


def _compile_family(kernel_fn, drift_fn, family, cache):
    numba = _numba()
    shared = _shared_namespace()
    ns = dict(vars(_loops))
    for key in (*_RNG_FUNCS, *_BATCH_FUNCS, "fast_tanh"):
        ns[key] = shared[key]
    kns = dict(vars(_kernels))
    kns["fast_tanh"] = shared["fast_tanh"]
    if kernel_fn is not None:
        ns["kernel_fn"] = numba.njit(cache=cache)(_rebind(kernel_fn, kns) if cache else kernel_fn)
        ns["drift_fn"] = numba.njit(cache=cache)(_rebind(drift_fn, kns) if cache else drift_fn)
    if family == "kernel":
        ns["prepare_row"] = numba.njit(cache=cache)(_rebind(_loops.kernel_prepare_row, ns, family))
        ns["member_force"] = numba.njit(cache=cache)(_rebind(_loops.kernel_member_force, ns, family))
    else:
        ns["prepare_row"] = numba.njit(cache=cache)(_rebind(_loops.attn_prepare_row, ns, family))
        ns["member_force"] = numba.njit(cache=cache)(_rebind(_loops.attn_member_force, ns, family))
    for fname in _LOOP_ORDER:
        fn = _rebind(getattr(_loops, fname), ns, family)
        ns[fname] = numba.njit(parallel=fname in _PARALLEL, cache=cache)(fn)
    return types.SimpleNamespace(**{k: ns[k] for k in (*_LOOP_ORDER, "prepare_row", "member_force")})


def loops_for(system):
    """Compiled loops for ``system`` (compiled lazily, once per family)."""
    with _lock:
        if system.family == "attention":
            key = "attention"
        elif system.builtin:
            key = "builtin"
        else:
            key = (system.kernel, system.drift)
        if key not in _families:
            if system.family == "attention":
                _families[key] = _compile_family(None, None, "attention", cache=True)
            elif system.builtin:
                _families[key] = _compile_family(_kernels.builtin_kernel, _kernels.builtin_drift, "kernel", True)
            else:
                _families[key] = _compile_family(system.kernel, system.drift, "kernel", cache=False)
        return _families[key]


def work_width(system, d):
    return 3 * d if system.family == "attention" else d


def run(system, x, traj, plan):
    """Integrate in place: ``x`` (R, N, d) is advanced, ``traj`` (K, R, N, d) filled."""
    loops = loops_for(system)
    R, N, d = x.shape
    S = plan.B.shape[0]
    work = np.empty((R, N, work_width(system, d)))
    K = np.empty((S, R, N, d))
    xs = np.empty((R, N, d))
    params = np.ascontiguousarray(system.params)
    if plan.method == "rbmr":
        pool = np.tile(np.arange(N, dtype=np.int64), (R, 1))
        clock = np.zeros((R, N), dtype=np.int64)
        loops.run_rbmr(x, traj, plan.nsteps, plan.save_every, plan.batch_size, plan.A, plan.B, plan.dt,
                       plan.scale, plan.nfine, np.uint64(plan.seed), params, plan.coupling, plan.sphere,
                       work, K, xs, pool, clock)
        return
    full = plan.method == "full"
    p = N if full else plan.batch_size
    bounds = _batches.batch_bounds(N, p)
    bop = _batches.batch_of_position(N, p)
    nb = _batches.num_buckets(N)
    idx = np.tile(np.arange(N, dtype=np.int64), (R, 1))
    bucket = np.empty((R, N), dtype=np.int64)
    counts = np.empty((R, nb + 1), dtype=np.int64)
    loops.run_batched(x, traj, plan.nsteps, plan.save_every, plan.tau_steps, full, plan.A, plan.B, plan.dt,
                      plan.scale, plan.nfine, np.uint64(plan.seed), bounds, bop, nb, params, plan.coupling,
                      plan.sphere, work, K, xs, idx, bucket, counts)


def drift(system, x, out, *, method, batch_size, seed, step, coupling):
    """Drift at frozen positions (full or one RBM-1 partition), written into ``out``."""
    loops = loops_for(system)
    R, N, d = x.shape
    work = np.empty((R, N, work_width(system, d)))
    idx = np.tile(np.arange(N, dtype=np.int64), (R, 1))
    p = N if method == "full" else batch_size
    if method != "full":
        nb = _batches.num_buckets(N)
        loops.build_perms(np.uint64(seed), step, nb, idx, np.empty((R, N), dtype=np.int64),
                          np.empty((R, nb + 1), dtype=np.int64))
    loops.force_all(x, idx, _batches.batch_bounds(N, p), _batches.batch_of_position(N, p),
                    np.ascontiguousarray(system.params), coupling, system.sphere, work, out)


def permutations(seed, step, n, replicas=1):
    """The RBM-1 permutations of reshuffle ``step`` (for tests and the reference)."""
    loops = loops_for_any()
    nb = _batches.num_buckets(n)
    idx = np.empty((replicas, n), dtype=np.int64)
    loops.build_perms(np.uint64(seed), step, nb, idx, np.empty((replicas, n), dtype=np.int64),
                      np.empty((replicas, nb + 1), dtype=np.int64))
    return idx


def loops_for_any():
    from particles.systems import confined_tanh

    return loops_for(confined_tanh())
