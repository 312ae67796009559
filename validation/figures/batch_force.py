r"""Figure 3: the batch-force lemma (THEORY T3) at frozen positions, Monte Carlo against the formula.

Study ``batch_force_lemma``: N particles at fixed positions (d = 2, confined
tanh kernel), R independent RBM-1 partitions per block; chi_i = batch force
- full force. T3: E chi_i = 0 and E|chi_i|^2 = (1/(p-1) - 1/(N-1)) Lambda_i.

(a) the Monte Carlo mean of S = (1/N) sum_i |chi_i|^2 over the partitions
with its 95% interval, against the T3 curve (1/(p-1) - 1/(N-1)) mean Lambda_i
and the textbook factor 1/(p-1) without the finite-population correction
(the second-moment negative control); the wrong batch weight 1/|C| is drawn
too. (b) the relative deviation from T3, where the finite-population
correction is visible: the textbook curve lies (p-1)/(N-p) above T3.
(c) the mean-zero check: the largest |z| over particles and coordinates per
p, for the RBM-1 weight 1/(|C|-1) and for the wrong weight 1/|C| (mean-zero
negative control), against the Bonferroni threshold of the verdict.
Everything read from the stored sums and the study's verdicts.
"""

from __future__ import annotations

import math

import numpy as np

from validation.figures._base import new_figure, verdict_of
from validation.stats import bonferroni_z

NAME = "batch_force"
TITLE = "Batch-force lemma (T3): Monte Carlo E|chi|^2 against the formula across batch sizes"
STUDIES = ("batch_force_lemma",)

CONFIDENCE = 0.95


def second_moment(recs, name="chi"):
    """Pooled mean of S over the partitions and its standard error, from the stored block sums."""
    n = sum(r.result["n"] for r in recs)
    s1 = sum(r.result[f"{name}_S_sum"] for r in recs)
    s2 = sum(r.result[f"{name}_S_sumsq"] for r in recs)
    mean = s1 / n
    return mean, math.sqrt(max(s2 - n * mean**2, 0.0) / (n - 1) / n), n


def _sci(x):
    """``1.6\\times10^{-6}`` (mathtext) for a small positive number."""
    e = math.floor(math.log10(x))
    return rf"{x / 10**e:.2g}\times10^{{{e}}}"


def _p_ticks(ax, ps, min_gap=0.3):
    """Ticks at every batch size; labels only where they do not crowd (log2 gap >= ``min_gap`` since the last)."""
    from matplotlib.ticker import NullLocator

    labels, last = [], -math.inf
    for p in ps:
        show = math.log2(p) - last >= min_gap
        labels.append(f"{int(p)}" if show else "")
        last = math.log2(p) if show else last
    ax.set_xticks(ps, labels)
    ax.xaxis.set_minor_locator(NullLocator())


def _by_p(records):
    out = {}
    for r in records:
        out.setdefault(r.params["p"], []).append(r)
    return dict(sorted(out.items()))


def plot(data):
    d = data["batch_force_lemma"]
    groups = _by_p(d.records)
    ps = np.asarray(list(groups), dtype=float)
    first = next(iter(groups.values()))[0].params
    n, dim = first["N"], first["d"]
    lam = float(np.mean([r.result["lambda_mean"] for rs in groups.values() for r in rs]))
    z95 = bonferroni_z(1.0 - CONFIDENCE)
    second = {v.details["p"]: v for v in d.verdicts() if v.claim.startswith("E|chi_i|^2")}
    mean_zero = verdict_of(d, contains="E chi_i = 0")
    control = verdict_of(d, contains="negative controls")

    textbook = {r["p"]: r["textbook_prediction"] for r in control.details["per_p"]}
    rows = []
    for p, recs in groups.items():
        m, se, parts = second_moment(recs)
        mc, sec, _ = second_moment(recs, "control")
        v = second[p]
        rows.append({"p": p, "mean_S": m, "se_S": se, "ci_low": m - z95 * se, "ci_high": m + z95 * se,
                     "predicted_T3": float(v.predicted), "textbook": textbook[p], "partitions": parts,
                     "z": v.details["z"], "p_value": v.details["p_value"], "passed": v.passed,
                     "wrong_weight_mean_S": mc, "wrong_weight_se_S": sec})
    mean_s = np.array([r["mean_S"] for r in rows])
    lo, hi = np.array([r["ci_low"] for r in rows]), np.array([r["ci_high"] for r in rows])
    pred = np.array([r["predicted_T3"] for r in rows])
    parts = rows[0]["partitions"]

    fig, axes = new_figure(1, 3, width=11.0, height=4.3)
    ax1, ax2, ax3 = axes[0]
    curves = control.details["curves"]  # T3 and the textbook factor, as the study states them
    pc, t3 = np.asarray(curves["p"]), np.asarray(curves["t3"])
    ax1.plot(pc, t3, color="0.15", lw=1.2, label=r"T3: $\left(\frac{1}{p-1}-\frac{1}{N-1}\right)\bar\Lambda$", zorder=2)
    ax1.plot(pc, curves["textbook"], color="C1", ls="--", lw=1.0,
             label=r"textbook $\bar\Lambda/(p-1)$ (control: no finite-$N$ term)", zorder=2)
    ax1.errorbar(ps, mean_s, yerr=np.vstack([mean_s - lo, hi - mean_s]), fmt="o", color="C0", zorder=3,
                 label=r"Monte Carlo $\mathbb{E}\,S$, 95% interval")
    wrong = np.array([r["wrong_weight_mean_S"] for r in rows])
    ax1.plot(ps, wrong, "x", color="C3", ms=6, zorder=3, label=r"wrong weight $1/|C|$ (control)")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    _p_ticks(ax1, ps)
    ax1.set_xlabel(r"batch size $p$")
    ax1.set_ylabel(r"$\mathbb{E}\,S$,  $S=\mathrm{mean}_i\,|\chi_i|^2$")
    ax1.set_title("(a) second moment of the batch-force error", loc="left")
    ymin = min(float(np.min(lo)), float(wrong.min()), float(t3.min()))
    ax1.set_ylim(ymin / 1.3, float(np.max(hi)) * 4.0)  # head room for the legend above the curves
    ax1.legend(loc="upper right")

    rel = 100.0 * (mean_s / pred - 1.0)
    rlo, rhi = 100.0 * (lo / pred - 1.0), 100.0 * (hi / pred - 1.0)
    ax2.axhline(0.0, color="0.15", lw=1.2, label="T3 (exact)")
    ax2.plot(pc, curves["textbook_relative_percent"], color="C1", ls="--", lw=1.0,
             label=r"textbook $\bar\Lambda/(p-1)$: $+\frac{p-1}{N-p}$")
    ax2.errorbar(ps, rel, yerr=np.vstack([rel - rlo, rhi - rel]), fmt="o", color="C0", zorder=3,
                 label="Monte Carlo, 95% interval")
    ax2.set_xscale("log", base=2)
    _p_ticks(ax2, ps)
    # zoom on the data: the textbook curve leaves the panel where it exceeds a few times the data's spread
    spread = float(np.max(np.abs(np.concatenate([rlo, rhi]))))
    top = max(5.0 * spread, 150.0 * (ps[min(1, ps.size - 1)] - 1.0) / (n - ps[min(1, ps.size - 1)]))
    ax2.set_ylim(min(1.5 * float(np.min(rlo)), -0.1 * top), top)
    ax2.set_xlabel(r"batch size $p$")
    ax2.set_ylabel(r"relative deviation from T3, $100\,(\mathbb{E}\,S/\mathrm{T3}-1)$ [%]")
    ax2.set_title("(b) deviation from the formula", loc="left")
    ax2.legend(loc="best")

    per_p = {r["p"]: r for r in mean_zero.details["per_p"]}
    ctl = {r["p"]: r for r in control.details["per_p"]}
    zmax = np.array([per_p[int(p)]["max_abs_z_mean"] for p in ps])
    zwrong = np.array([ctl[int(p)]["wrong_weight_max_abs_z_mean"] for p in ps])
    alpha, z_star = mean_zero.details["alpha_per_test"], mean_zero.details["z_crit"]
    ax3.plot(ps, zmax, "o", color="C0", label=r"RBM-1 weight $1/(|C|-1)$")
    ax3.plot(ps, zwrong, "x", color="C3", ms=6, label=r"wrong weight $1/|C|$ (control)")
    ax3.axhline(z_star, color="0.15", ls="--", lw=1.0,
                label=rf"Bonferroni threshold $z^*={z_star:.2f}$" "\n" rf"($\alpha={_sci(alpha)}$ per test)")
    ax3.set_xscale("log", base=2)
    ax3.set_yscale("log")
    _p_ticks(ax3, ps)
    ax3.set_ylim(0.5, max(zwrong.max(), z_star) * 3)
    ax3.set_xlabel(r"batch size $p$")
    ax3.set_ylabel(r"largest $|z|$ over $(i,k)$ of the mean of $\chi_{i,k}$")
    ax3.set_title(rf"(c) $\mathbb{{E}}\,\chi_i=0$: {n * dim} tests per $p$", loc="left")
    ax3.legend(loc="center")

    fig.suptitle(
        rf"Batch force at frozen positions: confined tanh kernel ($L={first['L']:g}$), $N={n}$, $d={dim}$, "
        rf"$\bar\Lambda=\mathrm{{mean}}_i\,\Lambda_i={lam:.4g}$, {parts} random partitions per $p$ ({d.mode} mode)",
        fontsize=9)
    out = {"N": n, "d": dim, "lambda_mean": lam, "partitions": parts, "confidence": CONFIDENCE, "per_p": rows,
           "relative_deviation_percent": rel, "relative_ci_percent": [rlo, rhi],
           "mean_zero": {"p": ps, "max_abs_z": zmax, "wrong_weight_max_abs_z": zwrong, "z_threshold": z_star,
                         "alpha_per_test": alpha, "passed": mean_zero.passed},
           "controls_passed": control.passed}
    return fig, out
