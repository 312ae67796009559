r"""Figure 5: random feature attention is self-normalised importance sampling (THEORY B2, T15 and T16).

(a) The bias of RFA (positive features) vs the number of features S,
projected on the direction of the predicted first-order bias, with the T15
prediction :math:`|c_b|/S` overlaid; (b) the trace of its covariance vs S
with the T15 prediction :math:`\sum \mathrm{Var}_1/S`; (c) the effective
sample size :math:`S/E_{N(\mu,I)}[\bar w^2]` of a Gaussian proposal as its
mean moves from 0 (RFA's proposal) to :math:`q_n + \bar k`: Monte Carlo
estimates of the weight second moment against the closed form T16. Studies
``rfa_bias_variance`` and ``ess_vs_proposal_mean``.

Points and 95% intervals (mean +- 1.96 standard errors) are the pooled
measurements of the studies; the fitted lines, slopes and slope intervals
and the T15 coefficients are read from the studies' verdicts, so the figure
and the report agree. The closed-form curve of (c) is T16
(:func:`attention_theory.bounds.weight_second_moment`) on a fine grid of
proposal means, evaluated by the study and stored with its information
verdict.
"""

from __future__ import annotations

import math

import numpy as np

from validation.figures._base import FigureError, ci_errorbars, new_figure, verdict_of

NAME = "rfa_snis"
TITLE = "RFA as self-normalised importance sampling: bias and variance vs S (T15), effective sample size (T16)"
STUDIES = ("rfa_bias_variance", "ess_vs_proposal_mean")

Z95 = 1.959963984540054


def _slope_text(v):
    lo, hi = v.interval
    return f"slope {v.measured:.2f} [{lo:.2f}, {hi:.2f}]"


def _pow2_ticks(ax, levels):
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [f"{int(s)}" for s in levels])
    ax.xaxis.set_minor_locator(NullLocator())


def _legend_below(ax):
    """The panel's legend under its x label (outside the data; constrained layout makes room)."""
    from matplotlib.container import ErrorbarContainer

    pairs = list(zip(*ax.get_legend_handles_labels()))
    pairs.sort(key=lambda hl: not isinstance(hl[0], ErrorbarContainer))  # data first (stable)
    ax.legend([h for h, _ in pairs], [lab for _, lab in pairs], loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=1, borderaxespad=0.0)


def _panel_rate(ax, data, which):
    """(a) bias or (b) trace variance vs S: points, fit over S >= FIT_MIN_S, T15 line."""
    study = data.study
    fit_min = study.FIT_MIN_S
    if which == "bias":
        v = verdict_of(data, contains="RFA bias decays")
        coef = verdict_of(data, contains="S * bias")
        key, se_key, c_key = "bias", "bias_se", "predicted_S_bias"
    else:
        v = verdict_of(data, contains="RFA variance decays")
        coef = verdict_of(data, contains="S * trace")
        key, se_key, c_key = "trace_var", "trace_var_se", "predicted_S_trace_var"
    d = v.details
    s = np.asarray(d["S"], dtype=float)
    y = np.asarray(d[key], dtype=float)
    se = np.asarray(d[se_key], dtype=float)
    lo, hi = y - Z95 * se, y + Z95 * se
    c = float(d[c_key])
    fitted = s >= fit_min
    color = "C0" if which == "bias" else "C1"
    ax.errorbar(s[fitted], y[fitted], yerr=ci_errorbars(y[fitted], lo[fitted], hi[fitted]), fmt="o",
                color=color, zorder=3, label="measured, 95% interval")
    if (~fitted).any():
        ax.errorbar(s[~fitted], y[~fitted], yerr=ci_errorbars(y[~fitted], lo[~fitted], hi[~fitted]), fmt="o",
                    mfc="white", color=color, zorder=3, label=f"$S < {fit_min}$: not fitted ($O(S^{{-2}})$ term)")
    out = {"S": s, "value": y, "ci_low": lo, "ci_high": hi, "t15_coefficient": c, "t15_line": c / s,
           "fit_min_S": fit_min, "passed": v.passed,
           "coefficient_at_S_max": {"S": coef.details["S"], "measured": coef.measured, "interval": coef.interval,
                                    "predicted": coef.predicted, "passed": coef.passed}}
    ax.plot(s, c / s, ls="--", color="0.2", lw=1.0, zorder=2,
            label=rf"T15 first order: ${c:.3g}/S$")
    if "fit" in d and v.interval is not None:
        f = d["fit"]
        xs = s[fitted]
        line = math.exp(f["intercept"]) * xs ** f["slope"]
        ax.plot(xs, line, color=color, lw=1.0, alpha=0.8, label="fit: " + _slope_text(v))
        out.update(slope=v.measured, slope_interval=v.interval, intercept=f["intercept"], fit_S=xs, fit_line=line)
    else:
        ax.plot([], [], " ", label=f"no fit: {d.get('error', 'not available')}")
        out.update(slope=None, slope_interval=None)
    _pow2_ticks(ax, s)
    ax.set_yscale("log")
    ax.set_xlabel(r"number of random features $S$")
    if which == "bias":
        ax.set_ylabel(r"projected bias $u\cdot\mathbb{E}[\mathrm{RFA}-\mathrm{Attn}]$")
        ax.set_title("(a) bias (on the predicted direction $u$)", loc="left")
    else:
        ax.set_ylabel(r"$\mathrm{tr}\,\mathrm{Cov}[\mathrm{RFA}]$ (all queries, coordinates)")
        ax.set_title("(b) variance", loc="left")
    what = r"\,\mathrm{bias}" if which == "bias" else r"\,\mathrm{tr\,Cov}"
    ax.plot([], [], " ", label=(f"${coef.details['S']}\\times{what}$ at $S={coef.details['S']}$: {coef.measured:.3g} "
                                f"[{coef.interval[0]:.3g}, {coef.interval[1]:.3g}], T15: {float(coef.predicted):.3g}"))
    _legend_below(ax)
    return out


def _panel_ess(ax, data):
    """(c) ESS of N(mu, I) along mu = t (q_n + mean k): Monte Carlo vs closed form T16."""
    checks = sorted((v for v in data.verdicts() if v.passed is not None and "closed form" in v.claim),
                    key=lambda v: v.details["t"])
    if not checks:
        raise FigureError("study ess_vs_proposal_mean has no per-mu verdicts")
    s_ess = int(checks[0].details["S"])
    t = np.array([v.details["t"] for v in checks])
    mc = np.array([v.measured for v in checks])
    se = np.array([v.details["se"] for v in checks])
    pred = np.array([float(v.predicted) for v in checks])
    lo, hi = mc - Z95 * se, mc + Z95 * se
    ess, ess_lo, ess_hi = s_ess / mc, s_ess / hi, s_ess / np.clip(lo, 1.0, None)  # E[wbar^2] >= 1
    along = verdict_of(data, contains="effective sample size S / T16").details
    fine = np.asarray(along["closed_form_t"], dtype=float)
    curve = np.asarray(along["closed_form_second_moment"], dtype=float)
    ax.plot(fine, s_ess / curve, color="0.2", lw=1.2, label=r"closed form $S/\mathrm{T16}$")
    ax.errorbar(t, ess, yerr=ci_errorbars(ess, ess_lo, ess_hi), fmt="o", color="C2", zorder=3,
                label=r"Monte Carlo $S/\widehat{\mathbb{E}}[\bar w^2]$, 95% interval")
    passed = sum(bool(v.passed) for v in checks)
    ax.plot([], [], " ", label=f"T16 inside the Bonferroni interval at {passed} of {len(checks)} means")
    ax.set_xlabel(r"proposal mean $\mu = t\,(q_n + \bar k)$, $t$")
    ax.set_ylabel(rf"effective sample size $S/\mathbb{{E}}_{{N(\mu,I)}}[\bar w^2]$, $S={s_ess}$")
    ax.set_xlim(-0.04, 1.04)
    ax.set_ylim(0.0, s_ess * 1.05)
    sec = ax.secondary_yaxis("right", functions=(lambda y: s_ess / np.clip(y, 1e-9, None),
                                                 lambda m: s_ess / np.clip(m, 1e-9, None)))
    sec.set_ylabel(r"weight second moment $\mathbb{E}[\bar w^2]$ (T16)")
    ticks = [m for m in (1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0) if s_ess / m >= 0.2 * s_ess or m <= curve.max()]
    sec.set_yticks(ticks, [f"{m:g}" for m in ticks])
    ax.annotate("RFA's proposal\n$N(0, I)$", xy=(0.0, s_ess / curve[0]), xytext=(0.12, 0.3 * s_ess),
                fontsize=7.5, arrowprops={"arrowstyle": "->", "lw": 0.8, "color": "0.3"})
    ax.set_title(f"(c) effective sample size (query {along['query']})", loc="left")
    _legend_below(ax)
    return {"t": t, "mc_second_moment": mc, "mc_second_moment_se": se, "closed_form_second_moment": pred,
            "S": s_ess, "ess_mc": ess, "ess_ci_low": ess_lo, "ess_ci_high": ess_hi, "closed_form_t": fine,
            "closed_form_ess": s_ess / curve, "query": along["query"],
            "n_draws_per_mu": int(checks[0].details["n_draws"]), "verdicts_passed": passed, "verdicts": len(checks)}


def plot(data):
    rfa, ess = data["rfa_bias_variance"], data["ess_vs_proposal_mean"]
    fig, axes = new_figure(1, 3, width=12.0, height=5.6)
    out = {"bias": _panel_rate(axes[0, 0], rfa, "bias"), "variance": _panel_rate(axes[0, 1], rfa, "variance"),
           "ess": _panel_ess(axes[0, 2], ess)}
    spec = rfa.records[0].params["inputs"]
    draws = {}
    for r in rfa.records:
        draws[r.params["S"]] = draws.get(r.params["S"], 0) + r.result["n"]
    e_in = ess.records[0].params["inputs"]
    fig.suptitle(
        "RFA (positive features) is self-normalised importance sampling with proposal $N(0, I)$: bias and variance "
        rf"vs $S$ against T15, and the effective sample size of $N(\mu, I)$ (T16)" "\n"
        rf"(a, b): $N={spec['n']}$ queries, $M={spec['m']}$ keys, $d={spec['d']}$, $d_v={spec['dv']}$, "
        rf"$\mathrm{{max}}_n\,\mathrm{{T16}}={spec['t16_max']:g}$ (at $\mu=0$), "
        rf"{min(draws.values()):,}-{max(draws.values()):,} RFA calls per $S$ ({rfa.mode} mode); "
        "slopes with 95% regression intervals (the verdicts)\n"
        rf"(c): one query, $M={e_in['m']}$ keys, $d={e_in['d']}$, {out['ess']['n_draws_per_mu']:,} draws per "
        f"proposal mean ({ess.mode} mode)",
        fontsize=9)
    out["sizes"] = {"rfa_inputs": spec, "calls_per_S": {str(k): v for k, v in sorted(draws.items())},
                    "ess_inputs": e_in}
    out["modes"] = {name: d.mode for name, d in data.items()}
    return fig, out
