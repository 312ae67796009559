"""The strong-order demo's figure (``python -m validation demo``): drawn here, measured in
:mod:`validation.strong_order`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def plot_strong_order(result, stem):
    """Log-log plot of the RMS strong error vs tau per batch size; writes ``stem.png`` and ``stem.pdf``.

    Reads only the measured data in ``result`` (no simulation). Uses the
    object-oriented matplotlib API with the Agg canvas, so no GUI backend is
    touched and global pyplot state is left alone.

    Returns
    -------
    list of pathlib.Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stem = Path(stem)
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    taus = result.taus
    idx = np.argsort(taus)
    ts = taus[idx]
    rms = result.rms
    handles = []
    for k, (p, f) in enumerate(result.fits.items()):
        sq = result.sq_errors[p][:, idx]
        e = rms[p][idx]
        # delta method: se(RMS) ~ se(mean squared error) / (2 RMS); 95% bars (mostly smaller than the markers)
        se = sq.std(axis=0, ddof=1) / math.sqrt(sq.shape[0]) / (2.0 * e)
        color = f"C{k}"
        h = ax.errorbar(ts, e, yerr=1.96 * se, fmt="o", color=color, ms=5, capsize=2,
                        label=f"p = {p}: slope {f.slope:.3f} [{f.ci_low:.3f}, {f.ci_high:.3f}]")
        handles.append(h)
        ax.plot(ts, np.exp(f.intercept) * ts ** f.slope, "-", color=color, lw=1, alpha=0.7)
    # reference slope 1/2, placed a factor 2 below the lowest curve
    lowest = min(rms.values(), key=lambda v: float(np.exp(np.mean(np.log(v)))))[idx]
    anchor = math.exp(float(np.mean(np.log(lowest) - result.theory_order * np.log(ts)))) / 2.0
    (ref,) = ax.plot(ts, anchor * ts ** result.theory_order, "k--", lw=1,
                     label=f"reference slope {result.theory_order:g} (theory, T4)")
    handles.append(ref)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(r"reshuffle interval $\tau$ = time step $h$ (model time units)")
    ax.set_ylabel(f"RMS strong error at T = {result.params['t_end']:g}\n(model length units)")
    pr = result.params
    ax.set_title(f"RBM-1 (batch size p) vs full system, confined tanh (N = {pr['n_particles']}, d = {pr['dim']}, "
                 f"{pr['replicas']} replicas)\npoints: RMS over replicas, 95% error bars (often inside the marker); "
                 "lines: fits;\nslopes with 95% bootstrap intervals over replicas", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    paths = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix("." + ext)
        fig.savefig(path, dpi=150)
        paths.append(path)
    return paths
