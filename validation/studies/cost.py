r"""Cost study: wall time and peak memory against N (issue item 9).

One study, ``cost_scaling``, measures how the cost of the library's methods
grows with the number of tokens or particles N, for two families:

=============  =================================================================  =========  ===========
kind           what one timed unit is                                             time       memory
=============  =================================================================  =========  ===========
``exact``      :func:`~attention_theory.softmax_attention`, N = M, unchunked      N^2 (T7)   N^2
``rba``        :func:`~attention_theory.random_batch_attention`, p = 64           N (T18)    N
``lara``       :func:`~attention_theory.lara`, C = 64 proposals, one sample each  N (B4)     N
``rfa``        :func:`~attention_theory.rfa`, S = 64 positive features            N (B1)     N
``full``       one step of :func:`particles.solve`, ``method="full"``             N^2 (T1)   N
``rbm1``       one step of :func:`particles.solve`, ``method="rbm1"``, p = 2      N (T2)     N
=============  =================================================================  =========  ===========

Attention: d = dv = 64, queries and keys standard normal times d^(-1/4) (the
1/sqrt(d) temperature folded in), one call = one attention evaluation of N
queries over N keys. The exact estimator is run with ``max_scores = N^2``,
i.e. unchunked (one N x N score matrix), the textbook cost; the library's
default (``max_scores = 2**24``) caps its memory at 128 MiB plus the output
for N > 4096 without changing the time (see ``benchmarks/README.md``).
Particles: the confined tanh system (THEORY A1.1, r = 1, L = 0.3, sigma = 1)
in d = 3 with standard normal initial states, dt = 0.01; a call of the full
method runs 1 step, a call of RBM-1 runs 10 (quick) or 20 (full) steps
storing only the first and last states, so that copying the input and
allocating the output, O(N d) each, are amortised; the time per step is the
call's time divided by the number of steps.

What is measured, per cell (kind, N)
------------------------------------
- **time**: one warm-up call at the same size first (Numba compilation or
  loading from the on-disk cache, first touch of the memory; its time is
  stored as ``first_call_seconds``), then ``repeats`` timed calls
  (3 quick, 5 full) with :func:`time.perf_counter`; all repeats are stored,
  the verdicts and the figure use the best (the least disturbed run on a
  shared machine). The process CPU time of every timed call is stored too
  (``cpu_seconds_all``; best ``cpu_seconds``) and the ratio of the summed
  CPU and wall times (``cpu_per_wall``: about 1 when the single thread ran
  undisturbed, well below 1 when the process waited for a core). The time
  verdicts fit the wall time (what a user waits for); their details carry
  the exponent of the CPU time too, which on a busy machine is closer to the
  algorithm's. Measured on a shared 2-core machine: quick mode at load 3.7
  (cpu/wall 0.3-0.5), wall-time exponents up to 0.58 away from the expected
  ones, CPU-time exponents up to 0.27 (the full step, whose fixed per-call
  cost weighs at N = 256); full mode at load 5-10 (cpu/wall 0.1-0.8),
  wall-time exponents 0.92-2.73, CPU-time exponents 2.08 (exact), 1.11,
  1.12, 1.06 (RBA, LARA, RFA), 1.97 (full step), 1.10 (RBM-1 step).
- **memory**: :mod:`tracemalloc`'s peak during one further call, tracing
  started after the inputs exist, so it counts what the call allocates,
  output included, inputs excluded. tracemalloc sees NumPy's data buffers
  and (checked with numba 0.68) the arrays allocated inside Numba-compiled code
  (the Numba runtime allocates through Python's tracked allocator); each
  cell checks this with a compiled function that allocates 8 MiB and stores
  the answer (``numba_allocations_traced``). It does not see BLAS's internal
  work buffers nor the stacks of threads (both O(1) in N here). The peak is
  deterministic for a given code path, unlike the time. The memory verdicts
  of the attention kinds carry, beside the measured peaks, the bytes of the
  dense N x N float64 score matrix that exact attention would hold at the
  same N (``dense_score_bytes``, computed, never allocated): in full mode RBA
  runs to N = 2^20 tokens, where those scores would take 8 TiB.

Thread policy
-------------
Every cell runs on **one thread**: :func:`numba.set_num_threads` ``(1)`` and,
the BLAS libraries loaded in the process limited to one thread with
threadpoolctl, both restored afterwards. The runner's worker processes
already have one Numba thread each, but BLAS would otherwise start one thread
per core in every worker, and an in-process run (``--workers 0``) would use
every core for Numba: with one thread the numbers are comparable across
executors, cells that run side by side do not oversubscribe the cores, and
the exponents measure the algorithms, not the parallel efficiency (the
thread speed-ups are a target of ``benchmarks/bench_particles.py``). The
thread counts actually in force are stored with each cell.

Reproducibility
---------------
This is the one study whose results are **not** deterministic functions of
the seed: the inputs are (drawn from the cell's seed), the times are
measurements of a machine that may be shared and may run other cells at the
same time. Each cell stores the host (CPU model, logical and usable CPUs,
load average at the start and the end, platform and package versions) next
to its times. For the same reason the time verdicts are informational
(``passed=None``, the expected exponent in ``predicted``): speed targets live
in ``benchmarks/``, and a noisy timing never fails ``reproduce``. The memory
verdicts are deterministic and are checked (PASS/FAIL, tolerance below).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import time
import tracemalloc

import numpy as np
from numba import njit

import attention_theory as at
import particles
from particles import systems
from validation.rates import fit_rate
from validation.study import Study, Verdict, register

__all__ = ["CostScalingStudy", "KINDS", "single_thread", "host_info", "traced_peak_bytes",
           "numba_allocations_traced", "dense_score_bytes"]

#: Attention sizes: head dimension, value dimension, and the size parameter of each estimator.
D_ATTN = 64
DV_ATTN = 64
RBA_P = 64
LARA_C = 64
RFA_S = 64
#: Particles: dimension, step, RBM-1 batch size.
D_PART = 3
DT = 0.01
RBM_P = 2


def _kind(group, label, theory, time_exp, memory_exp, declared_time, declared_memory, size=None):
    return {"group": group, "label": label, "theory": theory, "time_exponent": time_exp,
            "memory_exponent": memory_exp, "declared_time": declared_time, "declared_memory": declared_memory,
            "size": size}


#: kind -> description: family, label, THEORY label, expected exponents of time and memory in N, and the
#: costs the library declares (read from :data:`attention_theory.REGISTRY` and :mod:`particles.integrators`).
KINDS = {
    "exact": _kind("attention", "exact softmax (unchunked)", "T7", 2.0, 2.0, at.REGISTRY["softmax"].time,
                   at.REGISTRY["softmax"].memory + ", max_scores = N M"),
    "rba": _kind("attention", f"RBA, p = {RBA_P}", "T18", 1.0, 1.0, at.REGISTRY["random_batch_attention"].time,
                 at.REGISTRY["random_batch_attention"].memory, {"p": RBA_P}),
    "lara": _kind("attention", f"LARA, C = {LARA_C}", "B4", 1.0, 1.0, at.REGISTRY["lara"].time,
                  at.REGISTRY["lara"].memory, {"C": LARA_C, "J": 1}),
    "rfa": _kind("attention", f"RFA, S = {RFA_S}", "B1", 1.0, 1.0, at.REGISTRY["rfa"].time,
                 at.REGISTRY["rfa"].memory, {"S": RFA_S}),
    "full": _kind("particles", "full step", "T1", 2.0, 1.0, particles.FULL.cost, "O(N d): state, output, scratch"),
    "rbm1": _kind("particles", f"RBM-1 step, p = {RBM_P}", "T2", 1.0, 1.0, particles.RBM1.cost,
                  "O(N d): state, output, scratch", {"p": RBM_P}),
}

#: N per kind and mode (powers of two; quick: a few seconds in all, full: minutes).
_SIZES = {
    "quick": {"exact": [256, 512, 1024, 2048], "rba": [1024, 2048, 4096, 8192, 16384],
              "lara": [1024, 2048, 4096, 8192, 16384], "rfa": [1024, 2048, 4096, 8192, 16384],
              "full": [256, 512, 1024, 2048], "rbm1": [4096, 16384, 65536, 262144]},
    # RBA to 2**20 tokens, graph scale (THEORY B5's memory argument: the dense scores would take 8 TiB there)
    "full": {"exact": [512, 1024, 2048, 4096, 8192], "rba": [2**k for k in range(12, 21)],
             "lara": [2**k for k in range(12, 19)], "rfa": [2**k for k in range(12, 19)],
             "full": [2**k for k in range(9, 15)], "rbm1": [2**k for k in range(13, 21)]},
}
_REPEATS = {"quick": 3, "full": 5}
_RBM_STEPS = {"quick": 10, "full": 20}


# ---------------------------------------------------------------------------------------------------------
# machine, threads, memory
# ---------------------------------------------------------------------------------------------------------
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover  (Windows)
        return None


def host_info():
    """The machine a cell ran on: CPU model and counts, load average, platform and package versions."""
    import numba

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover  (macOS, Windows)
        usable = os.cpu_count()
    return {"host": platform.node(), "cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "particles": particles.__version__}


@contextlib.contextmanager
def single_thread():
    """One Numba thread and one BLAS thread inside the block; yields the thread counts in force.

    Yields a dict ``{"numba": int, "blas": {library: threads} or None}`` (None: no BLAS library
    loaded). BLAS threads are limited with threadpoolctl; both are restored on exit.
    """
    import numba
    from threadpoolctl import threadpool_info, threadpool_limits

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        with threadpool_limits(limits=1, user_api="blas"):
            blas = {os.path.basename(i["filepath"]): int(i["num_threads"]) for i in threadpool_info()
                    if i.get("user_api") == "blas"}
            yield {"numba": int(numba.get_num_threads()), "blas": blas or None}
    finally:
        numba.set_num_threads(before)


def traced_peak_bytes(fn):
    """``(peak, result)``: tracemalloc's peak of the bytes ``fn()`` allocates (its result included)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return int(peak), result


@njit(cache=False)
def _numba_alloc(n):  # pragma: no cover  (compiled)
    a = np.ones(n)
    return a.sum()


@functools.lru_cache(maxsize=1)
def numba_allocations_traced():
    """Whether an 8 MiB array allocated inside Numba-compiled code shows up in tracemalloc (once per process)."""
    _numba_alloc(8)
    peak, _ = traced_peak_bytes(lambda: _numba_alloc(1 << 20))
    return bool(peak >= 8 * (1 << 20))


# ---------------------------------------------------------------------------------------------------------
# the timed calls
# ---------------------------------------------------------------------------------------------------------
def _attention_call(kind, n, seed):
    gen = np.random.default_rng(seed)
    scale = D_ATTN ** -0.25
    q = scale * gen.standard_normal((n, D_ATTN))
    k = scale * gen.standard_normal((n, D_ATTN))
    v = gen.standard_normal((n, DV_ATTN))
    rng_seed = int(gen.integers(2**63))
    extra = {"input_bytes": int(q.nbytes + k.nbytes + v.nbytes), "output_bytes": int(n * DV_ATTN * 8)}
    if kind == "exact":
        extra["max_scores"] = n * n

        def call():
            return at.softmax_attention(q, k, v, max_scores=n * n)
    elif kind == "rba":
        def call():
            return at.random_batch_attention(q, k, v, batch_size=RBA_P, rng=rng_seed)
    elif kind == "lara":
        def call():
            return at.lara(q, k, v, num_proposals=LARA_C, rng=rng_seed)
    else:
        def call():
            return at.rfa(q, k, v, num_features=RFA_S, rng=rng_seed)
    return call, 1, extra


def _particles_call(kind, n, steps, seed):
    gen = np.random.default_rng(seed)
    x0 = gen.standard_normal((n, D_PART))
    system = systems.confined_tanh()
    noise_seed = int(gen.integers(2**63))
    kw = {"t_end": steps * DT, "dt": DT, "method": kind, "batch_size": RBM_P if kind == "rbm1" else None,
          "seed": noise_seed, "save_every": steps}

    def call():
        return particles.solve(system, x0, **kw)

    return call, steps, {"input_bytes": int(x0.nbytes), "output_bytes": int(2 * x0.nbytes)}


def dense_score_bytes(n):
    """Bytes of the dense N x N float64 score matrix that exact (unchunked) attention over N tokens holds."""
    return 8 * int(n) * int(n)


def _check_mode(mode):
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
    return mode


@register
class CostScalingStudy(Study):
    r"""Time and peak memory vs N: exact softmax, RBA, LARA, RFA; the full and the RBM-1 step.

    Cells (kind, N), see the module docstring for sizes, memory method and
    thread policy. Verdicts, per kind:

    - **time exponent** (informational, ``passed=None``): least-squares slope
      of log(best time) vs log(N) with its 95% regression interval; expected
      2 for the exact softmax and the full step, 1 for RBA, LARA, RFA and the
      RBM-1 step. Timings are not deterministic (shared machine, cells run
      side by side); at the small quick-mode sizes fixed per-call costs make
      the linear slopes come out below 1 and the quadratic ones below 2.
    - **memory exponent** (PASS/FAIL): slope of log(peak traced bytes) vs
      log(N), which is deterministic; passes when it is within 0.25 of the
      expected exponent (2 for the unchunked exact softmax, 1 otherwise). The
      tolerance covers the O(N) output next to the O(N^2) scores at small N
      (the exact slope is about 1.85 over N = 256..2048) and the fixed
      O(p (d + dv)) / O(C d) scratch next to the O(N) arrays; a hidden quadratic
      allocation in a linear method (slope near 2) or a chunked exact
      estimator (slope near 1) fails.
    """

    name = "cost_scaling"
    version = 1
    title = "Cost: time and peak memory vs N (attention estimators; full vs RBM-1 step)"
    labels = ("T1", "T2", "T7", "T18", "B1", "B4")
    result_fields = {
        "seconds": ("()", "fastest wall time per unit (call or step) over the repeats, seconds"),
        "seconds_all": ("(repeats,)", "wall time per unit of every repeat"),
        "cpu_seconds": ("()", "fastest CPU time per unit"),
        "cpu_seconds_all": ("(repeats,)", "CPU time per unit of every repeat"),
        "cpu_per_wall": ("()", "total CPU time / total wall time (about 1: one thread)"),
        "unit": ("()", "'call' (attention) or 'step' (particles)"),
        "steps_per_call": ("()", "units per timed call"),
        "first_call_seconds": ("()", "wall time of the first (compiling, warming) call"),
        "peak_bytes": ("()", "peak traced memory of one call, bytes"),
        "input_bytes": ("()", "bytes of the inputs"),
        "output_bytes": ("()", "bytes of the output"),
        "max_scores": ("()", "largest score matrix held at once, entries (attention kinds only)"),
        "numba_allocations_traced": ("()", "whether Numba's allocations are seen by the memory tracer"),
        "threads.numba": ("()", "Numba threads during the measurement"),
        "threads.blas.{library}": ("()", "threads of each BLAS library during the measurement"),
        "machine.{key}": ("()", "the machine (cpu, host, CPUs, versions, platform)"),
        "machine.load_average_start": ("(3,)", "load averages before the measurement"),
        "machine.load_average_end": ("(3,)", "load averages after the measurement"),
    }

    MEMORY_TOL = 0.25

    def grid(self, mode):
        sizes = _SIZES[_check_mode(mode)]
        reps = _REPEATS[mode]
        out = []
        for kind in KINDS:
            for n in sizes[kind]:
                p = {"kind": kind, "n": n, "repeats": reps}
                if kind == "rbm1":
                    p["steps"] = _RBM_STEPS[mode]
                elif kind == "full":
                    p["steps"] = 1
                out.append(p)
        return out

    def measure(self, params, seed):
        kind, n, repeats = params["kind"], int(params["n"]), int(params["repeats"])
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        if KINDS[kind]["group"] == "attention":
            call, units, extra = _attention_call(kind, n, seed)
        else:
            call, units, extra = _particles_call(kind, n, int(params["steps"]), seed)
        load_start = _load_average()
        with single_thread() as threads:
            t0 = time.perf_counter()
            call()
            first = time.perf_counter() - t0
            wall, cpu = [], []
            for _ in range(repeats):
                c0, t0 = time.process_time(), time.perf_counter()
                call()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            peak, _ = traced_peak_bytes(call)
            traced = numba_allocations_traced()
        per_unit = [t / units for t in wall]
        cpu_per_unit = [t / units for t in cpu]
        return {
            "seconds": min(per_unit),
            "seconds_all": per_unit,
            "cpu_seconds": min(cpu_per_unit),
            "cpu_seconds_all": cpu_per_unit,
            "cpu_per_wall": sum(cpu) / max(sum(wall), 1e-12),
            "unit": "call" if KINDS[kind]["group"] == "attention" else "step",
            "steps_per_call": units,
            "first_call_seconds": first,
            "peak_bytes": peak,
            **extra,
            "numba_allocations_traced": traced,
            "threads": threads,
            "machine": {**host_info(), "load_average_start": load_start, "load_average_end": _load_average()},
        }

    @staticmethod
    def series(records):
        """Per kind, rows sorted by N: ``{kind: {"n": [...], "seconds": [...], "seconds_all": [...], ...}}``, with
        the kind's label, group and expected time exponent (what the figure needs besides the records)."""
        out = {}
        for kind in KINDS:
            recs = sorted((r for r in records if r.params["kind"] == kind), key=lambda r: r.params["n"])
            if not recs:
                continue
            out[kind] = {"n": [int(r.params["n"]) for r in recs],
                         "seconds": [float(r.result["seconds"]) for r in recs],
                         "seconds_all": [list(map(float, r.result["seconds_all"])) for r in recs],
                         "peak_bytes": [int(r.result["peak_bytes"]) for r in recs],
                         "cpu_seconds": [float(r.result["cpu_seconds"]) for r in recs],
                         "cpu_per_wall": [float(r.result["cpu_per_wall"]) for r in recs],
                         "unit": recs[0].result["unit"],
                         "label": KINDS[kind]["label"], "group": KINDS[kind]["group"],
                         "time_exponent": KINDS[kind]["time_exponent"]}
        return out

    def verdicts(self, records, mode):
        out = []
        for kind, s in self.series(records).items():
            spec = KINDS[kind]
            if len(s["n"]) < 3:  # a partial run: no fit with an interval
                continue
            ns = np.asarray(s["n"], dtype=float)
            tfit = fit_rate(ns, s["seconds"])
            # the CPU time of the (single-threaded) process does not count the time it waited for a core
            cfit = fit_rate(ns, s["cpu_seconds"]) if min(s["cpu_seconds"]) > 0 else None
            out.append(Verdict(
                study=self.name, claim=f"time exponent in N of the {spec['label']} ({spec['group']})",
                label=spec["theory"], predicted=spec["time_exponent"], measured=tfit.slope,
                interval=(tfit.ci_low, tfit.ci_high), tolerance=None, passed=None,
                rule=("information: least-squares slope of log(best wall time per " + s["unit"] + ") vs log N, "
                      "95% regression interval; one thread; timings on a shared machine are noisy, speed targets "
                      "are checked by benchmarks/, not here"),
                details={"kind": kind, "n": s["n"], "seconds": s["seconds"], "unit": s["unit"],
                         "declared_cost": spec["declared_time"], "fit": tfit.as_dict(),
                         "cpu_seconds": s["cpu_seconds"], "cpu_fit": None if cfit is None else cfit.as_dict(),
                         "cpu_per_wall": s["cpu_per_wall"]}))
            mfit = fit_rate(ns, s["peak_bytes"])
            expected = spec["memory_exponent"]
            out.append(Verdict(
                study=self.name, claim=f"peak-memory exponent in N of the {spec['label']} ({spec['group']})",
                label=spec["theory"], predicted=expected, measured=mfit.slope,
                interval=(mfit.ci_low, mfit.ci_high), tolerance=self.MEMORY_TOL,
                passed=bool(abs(mfit.slope - expected) <= self.MEMORY_TOL),
                rule=(f"|slope of log(tracemalloc peak bytes) vs log N - {expected:g}| <= {self.MEMORY_TOL} "
                      "(deterministic: the interval only reflects curvature)"),
                details={"kind": kind, "n": s["n"], "peak_bytes": s["peak_bytes"],
                         "declared_memory": spec["declared_memory"], "fit": mfit.as_dict(),
                         **({"dense_score_bytes": [dense_score_bytes(n) for n in s["n"]]}
                            if spec["group"] == "attention" else {})}))
        return out

