r"""Figure 4: Dyson Brownian motion (beta = 2), full system and RBM-1 (p = 2), against the semicircle.

Study ``dyson_semicircle`` (THEORY A1.2, T1, T2). Top two rows: histograms
of the particles (all replicas and blocks pooled) at several times, from the
Gaussian initial law N(0, 1/2) to the stationary regime (all saved times
after the burn-in pooled), for the full system and for RBM-1 with the small
step dt = 2^-8/N, at the largest N of the study, against the semicircle
density rho(x) = sqrt(2 - x^2)/pi. Bottom left: the Kolmogorov distance of a
replica's stationary empirical measure to the semicircle vs N (mean over
replicas, 95% percentile-bootstrap intervals over replicas as in the study),
with the study's fitted slopes and intervals, the threshold of the verdict at
the largest N and the negative control (RBM-1 at the coarse dt = 1e-3).
Bottom right: the negative control's stationary histogram, visibly wider
than the semicircle (stationary second moment about 0.62 instead of 1/2, the
Euler bias explained by the study's identity).
"""

from __future__ import annotations

import numpy as np

from validation.figures._base import new_figure

NAME = "dyson"
TITLE = "Dyson Brownian motion with RBM-1 (p = 2): histograms against the semicircle; distance vs N"
STUDIES = ("dyson_semicircle",)

CONFIDENCE = 0.95
#: Times of the single-time histograms (the nearest saved times are used); the last column pools t >= t_burn.
SNAPSHOT_TIMES = (0.0, 0.4, 1.0)
#: Adjacent bins merged in the single-time histograms (fewer samples than the pooled stationary one).
SINGLE_TIME_MERGE = 2


def pooled_histogram(recs, saves):
    """Density histogram of the saved states with indices ``saves`` pooled over the records (blocks).

    Returns ``(edges, density, samples)``: the density is normalised by all
    samples, those outside the histogram range included, so that it can be
    compared with the semicircle density directly.
    """
    edges = np.asarray(recs[0].result["hist_edges"], dtype=np.float64)
    counts = sum(np.asarray(r.result["hist_counts"], dtype=np.float64)[list(saves)].sum(axis=0) for r in recs)
    samples = sum(r.result["hist_n"] for r in recs) * len(saves)
    return edges, counts / (samples * np.diff(edges)), int(samples)


def _cells(data):
    cells = {}
    for r in data.records:
        key = (r.params["method"], r.params["regime"], r.params["N"])
        cells.setdefault(key, []).append(r)
    return {k: sorted(v, key=lambda r: r.replicate) for k, v in cells.items()}


def merge_bins(edges, density, factor):
    """Merge ``factor`` adjacent bins of a density histogram (the density of the merged bins)."""
    k = (len(density) // factor) * factor
    return edges[: k + 1 : factor], density[:k].reshape(-1, factor).mean(axis=1)


def _hist_panel(ax, recs, saves, color, title, densities, *, merge=1):
    edges, dens, samples = pooled_histogram(recs, saves)
    edges, dens = merge_bins(edges, dens, merge)
    ax.stairs(dens, edges, fill=True, color=color, alpha=0.3, lw=0)
    ax.stairs(dens, edges, color=color, lw=1.0)
    ax.plot(densities["x"], densities["semicircle"], color="0.1", lw=1.3)
    ax.set_title(title, loc="left", fontsize=8.5)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, 0.75)
    return {"edges": edges, "density": dens, "samples": samples}


def _distance_verdict(verdicts, method):
    return next(v for v in verdicts if "decreases with N" in v.claim and v.claim.startswith(
        "full system" if method == "full" else "RBM-1"))


def plot(data):
    d = data["dyson_semicircle"]
    cells = _cells(d)
    verdicts = d.verdicts()
    ns_small = sorted(n for (m, reg, n) in cells if m == "full" and reg == "small_dt")
    n_h = ns_small[-1]
    p0 = cells[("full", "small_dt", n_h)][0].params
    densities = _distance_verdict(verdicts, "full").details["densities"]

    fig, axes = new_figure(3, 4, width=10.0, height=8.6)
    out = {"N_histograms": n_h, "snapshots": {}, "single_time_bin_merge": SINGLE_TIME_MERGE}
    rows = (("full", "full system", "C0"),
            ("rbm1", r"RBM-1, $p=2$, $dt=2^{-8}/N$", "C1"))
    for i, (method, label, color) in enumerate(rows):
        recs = cells[(method, "small_dt", n_h)]
        t = np.asarray(recs[0].result["t"], dtype=np.float64)
        reps = sum(r.params["R"] for r in recs)
        out["snapshots"][method] = {"dt": recs[0].params["dt"], "replicas": reps, "panels": []}
        for j, target in enumerate(SNAPSHOT_TIMES):
            k = int(np.argmin(np.abs(t - target)))
            h = _hist_panel(axes[i, j], recs, [k], color, rf"$t={t[k]:.2g}$", densities, merge=SINGLE_TIME_MERGE)
            out["snapshots"][method]["panels"].append({"t": [float(t[k])], **h})
        stat = np.flatnonzero(t >= p0["t_burn"] - 1e-9)
        h = _hist_panel(axes[i, 3], recs, stat, color,
                        rf"$t\in[{t[stat[0]]:.3g},{t[stat[-1]]:.3g}]$, {stat.size} times pooled", densities)
        out["snapshots"][method]["panels"].append({"t": t[stat].tolist(), **h})
        axes[i, 0].set_ylabel(f"{label}\ndensity ($N={n_h}$, {reps} replicas)")
        axes[i, 0].plot(densities["x"], densities["initial"], color="0.1", lw=1.0, ls=":")
    for j in range(4):
        axes[1, j].set_xlabel(r"particle position $\lambda$")

    # bottom row: two panels spanning two columns each
    gs = axes[2, 0].get_gridspec()
    for ax in axes[2, :]:
        ax.remove()
    ax_n = fig.add_subplot(gs[2, 0:2])
    ax_c = fig.add_subplot(gs[2, 2:4])

    out["distance"] = {}
    shift = {"full": 1 / 1.04, "rbm1": 1.04}
    all_ns = []
    for method, label, color in rows:
        v = _distance_verdict(verdicts, method)
        ns, ks, reps = (np.asarray(v.details[k]) for k in ("Ns", "ks", "replicas"))
        lo, hi = np.asarray(v.details["ks_interval_low"]), np.asarray(v.details["ks_interval_high"])
        reps = reps.tolist()
        all_ns += list(ns)
        ax_n.errorbar(ns * shift[method], ks, yerr=np.vstack([ks - lo, hi - ks]), fmt="o", color=color, zorder=3,
                      label=rf"{label}: slope {v.measured:.2f} [{v.interval[0]:.2f}, {v.interval[1]:.2f}]")
        x = np.log(ns)
        line = np.exp(np.mean(np.log(ks)) + v.measured * (x - x.mean()))
        ax_n.plot(ns * shift[method], line, color=color, lw=1.0, alpha=0.8)
        out["distance"][method] = {"N": ns, "ks": ks, "ci_low": lo, "ci_high": hi, "replicas": reps,
                                   "slope": v.measured, "slope_interval": v.interval, "passed": v.passed}
    ctrl = next(v for v in verdicts if "negative control" in v.claim)
    cn = ctrl.details["N"]
    ax_n.errorbar([cn], [ctrl.measured], yerr=[[ctrl.measured - ctrl.interval[0]], [ctrl.interval[1] - ctrl.measured]],
                  fmt="X", color="C3", ms=7, zorder=3,
                  label=rf"RBM-1, coarse $dt={ctrl.details['dt']:g}$ (negative control)")
    thr = float(next(v for v in verdicts if "below threshold" in v.claim).predicted)
    ax_n.axhline(thr, color="0.3", ls="--", lw=1.0, label=f"verdict threshold {thr:g} (at the largest $N$)")
    ax_n.set_xscale("log", base=2)
    ax_n.set_yscale("log")
    uniq = sorted(set(all_ns))
    from matplotlib.ticker import NullLocator

    ax_n.set_xticks(uniq, [f"{int(n)}" for n in uniq])
    ax_n.xaxis.set_minor_locator(NullLocator())
    ax_n.set_xlabel(r"number of particles $N$")
    ax_n.set_ylabel("Kolmogorov distance to $\\rho$\n(mean over replicas)")
    ax_n.set_title("distance of a replica's stationary empirical measure to $\\rho$ vs $N$", loc="left",
                   fontsize=8.5)
    ax_n.set_ylim(top=ax_n.get_ylim()[1] * 3)
    from matplotlib.container import ErrorbarContainer

    hl = sorted(zip(*ax_n.get_legend_handles_labels()), key=lambda x: not isinstance(x[0], ErrorbarContainer))
    ax_n.legend([h for h, _ in hl], [lab for _, lab in hl], loc="upper right", fontsize=7)
    out["distance"]["threshold"] = thr
    out["distance"]["negative_control"] = {"N": cn, "dt": ctrl.details["dt"], "ks": ctrl.measured,
                                           "interval": ctrl.interval, "passed": ctrl.passed}

    coarse = cells[("rbm1", "coarse_dt", cn)]
    t = np.asarray(coarse[0].result["t"], dtype=np.float64)
    stat = np.flatnonzero(t >= p0["t_burn"] - 1e-9)
    h = _hist_panel(ax_c, coarse, stat, "C3",
                    rf"negative control: RBM-1 at coarse $dt={coarse[0].params['dt']:g}$, $N={cn}$, stationary",
                    densities)
    m2 = float(np.mean(np.concatenate([r.result["m2"] for r in coarse])))
    info = next((v for v in verdicts if "departs from 1/2" in v.claim), None)
    note = rf"stationary $m_2=\mathrm{{mean}}_i\,\lambda_i^2={m2:.3f}$" + "\n(semicircle: 1/2"
    if info is not None:
        note += f"; Euler identity: {float(info.predicted):.3f})"
    else:
        note += ")"
    ax_c.text(0.98, 0.95, note, transform=ax_c.transAxes, ha="right", va="top", fontsize=8)
    small = cells.get(("rbm1", "small_dt", cn))
    if small is not None:
        ts = np.asarray(small[0].result["t"], dtype=np.float64)
        e2, dens2, _ = pooled_histogram(small, np.flatnonzero(ts >= p0["t_burn"] - 1e-9))
        ax_c.stairs(dens2, e2, color="C1", lw=1.0, ls="--")
    ax_c.set_xlabel(r"particle position $\lambda$")
    ax_c.set_ylabel("density")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="C0", alpha=0.45, edgecolor="C0", label="full system"),
               Patch(facecolor="C1", alpha=0.45, edgecolor="C1", label=r"RBM-1, $dt=2^{-8}/N$"),
               Patch(facecolor="C3", alpha=0.45, edgecolor="C3", label=rf"RBM-1, coarse $dt={ctrl.details['dt']:g}$"),
               Line2D([], [], color="0.1", lw=1.3, label=r"semicircle $\rho(\lambda)=\sqrt{2-\lambda^2}/\pi$"),
               Line2D([], [], color="0.1", lw=1.0, ls=":", label=r"initial law $\mathcal{N}(0,1/2)$"),
               Line2D([], [], color="C1", lw=1.0, ls="--", label=rf"RBM-1, $dt=2^{{-8}}/N$, $N={cn}$, stationary")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=7.5)
    out["negative_control_histogram"] = {**h, "m2": m2}
    out["semicircle_x"], out["semicircle_density"] = densities["x"], densities["semicircle"]

    fig.suptitle(
        rf"Dyson Brownian motion ($\beta=2$): $d\lambda_i=-\lambda_i\,dt+N^{{-1}}\Sigma_{{j\neq i}}"
        rf"(\lambda_i-\lambda_j)^{{-1}}dt+N^{{-1/2}}dB_i$ (kernel regularised, $\varepsilon={p0['eps_N']:g}/N$)" "\n"
        rf"$\lambda_i(0)\sim\mathcal{{N}}(0,1/2)$ i.i.d.; burn-in $t={p0['t_burn']:g}$; full system "
        rf"$dt={p0['dt']:g}$; {d.mode} mode",
        fontsize=9)
    return fig, out
