"""The ``cuda`` backend: numba-cuda kernels, the state kept on the device.

Requires the optional ``numba-cuda`` package (``pip install
'particle-attention[cuda]'``) and either an NVIDIA GPU or the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` in the environment before ``numba.cuda`` is
first imported; the simulator runs every CUDA thread as a Python thread, so
it is only for tests at small sizes). :func:`require` checks both and says
what to install or set. Importing this module imports neither numba nor
numba.cuda; nothing is compiled before the first call.

Layout (public function -> host wrapper -> kernel, as in stumpy's
``gpu_stump``): :func:`particles.solve` / :func:`particles.drift` validate
and call :func:`run` / :func:`drift` here, which upload the state once,
launch the kernels of :mod:`particles.backends._cuda_loops` step after step
and copy back only the saved snapshots (and ``drift``'s result).

What runs where:

- **Scalar functions.** The counter-based RNG (:mod:`particles._rng`), the
  batch helpers, the built-in kernels (:mod:`particles._kernels`), a user's
  kernel and drift, and the per-particle routines of ``_loops`` (noise,
  Runge-Kutta stages, update, projection, attention forces) are compiled with
  ``cuda.jit(device=True)`` from the same Python source as the CPU loops, so
  the Brownian increments and the permutations are the same numbers.
- **Steps.** ``full`` and ``rbm1``: one thread per (replica, particle
  position); with the Euler scheme the force, the noise and the update are
  fused in one kernel that reads one state buffer and writes the other
  (double buffering); with Heun/RK4 a force kernel per stage, a stage kernel
  and an in-place update. ``rbmr``: one block per replica runs all the
  sub-steps of a step (thread 0 draws the subset, the block computes it,
  barriers between the phases).
- **The RBM-1 permutation** is built on the device at each reshuffle: bucket
  draws with an atomic histogram, a chunked exclusive scan, an atomic
  scatter, then one thread per bucket restores the order of the stable
  counting sort (increasing element, an insertion sort of ~32 elements) and
  shuffles the bucket with Fisher-Yates -- the same integers as
  :func:`particles._batches.build_permutation`.
- **Transfers.** Every copy between host and device goes through
  :func:`to_device` / :func:`to_host`, which count them in :data:`TRANSFERS`;
  :func:`launch` refuses host arrays, which Numba would otherwise copy
  implicitly (both ways) at every launch.

Agreement with the ``cpu`` backend: the same sums in the same order, so the
results agree to rounding: the GPU contracts ``a * b + c`` into fused
multiply-adds and its ``exp``/``sin``/... come from libdevice, not libm (the
built-in tanh kernel is plain arithmetic). The simulator executes the same
source with Python floats.

Limits: N < 2**31 (permutations are int32); the full method's pair loop
reads the partners through the cache, without shared-memory tiling.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
import types
from collections import Counter

import numpy as np

from particles import _batches, _kernels, _layout, _rng, device
from particles.backends import _cuda_loops, _loops

name = "cuda"

#: Threads per block of the per-particle kernels; None: :data:`DEVICE_BLOCK` on a GPU,
#: :data:`SIMULATOR_BLOCK` under the simulator (one Python thread per CUDA thread: small blocks
#: waste fewer). Tests patch it to force several blocks and a ragged last block.
BLOCK_SIZE = None
DEVICE_BLOCK = 256
SIMULATOR_BLOCK = 8
#: Elements per thread in the chunked exclusive scan of the bucket counts.
SCAN_CHUNK = 32

#: Host <-> device copies made by this backend: counts and bytes ("to_device", "to_host",
#: "bytes_to_device", "bytes_to_host"). Only :func:`to_device` and :func:`to_host` copy.
TRANSFERS: Counter = Counter()

INSTALL_HINT = "pip install 'particle-attention[cuda]' (or: pip install 'numba-cuda>=0.30,<0.31')"

_RNG_FUNCS = ("mix64", "combine", "root_key", "draw", "to_unit", "to_unit_open", "normal")
_KERNEL_FUNCS = ("fast_tanh", "tanh_pair", "dyson_pair", "tanh_drift1", "dyson_drift1")
_LOOP_DEVICE = ("project_tangent", "normalise", "particle_noise", "stage_particle", "advance_particle")
_PERM_KERNELS = ("k_root_keys", "k_perm_keys", "k_identity", "k_zero_int", "k_perm_hist", "k_scan_reduce",
                 "k_scan_base", "k_scan_apply", "k_perm_scatter", "k_perm_buckets")
_STEP_KERNELS = ("k_prepare", "k_force", "k_euler", "k_stage", "k_advance", "k_rbmr")

_lock = threading.RLock()
_state: dict = {}  # the numba.cuda module and compiled code (never a module global: see _jit_kernel)
_families: dict = {}


# --- availability -------------------------------------------------------------------
def _import_cuda():
    """``numba.cuda`` from the numba-cuda package, or ImportError saying how to install it."""
    try:
        importlib.import_module("numba_cuda")
    except ImportError as e:
        raise ImportError(f"backend='cuda' needs the optional package numba-cuda, which is not installed: "
                          f"{INSTALL_HINT}") from e
    if "numba.cuda" not in sys.modules:
        # numba.cuda reads NUMBA_ENABLE_CUDASIM from numba's configuration, which was read when numba was
        # imported; refresh it (as numba's compiler does before each compilation) so that the environment
        # at the first use of the backend decides
        from numba.core import config

        config.reload_config()
    from numba import cuda

    if getattr(cuda, "implementation", None) != "NVIDIA":
        raise ImportError("backend='cuda' needs numba.cuda from the numba-cuda package, but numba's deprecated "
                          f"built-in CUDA target was imported instead; reinstall numba-cuda: {INSTALL_HINT}")
    return cuda


def simulator_enabled():
    """True when ``numba.cuda`` was loaded as the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).

    Asks the loaded module (its ``jit`` is the simulator's), not the configuration, which numba
    re-reads from the environment later on.
    """
    from numba import cuda

    return cuda.jit.__module__.startswith("numba.cuda.simulator")


def require():
    """``numba.cuda``, checked usable: numba-cuda installed, and a GPU or the simulator.

    Raises
    ------
    ImportError
        numba-cuda is not installed (the message says how to install it).
    RuntimeError
        No usable CUDA device and the simulator is off (the message says how to enable it).
    """
    cuda = _import_cuda()
    if simulator_enabled() or cuda.is_available():
        return cuda
    late = ""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        late = (" NUMBA_ENABLE_CUDASIM is set in the environment, but only after numba.cuda had been imported; "
                "it must be set before.")
    raise RuntimeError("backend='cuda' found no usable CUDA device (numba.cuda.is_available() is False: no NVIDIA "
                       "GPU, or no driver). Run on a machine with an NVIDIA GPU and driver, use backend='cpu', or, "
                       "for tests at small sizes, enable the (slow) CUDA simulator by setting NUMBA_ENABLE_CUDASIM=1 "
                       "in the environment before Python starts, e.g. `NUMBA_ENABLE_CUDASIM=1 python script.py`."
                       + late)


def _cuda():
    with _lock:
        if "cuda" not in _state:
            _state["cuda"] = require()
        return _state["cuda"]


def block_size():
    if BLOCK_SIZE is not None:
        return int(BLOCK_SIZE)
    return SIMULATOR_BLOCK if simulator_enabled() else DEVICE_BLOCK


# --- transfers and launches ---------------------------------------------------------
def to_device(a):
    """Copy a host array to a new device array (counted in :data:`TRANSFERS`)."""
    a = np.ascontiguousarray(a)
    TRANSFERS["to_device"] += 1
    TRANSFERS["bytes_to_device"] += a.nbytes
    return _cuda().to_device(a)


def to_host(dev, out):
    """Copy a device array into the C-contiguous host array ``out`` (counted in :data:`TRANSFERS`)."""
    TRANSFERS["to_host"] += 1
    TRANSFERS["bytes_to_host"] += out.nbytes
    dev.copy_to_host(out)
    return out


def empty(shape, dtype=np.float64):
    """An uninitialised device array (no transfer)."""
    return _cuda().device_array(shape, dtype=dtype)


def launch(kernel, nthreads, *args):
    """Launch ``kernel`` on ceil(nthreads / block) blocks; host arrays are refused (no implicit copies)."""
    for a in args:
        if isinstance(a, np.ndarray) and a.ndim > 0:
            raise TypeError("internal error: a host array was passed to a CUDA kernel (Numba would copy it "
                            "implicitly at every launch); upload it once with to_device")
    bs = block_size()
    kernel[max(1, -(-nthreads // bs)), bs](*args)


# --- compilation -------------------------------------------------------------------------
def _rebind(fn, namespace, family):
    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__qualname__ = f"cuda_{family}.{fn.__qualname__}"
    return new


def _device(fn):
    return _cuda().jit(device=True)(fn)


def _jit_kernel(fn):
    """A kernel from a function already bound to its namespace.

    Under the simulator each CUDA thread is a Python thread running the
    source with NumPy scalars, whose uint64 arithmetic warns on the wrap-around
    that the hash relies on (the device wraps silently): the simulator entry
    point runs the kernel body, as a device function, under
    ``np.errstate(over="ignore")`` in its own thread. (The simulator swaps
    the ``cuda`` name in the globals of the functions it runs; the kernel
    bodies find it in their own namespace, never in this module's globals.)
    """
    cuda = _cuda()
    if not simulator_enabled():
        return cuda.jit(fn)
    body = cuda.jit(device=True)(fn)

    @functools.wraps(fn)
    def entry(*args):
        with np.errstate(over="ignore"):
            body(*args)

    return cuda.jit(entry)


def _shared():
    """Device versions of the RNG, batch and built-in kernel functions (compiled lazily by Numba)."""
    with _lock:
        if "shared" not in _state:
            ns = dict(vars(_rng))
            ns.update(vars(_batches))
            for fname in _RNG_FUNCS:
                ns[fname] = _device(_rebind(getattr(_rng, fname), ns, "rng"))
            ns["draw_subset"] = _device(_rebind(_batches.draw_subset, ns, "rng"))
            ns["softmax_step"] = _device(_rebind(device.softmax_step, dict(vars(device)), "device"))
            kns = dict(vars(_kernels))
            for fname in _KERNEL_FUNCS:
                kns[fname] = _device(_rebind(getattr(_kernels, fname), kns, "kernels"))
            _state["shared"] = ns
            _state["kernels_ns"] = kns
        return _state["shared"]


def namespace(family="misc", dim=1, **extra):
    """A namespace holding ``cuda``, ``DIM``, the device RNG/batch helpers, ``softmax_step`` and the batch spans.

    The spans: ``batch_span(pos, n, nbat)`` (``remainder="spread"``),
    ``pad_span(pos, n, p)`` (``"pad"``, a lone position widened to all n)
    and ``member_span(pos, n, nbat, pad)`` (the first when ``pad`` is 0, else
    the second with p = ``pad``).

    Kernel sources (here and in :mod:`attention_theory._rba_cuda`) are bound
    into it with :func:`compile_kernels`.
    """
    shared = _shared()
    ns = dict(vars(_cuda_loops))
    ns.update({k: shared[k] for k in (*_RNG_FUNCS, "draw_subset", "softmax_step")})
    ns["cuda"] = _cuda()
    ns["DIM"] = int(dim)
    ns["batch_span"] = _device(_rebind(_cuda_loops.batch_span, ns, family))
    ns["pad_span"] = _device(_rebind(_cuda_loops.pad_span, ns, family))
    ns["member_span"] = _device(_rebind(_cuda_loops.member_span, ns, family))
    ns.update(extra)
    return ns


def compile_kernels(functions, ns, family):
    """Kernels from plain functions, bound to ``ns`` (see :func:`namespace`)."""
    return types.SimpleNamespace(**{fn.__name__: _jit_kernel(_rebind(fn, ns, family)) for fn in functions})


def _perm_kernels():
    with _lock:
        if "perm" not in _state:
            ns = namespace("perm")
            _state["perm"] = compile_kernels([getattr(_cuda_loops, k) for k in _PERM_KERNELS], ns, "perm")
        return _state["perm"]


def _family_key(system):
    if system.family == "attention":
        return "attention"
    if system.builtin:
        return float(system.params[_layout.MODEL])
    return (system.kernel, system.drift)


def kernels_for(system, d):
    """The step kernels for ``system`` in dimension ``d`` (built once per family and d)."""
    key = (_family_key(system), int(d))
    with _lock:
        if key not in _families:
            attention = system.family == "attention"
            family = "attention" if attention else ("builtin" if system.builtin else "custom")
            ns = namespace(family, d, HAS_PREPARE=attention)
            for fname in _LOOP_DEVICE:
                ns[fname] = _device(_rebind(getattr(_loops, fname), ns, family))
            if attention:
                ns["prepare_row"] = _device(_rebind(_loops.attn_prepare_row, ns, family))
                ns["attn_head_force"] = _device(_rebind(_loops.attn_head_force, ns, family))
                ns["member_force"] = _device(_rebind(_loops.attn_member_force, ns, family))
            else:
                if system.builtin:
                    kns = _state["kernels_ns"]
                    ns["kernel_fn"] = _device(_rebind(_kernels.builtin_kernel, kns, "kernels"))
                    ns["drift_fn"] = _device(_rebind(_kernels.builtin_drift, kns, "kernels"))
                else:  # a user's functions, compiled from their own source and globals
                    from particles.backends import cpu

                    cpu.compile_user_functions(system)  # Numba's typing of them, reported by name before any kernel
                    ns["kernel_fn"] = _device(system.kernel)
                    ns["drift_fn"] = _device(system.drift)
                    ns["ZERO_OUT"] = True
                ns["prepare_row"] = _device(_rebind(_loops.kernel_prepare_row, ns, family))
                ns["member_force"] = _device(_rebind(_cuda_loops.kernel_member_force, ns, family))
            _families[key] = compile_kernels([getattr(_cuda_loops, k) for k in _STEP_KERNELS], ns, family)
        return _families[key]


# --- the permutation -------------------------------------------------------------------
class Permutations:
    """Builds the RBM-1 permutations of R replicas of n elements on the device (scratch allocated once)."""

    def __init__(self, replicas, n):
        if n >= 2**31 - 1:
            raise ValueError(f"backend='cuda' supports N < 2**31 particles (int32 permutations), got N={n}")
        self.R, self.n = replicas, n
        self.nbuckets = _batches.num_buckets(n)
        self.kern = _perm_kernels()
        self.keys = empty(replicas, np.uint64)
        self.cnt = empty((replicas, self.nbuckets), np.int32)
        self.bstart = empty((replicas, self.nbuckets + 1), np.int32)
        launch(self.kern.k_zero_int, replicas * self.nbuckets, self.cnt)
        self.levels = []
        L = self.nbuckets
        while L > SCAN_CHUNK:
            T = -(-L // SCAN_CHUNK)
            self.levels.append((empty((replicas, T), np.int32), empty((replicas, T + 1), np.int32)))
            L = T

    def _scan(self, src, L, dst, level, zero_src):
        if L <= SCAN_CHUNK:
            launch(self.kern.k_scan_base, self.R, src, L, dst, zero_src)
            return
        sums, offs = self.levels[level]
        T = sums.shape[1]
        launch(self.kern.k_scan_reduce, self.R * T, src, L, SCAN_CHUNK, sums)
        self._scan(sums, T, offs, level + 1, False)
        launch(self.kern.k_scan_apply, self.R * T, src, L, SCAN_CHUNK, offs, dst, zero_src)

    def build(self, seed, m, idx):
        """idx (R, n) int32 device array <- the permutations of reshuffle ``m`` under ``seed``."""
        k = self.kern
        launch(k.k_perm_keys, self.R, np.uint64(seed), np.int64(m), self.keys)
        launch(k.k_perm_hist, self.R * self.n, self.keys, self.nbuckets, self.n, self.cnt)
        self._scan(self.cnt, self.nbuckets, self.bstart, 0, True)  # leaves cnt zeroed: the scatter's cursors
        launch(k.k_perm_scatter, self.R * self.n, self.keys, self.nbuckets, self.bstart, self.cnt, idx)
        launch(k.k_perm_buckets, self.R * self.nbuckets, self.keys, self.nbuckets, self.bstart, self.cnt, idx)
        return idx


def identity(replicas, n):
    idx = empty((replicas, n), np.int32)
    launch(_perm_kernels().k_identity, replicas * n, idx)
    return idx


def device_permutation(seed, step, n, replicas=1):
    """The RBM-1 permutations of reshuffle ``step``, as an (replicas, n) int32 device array."""
    idx = empty((replicas, n), np.int32)
    return Permutations(replicas, n).build(seed, step, idx)


def permutations(seed, step, n, replicas=1):
    """The RBM-1 permutations of reshuffle ``step``, built on the device, copied back as int64 (R, n)."""
    out = np.empty((replicas, n), dtype=np.int32)
    to_host(device_permutation(seed, step, n, replicas), out)
    return out.astype(np.int64)


def _root_keys(seed, stream, replicas):
    keys = empty(replicas, np.uint64)
    launch(_perm_kernels().k_root_keys, replicas, np.uint64(seed), stream, keys)
    return keys


# --- integration -------------------------------------------------------------------------
class Integrator:
    """The state of one :func:`run` on the device; :meth:`step` advances it by one step.

    Used by :func:`run` and by ``benchmarks/bench_cuda.py`` (which times
    :meth:`step` alone). Everything is allocated and uploaded here, once.
    """

    def __init__(self, system, x, plan):
        R, N, d = x.shape
        self.plan = plan
        self.R, self.N, self.d = R, N, d
        self.kern = kernels_for(system, d)
        self.attention = system.family == "attention"
        self.cur = to_device(x)
        self.params = to_device(np.asarray(system.params, dtype=np.float64).reshape(-1) if system.params.size
                                else np.zeros(1))
        self.A = to_device(plan.A)
        self.B = to_device(plan.B)
        self.S = plan.B.shape[0]
        self.knoise = _root_keys(plan.seed, _rng.STREAM_NOISE, R)
        self.work = empty((R, N, _layout.attention_work_width(system.params, d)) if self.attention else (R, 1, 1))
        if plan.method == "rbmr":
            self.ksub = _root_keys(plan.seed, _rng.STREAM_SUBSET, R)
            self.pool = identity(R, N)
            self.clock = empty((R, N), np.int32)
            launch(_perm_kernels().k_zero_int, R * N, self.clock)
            self.K = empty((self.S, R, N, d))
            self.xs = empty((R, N, d))
            return
        full = plan.method == "full"
        self.nbat = 1 if full else N // plan.batch_size
        # member_span's switch: 0 cuts the nbat batches of "spread", p those of "pad"
        self.pad = plan.batch_size if not full and plan.remainder == "pad" else 0
        self.idx = identity(R, N) if full else empty((R, N), np.int32)
        self.perms = None if full else Permutations(R, N)
        if self.S == 1:
            self.nxt = empty((R, N, d))
        else:
            self.K = empty((self.S, R, N, d))
            self.xs = empty((R, N, d))

    def _forces(self, src, s):
        k, n = self.kern, self.R * self.N
        if self.attention:
            launch(k.k_prepare, n, src, self.params, self.work)
        launch(k.k_force, n, src, self.idx, self.nbat, self.pad, self.params, self.plan.coupling, self.plan.project,
               self.work, self.K[s])

    def step(self, n):
        """Advance by step ``n`` (0-based): reshuffle if due, then one step of the scheme."""
        p = self.plan
        k, total = self.kern, self.R * self.N
        # the last step is shorter when t_end is not a whole number of steps
        dt, scale = (p.dt, p.scale) if n + 1 < p.nsteps else (p.dt_last, p.scale_last)
        if p.method == "rbmr":
            sub0 = (n * self.N) // p.batch_size
            nsub = ((n + 1) * self.N) // p.batch_size - sub0
            k.k_rbmr[self.R, block_size()](self.cur, self.xs, self.K, self.A, self.B, dt, scale, p.nfine, sub0,
                                           nsub, p.batch_size, self.params, p.coupling, p.sphere, p.project, self.work,
                                           self.pool, self.clock, self.ksub, self.knoise)
            return
        if self.perms is not None and n % p.tau_steps == 0:
            self.perms.build(p.seed, n // p.tau_steps, self.idx)
        if self.S == 1:
            if self.attention:
                launch(k.k_prepare, total, self.cur, self.params, self.work)
            launch(k.k_euler, total, self.cur, self.nxt, self.idx, self.nbat, self.pad, self.params, p.coupling,
                   p.sphere, p.project, self.work, float(p.B[0]), dt, scale, self.knoise, n * p.nfine, p.nfine)
            self.cur, self.nxt = self.nxt, self.cur
            return
        self._forces(self.cur, 0)
        for s in range(1, self.S):
            launch(k.k_stage, total, self.cur, self.xs, self.K, self.A, s, dt, p.sphere)
            self._forces(self.xs, s)
        launch(k.k_advance, total, self.cur, self.K, self.B, dt, scale, self.knoise, n * p.nfine, p.nfine,
               p.sphere)

    def state_to(self, out):
        """Copy the current state into the host array ``out`` (R, N, d)."""
        return to_host(self.cur, out)


def run(system, x, traj, plan):
    """Integrate: ``x`` (R, N, d) is advanced, ``traj`` (K, R, N, d) filled; only snapshots come back."""
    it = Integrator(system, x, plan)
    traj[0] = x
    k = 0
    for n in range(plan.nsteps):
        it.step(n)
        if (n + 1) % plan.save_every == 0 or n + 1 == plan.nsteps:
            k += 1
            it.state_to(traj[k])
    x[...] = traj[k]


def drift(system, x, out, *, method, batch_size, seed, step, coupling, remainder="spread"):
    """Drift at frozen positions (full or one RBM-1 partition), written into ``out``."""
    R, N, d = x.shape
    kern = kernels_for(system, d)
    dx = to_device(x)
    params = to_device(np.asarray(system.params, dtype=np.float64).reshape(-1) if system.params.size
                       else np.zeros(1))
    pad = 0
    if method == "full":
        idx, nbat = identity(R, N), 1
    else:
        idx = Permutations(R, N).build(seed, step, empty((R, N), np.int32))
        nbat = N // batch_size
        pad = batch_size if remainder == "pad" else 0
    attention = system.family == "attention"
    work = empty((R, N, _layout.attention_work_width(system.params, d)) if attention else (R, 1, 1))
    if attention:
        launch(kern.k_prepare, R * N, dx, params, work)
    dout = empty((R, N, d))
    launch(kern.k_force, R * N, dx, idx, nbat, pad, params, coupling, system.sphere, work, dout)
    to_host(dout, out)
