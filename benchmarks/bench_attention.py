"""Benchmark of the attention estimators against exact softmax attention.

    python benchmarks/bench_attention.py            # N = 65536, d = dv = 64 (a few minutes)
    python benchmarks/bench_attention.py --quick    # N = 16384, graph scale to 2**18 (about a minute)

Targets (checked and printed as PASS/FAIL):

- time: random batch attention (p = 64) at least 100x, LARA (C = 64) at least 30x
  faster than exact softmax attention at N = 65536. At another N (``--quick``) the
  required speed-up is scaled by N / 65536, since exact attention is quadratic and
  the two estimators linear in N (the verdict is then marked "scaled");
- memory: the peak of RBA and LARA grows linearly in N (peak ratio between N and
  N/4 at most 4 * 1.25; quadratic would be 16);
- against formulations written here in NumPy, timed side by side (interleaved, same
  inputs, same threads): RBA at least as fast as the ten-line NumPy RBA (the same
  partition, gather into (N/p, p, d) tensors, batched matmul, max-subtracted exp,
  batched matmul, normalise, scatter), with 2 threads and with 1 (Numba and BLAS);
  exact ``softmax_attention`` within 1.2x of a chunked BLAS loop (query chunks of
  2**24 scores, matmul, exp, matmul), interleaved best of 3 at N = 16384 (one run
  each at N is printed beside). The headline speed-up of RBA is then quoted
  against that baseline at N too (the RBA time target, on the baseline's time).

Graph scale (information): RBA's time and peak memory for N = 2**14 ... 2**20
(``--quick``: to 2**18), d = dv = p = 64, beside the memory the dense N x N float64
score matrix of exact attention would take (computed, never allocated).

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
NUMPY_RBA_TARGET = 1.0  # RBA / NumPy RBA speed ratio required (>= 1: at least as fast)
EXACT_SLACK = 1.2  # softmax_attention may take at most this times the chunked BLAS loop
MAX_SCORES = 2**24  # the chunked baseline's chunk: the library's default cap
EXACT_CHECK_N = 16384  # exact vs chunked BLAS: the verdict's size (interleaved repeats) ...
EXACT_CHECK_REPEAT = 3  # ... and its repeats


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


def numpy_rba(q, k, v, p, seed):
    """The ten-line NumPy random batch attention (p must divide N): the library's partition, batched matmuls."""
    import particles

    n = q.shape[0]
    idx = particles.partition(n, p, seed=seed, step=0).perm.reshape(n // p, p)
    qb, kb, vb = q[idx], k[idx], v[idx]
    s = qb @ kb.transpose(0, 2, 1)
    s -= s.max(axis=2, keepdims=True)
    np.exp(s, out=s)
    o = s @ vb
    o /= s.sum(axis=2)[..., None]
    out = np.empty((n, v.shape[1]))
    out[idx] = o
    return out


def chunked_exact(q, k, v, max_scores=MAX_SCORES):
    """Exact softmax attention as a plain chunked BLAS loop: query chunks, matmul, exp, matmul."""
    n, m = q.shape[0], k.shape[0]
    rows = max(1, max_scores // m)
    out = np.empty((n, v.shape[1]))
    for a in range(0, n, rows):
        s = q[a:a + rows] @ k.T
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        out[a:a + rows] = (s @ v) / s.sum(axis=1)[:, None]
    return out


def threads(count):
    """Numba and BLAS limited to ``count`` threads inside the block (None: as they are)."""
    import contextlib

    if count is None:
        return contextlib.nullcontext()
    import numba
    from threadpoolctl import threadpool_limits

    @contextlib.contextmanager
    def limit():
        before = numba.get_num_threads()
        numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
        try:
            with threadpool_limits(limits=count, user_api="blas"):
                yield
        finally:
            numba.set_num_threads(before)

    return limit()


def interleaved(fns, repeat):
    """Best time of each function of ``fns`` (name -> callable), the calls alternating; returns (times, outputs)."""
    best = {name: math.inf for name in fns}
    outs = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, outs


def rel_diff(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


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


def fmt_size(b):
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if b >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{b / 2**10:.1f} KiB"


def side_by_side_rba(q, k, v, sizes, thread_counts, repeat, verdicts):
    """(a): RBA against the NumPy RBA at each N of ``sizes`` (leading rows of the inputs) and thread count."""
    print("\n## RBA against the NumPy formulation (same partition, interleaved, best of repeats)")
    print(f"{'N':>7} {'threads':>8} {'RBA [ms]':>10} {'NumPy [ms]':>11} {'NumPy/RBA':>10} {'rel. diff':>10}  target")
    for m in sizes:
        if m % RBA_P:
            print(f"{m:7d}  skipped: p = {RBA_P} does not divide N (the NumPy formulation needs equal batches)")
            continue
        qm, km, vm = q[:m], k[:m], v[:m]
        for count in thread_counts:
            with threads(count):
                fns = {"rba": lambda qm=qm, km=km, vm=vm: at.random_batch_attention(qm, km, vm, batch_size=RBA_P,
                                                                                     rng=1),
                       "numpy": lambda qm=qm, km=km, vm=vm: numpy_rba(qm, km, vm, RBA_P, 1)}
                fns["rba"]()  # the thread pool of this count started before timing
                t, outs = interleaved(fns, repeat)
            ratio = t["numpy"] / t["rba"]
            ok = ratio >= NUMPY_RBA_TARGET
            verdicts[f"RBA vs NumPy RBA, N = {m}, {count} thread(s)"] = ok
            diff = rel_diff(outs["rba"], outs["numpy"])
            print(f"{m:7d} {count:8d} {1e3 * t['rba']:10.2f} {1e3 * t['numpy']:11.2f} {ratio:9.2f}x {diff:10.1e}  "
                  f">= {NUMPY_RBA_TARGET:.1f}x: {'PASS' if ok else 'FAIL'}")


def graph_scale(ns, d, dv, repeat):
    """(d): RBA's time and peak memory at graph sizes, beside the dense score matrix exact attention would need."""
    print(f"\n## Graph scale: RBA (p = {RBA_P}) time and peak memory vs N; exact attention's dense N x N float64 "
          "scores (computed, not allocated)")
    print(f"{'N':>8} {'RBA [s]':>9} {'ns/token':>9} {'RBA peak':>11} {'inputs':>10} {'dense scores':>13} "
          f"{'dense/peak':>11}")
    rows = []
    for m in ns:
        qm, km, vm = inputs(m, d, dv, seed=m)
        fn = lambda qm=qm, km=km, vm=vm: at.random_batch_attention(qm, km, vm, batch_size=RBA_P, rng=1)  # noqa: E731
        fn()
        t, _ = best_time(fn, repeat)
        peak = peak_bytes(fn)
        dense = 8 * m * m
        rows.append((m, t, peak, dense))
        print(f"{m:8d} {t:9.4f} {1e9 * t / m:9.1f} {fmt_size(peak):>11} {fmt_size(qm.nbytes * 3):>10} "
              f"{fmt_size(dense):>13} {dense / peak:10.0f}x")
        del qm, km, vm
    if len(rows) >= 3:
        x = np.log([r[0] for r in rows])
        print(f"fitted exponents in N: time {np.polyfit(x, np.log([r[1] for r in rows]), 1)[0]:.2f}, "
              f"peak memory {np.polyfit(x, np.log([r[2] for r in rows]), 1)[0]:.2f} (linear: 1; dense scores: 2)")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 16384 instead of 65536")
    ap.add_argument("--n", type=int, default=None, help="override the largest N")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--dv", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5, help="repeats of the fast estimators (min is reported)")
    ap.add_argument("--exact-repeat", type=int, default=1,
                    help="runs of the exact softmax and of the chunked BLAS baseline, alternating (min is reported)")
    ap.add_argument("--graph-max", type=int, default=None,
                    help="largest log2 N of the graph-scale table (default 20, --quick 18; 0: skip it)")
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
    # (b) the chunked BLAS baseline right after it, alternating with further runs of the library
    t_base, base = best_time(lambda: chunked_exact(q, k, v), 1)
    for _ in range(args.exact_repeat - 1):
        t_exact = min(t_exact, best_time(lambda: ests["softmax_attention"](q, k, v), 1)[0])
        t_base = min(t_base, best_time(lambda: chunked_exact(q, k, v), 1)[0])
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
    t_rba = rows[1][1]

    print("\n## Exact softmax against a chunked BLAS loop (query chunks of 2**24 scores, matmul, exp, matmul)")
    print(f"N = {n}, {args.exact_repeat} run(s) each: softmax_attention {t_exact:.3f} s, chunked BLAS loop "
          f"{t_base:.3f} s, ratio {t_exact / t_base:.2f}; relative difference {rel_diff(exact, base):.1e}")
    # the verdict on interleaved repeats at a size where they are affordable: one run each is at the mercy of
    # whatever else the machine does meanwhile
    m = min(n, EXACT_CHECK_N)
    t, _ = interleaved({"library": lambda: ests["softmax_attention"](q[:m], k[:m], v[:m]),
                        "chunked": lambda: chunked_exact(q[:m], k[:m], v[:m])}, EXACT_CHECK_REPEAT)
    ratio = t["library"] / t["chunked"]
    ok = ratio <= EXACT_SLACK
    verdicts["exact softmax vs chunked BLAS"] = ok
    print(f"N = {m}, interleaved, best of {EXACT_CHECK_REPEAT}: softmax_attention {t['library']:.3f} s, chunked "
          f"BLAS loop {t['chunked']:.3f} s: ratio {ratio:.2f} (<= {EXACT_SLACK}: {'PASS' if ok else 'FAIL'})")
    target = TIME_TARGETS["random_batch_attention"] * scale
    headline = t_base / t_rba
    ok = headline >= target
    verdicts["time RBA vs chunked BLAS exact"] = ok
    print(f"headline: RBA (p = {RBA_P}) is {headline:.1f}x faster than the chunked BLAS exact attention "
          f"(>= {target:.0f}x{'' if scale == 1 else ' (scaled)'}: {'PASS' if ok else 'FAIL'})")
    del base

    side_by_side_rba(q, k, v, sorted({min(n, 16384), n}), (2, 1), args.repeat, verdicts)

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

    top = args.graph_max if args.graph_max is not None else (18 if args.quick else 20)
    if top:
        del q, k, v, exact, small
        graph_scale([2**e for e in range(14, top + 1)], d, dv, max(1, min(args.repeat, 3)))

    print("\n## Verdicts")
    for key, ok in verdicts.items():
        print(f"{key:<40} {'PASS' if ok else 'FAIL'}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
