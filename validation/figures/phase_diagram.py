r"""The phase diagram of self-attention dynamics (Geshkovski, Letrouit, Polyanskiy, Rigollet; THEORY Part C).

One panel per dimension d: the probability P(<x_1(t), x_2(t)> >= 1 - 1e-3)
that two tokens are clustered, over time t in [0, 30] and inverse
temperature beta, for n = 32 tokens uniform on S^(d-1) moving by SA (T19),
projected Euler dt = 0.1. The probability is the study's all-pairs estimate
(the mean over initialisations of the fraction of pairs within 1 - 1e-3,
the same probability by exchangeability). Overlaid on every panel: the
equiangular curve gamma_beta(t) = 1 - 1e-3, the time at which the scalar ODE
of Part C reaches 1 - 1e-3, read from the study's verdict (the same numbers
as the report).
"""

from __future__ import annotations

import math

import numpy as np

from validation.figures._base import new_figure, verdict_of

NAME = "phase_diagram"
TITLE = "Phase diagram of P(<x_1(t), x_2(t)> >= 1 - 1e-3) over (t, beta), SA (T19), n = 32, d = 2 .. 1024"
STUDIES = ("phase_diagram",)

NCOLS = 3


def _edges(centres):
    """Cell edges halfway between the centres (the outer cells as wide as their neighbours, halved)."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _fmt_betas(betas):
    if len(betas) <= 10:
        return "{" + ", ".join(f"{b:g}" for b in betas) + "}"
    step = np.diff(betas)
    if np.allclose(step, step[0]):
        return f"{betas[0]:g}, {betas[1]:g}, ..., {betas[-1]:g} ({len(betas)} values)"
    return f"{betas[0]:g} .. {betas[-1]:g} ({len(betas)} values)"


def plot(data):
    sd = data["phase_diagram"]
    study = sd.study
    agg = study.aggregate(sd.records)
    dims = sorted({d for d, _ in agg})
    p0 = sd.records[0].params
    n, dt, eps, kind = p0["n"], p0["dt"], p0["eps"], p0["kind"]
    eq = verdict_of(sd, contains="equiangular curve")
    curve_beta = np.asarray(eq.details["curve"]["beta"], dtype=float)
    curve_t = np.asarray(eq.details["curve"]["t"], dtype=float)

    nrows = math.ceil(len(dims) / NCOLS)
    fig, axes = new_figure(nrows, NCOLS, width=7.2, height=2.15 * nrows + 0.75)
    fig.get_layout_engine().set(wspace=0.06)  # room between "30" and "0" of neighbouring panels
    axes = np.atleast_2d(axes)
    panels, inits = {}, {}
    mesh = line = None
    t = None
    for k, ax in enumerate(axes.ravel()):
        if k >= len(dims):
            ax.set_visible(False)
            continue
        d = dims[k]
        cells = sorted((b, a) for (dd, b), a in agg.items() if dd == d)
        betas = [b for b, _ in cells]
        t = cells[0][1]["t"]
        prob = np.vstack([a["p_pairs"] for _, a in cells])  # (n_beta, K)
        panels[str(d)] = {"beta": betas, "P": prob}
        inits[str(d)] = sorted({a["m"] for _, a in cells})
        be = _edges(betas)
        mesh = ax.pcolormesh(_edges(t), be, prob, vmin=0.0, vmax=1.0, cmap="viridis", shading="flat",
                             rasterized=True)
        inside = curve_t <= t[-1] + 0.5
        (line,) = ax.plot(curve_t[inside], curve_beta[inside], color="#D55E00", lw=1.7, ls="--")
        ax.set_xlim(t[0], t[-1])
        ax.set_ylim(be[0], be[-1])
        ax.grid(False)
        ax.set_title(f"$d = {d}$", pad=3)
        row, col = divmod(k, NCOLS)
        if col == 0:
            ax.set_ylabel(r"$\beta$")
        else:
            ax.tick_params(labelleft=False)
        if row == nrows - 1 or k + NCOLS >= len(dims):
            ax.set_xlabel(r"$t$")
        else:
            ax.tick_params(labelbottom=False)
    cb = fig.colorbar(mesh, ax=axes.ravel().tolist(), shrink=0.9, pad=0.02, aspect=30)
    cb.set_label(r"$P\left(\langle x_1(t), x_2(t)\rangle \geq 1 - 10^{-3}\right)$")
    fig.legend([line], [rf"equiangular ODE: $\gamma_\beta(t) = 1 - 10^{{{round(math.log10(eps))}}}$"],
               loc="outside lower left", frameon=False)

    all_betas = sorted({b for _, b in agg})
    m_all = sorted({m for v in inits.values() for m in v})
    m_txt = f"{m_all[0]}" if len(m_all) == 1 else f"{m_all[0]}-{m_all[-1]}"
    fig.suptitle(f"{kind} dynamics (T19), $n = {n}$ tokens uniform on $S^{{d-1}}$, projected Euler "
                 f"$\\Delta t = {dt:g}$: probability that two tokens are clustered\n"
                 f"{m_txt} initialisations per $(d, \\beta)$ cell, $\\beta$ in {_fmt_betas(all_betas)}, "
                 f"{sd.mode} mode\nP estimated over all pairs (exchangeable tokens)", fontsize=8.5)
    out = {"kind": kind, "n": n, "dt": dt, "eps": eps, "mode": sd.mode, "dims": dims, "t": t,
           "P_estimator": "mean over initialisations of the fraction of pairs (i, j) with <x_i, x_j> >= 1 - eps",
           "panels": panels, "initialisations_per_cell": inits,
           "equiangular_curve": {"beta": curve_beta, "t": curve_t},
           "t50_vs_equiangular": eq.details["per_d"]}
    return fig, out
