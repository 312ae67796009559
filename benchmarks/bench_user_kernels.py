"""What a user's kernel costs before its first step: checks, typing, compiling the loops, loading them from disk.

Runs, side by side, two fresh processes that build one ``systems.custom``
system and call ``solve`` once, sharing a new empty ``NUMBA_CACHE_DIR``: the
first compiles the loops and writes them to the cache, the second should load
them. Each process reports the time of the pure-Python probe (construction),
of Numba's typing of the two functions alone (the check before the loops), of
the first ``solve`` and the cache hits of the main loop. Prints the ratio of
the two first calls; target: the second process >= 10x faster.

Then (unless ``--no-zeroing``) the cost of zeroing ``out`` before every call
of a user's function: the loops of one user system compiled twice in this
process, with and without the zeroing (``cpu._compile_family(...,
zero_out=False)``, uncached: two compilations, about a minute each on a 2-core
machine), called alternately on the same arguments (``full``, N = 3000, one
Numba thread, d = 1 and 3), median time ratio. Target: <= 1.10 (the user's
function writes the same d components right after). The built-in systems are
not measured: their loops are compiled without the zeroing (a compile-time
constant), and their fast path never calls ``kernel_member_force``.

    python benchmarks/bench_user_kernels.py [--no-zeroing] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, math, time
import numpy as np

t = time.perf_counter()
import particles
from particles import systems
from particles.backends import cpu
import_s = time.perf_counter() - t


def kernel(x, y, p, out):
    for c in range(x.shape[0]):
        out[c] = -p[0] * math.sin(x[c] - y[c])


def drift(x, p, out):
    for c in range(x.shape[0]):
        out[c] = -p[1] * x[c]


t = time.perf_counter()
system = systems.custom(kernel, drift, sigma=0.5, params=[0.3, 1.0])
probe_s = time.perf_counter() - t
t = time.perf_counter()
cpu.compile_user_functions(system)
typing_s = time.perf_counter() - t
x0 = np.random.default_rng(0).standard_normal((200, 2))
t = time.perf_counter()
particles.solve(system, x0, t_end=0.05, dt=0.01, seed=1)
first_s = time.perf_counter() - t
stats = cpu.loops_for(system).run_batched.stats
print(json.dumps({"import_s": import_s, "probe_s": probe_s, "typing_s": typing_s, "first_solve_s": first_s,
                  "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
"""


def _child(cache_dir, script):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True, timeout=1200)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _bench_kernel(x, y, p, out):
    for c in range(x.shape[0]):
        out[c] = -p[0] * math.sin(x[c] - y[c])


def _bench_drift(x, p, out):
    for c in range(x.shape[0]):
        out[c] = -p[1] * x[c]


def zeroing_cost(repeats):
    import time

    import numba
    import numpy as np

    from particles import _batches, systems
    from particles.backends import cpu

    numba.set_num_threads(1)
    system = systems.custom(_bench_kernel, _bench_drift, params=[0.3, 1.0])
    fns = cpu.compile_user_functions(system)
    variants = {z: cpu._compile_family(None, None, f"bench_zero{int(z)}", False, user=fns, zero_out=z)
                for z in (True, False)}
    params = np.ascontiguousarray(system.params)
    print(f"\nzeroing out before each user call (full force evaluation, N = 3000, 1 thread, {repeats} alternating "
          f"calls each, median)")
    worst = 0.0
    for d in (1, 3):
        n = 3000
        x = np.random.default_rng(0).standard_normal((1, n, d))
        idx = np.arange(n, dtype=np.int64)[None]
        bounds, bop = _batches.batch_bounds(n, n), _batches.batch_of_position(n, n)
        outs = {z: np.empty((1, n, d)) for z in variants}
        args = (idx, bounds, bop, params, 1.0, False)
        times = {z: [] for z in variants}
        for _ in range(repeats + 1):  # the first round compiles for these types
            for z, loops in variants.items():
                t = time.perf_counter()
                loops.force_all(x, *args, np.empty((1, n, d)), outs[z], np.empty((1, 1)), np.empty((1, 1)))
                times[z].append(time.perf_counter() - t)
        np.testing.assert_array_equal(outs[True], outs[False])  # this kernel writes every component
        with_z, without = np.median(times[True][1:]), np.median(times[False][1:])
        worst = max(worst, with_z / without)
        print(f"  d = {d}: with zeroing {with_z * 1e3:8.1f} ms, without {without * 1e3:8.1f} ms, "
              f"ratio {with_z / without:.3f}")
    print(f"  worst ratio {worst:.3f}  [{'PASS' if worst <= 1.10 else 'FAIL'}: target <= 1.10]")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-zeroing", action="store_true", help="skip the zeroing measurement (two compilations)")
    ap.add_argument("--repeats", type=int, default=9)
    opts = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "user_kernel_child.py"  # a script: its functions live in __main__
        script.write_text(CHILD)
        cache = str(Path(tmp) / "numba_cache")
        cold = _child(cache, script)
        warm = _child(cache, script)
    print(f"{'':>22} {'import':>8} {'probe':>8} {'typing':>8} {'1st solve':>10} {'hits':>5} {'misses':>6}")
    for label, r in (("process 1 (compiles)", cold), ("process 2 (cache)", warm)):
        print(f"{label:>22} {r['import_s']:8.2f} {r['probe_s'] * 1e3:6.2f}ms {r['typing_s']:8.2f} "
              f"{r['first_solve_s']:10.2f} {r['hits']:5d} {r['misses']:6d}")
    ratio = cold["first_solve_s"] / warm["first_solve_s"]
    ok = ratio >= 10 and warm["hits"] >= 1 and warm["misses"] == 0
    print(f"first solve, process 1 / process 2: {ratio:.1f}x  [{'PASS' if ok else 'FAIL'}: target >= 10x, "
          f"loaded from the cache]")
    if not opts.no_zeroing:
        zeroing_cost(opts.repeats)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
