"""Benchmark of the attention estimators against exact softmax attention.

    python benchmarks/bench_attention.py            # N = 65536, d = dv = 64 (a few minutes)
    python benchmarks/bench_attention.py --quick    # N = 16384 (well under a minute)

Targets (checked and printed as PASS/FAIL):

- time: random batch attention (p = 64) at least 100x, LARA (C = 64) at least 30x
  faster than exact softmax attention at N = 65536. At another N (``--quick``) the
  required speed-up is scaled by N / 65536, since exact attention is quadratic and
  the two estimators linear in N (the verdict is then marked "scaled");
- memory: the peak of RBA and LARA grows linearly in N (peak ratio between N and
  N/4 at most 4 * 1.25; quadratic would be 16).

Times are the minimum over repeats (the machine may be shared: the minimum is the
least disturbed run). Peak memory is measured with ``tracemalloc``, which sees
NumPy's data buffers and, checked at start-up, the Numba runtime's allocations;
the inputs exist before tracing starts, so the peak is what the call allocates
(output included). Randomized attention is quadratic; its cost is measured at
smaller N and extrapolated with the fitted exponent.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
import tracemalloc

import numpy as np

import attention_theory as at

RBA_P = 64
LARA_C = 64
RFA_S = 64
TIME_TARGETS = {"random_batch_attention": 100.0, "lara": 30.0}  # speed-ups required at N = N_TARGET
N_TARGET = 65536
LINEAR_SLACK = 1.25


def inputs(n, d, dv, seed=0):
    rng = np.random.default_rng(seed)
    scale = d**-0.25  # the 1/sqrt(d) temperature folded into q and k
    return (scale * rng.standard_normal((n, d)), scale * rng.standard_normal((n, d)), rng.standard_normal((n, dv)))


def estimators():
    return {
        "softmax_attention": lambda q, k, v: at.softmax_attention(q, k, v),
        "random_batch_attention": lambda q, k, v: at.random_batch_attention(q, k, v, batch_size=RBA_P, rng=1),
        "lara": lambda q, k, v: at.lara(q, k, v, num_proposals=LARA_C, rng=1),
        "lara (deterministic)": lambda q, k, v: at.lara(q, k, v, num_proposals=LARA_C, rng=None, mode="deterministic"),
        "rfa": lambda q, k, v: at.rfa(q, k, v, num_features=RFA_S, rng=1),
        "randomized_attention": lambda q, k, v: at.randomized_attention(q, k, v, rng=1),
    }


def best_time(fn, repeat):
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peak_bytes(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def numba_allocations_traced():
    """True when an array allocated inside a Numba function shows up in tracemalloc."""
    from numba import njit

    @njit
    def alloc(n):
        a = np.ones(n)
        return a.sum()

    alloc(10)
    return peak_bytes(lambda: alloc(1_000_000)) >= 8_000_000


def machine():
    from numba import config, get_num_threads, threading_layer

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info())
    except ImportError:
        blas = "threadpoolctl not installed"
    try:
        layer = threading_layer()
    except ValueError:
        layer = "not yet chosen"
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, numpy {np.__version__}, "
        f"numba threads {get_num_threads()} (layer {layer}, NUMBA_NUM_THREADS={config.NUMBA_NUM_THREADS}); BLAS: {blas}"
    )


def fmt_bytes(b):
    return f"{b / 2**20:9.1f} MiB"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 16384 instead of 65536")
    ap.add_argument("--n", type=int, default=None, help="override the largest N")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--dv", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5, help="repeats of the fast estimators (min is reported)")
    args = ap.parse_args(argv)
    n = args.n or (16384 if args.quick else 65536)
    d, dv = args.d, args.dv
    ests = estimators()

    print("# Attention estimators benchmark")
    print(f"machine: {machine()}")
    print(f"N = M = {n}, d = {d}, dv = {dv}; RBA p = {RBA_P}, LARA C = {LARA_C} (J = 1), RFA S = {RFA_S}")
    q, k, v = inputs(n, d, dv)
    # warm up (JIT compile / load the cached kernels) on a small problem
    qs, ks, vs = inputs(256, d, dv)
    for fn in ests.values():
        fn(qs, ks, vs)

    print("\n## Time (min over repeats; exact softmax: one run, under tracemalloc for its peak)")
    tracemalloc.start()
    t_exact, exact = best_time(lambda: ests["softmax_attention"](q, k, v), 1)
    peak_exact = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows = [("softmax_attention", t_exact, 1.0, 0.0, "reference")]
    scale = n / N_TARGET
    verdicts = {}
    for name in ("random_batch_attention", "lara", "lara (deterministic)", "rfa"):
        t, out = best_time(lambda name=name: ests[name](q, k, v), args.repeat)
        err = float(np.sqrt(np.mean((out - exact) ** 2)))
        speedup = t_exact / t
        target = TIME_TARGETS.get(name)
        if target is not None and scale != 1:
            target *= scale
        tag = "" if scale == 1 else " (scaled)"
        verdict = "-" if target is None else f">= {target:.0f}x{tag}: {'PASS' if speedup >= target else 'FAIL'}"
        if target is not None:
            verdicts[f"time {name}"] = speedup >= target
        rows.append((name, t, speedup, err, verdict))
    print(f"{'estimator':<24} {'time [s]':>10} {'speed-up':>10} {'RMS error':>10}  target")
    for name, t, s, e, verdict in rows:
        print(f"{name:<24} {t:10.4f} {s:9.1f}x {e:10.2e}  {verdict}")

    print("\n## Randomized attention (quadratic): time vs N, one sample per query")
    ns = [n // 16, n // 8, n // 4]
    ts = []
    for m in ns:
        qm, km, vm = inputs(m, d, dv)
        t, _ = best_time(lambda qm=qm, km=km, vm=vm: ests["randomized_attention"](qm, km, vm), 1)
        ts.append(t)
        print(f"N = {m:6d}: {t:8.3f} s")
    slope = np.polyfit(np.log(ns), np.log(ts), 1)[0]
    extrap = ts[-1] * (n / ns[-1]) ** slope
    print(f"fitted exponent {slope:.2f} (quadratic: 2); extrapolated to N = {n}: {extrap:.1f} s "
          f"= {extrap / t_exact:.1f}x the exact softmax")

    print("\n## Peak memory (tracemalloc)")
    traced = numba_allocations_traced()
    print(f"Numba runtime allocations visible to tracemalloc: {traced}")
    print(f"{'estimator':<24} {'N = ' + str(n // 4):>14} {'N = ' + str(n):>14} {'ratio':>7}  linear in N?")
    small = inputs(n // 4, d, dv)
    for name in ("random_batch_attention", "lara", "softmax_attention"):
        p_small = peak_bytes(lambda name=name: ests[name](*small))
        p_big = peak_exact if name == "softmax_attention" else peak_bytes(lambda name=name: ests[name](q, k, v))
        ratio = p_big / p_small
        if name == "softmax_attention":
            verdict = f"(bounded by max_scores = 2**24 scores = {fmt_bytes(8 * 2**24).strip()} + output)"
        else:
            ok = ratio <= 4 * LINEAR_SLACK
            verdicts[f"memory {name}"] = ok
            verdict = f"ratio <= {4 * LINEAR_SLACK:.0f}: {'PASS' if ok else 'FAIL'}"
        print(f"{name:<24} {fmt_bytes(p_small):>14} {fmt_bytes(p_big):>14} {ratio:7.2f}  {verdict}")
    out_bytes = n * dv * 8
    print(f"(the output alone is {fmt_bytes(out_bytes).strip()} at N = {n}; inputs are allocated before tracing)")

    print("\n## Verdicts")
    for key, ok in verdicts.items():
        print(f"{key:<40} {'PASS' if ok else 'FAIL'}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
