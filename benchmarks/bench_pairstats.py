"""The phase diagram's clustered-pair statistics: PairTracker (Numba, incremental) vs the plain NumPy formulation.

Both consume the same saved states of a real run (SA, ambient Euler, h = 0.1, R = 256 token sets of n = 32 in
d = 32, 301 saved states) and must give the same counts; timed interleaved, best of --repeats, in one run.
The NumPy side is what a user writes: Gram matrices by matmul, the upper triangle thresholded, the per-pair
"ever clustered" / "declustered" accumulations over the chunk.

    python benchmarks/bench_pairstats.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import particles
from particles import initial, systems
from validation.studies._pairstats import PairTracker, pair_statistics_numpy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="Numba threads (default: Numba's)")
    args = ap.parse_args(argv)
    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    R, n, d, thr = 256, 32, 32, 1.0 - 1e-3
    P = n * (n - 1) // 2
    print(f"R={R} n={n} d={d} saves=301 numba threads={numba.get_num_threads()} cpus={os.cpu_count()}")
    print("load average at start:", os.getloadavg())
    for beta in (1.0, 4.0, 9.0):
        x0 = initial.uniform_sphere(n, d, rng=np.random.default_rng(0), replicas=R)
        x = particles.solve(systems.attention(beta, "SA"), x0, t_end=30.0, dt=0.1, scheme="ambient_euler").x

        def tracker(x=x):
            return PairTracker(R, n, d, thr, strict=True).update(x)

        def numpy_(x=x):
            return pair_statistics_numpy(x, thr, np.zeros((R, P), bool), np.zeros((R, P), bool), strict=True)

        a, b = tracker(), numpy_()  # warm-up (compilation) and the agreement check
        same = all(np.array_equal(u, v) for u, v in zip(a, b))
        best = {"tracker": np.inf, "numpy": np.inf}
        for _ in range(args.repeats):
            for name, fn in (("tracker", tracker), ("numpy", numpy_)):
                t = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
        print(f"beta={beta:<4g} numpy {best['numpy'] * 1e3:8.1f} ms  tracker {best['tracker'] * 1e3:8.1f} ms  "
              f"ratio {best['numpy'] / best['tracker']:6.1f}  identical: {same}")
    print("load average at end:", os.getloadavg())


if __name__ == "__main__":
    main()
