r"""Figure 7: random batch attention is biased (THEORY B5, T18), and what the bias does to the dynamics.

(a) The RMS bias over tokens of RBA vs the batch size p, with and without the
token itself in its batch (Monte Carlo, debiased for the Monte Carlo noise),
against a reference slope -1 (THEORY: "roughly 1/p"); RBA is exact at p = N.
(b) The ratio of the RMS bias with the token itself to the RMS bias without
it, by exact enumeration over all partitions (N = 7, p = 2), vs the score
scale :math:`|x|^2`: THEORY B5's "much larger with the token itself" holds
for small scores and is reversed for large ones. (c) RBM-1 as an integrator
of self-attention dynamics: the error at T vs the step tau for USA (an IPS
of form T1: order 1/2) and for SA (the batch-softmax bias leaves a floor),
with the floor predicted by the averaging principle for p = 2. Studies
``rba_bias`` and ``sa_floor_vs_usa``.

Intervals are 95%: in (a) a parametric bootstrap of the per-coordinate
means, centred as in the study's slope interval (computed by the study and
stored in its verdict's details); in (c) the Student-t
interval of the mean square error over initialisations, mapped through the
square root. Slopes, their intervals and the predicted floor are the
studies' verdicts.
"""

from __future__ import annotations

import math
import re

import numpy as np

from validation.figures._base import FigureError, ci_errorbars, loglog_reference, new_figure, verdict_of
from validation.stats import student_t_critical

NAME = "rba_bias"
TITLE = "Random batch attention: bias vs batch size with and without self (T18, B5); SA bias floor vs USA tau^(1/2)"
STUDIES = ("rba_bias", "sa_floor_vs_usa")

CONFIDENCE = 0.95
MARKERS = {2: "o", 4: "s", 8: "^", 16: "D"}


def _legend_below(ax, ncol=1):
    from matplotlib.container import ErrorbarContainer

    pairs = list(zip(*ax.get_legend_handles_labels()))
    pairs.sort(key=lambda hl: not isinstance(hl[0], ErrorbarContainer))  # data first (stable)
    ax.legend([h for h, _ in pairs], [lab for _, lab in pairs], loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=ncol, borderaxespad=0.0)


def _pow2_ticks(ax, levels, labels=None):
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, labels or [f"{v:g}" for v in levels])
    ax.xaxis.set_minor_locator(NullLocator())


def _slope_text(v):
    lo, hi = v.interval
    return f"slope {v.measured:.2f} [{lo:.2f}, {hi:.2f}]"


def _panel_rba(ax, data):
    study = data.study
    out = {"N": study.N_MC, "d": study.D, "radius2": study.RADIUS2}
    all_p, all_v = [], []
    for include_self, color, tag in ((True, "C1", "with"), (False, "C0", "without")):
        v = verdict_of(data, contains=f"RBA bias ({tag} the token itself) decreases")
        zero = verdict_of(data, contains=f"RBA {tag} the token itself at p = N")
        ps = [int(p) for p in v.details["p"]]
        x = np.array(ps, dtype=float)
        y = np.array(v.details["rms_bias"], dtype=float)
        ylo = np.array(v.details["rms_bias_ci_low"], dtype=float)
        yhi = np.array(v.details["rms_bias_ci_high"], dtype=float)
        ax.errorbar(x, y, yerr=ci_errorbars(y, ylo, yhi), fmt="o" if include_self else "s", color=color, zorder=3,
                    label=f"{tag} the token itself: " + _slope_text(v))
        ax.plot(x, y, color=color, lw=0.9, alpha=0.6)
        calls = int(v.details["n_per_p"][0])
        out["with_self" if include_self else "without_self"] = {
            "p": ps, "rms_bias": y, "ci_low": ylo, "ci_high": yhi, "slope": v.measured, "slope_interval": v.interval,
            "slope_vs_1/p-1/N": v.details["slope_vs_(1/p - 1/N)"], "passed": v.passed, "calls_per_p": calls,
            "max_abs_error_at_p_N": zero.measured, "exact_at_p_N_passed": zero.passed}
        all_p += ps
        all_v += list(y)
    loglog_reference(ax, all_p, all_v, -1.0, below=2.5, label=r"reference slope $-1$ (THEORY: roughly $1/p$)")
    ps = sorted(set(all_p))
    _pow2_ticks(ax, ps)
    ax.set_yscale("log")
    worst = max(out["with_self"]["max_abs_error_at_p_N"], out["without_self"]["max_abs_error_at_p_N"])
    ax.plot([], [], " ", label=rf"at $p=N={study.N_MC}$: exact, max $|$error$|$ = {worst:.1e}")
    ax.set_xlabel(r"batch size $p$")
    ax.set_ylabel(r"RMS over tokens $i$ of the bias $|\mathbb{E}\,\mathrm{RBA}_i - \mathrm{Attn}_i|$")
    ax.set_title(rf"(a) bias vs $p$: $N={study.N_MC}$, $d={study.D}$, $|x_i|^2={study.RADIUS2:g}$", loc="left")
    out["calls_per_p"] = out["with_self"]["calls_per_p"]
    _legend_below(ax)
    return out


def _panel_regime(ax, data):
    study = data.study
    small = verdict_of(data, contains="regime of small scores")
    large = verdict_of(data, contains="regime of large scores")
    info = small.details
    scales = [float(s) for s in info["scales_|x|^2"]]
    ratios = [list(map(float, r)) for r in info["ratio_with_over_without"]]
    k = len(ratios[0])
    jitter = np.linspace(-0.06, 0.06, k)
    for i, (s, rs) in enumerate(zip(scales, ratios, strict=True)):
        ax.plot(s * np.exp(jitter), rs, "o", color="C4", ms=4, alpha=0.85, zorder=3,
                label=f"token sets on the sphere ({k} per scale)" if i == 0 else None)
    means = [float(np.exp(np.mean(np.log(r)))) for r in ratios]
    ax.plot(scales, means, color="C4", lw=1.0)
    gauss = [float(x) for x in info["gaussian_N(0,I_2)_ratio"]]
    ax.plot(np.full(len(gauss), 2.0) * np.exp(-jitter[: len(gauss)]), gauss, "x", color="0.3", ms=5, zorder=3,
            label=r"Gaussian tokens $N(0, I_2)$, $d=2$ (at $\mathbb{E}|x|^2=2$)")
    ax.axhline(1.0, color="0.2", lw=0.9, ls="--", label="ratio 1")
    ax.axhline(study.SMALL_RATIO, color="C1", lw=0.9, ls=":", label=f"'much larger': ratio {study.SMALL_RATIO:g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    from matplotlib.ticker import NullLocator

    ax.set_xticks(scales, [f"{s:g}" for s in scales])
    ax.xaxis.set_minor_locator(NullLocator())
    lo_r = min(min(min(r) for r in ratios), min(gauss))
    hi_r = max(max(max(r) for r in ratios), max(gauss))
    ticks = [t for t in (0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0) if lo_r / 1.5 <= t <= hi_r * 1.5]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(r"score scale $|x_i|^2 = q_i\cdot k_i$")
    ax.set_ylabel("RMS bias with the token itself / without")
    ax.set_title(rf"(b) self or not: all $N!$ partitions, $N={info['N']}$, $p={info['p']}$, $d={info['d']}$",
                 loc="left")
    word = {True: "PASS", False: "FAIL", None: "info"}
    ax.plot([], [], " ", label=f"B5 at $|x|^2={study.SMALL_SCALE:g}$: min ratio {small.measured:.2f} "
                              f"({word[small.passed]})")
    ax.plot([], [], " ", label=f"reversed at $|x|^2={study.LARGE_SCALE:g}$: max ratio {large.measured:.2f} "
                              f"({word[large.passed]})")
    _legend_below(ax)
    return {"scales": scales, "ratios": ratios, "geometric_mean_ratio": means, "gaussian_ratios": gauss,
            "N": info["N"], "p": info["p"], "d": info["d"], "small_scale_min_ratio": small.measured,
            "small_scale_passed": small.passed, "large_scale_max_ratio": large.measured,
            "large_scale_passed": large.passed}


def rms_interval(sq, confidence=CONFIDENCE):
    """RMS per column of per-initialisation squared errors (inits, levels) with the t-interval of the MSE."""
    sq = np.asarray(sq, dtype=float)
    n = sq.shape[0]
    m = sq.mean(axis=0)
    se = sq.std(axis=0, ddof=1) / math.sqrt(n)
    t = student_t_critical(confidence, n - 1)
    return np.sqrt(m), np.sqrt(np.clip(m - t * se, 0.0, None)), np.sqrt(m + t * se)


def _p_of(v):
    m = re.search(r"\(p = (\d+)\)", v.claim)
    return int(m.group(1)) if m else None


def _panel_floor(ax, data):
    recs = data.records
    p0 = recs[0].params
    out = {"n": p0["n"], "R": p0["R"], "beta": p0["beta"], "d": p0["d"], "T": p0["T"], "ps": p0["ps"]}
    verdicts = data.verdicts()
    colors = {"USA": ("#0072B2", "#56B4E9", "#009E73"), "SA": ("#D55E00", "#E69F00", "#CC79A7")}
    usa_all = []
    for kind in ("USA", "SA"):
        rows = sorted((r for r in recs if r.params["kind"] == kind), key=lambda r: -r.params["tau"])
        if not rows:
            continue
        taus = np.array([r.params["tau"] for r in rows])
        out[kind] = {"tau": taus}
        for i, p in enumerate(p0["ps"]):
            sq = np.column_stack([r.result[str(p)] for r in rows])
            rms, lo, hi = rms_interval(sq)
            key = "integrating USA" if kind == "USA" else "integrating SA stops"
            v = next((v for v in verdicts if key in v.claim and _p_of(v) == p), None)
            if v is None:
                raise FigureError(f"study sa_floor_vs_usa has no {kind} verdict for p = {p}")
            color = colors[kind][i % 3]
            what = "slope" if kind == "USA" else "slope (3 smallest $\\tau$)"
            ax.errorbar(taus, rms, yerr=ci_errorbars(rms, lo, hi), fmt=MARKERS.get(p, "o"), color=color, zorder=3,
                        mfc=color if kind == "USA" else "white",
                        label=f"{kind}, $p={p}$: {what} {v.measured:.2f} [{v.interval[0]:.2f}, {v.interval[1]:.2f}]")
            ax.plot(taus, rms, color=color, lw=0.9, alpha=0.6)
            out[kind][str(p)] = {"rms_error": rms, "ci_low": lo, "ci_high": hi, "slope": v.measured,
                                 "slope_interval": v.interval, "passed": v.passed}
            if kind == "USA":
                usa_all.append(rms)
    if usa_all:
        lowest = min(usa_all, key=lambda e: float(np.mean(np.log(e))))
        loglog_reference(ax, out["USA"]["tau"], lowest, 0.5, below=1.8, label=r"reference $\tau^{1/2}$ (T4)")
    floor = next((v for v in verdicts if "SA floor (p = 2)" in v.claim), None)
    if floor is not None:
        pred = float(floor.predicted)
        ax.axhline(pred, color="C1", lw=1.0, ls=":",
                   label=(f"predicted SA floor, $p=2$ (averaging): {pred:.3g}; extrapolated "
                          f"{floor.measured:.3g} [{floor.interval[0]:.3g}, {floor.interval[1]:.3g}]"))
        out["floor"] = {"predicted": pred, "measured": floor.measured, "interval": floor.interval,
                        "passed": floor.passed}
    taus = out.get("USA", out.get("SA"))["tau"]
    _pow2_ticks(ax, taus, [f"$2^{{{round(math.log2(t))}}}$" for t in taus])
    ax.set_yscale("log")
    ax.set_xlabel(r"reshuffle interval $\tau$ (= Euler step $h$)")
    ax.set_ylabel(rf"RMS error $|x_{{\mathrm{{RBM}}}}(T) - x(T)|$, $T={p0['T']:g}$")
    ax.set_title(rf"(c) RBM-1 on attention dynamics: $n={p0['n']}$, $d={p0['d']}$, $\beta={p0['beta']:g}$",
                 loc="left")
    _legend_below(ax)
    return out


def plot(data):
    rba, flo = data["rba_bias"], data["sa_floor_vs_usa"]
    fig, axes = new_figure(1, 3, width=12.5, height=5.8)
    out = {"bias_vs_p": _panel_rba(axes[0, 0], rba), "self_ratio": _panel_regime(axes[0, 1], rba),
           "sa_floor": _panel_floor(axes[0, 2], flo)}
    a, c = out["bias_vs_p"], out["sa_floor"]
    fig.suptitle(
        r"Random batch attention (T18): the batch softmax is biased; as an RBM-1 integrator of SA its bias leaves "
        r"an error floor, while USA converges like $\tau^{1/2}$ (B5)" "\n"
        rf"(a): $q=k=v=x$, tokens on the sphere, {a['calls_per_p']} RBA calls per $p$ ({rba.mode} mode), RMS bias "
        "debiased for Monte Carlo noise; slopes with 95% bootstrap intervals (the verdicts)\n"
        rf"(c): no noise, {c['R']} random initialisations on the sphere, full and RBM-1 dynamics by explicit Euler "
        rf"with $h=\tau$ from the same data ({flo.mode} mode); 95% t-intervals over initialisations",
        fontsize=9)
    out["modes"] = {name: d.mode for name, d in data.items()}
    out["confidence"] = CONFIDENCE
    return fig, out
