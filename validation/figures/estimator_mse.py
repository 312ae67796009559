r"""Figure 6: the attention estimators compared: MSE against exact softmax vs the number of samples and vs cost.

One column per score scale of the synthetic inputs (study ``estimator_mse``:
the largest weight second moment T16 over the queries is 2, 8 and 64). Top
row: MSE (mean over queries and output coordinates of the squared error,
averaged over independent calls) vs the number of samples of each family:

- RFA: S random features shared by all queries (positive, positive with
  orthogonal features, trigonometric), with the T15 first-order prediction
  :math:`c_1/S` of positive i.i.d. features overlaid;
- LARA: C proposals with one draw each (balance-heuristic and "optimal"
  weights; sampled, and the deterministic plug-in at the proposal means);
- RA: R exact draws per query from the target mixture;
- RBA: the batch size p (with the token itself; exact at p = N, MSE 0,
  marked at the bottom of the axes).

Bottom row: the same MSE vs the cost of one call per query in kernel
evaluations (:func:`attention_theory.bounds.estimator_cost_per_query`, stored
in the study's summary), with the cost of exact softmax (M) marked: RA always
costs more than exact attention.

Points are the study's MSE with 95% Student intervals over calls; the
slopes under the top panels (MSE vs samples, 95% bootstrap intervals over
calls) are the study's verdicts, PASS/FAIL where the study makes a claim and
"info" where it only reports. Everything drawn, the T15 coefficient included,
is read from the study's summary and verdicts: nothing is computed here.
"""

from __future__ import annotations

import math

import numpy as np

from validation.figures._base import FigureError, ci_errorbars, new_figure

NAME = "estimator_mse"
TITLE = "Attention estimators compared: MSE against exact softmax vs samples and vs cost, three score scales"
STUDIES = ("estimator_mse",)

#: variant -> (legend label, colour, marker, filled, line style); one look per estimator in every panel.
STYLE = {
    "rfa_positive": ("RFA, positive features", "#0072B2", "o", True, "-"),
    "rfa_orthogonal": ("RFA, positive, orthogonal features", "#56B4E9", "s", True, "-"),
    "rfa_trig": ("RFA, trigonometric features", "#009E73", "^", True, "-"),
    "lara_balance": ("LARA, balance-heuristic weights", "#D55E00", "D", True, "-"),
    "lara_optimal": ("LARA, 'optimal' weights", "#E69F00", "v", True, "-"),
    "lara_balance_deterministic": ("LARA deterministic plug-in, balance", "#D55E00", "D", False, "--"),
    "lara_optimal_deterministic": ("LARA deterministic plug-in, 'optimal'", "#E69F00", "v", False, "--"),
    "randomized_attention": ("RA (randomized attention)", "#CC79A7", "P", True, "-"),
    "random_batch_attention": ("RBA, with the token itself", "#000000", "X", True, "-"),
}

#: what "samples" means per family, for the legend
SAMPLES = {"RFA": "$S$ shared features", "LARA": "$C$ proposals, $J=1$", "RA": "$R$ draws per query",
           "RBA": "batch size $p$"}
COST = {"RFA": r"$S(N+M)/N$", "LARA": r"$C(N+M+C)/N$", "RA": r"$M(R+1)$", "RBA": r"$p$"}
SHORT = {"randomized_attention": "RA", "rfa_positive": "RFA", "rfa_orthogonal": "RFA orth.", "rfa_trig": "RFA trig",
         "lara_balance": "LARA bal.", "lara_optimal": "LARA opt.", "random_batch_attention": "RBA ($p<N$)",
         "lara_balance_deterministic": "LARA det. bal.", "lara_optimal_deterministic": "LARA det. opt."}
SLOPE_ORDER = ("randomized_attention", "rfa_positive", "rfa_orthogonal", "rfa_trig", "lara_balance",
               "lara_optimal", "lara_balance_deterministic", "random_batch_attention")


def _dodge(variants):
    """Small multiplicative x offsets so that error bars of different estimators do not hide each other."""
    k = len(variants)
    return {v: math.exp(0.045 * (i - (k - 1) / 2.0)) for i, v in enumerate(variants)}


def _verdict_for(verdicts, scale, variant):
    for v in verdicts:
        d = v.details
        if d.get("scale") == scale and (d.get("variant") == variant or variant in d):
            return v
    return None


def _slope_entry(verdicts, scale, variant):
    """(text, dict) of the MSE slope vs samples for one curve, from the study's verdicts."""
    v = _verdict_for(verdicts, scale, variant)
    if v is None:
        return None, None
    word = {True: "PASS", False: "FAIL", None: "info"}[v.passed]
    if variant.endswith("_deterministic"):
        slope = float(v.details[variant]["slope"])
        return f"{SHORT[variant]} {slope:.2f} (info)", {"slope": slope, "interval": None, "passed": None}
    if v.interval is None or not np.isfinite(v.measured):
        return f"{SHORT[variant]} n/a ({word})", {"slope": None, "interval": None, "passed": v.passed}
    lo, hi = v.interval
    return (f"{SHORT[variant]} {v.measured:.2f} [{lo:.2f}, {hi:.2f}] {word}",
            {"slope": v.measured, "interval": [lo, hi], "passed": v.passed, "claim": v.claim})


def _y_range(rows, zero_tol):
    """Common y-limits: all interval ends above zero, with room at the bottom for the "exact at p = N" marks;
    the top at 10 x the largest upper end of the estimators other than trigonometric RFA (whose MSE at small S
    can be orders of magnitude larger: those points are marked at the top of the axes with their value)."""
    lows, highs = [], []
    for (_, var), r in rows.items():
        mse, lo, hi = (np.asarray(r[k], dtype=float) for k in ("mse", "mse_low", "mse_high"))
        ok = np.isfinite(mse) & (mse > zero_tol)
        lows += list(np.where(lo[ok] > 0, lo[ok], mse[ok]))
        if var != "rfa_trig":
            highs += list(hi[ok])
    return min(lows) / 15.0, max(highs) * 10.0


def _panel_title(letter, scale, info):
    return (rf"({letter}) {scale} scores: $\mathrm{{max}}_n\,\mathrm{{T16}}={info['t16_max']:.3g}$, "
            rf"median {info['t16_median']:.2f}" "\n"
            rf"rms $|q|={info['rms_norm_q']:.2f}$, $\mathrm{{max}}\,|q\cdot k|={info['max_abs_score']:.2f}$")


def _t15(verdicts, scale):
    """The T15 first-order coefficient and its standard error stored with the RFA (positive) verdict."""
    v = _verdict_for(verdicts, scale, "rfa_positive")
    if v is None or "t15_first_order_coefficient" not in v.details:
        raise FigureError(f"study estimator_mse has no T15 coefficient for the {scale} scores")
    return v.details["t15_first_order_coefficient"], v.details["t15_coefficient_se"]


def plot(data):
    d = data["estimator_mse"]
    study = d.study
    rows = study.summarise(d.records)
    verdicts = d.verdicts()
    scales = [s for s, _ in study.SCALES if any(k[0] == s for k in rows)]
    if not scales:
        raise FigureError("study estimator_mse has no stored rows")
    variants = [v for v in STYLE if any(k[1] == v for k in rows)]
    dodge = _dodge(variants)
    fig, axes = new_figure(2, len(scales), width=4.5 * len(scales), height=10.0)
    out = {"scales": {}, "mode": d.mode}
    ymin, ytop = _y_range(rows, study.ZERO_TOL)
    handles = {}
    any_spec = None
    for col, scale in enumerate(scales):
        top, bottom = axes[0, col], axes[1, col]
        spec = next(r["inputs"] for k, r in rows.items() if k[0] == scale)
        any_spec = spec
        info = next(r["input_summary"] for k, r in rows.items() if k[0] == scale)
        entry = {"inputs": spec, **info, "curves": {}, "slopes": {}}
        for var in variants:
            r = rows.get((scale, var))
            if r is None:
                continue
            label, color, marker, filled, ls = STYLE[var]
            family = r["family"]
            sizes = np.asarray(r["sizes"], dtype=float)
            mse = np.asarray(r["mse"], dtype=float)
            lo = np.asarray(r["mse_low"], dtype=float)
            hi = np.asarray(r["mse_high"], dtype=float)
            cost = np.asarray(r["cost_per_query"], dtype=float)
            exact_zero = np.isfinite(mse) & (mse <= study.ZERO_TOL)  # exact up to rounding (RBA at p = N)
            shown = np.isfinite(mse) & ~exact_zero
            kw = {"color": color, "marker": marker, "ls": ls, "lw": 1.1, "ms": 5,
                  "mfc": color if filled else "white", "mec": color, "zorder": 3, "capsize": 2}
            x = sizes * dodge[var]
            off = shown & (mse > ytop)  # off the top of the common scale (trigonometric RFA at small S)
            yplot = np.where(off, np.nan, mse)  # keep the connecting line, broken where a point is off scale
            h = top.errorbar(x[shown], yplot[shown], yerr=ci_errorbars(mse[shown], lo[shown], hi[shown]), **kw)
            bottom.errorbar(cost[shown], yplot[shown], yerr=ci_errorbars(mse[shown], lo[shown], hi[shown]), **kw)
            handles.setdefault(var, (h, f"{label}: {SAMPLES[family]}; cost/query {COST[family]}"))
            for ax, xs in ((top, x), (bottom, cost)):
                for xo, yo in zip(xs[off], mse[off], strict=True):
                    ax.plot([xo], [0.975], marker="^", color=color, mfc="white", ms=6, zorder=4,
                            transform=ax.get_xaxis_transform())
                    mant, ex = f"{yo:.0e}".split("e")
                    ax.annotate(rf"${mant}{{\times}}10^{{{int(ex)}}}$", xy=(xo, 0.975),
                                xycoords=ax.get_xaxis_transform(), xytext=(0, -6), textcoords="offset points",
                                ha="center", va="top", fontsize=6.5, color=color)
            for s_zero in sizes[exact_zero]:
                for ax, xz in ((top, s_zero), (bottom, cost[sizes == s_zero][0])):
                    ax.plot([xz], [0.0], marker="v", color=color, ms=7, transform=ax.get_xaxis_transform(),
                            clip_on=False, zorder=4)
                    ax.annotate(f"exact at $p=N={int(s_zero)}$\n(MSE {mse[sizes == s_zero][0]:.0e})", xy=(xz, 0.0),
                                xycoords=ax.get_xaxis_transform(), xytext=(-6, 4), textcoords="offset points",
                                ha="right", va="bottom", fontsize=7, color=color)
            entry["curves"][var] = {"family": family, "sizes": sizes, "x_plotted": x, "mse": mse, "ci_low": lo,
                                    "ci_high": hi, "cost_per_query": cost, "n_calls": r["n_calls"],
                                    "exact_zero_at": sizes[exact_zero], "off_scale_at": sizes[off],
                                    "calls_with_nonpositive_denominator": r["calls_with_nonpositive_denominator"]}
        # T15 first-order overlay for RFA with positive i.i.d. features
        if (scale, "rfa_positive") in rows:
            c1, c1_se = _t15(verdicts, scale)
            s = np.asarray(rows[(scale, "rfa_positive")]["sizes"], dtype=float)
            (h15,) = top.plot(s, c1 / s, color=STYLE["rfa_positive"][1], lw=1.0, ls=":", zorder=2)
            handles.setdefault("t15", (h15, r"T15 first order $c_1/S$ (RFA, positive, i.i.d. features)"))
            entry["t15"] = {"coefficient": c1, "coefficient_se": c1_se, "S": s, "line": c1 / s}
        # slopes (the verdicts)
        texts = []
        for var in SLOPE_ORDER:
            if (scale, var) not in rows:
                continue
            text, val = _slope_entry(verdicts, scale, var)
            if text is not None:
                texts.append(text)
                entry["slopes"][var] = val
        half = (len(texts) + 1) // 2
        top.text(0.0, -0.2, "MSE slope vs samples [95%]:\n" + "\n".join(texts[:half]), transform=top.transAxes,
                 ha="left", va="top", fontsize=6.8, linespacing=1.35)
        top.text(0.54, -0.2, "\n" + "\n".join(texts[half:]), transform=top.transAxes, ha="left", va="top",
                 fontsize=6.8, linespacing=1.35)
        m_keys = spec["m"]
        (hm,) = bottom.plot([m_keys, m_keys], [0, 1], transform=bottom.get_xaxis_transform(), color="0.35", lw=1.0,
                            ls="-.", zorder=1)
        handles.setdefault("exact", (hm, "cost of exact softmax: $M$ kernel evaluations per query"))
        letter_top, letter_bottom = "abcdef"[col], "abcdef"[len(scales) + col]
        top.set_title(_panel_title(letter_top, scale, info), loc="left")
        bottom.set_title(rf"({letter_bottom}) {scale} scores: MSE vs cost", loc="left")
        from matplotlib.ticker import NullLocator

        all_sizes = sorted({s for k, r in rows.items() if k[0] == scale for s in r["sizes"]})
        top.set_xscale("log", base=2)
        top.set_xticks(all_sizes, [f"{int(s)}" for s in all_sizes])
        top.xaxis.set_minor_locator(NullLocator())
        top.set_xlabel(r"samples: $S$ (RFA), $C$ (LARA), $R$ (RA), $p$ (RBA)")
        bottom.set_xscale("log")
        bottom.set_xlabel("cost per query (kernel evaluations)")
        for ax in (top, bottom):
            ax.set_yscale("log")
            if col == 0:
                ax.set_ylabel(r"MSE $\frac{1}{N d_v}\mathbb{E}\,\|\widehat{\mathrm{Attn}} - \mathrm{Attn}\|^2$")
        out["scales"][scale] = entry
    for ax in axes.ravel():
        ax.set_ylim(ymin, ytop)
    order = [k for k in (*STYLE, "t15", "exact") if k in handles]
    fig.legend([handles[k][0] for k in order], [handles[k][1] for k in order], loc="outside lower center", ncol=2,
               fontsize=7.5)
    n_calls = max(c["n_calls"] for e in out["scales"].values() for c in e["curves"].values())
    fig.suptitle(
        "Attention estimators against exact softmax (T7): MSE vs the number of samples (top) and vs cost (bottom), "
        "at three score scales\n"
        rf"synthetic inputs: $N=M={any_spec['n']}$, $d={any_spec['d']}$, $d_v={any_spec['dv']}$, scaled to a "
        rf"declared $\mathrm{{max}}_n\,\mathrm{{T16}}$ (T16 at $\mu=0$: RFA's proposal); {n_calls} independent calls "
        f"per point ({d.mode} mode); common random numbers across sample sizes\n"
        "95% t-intervals over calls (bars reaching the bottom: the interval contains 0; open triangles at the top: "
        "off scale, value given)\nslopes: the study's verdicts (claims: RA slope $-1$ $\\pm 0.1$, RFA $-1$ $\\pm 0.15$ "
        "where T16 is moderate, sampled LARA $< 0$)",
        fontsize=9)
    out["sizes"] = {"N": any_spec["n"], "M": any_spec["m"], "d": any_spec["d"], "dv": any_spec["dv"],
                    "calls_per_point": n_calls, "mode": d.mode}
    out["legend"] = [handles[k][1] for k in order]
    return fig, out

