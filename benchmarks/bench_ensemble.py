"""Ensembles of small token sets: the engine's fused kernel against a batched NumPy loop.

The phase-diagram workload of the paper: R independent token sets x0 (R, n, d) on the sphere, self-attention
with Q = K = V = I (``systems.attention(beta, "SA")``), method "full", sigma = 0, every step saved. The NumPy loop
below is what a user would write (threads as numpy/BLAS default, each step stored into a preallocated
trajectory, as the study needs); the engine is ``particles.solve(..., backend="cpu")``, which takes the fused
ensemble kernel (``particles/backends/_ensemble.py``) for such sets. Both are timed in one run, interleaved,
best of ``--repeats``; the ratio NumPy / engine per step is printed with PASS/FAIL for ratio >= 4 (printed,
not asserted), and the two trajectories are compared (max abs difference).

Flop count per step and token set: 2 n^2 d for the Gram matrix <x_i, x_j> and 2 n^2 d for the attention
outputs sum_j w_ij x_j, i.e. 4 n^2 d (the full Gram matrix is counted although the kernel computes half of it;
exp, softmax, projection and update, O(n^2 + n d), are not counted).

Run from the repository root: ``python benchmarks/bench_ensemble.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import particles
from particles import systems

TARGET = 4.0


def numpy_loop(x, steps, beta, dt, ambient):
    """The batched NumPy loop of the issue (scheme "euler" projected, or "ambient_euler")."""
    traj = np.empty((steps + 1,) + x.shape)
    traj[0] = x
    for k in range(steps):
        G = x @ x.swapaxes(-1, -2)  # (R, n, n)
        S = beta * G
        S -= S.max(-1, keepdims=True)
        W = np.exp(S)
        W /= W.sum(-1, keepdims=True)
        a = W @ x  # unprojected attention output
        if ambient:
            y = x + dt * a
        else:
            y = x + dt * (a - (a * x).sum(-1, keepdims=True) * x)
        x = y / np.linalg.norm(y, axis=-1, keepdims=True)
        traj[k + 1] = x
    return traj


def engine(x, steps, beta, dt, scheme):
    return particles.solve(systems.attention(beta, "SA"), x, t_end=steps * dt, dt=dt, scheme=scheme,
                           backend="cpu").x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--R", type=int, default=256)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--dims", default="32,8,2")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--dt", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="Numba threads of the engine (default: all; 1 compares one core with NumPy's loop, "
                         "whose batched 32 x 32 products run on one core anyway)")
    ap.add_argument("--quick", action="store_true", help="R = 64, 20 steps, 3 repeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.R, args.steps, args.repeats = 64, 20, 3
    import numba

    if args.threads is not None:
        numba.set_num_threads(args.threads)
    print(f"R={args.R} n={args.n} steps={args.steps} beta={args.beta} dt={args.dt} repeats={args.repeats} "
          f"numba threads={numba.get_num_threads()} cpus={os.cpu_count()}")
    print(f"load average at start: {os.getloadavg()}")
    rng = np.random.default_rng(0)
    rows = []
    for d in [int(v) for v in args.dims.split(",")]:
        x0 = rng.standard_normal((args.R, args.n, d))
        x0 /= np.linalg.norm(x0, axis=-1, keepdims=True)
        for scheme in ("euler", "ambient_euler"):
            ambient = scheme == "ambient_euler"
            engine(x0[:2], 2, args.beta, args.dt, scheme)  # compile / load the kernel before timing
            t_np = t_en = np.inf
            for _ in range(args.repeats):  # interleaved: both see the same machine state
                t = time.perf_counter()
                ref = numpy_loop(x0, args.steps, args.beta, args.dt, ambient)
                t_np = min(t_np, time.perf_counter() - t)
                t = time.perf_counter()
                got = engine(x0, args.steps, args.beta, args.dt, scheme)
                t_en = min(t_en, time.perf_counter() - t)
            diff = float(np.max(np.abs(ref - got)))
            ratio = t_np / t_en
            flops = 4.0 * args.n**2 * d * args.R * args.steps
            rows.append((d, scheme, t_np / args.steps * 1e3, t_en / args.steps * 1e3, ratio, flops / t_en / 1e9,
                         flops / t_np / 1e9, diff))
            print(f"d={d:3d} {scheme:14s} numpy {rows[-1][2]:8.3f} ms/step  engine {rows[-1][3]:8.3f} ms/step  "
                  f"ratio {ratio:6.2f} {'PASS' if ratio >= TARGET else 'FAIL'} (>= {TARGET:g})  "
                  f"engine {rows[-1][5]:6.1f} GFLOP/s  numpy {rows[-1][6]:6.1f} GFLOP/s  max|diff| {diff:.1e}",
                  flush=True)
    print(f"load average at end: {os.getloadavg()}")
    return rows


if __name__ == "__main__":
    main()
