r"""Figure 2: the weak error of RBM-1 (THEORY T5), |E phi(Xtilde_T) - E phi(X_T)| = O(tau).

Study ``rbm_weak_order``: RBM-1 (p = 2) and the full system with common
random numbers, the per-replica difference phi(Xtilde_T) - phi(X_T) averaged
over many replicas (its sufficient statistics are stored per block). Shown:
the absolute weak error for phi = mean |x|^2 (the verdict) and
phi = mean cos(x) (informational) with 95% normal intervals (the mean over
thousands of replicas), the fitted slopes with the study's parametric-bootstrap
intervals, the reference slope 1 and, for comparison, the RMS strong error of
the same runs (interval: Student t over the blocks, whose stored value is a
block mean).
"""

from __future__ import annotations

import math

import numpy as np

from validation.figures._base import loglog_reference, new_figure
from validation.stats import bonferroni_z, mean_interval

NAME = "rbm_weak"
TITLE = "RBM-1 weak error vs tau (T5): slope 1"
STUDIES = ("rbm_weak_order",)

CONFIDENCE = 0.95
PHI_LABELS = {"x2": r"$\varphi(X)=N^{-1}\Sigma_i |X^i|^2$", "cos": r"$\varphi(X)=N^{-1}\Sigma_i \cos X^i$"}


def weak_statistics(recs, phi):
    """Pooled mean and standard error per level of phi(RBM) - phi(full) from the stored block sums."""
    n = sum(r.result["n"] for r in recs)
    s = np.sum([np.asarray(r.result[f"sum_{phi}"], dtype=float) for r in recs], axis=0)
    o = np.sum([np.asarray(r.result[f"outer_{phi}"], dtype=float) for r in recs], axis=0)
    mean = s / n
    var = (np.diag(o) - n * mean**2) / (n - 1)
    return mean, np.sqrt(var / n), n


def _verdict(data, phi):
    for v in data.verdicts():
        informational = "cos" in v.claim
        if informational == (phi == "cos") and v.interval is not None:
            return v
    raise LookupError(f"no weak-order verdict for phi = {phi}")


def plot(data):
    from matplotlib.ticker import NullLocator

    d = data["rbm_weak_order"]
    recs = sorted(d.records, key=lambda r: r.replicate)
    params = recs[0].params
    taus = np.asarray(params["taus"], dtype=float)
    z = bonferroni_z(1.0 - CONFIDENCE)
    fig, ax = new_figure(width=6.4, height=5.4)
    out = {"taus": taus, "N": params["N"], "p": params["p"], "T": params["T"], "confidence": CONFIDENCE, "phi": {}}
    lows = []
    for k, (phi, marker) in enumerate((("x2", "o"), ("cos", "s"))):
        mean, se, n = weak_statistics(recs, phi)
        v = _verdict(d, phi)
        err = np.abs(mean)
        lo, hi = err - z * se, err + z * se
        color = f"C{k}"
        sign = "" if np.all(mean > 0) else (" (negative)" if np.all(mean < 0) else " (mixed sign)")
        tag = "verdict" if phi == "x2" else "informational"
        ax.errorbar(taus, err, yerr=np.vstack([np.clip(err - lo, 0, None), hi - err]), fmt=marker, color=color,
                    zorder=3, label=(f"weak error, {PHI_LABELS[phi]}{sign}: slope {v.measured:.3f} "
                                     f"[{v.interval[0]:.3f}, {v.interval[1]:.3f}] ({tag})"))
        # the fitted line of the study: least squares of log|mean| on log tau
        intercept = float(np.mean(np.log(err)) - v.measured * np.mean(np.log(taus)))
        ax.plot(taus[[0, -1]], np.exp(intercept) * taus[[0, -1]] ** v.measured, color=color, lw=1.0, alpha=0.8)
        lows.append(err)
        out["phi"][phi] = {"weak_error": mean, "abs_weak_error": err, "standard_error": se, "ci_low": lo,
                           "ci_high": hi, "slope": v.measured, "slope_interval": v.interval, "intercept": intercept,
                           "passed": v.passed, "replicas": n}
    order = float(_verdict(d, "x2").predicted)
    loglog_reference(ax, taus, min(lows, key=lambda e: float(np.mean(np.log(e)))), order, below=2.0,
                     label=rf"reference slope ${order:g}$ (T5)")
    # strong error of the same runs, for comparison: block means of the mean square difference
    msq = np.asarray([r.result["strong_msq"] for r in recs], dtype=float)  # (blocks, levels)
    mi = mean_interval(msq, CONFIDENCE)
    srms, slo, shi = np.sqrt(mi.mean), np.sqrt(np.clip(mi.low, 0, None)), np.sqrt(mi.high)
    sslope = float(np.polyfit(np.log(taus), np.log(srms), 1)[0])
    ax.errorbar(taus, srms, yerr=np.vstack([srms - slo, shi - srms]), fmt="D", color="0.45", mfc="white", zorder=3,
                label=f"strong RMS error of the same runs (comparison): least-squares slope {sslope:.3f}")
    out["strong"] = {"rms_error": srms, "ci_low": slo, "ci_high": shi, "least_squares_slope": sslope,
                     "blocks": int(msq.shape[0])}
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(taus, [rf"$2^{{{round(math.log2(t_))}}}$" for t_ in taus])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(r"reshuffle interval $\tau$ (= Euler step $h$)")
    ax.set_ylabel(rf"$|\mathbb{{E}}\,\varphi(\tilde{{X}}(T)) - \mathbb{{E}}\,\varphi(X(T))|$,  $T={params['T']:g}$")
    n_rep = out["phi"]["x2"]["replicas"]
    ax.set_title(
        rf"RBM-1 ($p={params['p']}$) vs the full system, confined tanh ($r={params['r']:g}$, $L={params['L']:g}$, "
        rf"$\sigma={params['sigma']:g}$)" "\n"
        rf"$N={params['N']}$, $d={params['d']}$, {n_rep} replicas ({d.mode} mode), same initial data and Brownian path"
        "\nbars: 95% intervals; slopes: least squares with 95% parametric-bootstrap intervals", fontsize=8.5)
    from matplotlib.container import ErrorbarContainer

    handles, labels = ax.get_legend_handles_labels()
    pairs = sorted(zip(handles, labels), key=lambda hl: not isinstance(hl[0], ErrorbarContainer))
    fig.legend([h for h, _ in pairs], [lab for _, lab in pairs], loc="outside lower center", ncols=1)
    return fig, out
