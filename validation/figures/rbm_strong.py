r"""Figure 1: the strong error of RBM-1 against the full system (THEORY T4), four ways.

(a) RMS strong error at T vs the reshuffle interval tau (= the Euler step h)
for p = 2, 4, 8, with the least-squares fits and the reference slope 1/2;
(b) vs the batch size, against (p - 1)^{-1/2}; (c) vs the number of particles
N (no growth); (d) vs the horizon T (no growth). Studies
``rbm_strong_order``, ``rbm_batch_size``, ``rbm_particle_number``,
``rbm_uniform_in_time``.

Points are the RMS over replicas of the per-replica mean square error
(``sq_errors`` of the records); the bars are 95% intervals: the Student-t
interval of the mean square error over replicas, mapped through the square
root. Fitted lines, slopes and slope intervals are the studies' verdicts
(percentile bootstrap over replicas), so the figure and the report agree.
"""

from __future__ import annotations

import math

import numpy as np

from validation.figures._base import ci_errorbars, loglog_reference, new_figure, verdict_of
from validation.stats import mean_interval

NAME = "rbm_strong"
TITLE = "RBM-1 strong error (T4): order 1/2 in tau, (p-1)^(-1/2) in the batch size, uniform in N and in time"
STUDIES = ("rbm_strong_order", "rbm_batch_size", "rbm_particle_number", "rbm_uniform_in_time")

CONFIDENCE = 0.95


def rms_interval(sq, confidence=CONFIDENCE):
    """RMS per column of per-replica squared errors ``sq`` (replicas, levels) and its interval.

    The interval is the Student-t interval of the mean square error over the
    replicas (rows), mapped through the square root (lower end clipped at 0).
    Returns ``(rms, low, high)``, arrays of shape (levels,).
    """
    mi = mean_interval(np.asarray(sq, dtype=np.float64), confidence)
    return np.sqrt(mi.mean), np.sqrt(np.clip(mi.low, 0.0, None)), np.sqrt(mi.high)


def _stack(recs, key="sq_errors"):
    return np.concatenate([np.asarray(r.result[key], dtype=np.float64).reshape(len(r.result[key]), -1)
                           for r in sorted(recs, key=lambda r: r.replicate)], axis=0)


def _fit_line(ax, fit, xs, **kw):
    xs = np.asarray([min(xs), max(xs)], dtype=float)
    return ax.plot(xs, math.exp(fit["intercept"]) * xs ** fit["slope"], **kw)[0]


def _pow2_axis(ax):
    ax.set_xscale("log", base=2)


def _xticks(ax, levels, labels):
    """Major x ticks exactly at the levels, no minor x ticks (the y axis keeps its log ticks)."""
    from matplotlib.ticker import NullLocator

    ax.set_xticks(levels, labels)
    ax.xaxis.set_minor_locator(NullLocator())


def _slope_text(v, prefix="slope"):
    """``slope 0.518 [0.512, 0.524]`` (three decimals: slopes near 0 stay readable)."""
    lo, hi = v.interval
    return f"{prefix} {v.measured:.3f} [{lo:.3f}, {hi:.3f}]"


def _legend(ax, loc, data_first=True):
    """Legend with the data entries first, then the reference lines and notes."""
    from matplotlib.container import ErrorbarContainer

    handles, labels = ax.get_legend_handles_labels()
    pairs = list(zip(handles, labels))
    if data_first:
        pairs.sort(key=lambda hl: not isinstance(hl[0], ErrorbarContainer))
    ax.legend([h for h, _ in pairs], [lab for _, lab in pairs], loc=loc)


def _panel_order(ax, data):
    recs = sorted(data.records, key=lambda r: r.replicate)
    params = recs[0].params
    taus = np.asarray(params["taus"], dtype=float)
    out = {"taus": taus, "p": {}, "N": params["N"], "d": params["d"], "T": params["T"]}
    all_rms = []
    for k, p in enumerate(params["ps"]):
        sq = np.concatenate([np.asarray(r.result["sq_errors"][str(p)], dtype=float) for r in recs], axis=0)
        rms, lo, hi = rms_interval(sq)
        v = next(v for v in data.verdicts() if v.details.get("p") == p and v.passed is not None)
        color = f"C{k}"
        ax.errorbar(taus, rms, yerr=ci_errorbars(rms, lo, hi), fmt="o", color=color, zorder=3,
                    label=f"$p = {p}$: " + _slope_text(v))
        _fit_line(ax, v.details["fit"], taus, color=color, lw=1.0, alpha=0.8)
        all_rms.append(rms)
        out["p"][str(p)] = {"rms_error": rms, "ci_low": lo, "ci_high": hi, "slope": v.measured,
                            "slope_interval": v.interval, "intercept": v.details["fit"]["intercept"],
                            "passed": v.passed}
    lowest = min(all_rms, key=lambda e: float(np.mean(np.log(e))))
    order = float(data.verdicts()[0].predicted)
    loglog_reference(ax, taus, lowest, order, below=1.6, label=rf"reference slope ${order:g}$ (T4)")
    out["replicas"] = int(sq.shape[0])
    out["reference_slope"] = order
    _pow2_axis(ax)
    ax.set_yscale("log")
    ax.set_xlabel(r"reshuffle interval $\tau$ (= Euler step $h$)")
    ax.set_ylabel(rf"RMS error $\left(\mathbb{{E}}|\tilde{{X}}_i(T)-X_i(T)|^2\right)^{{1/2}}$, $T={params['T']:g}$")
    ax.set_title(rf"(a) order in $\tau$: $N={params['N']}$, $d={params['d']}$, {sq.shape[0]} replicas",
                 loc="left")
    _legend(ax, "upper left")
    return out


def _panel_batch(ax, data):
    recs = data.records
    params = recs[0].params
    ps = np.asarray(params["ps"], dtype=float)
    sq = _stack(recs)
    rms, lo, hi = rms_interval(sq)
    v = verdict_of(data, label="T4")
    info = verdict_of(data, label="T3")
    x = ps - 1.0
    ax.errorbar(x, rms, yerr=ci_errorbars(rms, lo, hi), fmt="o", color="C0", zorder=3,
                label="RBM-1: " + _slope_text(v))
    _fit_line(ax, v.details["fit"], x, color="C0", lw=1.0, alpha=0.8)
    loglog_reference(ax, x, rms, float(v.predicted), below=1.5,
                     label=rf"reference $(p-1)^{{{float(v.predicted):g}}}$ (T4)")
    ax.plot([], [], " ", label=f"finite-$N$ factor of T3 predicts slope {float(info.predicted):.3f}")
    _pow2_axis(ax)
    ax.set_yscale("log")
    _xticks(ax, x, [f"{int(p) - 1}" for p in ps])
    ax.set_xlabel(r"$p-1$ (batch size $p$)")
    ax.set_ylabel(rf"RMS error at $T={params['T']:g}$")
    ax.set_title(rf"(b) batch size: $N={params['N']}$, $\tau=2^{{{round(math.log2(params['tau']))}}}$, "
                 f"{sq.shape[0]} replicas", loc="left")
    _legend(ax, "lower left")
    return {"p": ps, "p_minus_1": x, "rms_error": rms, "ci_low": lo, "ci_high": hi, "slope": v.measured,
            "slope_interval": v.interval, "intercept": v.details["fit"]["intercept"], "passed": v.passed,
            "reference_slope": float(v.predicted), "finite_n_slope": float(info.predicted), "N": params["N"],
            "tau": params["tau"], "replicas": int(sq.shape[0])}


def _flat_axis(ax, levels, lo, hi):
    """Log axes with the y-range a factor ~4 around the data, so that 'no growth' reads at a glance."""
    _pow2_axis(ax)
    ax.set_yscale("log")
    ymin, ymax = float(np.min(lo)), float(np.max(hi))
    centre = math.sqrt(ymin * ymax)
    half = max(2.0, math.sqrt(ymax / ymin) * 1.3)
    ax.set_ylim(centre / half, centre * half)
    _xticks(ax, levels, [f"{v:g}" for v in levels])


def _panel_n(ax, data):
    v = verdict_of(data, label="T4")
    by_n = {}
    for r in data.records:
        by_n.setdefault(r.params["N"], []).append(r)
    ns = np.asarray(sorted(by_n), dtype=float)
    cols = [np.concatenate([np.asarray(r.result["sq_errors"], dtype=float)
                            for r in sorted(by_n[n], key=lambda r: r.replicate)]) for n in sorted(by_n)]
    m = min(c.size for c in cols)  # as the verdict: an equal number of replicas per N
    sq = np.stack([c[:m] for c in cols], axis=1)
    rms, lo, hi = rms_interval(sq)
    params = data.records[0].params
    ax.errorbar(ns, rms, yerr=ci_errorbars(rms, lo, hi), fmt="o", color="C0", zorder=3,
                label="RBM-1: " + _slope_text(v))
    _fit_line(ax, v.details["fit"], ns, color="C0", lw=1.0, alpha=0.8)
    loglog_reference(ax, ns, rms, 0.0, below=1.0, label="slope 0 (T4: $C$ independent of $N$)", ls=":")
    _flat_axis(ax, ns, lo, hi)
    ax.set_xlabel(r"number of particles $N$")
    ax.set_ylabel(rf"RMS error at $T={params['T']:g}$")
    ax.set_title(rf"(c) particle number: $p={params['p']}$, $\tau=2^{{{round(math.log2(params['tau']))}}}$, "
                 f"{m} replicas per $N$", loc="left")
    _legend(ax, "upper left")
    return {"N": ns, "rms_error": rms, "ci_low": lo, "ci_high": hi, "slope": v.measured, "slope_interval": v.interval,
            "intercept": v.details["fit"]["intercept"], "passed": v.passed, "replicas_per_N": m,
            "p": params["p"], "tau": params["tau"]}


def _panel_time(ax, data):
    v = verdict_of(data, label="T4")
    recs = data.records
    params = recs[0].params
    times = np.asarray(params["times"], dtype=float)
    sq = _stack(recs)
    rms, lo, hi = rms_interval(sq)
    ratio = v.details["ratio_interval"]
    ax.errorbar(times, rms, yerr=ci_errorbars(rms, lo, hi), fmt="o", color="C0", zorder=3,
                label="RBM-1: " + _slope_text(v))
    _fit_line(ax, v.details["fit"], times, color="C0", lw=1.0, alpha=0.8)
    loglog_reference(ax, times, rms, 0.0, below=1.0, label="slope 0 (T4: uniform in time)", ls=":")
    ax.plot([], [], " ", label=(rf"$e({times[-1]:g})/e({times[0]:g})$ = {v.details['ratio_last_first']:.3g} "
                                f"[{ratio[0]:.3g}, {ratio[1]:.3g}]"))
    _flat_axis(ax, times, lo, hi)
    ax.set_xlabel(r"time $t$")
    ax.set_ylabel(r"RMS error $e(t)$")
    ax.set_title(rf"(d) horizon: $N={params['N']}$, $p={params['p']}$, "
                 rf"$\tau=2^{{{round(math.log2(params['tau']))}}}$, {sq.shape[0]} replicas", loc="left")
    _legend(ax, "upper left")
    return {"times": times, "rms_error": rms, "ci_low": lo, "ci_high": hi, "slope": v.measured,
            "slope_interval": v.interval, "intercept": v.details["fit"]["intercept"], "passed": v.passed,
            "ratio_last_first": v.details["ratio_last_first"], "ratio_interval": ratio, "replicas": int(sq.shape[0]),
            "N": params["N"], "p": params["p"], "tau": params["tau"]}


def plot(data):
    fig, axes = new_figure(2, 2, width=10.0, height=7.6)
    order = data["rbm_strong_order"]
    p0 = order.records[0].params
    out = {
        "tau": _panel_order(axes[0, 0], order),
        "batch_size": _panel_batch(axes[0, 1], data["rbm_batch_size"]),
        "particle_number": _panel_n(axes[1, 0], data["rbm_particle_number"]),
        "time": _panel_time(axes[1, 1], data["rbm_uniform_in_time"]),
    }
    modes = sorted({d.mode for d in data.values()})
    fig.suptitle(
        "RBM-1 vs the full system, same initial data and Brownian path (confined tanh: "
        rf"$r={p0['r']:g}$, $L={p0['L']:g}$, $\sigma={p0['sigma']:g}$, $d={p0['d']}$; Euler-Maruyama, $h=\tau$; "
        f"{'/'.join(modes)} mode)\n"
        "points: RMS over replicas with 95% t-intervals; lines: least-squares fits; "
        "slopes with 95% bootstrap intervals over replicas (the verdicts of the studies)",
        fontsize=9)
    out["modes"] = {name: d.mode for name, d in data.items()}
    out["confidence"] = CONFIDENCE
    return fig, out
