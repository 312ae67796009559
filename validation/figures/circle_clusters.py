r"""d = 2: metastable clusters on the circle before collapse (THEORY Part C, the zoom of the phase diagram).

Top: snapshots of one fixed initialisation of n = 32 tokens on the circle
(the same for every beta) moving by SA with the step of the authors' scripts
(``sphere.py``, ``phase-diagrams.py``): ambient Euler ``x <- (x + h a)/|x + h a|``,
h = 0.1 (the title names the scheme of the records); each token
keeps the colour of its initial angle, and the number under a circle is its
cluster count. Bottom: the cluster count over the initialisations vs time
(mean, and the 10-90% range), with THEORY's "about 2 clusters at beta = 4,
3 at beta = 9" and the time at which the study's verdict reads the count.
Cluster count: single linkage at angular distance arccos(1 - 1e-3)
(:func:`attention_theory.bounds.dynamics.circle_cluster_count`, stored by the study).
"""

from __future__ import annotations

import math

import numpy as np

from validation.figures._base import PALETTE, new_figure

NAME = "circle_clusters"
TITLE = "d = 2: particle snapshots on the circle and the metastable number of clusters (SA, n = 32)"
STUDIES = ("circle_clusters",)

SNAPSHOT_BETAS = (1.0, 4.0, 9.0)
SNAPSHOT_TIMES = (0.0, 3.0, 10.0, 30.0)  # plus the last stored time
QUANTILES = (0.1, 0.9)
MAX_LABELLED = 6  # label the cluster sizes of a snapshot with at most this many clusters


def _quantile(hist_row, q):
    """q-quantile of a count histogram (index 0 = one cluster): the smallest count with CDF >= q."""
    cdf = np.cumsum(hist_row) / hist_row.sum()
    return int(np.searchsorted(cdf, q - 1e-12)) + 1


def _clusters(theta, delta):
    """(mean angle, size) of each cluster of the angles (the study's rule: split at circular gaps > delta)."""
    a = np.sort(np.mod(theta, 2 * math.pi))
    gaps = np.diff(np.concatenate([a, [a[0] + 2 * math.pi]]))
    cut = np.flatnonzero(gaps > delta)
    if cut.size == 0:
        return [(float(np.angle(np.exp(1j * a).mean())), a.size)]
    a = np.roll(a, -(cut[0] + 1))  # start right after a large gap
    gaps = np.roll(gaps, -(cut[0] + 1))
    out, start = [], 0
    for k in np.flatnonzero(gaps > delta):
        group = a[start:k + 1]
        out.append((float(np.angle(np.exp(1j * group).mean())), group.size))
        start = k + 1
    return out


def _label_angles(clusters, gap=0.38):
    """Angles for the size labels: at the clusters, pushed apart along the circle to be >= ``gap`` apart."""
    if len(clusters) < 2:
        return clusters
    ang = np.array([a for a, _ in clusters])
    order = np.argsort(ang)
    ang, sizes = ang[order], [clusters[k][1] for k in order]
    for _ in range(50):  # spread neighbours symmetrically until no two are closer than gap
        moved = False
        for k in range(len(ang)):
            j = (k + 1) % len(ang)
            sep = np.mod(ang[j] - ang[k], 2 * math.pi)
            if sep < gap:
                push = 0.5 * (gap - sep) + 1e-3
                ang[k] -= push
                ang[j] += push
                moved = True
        if not moved:
            break
    return list(zip(ang.tolist(), sizes))


def plot(data):
    sd = data["circle_clusters"]
    study = sd.study
    agg = study.aggregate(sd.records)
    betas = sorted(agg)
    rows = [b for b in SNAPSHOT_BETAS if b in agg] or betas[:3]
    p0 = sd.records[0].params
    n, dt, eps, kind = p0["n"], p0["dt"], p0["eps"], p0["kind"]
    delta = study.delta(eps)
    snap_t_all = agg[rows[0]]["snapshot"]["t"]
    cols = [t for t in SNAPSHOT_TIMES if t in snap_t_all] + [snap_t_all[-1]]
    cols = list(dict.fromkeys(cols))

    ncol = len(cols)
    fig, axes = new_figure(len(rows) + 1, ncol, width=7.2, height=1.45 * len(rows) + 2.9)
    gs = axes[0, 0].get_gridspec()
    gs.set_height_ratios([1.0] * len(rows) + [1.75])
    for ax in axes[-1, :]:
        ax.remove()
    axc = fig.add_subplot(gs[-1, :])

    import matplotlib as mpl

    cmap = mpl.colormaps["twilight"]
    snapshots = {}
    for i, beta in enumerate(rows):
        snap = agg[beta]["snapshot"]
        theta0 = np.asarray(snap["theta"][0])
        colours = cmap(np.mod(theta0, 2 * math.pi) / (2 * math.pi))
        snapshots[f"{beta:g}"] = {"t": [], "x": [], "y": [], "count": []}
        for j, t in enumerate(cols):
            ax = axes[i, j]
            k = snap["t"].index(t)
            th = np.asarray(snap["theta"][k])
            x, y = np.cos(th), np.sin(th)
            s = snapshots[f"{beta:g}"]
            s["t"].append(t)
            s["x"].append(x)
            s["y"].append(y)
            s["count"].append(snap["count"][k])
            circle = np.linspace(0.0, 2 * math.pi, 361)
            ax.plot(np.cos(circle), np.sin(circle), color="0.75", lw=0.8, zorder=1)
            ax.scatter(x, y, s=14, c=colours, edgecolors="0.2", linewidths=0.3, zorder=2)
            ax.set_aspect("equal")
            ax.set_xlim(-1.5, 1.5)
            ax.set_ylim(-1.5, 1.5)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ("left", "bottom", "top", "right"):
                ax.spines[side].set_visible(False)
            ax.grid(False)
            c = snap["count"][k]
            ax.text(0.0, 0.0, f"{c}", ha="center", va="center", fontsize=8, color="0.35")
            if c <= MAX_LABELLED:  # cluster sizes next to the clusters (collapsed tokens hide each other)
                for ang, size in _label_angles(_clusters(th, delta)):
                    ax.text(1.32 * math.cos(ang), 1.32 * math.sin(ang), str(size), ha="center", va="center",
                            fontsize=6.5, color="0.15")
            if i == 0:
                ax.set_title(f"$t = {t:g}$", pad=2)
            if j == 0:
                ax.set_ylabel(rf"$\beta = {beta:g}$", labelpad=2)

    # count vs time, every beta (the 10-90% band only for the betas of THEORY's statement, to stay readable)
    stated = getattr(study, "THEORY_COUNTS", {})
    banded = [b for b in betas if b in stated] or betas
    summary = {}
    for i, beta in enumerate(betas):
        a = agg[beta]
        t, hist = a["t"], a["hist"]
        counts = np.arange(1, hist.shape[1] + 1)
        mean = (hist * counts).sum(axis=1) / hist.sum(axis=1)
        lo = np.array([_quantile(h, QUANTILES[0]) for h in hist])
        hi = np.array([_quantile(h, QUANTILES[1]) for h in hist])
        colour = PALETTE[i % len(PALETTE)]
        ok = t > 0
        if beta in banded:
            axc.fill_between(t[ok], lo[ok], hi[ok], step="mid", color=colour, alpha=0.18, lw=0)
        axc.plot(t[ok], mean[ok], color=colour, label=rf"$\beta = {beta:g}$")
        summary[f"{beta:g}"] = {"t": t, "mean": mean, "q10": lo, "q90": hi, "initialisations": a["m"]}
    t_eval = getattr(study, "T_EVAL", None)
    xmin = min(float(agg[b]["t"][1]) for b in betas)
    xmax = max(float(agg[b]["t"][-1]) for b in betas)
    for beta, c in stated.items():
        if beta in agg:
            axc.axhline(c, color="0.35", ls=":", lw=0.9, zorder=0)
            axc.text(xmin * 1.08, c * 1.03, rf"THEORY: about {c} at $\beta = {beta:g}$", fontsize=7, color="0.2",
                     va="bottom", ha="left", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7,
                                                   "pad": 0.6})
    if t_eval is not None:
        axc.axvline(t_eval, color="0.35", ls="--", lw=0.8, zorder=0)
        axc.text(t_eval * 1.06, 20.0, f"verdict read\nat $t = {t_eval:g}$", fontsize=7, color="0.3", va="center")
    axc.set_xscale("log")
    axc.set_yscale("log")
    axc.set_xlim(xmin, xmax)
    axc.set_ylim(0.9, n * 1.1)
    ticks = [1, 2, 3, 4, 6, 10, 20, 32]
    axc.set_yticks(ticks)
    axc.set_yticklabels([str(v) for v in ticks])
    axc.minorticks_off()
    xt = [v for v in (0.5, 1, 2, 5, 10, 20, 30, 50, 100, 200, 300) if xmin <= v <= xmax]
    axc.set_xticks(xt)
    axc.set_xticklabels([f"{v:g}" for v in xt])
    axc.set_xlabel(r"$t$")
    axc.set_ylabel("number of clusters")
    band_txt = ", ".join(f"{b:g}" for b in banded)
    axc.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), title_fontsize=7, alignment="left",
               title=f"mean over\ninitialisations;\nband: {QUANTILES[0]:.0%}-{QUANTILES[1]:.0%}\nrange "
                     rf"($\beta$ = {band_txt})")
    m = sorted({agg[b]["m"] for b in betas})
    scheme = sd.records[0].params.get("scheme", "euler")  # version 1 of the study ran the projected step
    step = {"ambient_euler": "ambient Euler (the authors' step)", "euler": "projected Euler"}.get(scheme, scheme)
    fig.suptitle(f"{kind} on the circle ($d = 2$), $n = {n}$, {step}, $h = {dt:g}$, {sd.mode} mode\n"
                 "top: one initialisation (colour: initial angle; centre: number of clusters; outside: cluster "
                 f"sizes)\nbottom: {'/'.join(map(str, m))} uniform initialisations per $\\beta$; cluster: single "
                 f"linkage at angle $\\arccos(1 - 10^{{{round(math.log10(eps))}}})$", fontsize=8.5)
    out = {"kind": kind, "n": n, "dt": dt, "scheme": scheme, "eps": eps, "mode": sd.mode, "snapshot_betas": rows,
           "banded_betas": banded,
           "snapshot_times": cols, "snapshots": snapshots, "counts": summary,
           "theory_counts": {f"{b:g}": c for b, c in stated.items()}, "t_eval": t_eval}
    return fig, out
