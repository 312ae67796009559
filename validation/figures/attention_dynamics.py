r"""Self-attention dynamics: the energy rises monotonically, and equiangular tokens follow the scalar ODE (Part C).

Top: E_beta(X(t)) / E_beta^max, with E_beta^max = e^beta / (2 beta) the
energy of one cluster, for each random initialisation of the study
``energy_monotone`` (thin) and their mean (thick), along SA (T19) and USA
(T20), RK4. Bottom: 1 - gamma(t) for equiangular tokens (study
``equiangular_ode``): the mean off-diagonal inner product of the particles
(markers, RK4 with the finest step) against the scalar ODE of Part C
(lines, ``solve_ivp``, stored by the study), on a log scale so that the
agreement shows over many decades and the near-collapse rates e^(-2t) (SA)
and e^(-2 e^beta t) (USA) are visible. The legend gives each case's verdict
measurement (the largest deviation |<x_i, x_j> - gamma|).
"""

from __future__ import annotations

import math

import numpy as np

from validation.figures._base import PALETTE, new_figure

NAME = "attention_dynamics"
TITLE = "Attention dynamics: monotone energy along SA and USA; equiangular tokens follow the ODE gamma(t)"
STUDIES = ("energy_monotone", "equiangular_ode")

FLOOR = 1e-12  # 1 - gamma below this is not drawn (the ODE solution's own rounding shows below ~1e-13)


def _dt_label(dt):
    k = math.log2(dt)
    return rf"2^{{{round(k)}}}" if dt < 0.01 and k == round(k) else f"{dt:g}"


def _above_floor(e):
    """1 - gamma until it first falls below FLOOR, NaN (not drawn) from then on: below it is rounding."""
    e = np.asarray(e, dtype=float)
    below = np.flatnonzero(~(e >= FLOOR))
    out = e.copy()
    if below.size:
        out[below[0]:] = np.nan
    return out


def _energy_panel(ax, records, kind, verdicts):
    out = {}
    recs = sorted((r for r in records if r.params["kind"] == kind), key=lambda r: r.params["beta"])
    for i, r in enumerate(recs):
        beta = r.params["beta"]
        cur = r.result["rk4"]["curve"]
        t = np.asarray(cur["t"])
        e_max = next(v.details["energy_max"] for v in verdicts if (v.details["kind"], v.details["beta"],
                                                                    v.details["d"]) == (kind, beta, r.params["d"]))
        e = np.asarray(cur["energy"]) / e_max  # (R, K)
        colour = PALETTE[i % len(PALETTE)]
        for row in e:
            ax.plot(t, row, color=colour, lw=0.5, alpha=0.45)
        ax.plot(t, e.mean(axis=0), color=colour, lw=1.8,
                label=rf"$\beta = {beta:g}$, $\Delta t = {_dt_label(r.result['rk4']['dt'])}$")
        out[f"{beta:g}"] = {"t": t, "E_over_Emax": e, "dt": r.result["rk4"]["dt"],
                            "violations": r.result["rk4"]["violations"]}
    ax.set_ylim(0.0, 1.04)
    ax.set_xlabel(r"$t$")
    worst = sum(v["violations"] for v in out.values())
    ax.set_title(f"{kind} ({'T19' if kind == 'SA' else 'T20'}), RK4: {worst} decreasing steps", pad=3)
    ax.legend(loc="upper left")
    return out


def _equiangular_panel(ax, records, kind, verdicts):
    out = {}
    recs = sorted((r for r in records if r.params["kind"] == kind), key=lambda r: r.params["beta"])
    finest = min(float(k) for k in recs[0].result if k != "ode")
    key = f"{finest:g}"
    for i, r in enumerate(recs):
        beta, n = r.params["beta"], r.params["n"]
        run = r.result[key]
        t = np.asarray(run["t"])
        g = np.asarray(run["gmean"], dtype=float)
        ode = np.asarray(r.result["ode"]["gamma"], dtype=float)
        colour = PALETTE[i % len(PALETTE)]
        dev = next((v.measured for v in verdicts if v.claim.startswith(f"{kind} equiangular")
                    and f"beta = {beta:g})" in v.claim and f"n = {n}," in v.claim), None)
        lab = rf"$\beta = {beta:g}$" + ("" if dev is None else f" (max dev {dev:.0e})")
        e_ode, e_part = 1.0 - ode, 1.0 - g
        ax.plot(t, _above_floor(e_ode), color=colour, lw=1.2, label=lab)
        stride = max(1, len(t) // 25)
        ax.plot(t[::stride], _above_floor(e_part)[::stride], ls="none", marker="o", ms=3.2, mfc="none", mec=colour,
                mew=0.9)
        out[f"{beta:g}"] = {"t": t, "one_minus_gamma_particles": 1.0 - g, "one_minus_gamma_ode": 1.0 - ode,
                            "max_deviation": dev}
    ax.set_yscale("log")
    ax.set_ylim(FLOOR / 4, 2.0)
    ax.set_xlabel(r"$t$")
    ax.set_ylabel(r"$1 - \gamma(t)$")
    n = recs[0].params["n"]
    ax.set_title(f"{kind}: equiangular tokens, $n = d = {n}$", pad=3)
    rate = next((float(v.predicted) for v in verdicts if v.claim.startswith("SA near collapse")), None)
    if kind == "SA" and rate is not None:  # the study's predicted collapse rate
        t0 = float(np.asarray(recs[0].result[key]["t"])[-1])
        tt = np.array([0.45 * t0, 0.9 * t0])
        ax.plot(tt, 1e-2 * np.exp(-rate * (tt - tt[0])), color="0.2", ls="--", lw=1.0,
                label=rf"$\propto e^{{-{rate:g}t}}$")
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", lw=1.2), Line2D([], [], color="0.3", ls="none", marker="o", ms=3.2,
                                                           mfc="none")]
    labels += ["ODE (solve_ivp)", rf"particles (RK4, $\Delta t = {finest:g}$)"]
    ax.legend(handles, labels, loc="lower left" if kind == "SA" else "upper right", fontsize=6.8)
    return out, finest


def plot(data):
    en, eq = data["energy_monotone"], data["equiangular_ode"]
    d_min = min(r.params["d"] for r in en.records)
    erecs = [r for r in en.records if r.params["d"] == d_min]
    n_max = max(r.params["n"] for r in eq.records)
    qrecs = [r for r in eq.records if r.params["n"] == n_max]
    fig, axes = new_figure(2, 2, width=7.2, height=6.4)
    everdicts = en.verdicts()
    energy = {k: _energy_panel(axes[0, j], erecs, k, everdicts) for j, k in enumerate(("SA", "USA"))}
    axes[0, 0].set_ylabel(r"$E_\beta(X(t)) \,/\, E_\beta^{\max}$")
    verdicts = eq.verdicts()
    equi = {}
    for j, k in enumerate(("SA", "USA")):
        equi[k], finest = _equiangular_panel(axes[1, j], qrecs, k, verdicts)
    p = erecs[0].params
    fig.suptitle(f"top: $E_\\beta$ along {p['R']} uniform initialisations per $\\beta$ (thin; thick: mean), "
                 f"$n = {p['n']}$, $d = {d_min}$, $E_\\beta^{{\\max}} = e^\\beta/(2\\beta)$ (one cluster)\n"
                 f"bottom: equiangular tokens, $n = d = {n_max}$, particles vs the scalar ODE of Part C; "
                 f"{en.mode} mode", fontsize=8.5)
    out = {"energy": {"d": d_min, "n": p["n"], "R": p["R"], "mode": en.mode, "cases": energy},
           "equiangular": {"n": n_max, "dt": finest, "mode": eq.mode, "cases": equi}}
    return fig, out
