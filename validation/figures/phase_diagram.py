r"""The phase diagram of self-attention dynamics (Geshkovski, Letrouit, Polyanskiy, Rigollet; THEORY Part C).

One panel per dimension d: the probability P(<x_1(t), x_2(t)> > 1 - 1e-3)
that two tokens are clustered, over time t in [0, 30] and inverse
temperature beta, for n = 32 tokens uniform on S^(d-1) moving by SA (T19),
with the step of the authors' ``phase-diagrams.py``: ambient Euler
``x <- (x + h a)/|x + h a|``, h = 0.1 (the title names the scheme the records
were computed with). The probability is the study's all-pairs estimate
(the mean over initialisations of the fraction of pairs within 1 - 1e-3,
the same probability by exchangeability). Overlaid on every panel: the
equiangular curve gamma_beta(t) = 1 - 1e-3, the time at which the scalar ODE
of Part C reaches 1 - 1e-3, read from the study's verdict (the same numbers
as the report); and, at the (d, beta) cells of the ``phase_discretisation``
study, its transition times t_50 (first time half the pairs have clustered):
the converged one (RK4, the ODE) and the ambient Euler one at h = 0.1 on
the same initialisations, read from that study's offset verdicts. So a
reader sees how far the h = 0.1 diagram is from the ODE.

``phase_discretisation`` is declared in ``STUDIES``: the figure is not drawn
without it (``python -m validation figure phase_diagram --run`` computes
both). It is required rather than optional because the figure's claim to
show the ODE's phase diagram rests on that comparison; a diagram at h = 0.1
without it would show the scheme's transition as if it were the ODE's.
"""

from __future__ import annotations

import math
import re

import numpy as np

from validation.figures._base import new_figure, verdict_of

NAME = "phase_diagram"
TITLE = "Phase diagram of P(<x_1(t), x_2(t)> > 1 - 1e-3) over (t, beta), SA (T19), n = 32, d = 2 .. 1024"
STUDIES = ("phase_diagram", "phase_discretisation")

NCOLS = 3

#: The step in the title, as the authors' script writes it (phase-diagrams.py, commit 538ba83).
SCHEME_TITLE = {"ambient_euler": r"ambient Euler $x \leftarrow (x + h a)/|x + h a|$ (the authors' step),",
                "euler": r"projected Euler $x \leftarrow (x + h P_x a)/|x + h P_x a|$,"}


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


def converged_transitions(disc):
    """Per d: the ``phase_discretisation`` cells' t_50 (RK4 and ambient Euler at the largest h), from its
    offset verdicts (the numbers of the report): ``{d: [(beta, t50_rk4, t50_h, h), ...]}``."""
    out: dict = {}
    for v in disc.verdicts():
        if v.passed is not None or "offset of the transition time" not in v.claim or not v.claim.startswith(
                "ambient Euler"):
            continue
        d = int(re.search(r"d = (\d+)", v.claim).group(1))
        beta = float(re.search(r"beta = ([0-9.]+)", v.claim).group(1))
        h = float(re.search(r"at h = ([0-9.]+)", v.claim).group(1))
        out.setdefault(d, []).append((beta, v.details["t50_rk4"], v.details["t50"], h))
    return {d: sorted(rows) for d, rows in out.items()}


def plot(data):
    sd = data["phase_diagram"]
    study = sd.study
    agg = study.aggregate(sd.records)
    dims = sorted({d for d, _ in agg})
    p0 = sd.records[0].params
    n, dt, eps, kind = p0["n"], p0["dt"], p0["eps"], p0["kind"]
    scheme = p0.get("scheme", "euler")  # version 1 of the study ran the projected step
    marks = converged_transitions(data["phase_discretisation"])
    ode_pts = h_pts = None
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
        for beta, t_ode, t_h, _ in marks.get(d, []):
            # black-edged markers: visible on the colour map and in the legend alike
            (h_pts,) = ax.plot([t_h], [beta], ls="none", marker="X", ms=6.5, mfc="#CC79A7", mec="black", mew=0.6,
                               zorder=5)
            (ode_pts,) = ax.plot([t_ode], [beta], ls="none", marker="o", ms=5.5, mfc="white", mec="black", mew=0.8,
                                 zorder=6)
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
    cb.set_label(r"$P\left(\langle x_1(t), x_2(t)\rangle > 1 - 10^{-3}\right)$")
    handles = [line]
    labels = [rf"equiangular ODE: $\gamma_\beta(t) = 1 - 10^{{{round(math.log10(eps))}}}$"]
    if ode_pts is not None:
        h_marks = sorted({h for rows in marks.values() for *_, h in rows})
        handles += [ode_pts, h_pts]
        labels += [r"$t_{50}$ of the ODE (RK4, converged)",
                   rf"$t_{{50}}$, ambient Euler $h = {h_marks[0]:g}$ (same initialisations)"]
    fig.legend(handles, labels, loc="outside lower left", frameon=False, ncols=min(3, len(handles)))

    all_betas = sorted({b for _, b in agg})
    m_all = sorted({m for v in inits.values() for m in v})
    m_txt = f"{m_all[0]}" if len(m_all) == 1 else f"{m_all[0]}-{m_all[-1]}"
    fig.suptitle(f"{kind} dynamics (T19), $n = {n}$ tokens uniform on $S^{{d-1}}$, {SCHEME_TITLE.get(scheme, scheme)} "
                 f"$h = {dt:g}$: probability that two tokens are clustered\n"
                 f"{m_txt} initialisations per $(d, \\beta)$ cell, $\\beta$ in {_fmt_betas(all_betas)}, "
                 f"{sd.mode} mode\nP estimated over all pairs (exchangeable tokens)", fontsize=8.5)
    out = {"kind": kind, "n": n, "dt": dt, "scheme": scheme, "step": eq.details.get("step"), "eps": eps,
           "mode": sd.mode, "dims": dims, "t": t,
           "P_estimator": "mean over initialisations of the fraction of pairs (i, j) with <x_i, x_j> > 1 - eps",
           "transitions": {str(d): [{"beta": b, "t50_ode": a, "t50_h": c, "h": h} for b, a, c, h in rows]
                           for d, rows in marks.items()},
           "panels": panels, "initialisations_per_cell": inits,
           "equiangular_curve": {"beta": curve_beta, "t": curve_t},
           "t50_vs_equiangular": eq.details["per_d"]}
    return fig, out
