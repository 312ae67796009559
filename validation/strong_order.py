"""Strong order of RBM-1 in the reshuffle interval tau (THEORY A2-A3, T4).

The strong error of the Random Batch Method at (tau, p) is measured against
the full system under synchronous coupling (THEORY A3): both are run from the
SAME initial state, with the SAME step h = tau and the SAME Brownian path.
``particles.solve`` makes the Brownian increments a pure function of
(seed, replica, fine step, particle) on the finest grid ``noise_dt``, and a
coarse step sums the fine increments, so with one ``seed`` and
``noise_dt = min(taus)`` every level and both methods see one Brownian path
per replica (common random numbers). What remains is the batching error,
which T4 bounds by C sqrt(tau/(p-1) + tau^2): order 1/2 in tau and a
(p-1)^{-1/2} dependence on the batch size while tau << 1/(p-1).

Because all levels of one replica share random numbers, their errors are
correlated; the slope's interval is therefore a bootstrap over replicas
(:func:`validation.rates.fit_rate` with ``replicate_errors``), not the
regression interval.

:func:`run_demo` is the headline check of the library (``python -m
validation demo``): it measures the slope for several batch sizes on the
confined tanh system, compares it with the order declared by
``particles.RBM1.strong_order`` and writes a figure and a JSON data file with
provenance. Plotting only reads the measured data (matplotlib is imported
inside :func:`plot_strong_order`, drawn by :mod:`validation.figures`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import particles
from particles.integrators import batch_variance_factor
from validation.provenance import provenance
from validation.rates import fit_rate, preasymptotic_flag

__all__ = ["StrongError", "StrongOrderResult", "coupled_strong_errors", "rbm_strong_error", "run_demo", "save_outputs",
           "plot_strong_order", "write_json", "format_table", "DEMO_TOL", "QUICK", "FULL"]

#: Documented tolerance of the verdict: the slope's 95% interval widened by
#: +-0.1 must contain the declared strong order (THEORY, Part D: aim at 0.1-0.2).
DEMO_TOL = 0.1

#: Demo sizes. ``QUICK`` runs in well under a minute on a laptop-class CPU;
#: ``FULL`` uses four times the replicas and one finer level.
QUICK = {"n_particles": 64, "replicas": 64, "taus": tuple(2.0 ** -k for k in range(3, 10)),
         "batch_sizes": (2, 4, 8)}
FULL = {"n_particles": 64, "replicas": 256, "taus": tuple(2.0 ** -k for k in range(3, 11)),
        "batch_sizes": (2, 4, 8)}

_DEMO_SEED = 20261123
_DEMO_X0_SEED = 7


@dataclass(frozen=True)
class StrongError:
    """Result of :func:`rbm_strong_error`.

    Attributes
    ----------
    taus : ndarray, shape (n_levels,)
        Reshuffle intervals (= integration steps), in the caller's order.
    sq_errors : ndarray, shape (replicas, n_levels)
        Per replica, the squared difference between RBM-1 and the full
        system at ``t_end``, averaged over particles and coordinates.
    rms : ndarray, shape (n_levels,)
        ``sqrt(mean(sq_errors, axis=0))``: the RMS strong error per level.
    batch_size : int
    params : dict
        The measurement's parameters (system, sizes, seeds, backend).
    """

    taus: np.ndarray
    sq_errors: np.ndarray
    rms: np.ndarray
    batch_size: int
    params: dict = field(default_factory=dict)


def _check_taus(taus):
    try:
        t = np.asarray(taus, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError("taus must be a 1-d sequence of positive step sizes") from exc
    if t.ndim != 1 or t.size < 1:
        raise ValueError(f"taus must be a non-empty 1-d sequence, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ValueError(f"taus must be positive and finite, got {t.tolist()}")
    if np.unique(t).size != t.size:
        raise ValueError(f"taus must be distinct, got {t.tolist()}")
    fine = float(t.min())
    ratio = t / fine
    if np.any(np.abs(ratio - np.round(ratio)) > 1e-9 * ratio):
        raise ValueError(f"every tau must be a whole multiple of the finest, min(taus)={fine!r} (they share one "
                         f"Brownian path on that grid); got {t.tolist()}")
    return t


def _initial_state(replicas, n_particles, dim, x0_seed):
    return np.random.default_rng(x0_seed).standard_normal((replicas, n_particles, dim))


def _final(system, x0, *, t_end, tau, method, batch_size, seed, backend, noise_dt):
    # save_every beyond the horizon: only the initial and the final state are kept
    tr = particles.solve(system, x0, t_end=t_end, dt=tau, method=method, batch_size=batch_size, seed=seed,
                         backend=backend, save_every=10**9, noise_dt=noise_dt)
    return tr.x[-1].reshape(x0.shape)


def coupled_strong_errors(system, x0, *, taus, batch_sizes, t_end, seed, backend="cpu", noise_dt=None,
                          progress=None):
    """Per-replica squared strong errors of RBM-1 against the full system, with common random numbers (THEORY A3).

    For each tau (in the given order) the full system and then RBM-1 with
    each batch size p (in the given order) are integrated by Euler-Maruyama
    with h = tau from the same initial state ``x0`` (shape (R, N, d)), with
    the same ``seed`` and the same ``noise_dt`` (default ``min(taus)``), so
    that every level and both methods share one Brownian path per replica;
    the full run of a level is shared by all p. This is the one coupled
    strong-error measurement of the package: :func:`rbm_strong_error`, the
    demo, the ``rbm_strong_order``, ``rbm_batch_size`` and
    ``rbm_particle_number`` studies and the convergence tests all call it.

    Parameters
    ----------
    system : particles.systems.System
    x0 : ndarray, shape (R, N, d)
    taus : sequence of float
        Reshuffle intervals (= the Euler steps); ``t_end`` a whole multiple of each.
    batch_sizes : sequence of int
    t_end : float
    seed : int
    backend : str, default "cpu"
    noise_dt : float, optional
        The grid of the shared Brownian path; default the finest tau.
    progress : callable, optional
        Called with one line of text per finished level.

    Returns
    -------
    dict of int to ndarray, shape (R, len(taus))
        For each p: ``sq[r, j]`` = mean over particles and coordinates of
        ``(Xtilde^i(T) - X^i(T))**2`` for replica r at level j.
    """
    taus = np.asarray(taus, dtype=np.float64)
    noise_dt = float(taus.min()) if noise_dt is None else float(noise_dt)
    out = {p: np.empty((x0.shape[0], taus.size)) for p in batch_sizes}
    for j, tau in enumerate(taus):
        t0 = time.perf_counter()
        ref = _final(system, x0, t_end=t_end, tau=float(tau), method="full", batch_size=None, seed=seed,
                     backend=backend, noise_dt=noise_dt)
        for p in batch_sizes:
            xb = _final(system, x0, t_end=t_end, tau=float(tau), method="rbm1", batch_size=p, seed=seed,
                        backend=backend, noise_dt=noise_dt)
            out[p][:, j] = np.mean((xb - ref) ** 2, axis=(1, 2))
        if progress is not None:
            progress(f"  level {j + 1}/{taus.size}: tau = 2^{math.log2(tau):.0f} done in "
                     f"{time.perf_counter() - t0:.1f} s")
    return out


def rbm_strong_error(system, *, n_particles, dim, replicas, t_end, taus, batch_size, seed, backend="cpu", x0_seed):
    """Strong error of RBM-1 against the synchronously coupled full system (THEORY A3).

    For each tau, the full system (T1) and RBM-1 (T2) with batch size p are
    integrated by Euler-Maruyama with h = tau from the same initial state,
    with the same ``seed`` and ``noise_dt = min(taus)``, so that every level
    and both methods share one Brownian path per replica. Only the final
    state is kept.

    Parameters
    ----------
    system : particles.systems.System
        E.g. ``particles.systems.confined_tanh()``.
    n_particles : int
        N.
    dim : int
        d.
    replicas : int
        R independent replicas (independent initial states and noise), run
        as one ensemble call of ``particles.solve``.
    t_end : float
        Horizon T, a whole multiple of every tau.
    taus : sequence of float, shape (n_levels,)
        Reshuffle intervals, distinct, each a whole multiple of ``min(taus)``.
    batch_size : int
        p, 2 <= p <= N.
    seed : int
        Noise and batch seed (shared by both methods and all levels).
    backend : {"cpu", "reference", "cuda"}, default "cpu"
    x0_seed : int
        Seed of the initial state, i.i.d. standard normal of shape
        (replicas, n_particles, dim).

    Returns
    -------
    StrongError
        ``sq_errors[r, j]`` = mean over particles i and coordinates of
        ``(Xtilde^i(T) - X^i(T))**2`` for replica r and level j (this is
        ``E|Xtilde^i - X^i|^2 / d`` of T4 before the expectation), and the RMS
        per level.
    """
    t = _check_taus(taus)
    x0 = _initial_state(replicas, n_particles, dim, x0_seed)
    sq = coupled_strong_errors(system, x0, taus=t, batch_sizes=(batch_size,), t_end=t_end, seed=seed,
                        backend=backend)[batch_size]
    params = {"system": system.name, "system_info": dict(system.info), "n_particles": n_particles, "dim": dim,
              "replicas": replicas, "t_end": t_end, "batch_size": batch_size, "seed": seed, "x0_seed": x0_seed,
              "backend": backend, "noise_dt": float(t.min()), "scheme": "euler"}
    return StrongError(taus=t, sq_errors=sq, rms=np.sqrt(sq.mean(axis=0)), batch_size=int(batch_size),
                       params=params)


# --------------------------------------------------------------------------- demo


@dataclass(frozen=True)
class StrongOrderResult:
    """Everything :func:`run_demo` measured, ready to be plotted or saved.

    Attributes
    ----------
    taus : ndarray, shape (n_levels,)
    sq_errors : dict of int to ndarray, shape (replicas, n_levels)
        Per batch size p.
    fits : dict of int to RateFit
        Log-log slope of the RMS error vs tau with a bootstrap interval.
    theory_order : float
        ``particles.RBM1.strong_order``.
    tol : float
        Tolerance added to both ends of the interval for the verdict.
    verdicts : dict of int to str
        "consistent" or "inconsistent" per batch size.
    ratio : dict
        Error ratio between the smallest and the largest p at the smallest
        tau, its bootstrap interval and the predicted values.
    preasymptotic : dict of int to list
        Windows of 3 levels whose local slope departs from the theory by more
        than 0.2 (diagnostic only).
    params : dict
    provenance : dict
    """

    taus: np.ndarray
    sq_errors: dict
    fits: dict
    theory_order: float
    tol: float
    verdicts: dict
    ratio: dict
    preasymptotic: dict
    params: dict
    provenance: dict

    @property
    def rms(self):
        """RMS error per level, per batch size."""
        return {p: np.sqrt(sq.mean(axis=0)) for p, sq in self.sq_errors.items()}

    @property
    def consistent(self):
        """True when every verdict is "consistent"."""
        return all(v == "consistent" for v in self.verdicts.values())

    def to_dict(self):
        """JSON-serialisable view (the content of ``rbm_strong_order.json``)."""
        rms = self.rms
        return {
            "study": "rbm1_strong_order",
            "description": ("RMS strong error of RBM-1 vs the full system at t_end under synchronous coupling "
                            "(same x0, same h = tau, same Brownian path), THEORY A3 / T4"),
            "taus": self.taus.tolist(),
            "theory_order": self.theory_order,
            "tolerance": self.tol,
            "results": {
                str(p): {"rms_error": rms[p].tolist(), "fit": self.fits[p].as_dict(), "verdict": self.verdicts[p],
                         "preasymptotic_windows": [w._asdict() for w in self.preasymptotic[p]],
                         "sq_errors_per_replica": self.sq_errors[p].tolist()}
                for p in self.sq_errors
            },
            "batch_ratio": self.ratio,
            "parameters": self.params,
            "provenance": self.provenance,
        }


def _provenance(runtime_s):
    return provenance(runtime_s=round(runtime_s, 2))


def _ratio(sq_lo, sq_hi, p_lo, p_hi, n_particles, confidence=0.95, n_boot=2000, rng=0):
    """RMS(p_lo) / RMS(p_hi) at the finest level, with a paired bootstrap interval over replicas."""
    gen = np.random.default_rng(rng)
    r = sq_lo.size
    counts = gen.multinomial(r, np.full(r, 1.0 / r), size=n_boot).astype(np.float64)
    boot = np.sqrt((counts @ sq_lo) / (counts @ sq_hi))
    a = 1.0 - confidence
    lo, hi = np.quantile(boot, [a / 2, 1 - a / 2])
    exponent = -particles.RBM1.batch_exponent  # 1/2
    return {
        "p_small": p_lo, "p_large": p_hi,
        "measured": float(math.sqrt(sq_lo.mean() / sq_hi.mean())), "ci_low": float(lo), "ci_high": float(hi),
        "confidence": confidence,
        "predicted": float(((p_hi - 1) / (p_lo - 1)) ** exponent),
        "predicted_finite_n": float((batch_variance_factor(n_particles, p_lo)
                                     / batch_variance_factor(n_particles, p_hi)) ** exponent),
    }


def run_demo(out_dir="out", quick=True, *, n_particles=None, replicas=None, taus=None, batch_sizes=None,
             t_end=1.0, seed=_DEMO_SEED, x0_seed=_DEMO_X0_SEED, backend="cpu", tol=DEMO_TOL, verbose=True):
    """Measure the strong order of RBM-1 on the confined tanh system and check it against the theory.

    System: ``particles.systems.confined_tanh()`` (r = 1, L = 0.3, sigma = 1,
    so r > 2L and T4 applies), d = 1, T = ``t_end``. For every batch size p
    the RMS strong error over particles and replicas is measured at every
    tau (:func:`rbm_strong_error`, one shared full-system run per level), the
    log-log slope is fitted with a 95% bootstrap interval over replicas, and
    the verdict is "consistent" when the interval widened by ``tol`` contains
    ``particles.RBM1.strong_order``.

    Parameters
    ----------
    out_dir : str or path-like, default "out"
        Where ``rbm_strong_order.png``, ``.pdf`` and ``.json`` are written
        (created if missing).
    quick : bool, default True
        Sizes of :data:`QUICK` (under a minute) or :data:`FULL`.
    n_particles, replicas, taus, batch_sizes : optional
        Override the sizes of the chosen preset (e.g. tiny sizes in tests).
    t_end : float, default 1.0
    seed, x0_seed : int
        Noise/batch seed and initial-state seed.
    backend : {"cpu", "reference", "cuda"}, default "cpu"
    tol : float, default :data:`DEMO_TOL`
    verbose : bool, default True
        Print progress (stderr) and the table (stdout).

    Returns
    -------
    StrongOrderResult
    """
    t_start = time.perf_counter()
    preset = QUICK if quick else FULL
    n = preset["n_particles"] if n_particles is None else n_particles
    reps = preset["replicas"] if replicas is None else replicas
    t = _check_taus(preset["taus"] if taus is None else taus)
    ps = tuple(int(p) for p in (preset["batch_sizes"] if batch_sizes is None else batch_sizes))
    if len(ps) == 0 or len(set(ps)) != len(ps):
        raise ValueError(f"batch_sizes must be a non-empty sequence of distinct integers, got {ps}")
    order = particles.RBM1.strong_order
    system = particles.systems.confined_tanh(r=1.0, L=0.3, sigma=1.0)
    dim = 1

    def progress(msg):
        if verbose:
            print(msg, file=sys.stderr, flush=True)

    progress(f"RBM-1 strong order: confined tanh, N={n}, d={dim}, {reps} replicas, T={t_end}, "
             f"{t.size} levels, p in {ps} (first call compiles; cached afterwards)")
    x0 = _initial_state(reps, n, dim, x0_seed)
    sq = coupled_strong_errors(system, x0, taus=t, batch_sizes=ps, t_end=t_end, seed=seed, backend=backend,
                        progress=progress)
    fits = {p: fit_rate(t, None, replicate_errors=sq[p], confidence=0.95, rng=seed) for p in ps}
    verdicts = {p: "consistent" if fits[p].contains(order, tol) else "inconsistent" for p in ps}
    pre = {p: preasymptotic_flag(t, np.sqrt(sq[p].mean(axis=0)), order, 0.2) for p in ps}
    j = int(np.argmin(t))
    ratio = _ratio(sq[min(ps)][:, j], sq[max(ps)][:, j], min(ps), max(ps), n, rng=seed) if len(ps) > 1 else {}
    if ratio:
        ratio["tau"] = float(t[j])
    params = {"system": system.name, "system_info": dict(system.info), "n_particles": n, "dim": dim,
              "replicas": reps, "t_end": t_end, "taus": t.tolist(), "batch_sizes": list(ps), "seed": seed,
              "x0_seed": x0_seed, "x0": "i.i.d. standard normal, shape (replicas, N, d)", "backend": backend,
              "scheme": "euler", "h": "= tau", "noise_dt": float(t.min()), "error": (
                  "per replica: mean over particles and coordinates of (X_rbm(T) - X_full(T))^2; "
                  "rms_error = sqrt(mean over replicas)"),
              "interval": "95% percentile bootstrap over replicas (2000 resamples)",
              "preset": "quick" if quick else "full"}
    result = StrongOrderResult(taus=t, sq_errors=sq, fits=fits, theory_order=order, tol=tol, verdicts=verdicts,
                               ratio=ratio, preasymptotic=pre, params=params,
                               provenance=_provenance(time.perf_counter() - t_start))
    paths = save_outputs(result, out_dir)
    if verbose:
        print(format_table(result))
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return result


def format_table(result):
    """The verdict table printed by :func:`run_demo`, as a string."""
    pr = result.params
    lines = [
        f"RBM-1 strong order in tau (T4): confined tanh, N={pr['n_particles']}, d={pr['dim']}, "
        f"{pr['replicas']} replicas, T={pr['t_end']}, tau = {_pow2(max(result.taus))} .. {_pow2(min(result.taus))}",
        f"{'p':>4}  {'measured order [95% CI]':<26}{'theory':>7}  verdict (CI +- {result.tol:g} contains theory)",
    ]
    for p, f in result.fits.items():
        measured = f"{f.slope:.3f} [{f.ci_low:.3f}, {f.ci_high:.3f}]"
        lines.append(f"{p:>4}  {measured:<26}{result.theory_order:>7.3f}  {result.verdicts[p]}")
    r = result.ratio
    if r:
        lines.append(f"error ratio p={r['p_small']} / p={r['p_large']} at tau={_pow2(r['tau'])}: "
                     f"{r['measured']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] (95% bootstrap)")
        lines.append(f"  predicted sqrt(({r['p_large']}-1)/({r['p_small']}-1)) = {r['predicted']:.2f}; with the "
                     f"finite-N factor 1/(p-1) - 1/(N-1) of T3: {r['predicted_finite_n']:.2f} (informational, "
                     "no verdict)")
    for p, wins in result.preasymptotic.items():
        for w in wins:
            lines.append(f"note: p={p}, tau in [{_pow2(w.level_min)}, {_pow2(w.level_max)}]: local slope "
                         f"{w.slope:.2f} departs from {result.theory_order:g} by > 0.2 (pre-asymptotic?)")
    lines.append("all consistent" if result.consistent else "NOT all consistent")
    return "\n".join(lines)


def _pow2(x):
    k = math.log2(x)
    return f"2^{k:.0f}" if abs(k - round(k)) < 1e-9 else f"{x:g}"


def write_json(result, path):
    """Write :meth:`StrongOrderResult.to_dict` to ``path``."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        json.dump(result.to_dict(), fh, indent=1)
        fh.write("\n")
    return path


def plot_strong_order(result, stem):
    """Log-log plot of the RMS strong error vs tau per batch size; writes ``stem.png`` and ``stem.pdf``.

    Drawn by :mod:`validation.figures` (the package that draws); see
    :func:`validation.figures._strong_demo.plot_strong_order`.
    """
    from validation.figures._strong_demo import plot_strong_order as draw

    return draw(result, stem)


def save_outputs(result, out_dir):
    """Write the figure (PNG, PDF) and the JSON data file of a :class:`StrongOrderResult`.

    Returns
    -------
    dict
        ``{"png": path, "pdf": path, "json": path}``.
    """
    out = Path(out_dir)
    os.makedirs(out, exist_ok=True)
    png, pdf = plot_strong_order(result, out / "rbm_strong_order")
    js = write_json(result, out / "rbm_strong_order.json")
    return {"png": png, "pdf": pdf, "json": js}

