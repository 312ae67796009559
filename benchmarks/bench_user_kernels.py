"""What a user's kernel costs before its first step: checks, typing, compiling the loops, loading them from disk.

Runs, side by side, two fresh processes that build one ``systems.custom``
system and call ``solve`` once, sharing a new empty ``NUMBA_CACHE_DIR``: the
first compiles the loops and writes them to the cache, the second should load
them. Each process reports the time of the pure-Python probe (construction),
of Numba's typing of the two functions alone (the check before the loops), of
the first ``solve`` and the cache hits of the main loop. Prints the ratio of
the two first calls; target: the second process >= 10x faster.

    python benchmarks/bench_user_kernels.py
"""

from __future__ import annotations

import json
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


def main():
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
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
