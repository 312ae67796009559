"""GPU benchmarks of the ``cuda`` backend (a script, not a test; needs a real NVIDIA GPU).

Measures, on the device::

    python benchmarks/bench_cuda.py                 # N = 1e4 .. 1e7, USA attention at N = 1e6
    python benchmarks/bench_cuda.py --quick         # smaller sizes (a smoke run)
    python benchmarks/bench_cuda.py --json out/bench_cuda.json

1. time per step of ``full`` and ``rbm1`` (p = 2, reshuffled every step,
   Euler-Maruyama, ``confined_tanh`` with sigma = 1) for N up to 1e7, d = 3,
   with the achieved memory bandwidth as a fraction of the device's peak;
   ``full`` is O(N^2): it is timed up to ``--full-max`` particles and
   reported in pair interactions per second (it is compute-bound);
2. USA attention (``attention(1.0, "USA")`` on the sphere) at N = 1e6,
   d = 64, p = 32: the RBM-1 step, and ``random_batch_attention`` with the
   same sizes (kernels only, the inputs already on the device).

Target: the rbm1 step at N = 1e7 reaches at least 40% of the peak memory
bandwidth. "Achieved bandwidth" = the bytes a step must move under the model
of :func:`rbm1_bytes` (documented there and in ``benchmarks/README.md``)
divided by the measured time per step; the peak is the device's theoretical
DRAM bandwidth (2 x memory clock x bus width, from the device attributes, or
``--peak-gbs``); the bandwidth of a device-to-device copy, measured in the
same run, is printed next to it.

Times come from CUDA events around ``steps`` consecutive steps of
:class:`particles.backends.cuda.Integrator` (state on the device, nothing
copied back), best of ``--repeats``, after a warm-up step (compilation).
Before timing, a small rbm1 run is compared with the ``cpu`` backend.

The script refuses to run under the CUDA simulator or without a device
(exit status 2); it exits with 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np

# run from a checkout without installing: the repository root holds the package
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import particles  # noqa: E402
from particles import _batches, integrators, systems  # noqa: E402
from particles.solve import Plan  # noqa: E402

TARGET_FRACTION = 0.40
DT = 1e-3
SEED = 1

#: Peak DRAM bandwidth (GB/s) from the data sheets, used only when the device does not report its memory clock.
KNOWN_PEAK_GBS = {"H200": 4800.0, "H100 SXM": 3350.0, "H100 PCIe": 2000.0, "A100-SXM4-80GB": 2039.0,
                  "A100-SXM4-40GB": 1555.0, "A100-PCIE-40GB": 1555.0, "A100 80GB PCIe": 1935.0}

PAPER = {"ns": [10_000, 100_000, 1_000_000, 10_000_000], "full_max": 200_000, "steps": 20,
         "usa_n": 1_000_000, "usa_d": 64, "usa_p": 32, "usa_steps": 5}
QUICK = {"ns": [10_000, 100_000, 1_000_000], "full_max": 100_000, "steps": 10,
         "usa_n": 100_000, "usa_d": 64, "usa_p": 32, "usa_steps": 3}


def refuse(message):
    print(f"bench_cuda: {message}", file=sys.stderr)
    raise SystemExit(2)


def device_or_refuse():
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        refuse("NUMBA_ENABLE_CUDASIM is set: the CUDA simulator runs every GPU thread in Python, its times mean "
               "nothing. Unset it and run on a machine with an NVIDIA GPU.")
    try:
        from particles.backends import cuda as backend

        cuda = backend.require()
    except (ImportError, RuntimeError) as e:
        refuse(f"no usable CUDA device: {e}")
    if backend.simulator_enabled():
        refuse("numba.cuda is running as the CUDA simulator; this benchmark needs a real GPU.")
    return cuda, backend


# --- device ------------------------------------------------------------------------------
def device_info(cuda, peak_override):
    dev = cuda.get_current_device()
    info = {"name": dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
            "compute_capability": list(dev.compute_capability)}
    for attr in ("MULTIPROCESSOR_COUNT", "MEMORY_CLOCK_RATE", "GLOBAL_MEMORY_BUS_WIDTH", "L2_CACHE_SIZE"):
        try:
            info[attr.lower()] = int(getattr(dev, attr))
        except Exception:  # attribute missing in this driver/toolkit
            info[attr.lower()] = None
    peak = None
    if info["memory_clock_rate"] and info["global_memory_bus_width"]:
        # kHz * 1e3 * 2 (double data rate) * bus width in bytes
        peak = info["memory_clock_rate"] * 1e3 * 2 * info["global_memory_bus_width"] / 8
    source = "2 x memory clock x bus width"
    if peak is None:  # some drivers no longer report the memory clock: the data sheet of known devices
        known = [gbs for key, gbs in KNOWN_PEAK_GBS.items() if key in info["name"]]
        if known:
            peak, source = known[0] * 1e9, "data sheet (KNOWN_PEAK_GBS)"
    if peak_override:
        peak, source = peak_override * 1e9, "--peak-gbs"
    if peak is None:
        refuse("the device does not report its memory clock and bus width; give the peak with --peak-gbs")
    info["peak_bandwidth_gbs"] = peak / 1e9
    info["peak_source"] = source
    free, total = cuda.current_context().get_memory_info()
    info["memory_gib"] = total / 2**30
    return info, peak


def events_time(cuda, fn, repeats):
    """Best time in seconds of ``fn()`` between two CUDA events."""
    best = math.inf
    for _ in range(repeats):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop) / 1e3)  # milliseconds
    return best


def copy_bandwidth(cuda, backend, nbytes, repeats):
    a = backend.empty(nbytes // 8)
    b = backend.empty(nbytes // 8)
    b.copy_to_device(a)  # warm-up
    t = events_time(cuda, lambda: b.copy_to_device(a), repeats)
    return 2 * (nbytes // 8) * 8 / t  # read + write


# --- workloads -------------------------------------------------------------------------------
def make_plan(system, n, *, method, batch_size=None, tau_steps=1, nsteps=1):
    A, B = integrators.SCHEMES["euler"].tableau()
    return Plan(method=method, nsteps=nsteps, save_every=nsteps, tau_steps=tau_steps, nfine=1, dt=DT,
                          noise_dt=DT, scale=system.sigma_for(n) * math.sqrt(DT), coupling=system.coupling_for(n),
                          batch_size=n if batch_size is None else batch_size, seed=SEED, sphere=system.sphere,
                          A=A, B=B)


def rbm1_bytes(n, d, nbuckets):
    """Bytes one RBM-1 Euler step with a reshuffle moves in DRAM, under this model.

    Permutation (R = 1): histogram, one 4-byte atomic read-modify-write per
    element (8 B); scan, ~3 passes over the 4-byte bucket counts and starts;
    scatter, one atomic (8 B) and one 4-byte index write per element; bucket
    pass, each index read and written once (8 B) and two bucket starts per
    bucket. Step: each thread reads its index (4 B) and its particle's row
    (8d B) and writes the new row (8d B); the rows of the batch-mates are the
    same rows read by the neighbouring threads of the batch (cache hits, not
    counted). Noise is computed, not read.
    """
    perm = n * (8 + 8 + 4 + 8) + nbuckets * (3 * 4 + 2 * 4)
    step = n * (4 + 16 * d)
    return perm + step, step


def usa_bytes(n, d):
    """Bytes of one USA RBM-1 step (prepare pass + fused step), same model as :func:`rbm1_bytes`.

    Prepare: read x (8d), write Qx, Kx, Vx (24d). Step: read the index (4),
    x_i (8d) and the work row of i (24d; the batch-mates' rows are cache
    hits), write the new row (8d). Plus the permutation.
    """
    nb = _batches.num_buckets(n)
    perm = n * (8 + 8 + 4 + 8) + nb * 20
    return perm + n * (32 * d + 4 + 40 * d)


def time_integrator(cuda, backend, system, x, plan, steps, repeats):
    it = backend.Integrator(system, x[None], plan)
    it.step(0)  # compile and warm up
    cuda.synchronize()
    counter = [1]

    def run():
        for _ in range(steps):
            it.step(counter[0])
            counter[0] += 1

    return events_time(cuda, run, repeats) / steps, it


def check_against_cpu(backend):
    tanh = systems.confined_tanh()
    x0 = np.random.default_rng(0).standard_normal((1000, 3))
    kw = dict(t_end=10 * DT, dt=DT, method="rbm1", batch_size=2, seed=SEED)
    a = particles.solve(tanh, x0, backend="cuda", **kw).x
    b = particles.solve(tanh, x0, backend="cpu", **kw).x
    err = float(np.max(np.abs(a - b)))
    if not err < 1e-10:
        refuse(f"cuda and cpu disagree (max abs difference {err:.3g}); not timing a wrong result")
    return err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--json", type=Path, help="also write every number to this JSON file")
    ap.add_argument("--ns", type=str, help="comma-separated N for full/rbm1 (default 1e4,1e5,1e6,1e7)")
    ap.add_argument("--full-max", type=float, help="largest N for the O(N^2) full step")
    ap.add_argument("--batch-size", type=int, default=2, help="p of the rbm1 step (default 2)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peak-gbs", type=float, help="peak DRAM bandwidth in GB/s (default: from the device)")
    args = ap.parse_args(argv)
    cfg = dict(QUICK if args.quick else PAPER)
    if args.ns:
        cfg["ns"] = [int(float(s)) for s in args.ns.split(",")]
    if args.full_max:
        cfg["full_max"] = int(args.full_max)

    cuda, backend = device_or_refuse()
    info, peak = device_info(cuda, args.peak_gbs)
    info.update({"python": platform.python_version(), "numpy": np.__version__, "particles": particles.__version__,
                 "date": datetime.date.today().isoformat(), "block_size": backend.block_size()})
    print("device:", json.dumps(info))
    err = check_against_cpu(backend)
    print(f"check: rbm1, N = 1000, 10 steps, max |cuda - cpu| = {err:.2e}")
    copy_bw = copy_bandwidth(cuda, backend, 1 << 30, args.repeats)
    print(f"device-to-device copy: {copy_bw / 1e9:.0f} GB/s = {copy_bw / peak:.0%} of the peak "
          f"{peak / 1e9:.0f} GB/s")
    results = {"device": info, "check_max_abs_diff": err, "copy_bandwidth_gbs": copy_bw / 1e9, "steps": []}

    tanh = systems.confined_tanh()
    d, p = 3, args.batch_size
    print(f"\n{'method':<6} {'N':>10} {'time/step':>12} {'GB/s':>8} {'of peak':>8} {'state-only':>10}  notes")
    for n in cfg["ns"]:
        x = np.random.default_rng(n).standard_normal((n, d))
        for method in ("full", "rbm1"):
            if method == "full" and n > cfg["full_max"]:
                continue
            steps = 1 if method == "full" else cfg["steps"]
            plan = make_plan(tanh, n, method=method, batch_size=None if method == "full" else p, nsteps=steps + 1)
            t, it = time_integrator(cuda, backend, tanh, x, plan, steps, args.repeats)
            row = {"method": method, "n": n, "d": d, "p": None if method == "full" else p, "time_per_step_s": t}
            if method == "rbm1":
                total, state = rbm1_bytes(n, d, it.perms.nbuckets)
                row.update({"bytes_per_step": total, "bandwidth_gbs": total / t / 1e9, "fraction_of_peak": total / t
                            / peak, "state_only_fraction": state / t / peak})
                # the parts: the permutation alone, and the step with a fixed permutation
                row["perm_time_s"] = events_time(cuda, lambda it=it: it.perms.build(SEED, 1, it.idx), args.repeats)
                print(f"{method:<6} {n:>10,d} {t * 1e3:>10.3f} ms {total / t / 1e9:>8.0f} {total / t / peak:>8.0%} "
                      f"{state / t / peak:>10.0%}  permutation alone {row['perm_time_s'] * 1e3:.3f} ms")
            else:
                row["pairs_per_s"] = n * (n - 1) / t
                print(f"{method:<6} {n:>10,d} {t * 1e3:>10.3f} ms {'-':>8} {'-':>8} {'-':>10}  "
                      f"{n * (n - 1) / t:.3g} pair interactions/s (compute-bound)")
            results["steps"].append(row)
            del it

    n, d, p = cfg["usa_n"], cfg["usa_d"], cfg["usa_p"]
    usa = systems.attention(1.0, "USA")
    z = np.random.default_rng(1).standard_normal((n, d))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    plan = make_plan(usa, n, method="rbm1", batch_size=p, nsteps=cfg["usa_steps"] + 1)
    t, it = time_integrator(cuda, backend, usa, z, plan, cfg["usa_steps"], args.repeats)
    del it
    ub = usa_bytes(n, d)
    print(f"\nUSA attention, rbm1 step, N = {n:,d}, d = {d}, p = {p}: {t * 1e3:.3f} ms "
          f"({ub / t / 1e9:.0f} GB/s modelled, {ub / t / peak:.0%} of peak)")
    results["usa_rbm1"] = {"n": n, "d": d, "p": p, "time_per_step_s": t, "bytes_per_step": ub,
                           "fraction_of_peak": ub / t / peak}

    from attention_theory import _rba_cuda

    g = np.random.default_rng(2)
    q, k, v = (g.standard_normal((n, d)) / d**0.25 for _ in range(3))
    kern = _rba_cuda._kernels(d)
    dq, dk, dv = backend.to_device(q), backend.to_device(k), backend.to_device(v)
    dout = backend.empty((n, d))
    perms = backend.Permutations(1, n)
    idx = backend.empty((1, n), np.int32)

    def rba():
        perms.build(SEED, 0, idx)
        backend.launch(kern.k_rba, n, dq, dk, dv, idx, n // p, True, True, dout)

    rba()
    cuda.synchronize()
    t_rba = events_time(cuda, rba, args.repeats)
    print(f"random_batch_attention, N = {n:,d}, d = dv = {d}, p = {p} (device arrays, permutation included): "
          f"{t_rba * 1e3:.3f} ms")
    results["rba"] = {"n": n, "d": d, "p": p, "time_s": t_rba}

    big = [r for r in results["steps"] if r["method"] == "rbm1" and r["n"] >= 10_000_000]
    code = 0
    if big:
        frac = big[-1]["fraction_of_peak"]
        ok = frac >= TARGET_FRACTION
        code = 0 if ok else 1
        print(f"\ntarget: rbm1 step at N = {big[-1]['n']:,d} reaches {frac:.0%} of the peak memory bandwidth "
              f"(target >= {TARGET_FRACTION:.0%}): {'PASS' if ok else 'FAIL'}")
        results["target"] = {"fraction_of_peak": frac, "threshold": TARGET_FRACTION, "pass": ok}
    else:
        print("\ntarget: not evaluated (no rbm1 size >= 1e7; --quick or --ns)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
