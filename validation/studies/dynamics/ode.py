"""Equiangular tokens against the scalar ODE gamma(t), and the monotone attention energy (T19, T20)."""

from __future__ import annotations

import math

import numpy as np

import particles
from attention_theory.bounds.dynamics import attention_energy, attention_energy_max, collapse_rate, gamma_reference
from particles import initial, integrators, systems
from validation.rates import fit_rate
from validation.study import Study, Verdict, register

from ._common import _check_mode, _finite_list


# ---------------------------------------------------------------------------------------------------------
# equiangular_ode
# ---------------------------------------------------------------------------------------------------------
@register
class EquiangularODEStudy(Study):
    r"""Equiangular tokens (<x_i(0), x_j(0)> = 0, d >= n) stay equiangular and follow gamma(t) (Part C).

    For SA (T19) and USA (T20) at several beta, the tokens
    ``initial.equiangular(n, d)`` are integrated with RK4 at
    dt = 0.08, 0.04, 0.02, 0.01; at every saved time (every 0.08) the smallest
    and largest off-diagonal inner products are stored. The reference gamma(t)
    is the scalar ODE of Part C solved by ``solve_ivp`` (DOP853, rtol 1e-13);
    it is also stored at the saved times (``result["ode"]``) for the figure.

    Verdicts:

    - per case, at dt = 0.01: max over time and pairs of ``|<x_i, x_j> - gamma|``
      below ``TOL`` = 1e-7 (measured: about 5e-11 for SA, 4e-10 for USA up to
      beta = 1, 2e-8 for USA at beta = 2, where the collapse rate 2 e^2 ~ 15
      makes the ODE stiff for dt = 0.01; USA with larger beta needs dt ~ e^-beta
      and is not run);
    - all pairwise inner products stay equal: the spread max - min is below
      1e-12 at every saved time, every dt;
    - the deviation is RK4 discretisation error: its log-log slope in dt, at
      beta = 1, is ``particles.integrators.RK4.order`` within 0.3 (regression
      interval over the 4 steps; deterministic, so the interval measures
      curvature);
    - near collapse 1 - gamma decays like e^(-2t) (SA) and e^(-2 e^beta t)
      (USA): the rate fitted on the particles where 1e-10 < 1 - gamma < 1e-4,
      within 1% (where that window is reached by time T).
    """

    name = "equiangular_ode"
    version = 2
    title = "Equiangular initialisation: the pairwise inner products follow the scalar ODE gamma(t)"
    labels = ("T19", "T20")

    DTS = (0.08, 0.04, 0.02, 0.01)
    SAVE = 0.08
    TOL = 1e-7
    SPREAD_TOL = 1e-12
    ORDER_TOL = 0.3
    RATE_WINDOW = (1e-10, 1e-4)
    RATE_RTOL = 0.01

    def grid(self, mode):
        if _check_mode(mode) == "quick":
            cases = [("SA", 0.5), ("SA", 1.0), ("SA", 4.0), ("USA", 0.5), ("USA", 1.0), ("USA", 2.0)]
            return [{"kind": k, "beta": b, "n": 8, "d": 8, "T": 10.0} for k, b in cases]
        cases = [("SA", 0.5, 30.0), ("SA", 1.0, 30.0), ("SA", 4.0, 30.0), ("SA", 9.0, 30.0),
                 ("USA", 0.5, 16.0), ("USA", 1.0, 16.0), ("USA", 2.0, 16.0)]
        return [{"kind": k, "beta": b, "n": n, "d": n, "T": t} for n in (8, 32) for k, b, t in cases]

    def measure(self, params, seed):
        kind, beta, n, d, t_end = params["kind"], params["beta"], params["n"], params["d"], params["T"]
        system = systems.attention(beta, kind)
        x0 = initial.equiangular(n, d)
        off = ~np.eye(n, dtype=bool)
        out = {}
        for dt in self.DTS:
            every = round(self.SAVE / dt)
            tr = particles.solve(system, x0, t_end=t_end, dt=dt, scheme="rk4", save_every=every)
            g = np.einsum("kid,kjd->kij", tr.x, tr.x)[:, off]
            out[f"{dt:g}"] = {"t": tr.t.tolist(), "gmin": _finite_list(g.min(axis=1)),
                              "gmax": _finite_list(g.max(axis=1)), "gmean": _finite_list(g.mean(axis=1))}
        t = out[f"{self.DTS[-1]:g}"]["t"]
        out["ode"] = {"t": t, "gamma": _finite_list(gamma_reference(kind, beta, n, t))}  # for the figure
        return out

    def _deviation(self, run, kind, beta, n):
        t = np.asarray(run["t"])
        gam = gamma_reference(kind, beta, n, t)
        gmin = np.asarray(run["gmin"], dtype=float)
        gmax = np.asarray(run["gmax"], dtype=float)
        dev = float(np.max(np.maximum(np.abs(gmin - gam), np.abs(gmax - gam))))
        return dev, float(np.max(gmax - gmin)), t, gam

    def verdicts(self, records, mode):
        out = []
        spreads = []
        for rec in sorted(records, key=lambda r: (r.params["n"], r.params["kind"], r.params["beta"])):
            p = rec.params
            kind, beta, n = p["kind"], p["beta"], p["n"]
            devs = {}
            for dt in self.DTS:
                dev, spread, t, gam = self._deviation(rec.result[f"{dt:g}"], kind, beta, n)
                devs[dt] = dev
                spreads.append(spread)
            finest = self.DTS[-1]
            out.append(Verdict(
                study=self.name,
                claim=f"{kind} equiangular tokens (n = {n}, d = {p['d']}, beta = {beta:g}) follow gamma(t) of the "
                      f"Part C ODE up to T = {p['T']:g}",
                label="T19" if kind == "SA" else "T20", predicted=0.0, measured=devs[finest], interval=None,
                tolerance=self.TOL, passed=bool(math.isfinite(devs[finest]) and devs[finest] < self.TOL),
                rule=f"max over saved times and pairs of |<x_i, x_j> - gamma(t)| < {self.TOL:g} (RK4, dt = {finest})",
                details={"deviation_by_dt": {f"{k:g}": v for k, v in devs.items()}}))
            # near-collapse rate, from the finest run
            run = rec.result[f"{finest:g}"]
            t = np.asarray(run["t"])
            e = 1.0 - np.asarray(run["gmean"], dtype=float)
            lo, hi = self.RATE_WINDOW
            mask = (e > lo) & (e < hi)
            predicted_rate = collapse_rate(kind, beta)
            if mask.sum() >= 5:
                rate = -float(np.polyfit(t[mask], np.log(e[mask]), 1)[0])
                out.append(Verdict(
                    study=self.name, claim=f"{kind} near collapse: 1 - gamma ~ exp(-rate t), rate = "
                                           f"{'2' if kind == 'SA' else '2 e^beta'} (n = {n}, beta = {beta:g})",
                    label="T19" if kind == "SA" else "T20", predicted=predicted_rate, measured=rate, interval=None,
                    tolerance=self.RATE_RTOL, passed=bool(abs(rate / predicted_rate - 1.0) <= self.RATE_RTOL),
                    rule=f"slope of log(1 - <x_i, x_j>) vs t where {lo:g} < 1 - gamma < {hi:g}, within "
                         f"{self.RATE_RTOL:.0%} of the prediction",
                    details={"points": int(mask.sum()), "window_t": [float(t[mask][0]), float(t[mask][-1])]}))
            if beta == 1.0:
                fit = fit_rate(list(self.DTS), [devs[dt] for dt in self.DTS])
                order = integrators.RK4.order
                out.append(Verdict(
                    study=self.name, claim=f"the {kind} deviation from gamma(t) is RK4 discretisation error "
                                           f"(n = {n}, beta = 1): order {order} in dt",
                    label="T19" if kind == "SA" else "T20", predicted=float(order), measured=fit.slope,
                    interval=(fit.ci_low, fit.ci_high), tolerance=self.ORDER_TOL,
                    passed=fit.contains(order, self.ORDER_TOL),
                    rule=f"95% regression interval of the log-log slope over dt = {self.DTS}, widened by "
                         f"{self.ORDER_TOL}, contains particles.integrators.RK4.order",
                    details={"fit": fit.as_dict()}))
        worst = float(max(spreads))
        out.append(Verdict(
            study=self.name, claim="equiangular tokens stay equiangular: all pairwise inner products stay equal",
            label="T19, T20", predicted=0.0, measured=worst, interval=None, tolerance=self.SPREAD_TOL,
            passed=bool(math.isfinite(worst) and worst <= self.SPREAD_TOL),
            rule=f"max - min of the off-diagonal inner products <= {self.SPREAD_TOL:g} at every saved time, every "
                 "case and every dt",
            details={"cases": len(records)}))
        return out


# ---------------------------------------------------------------------------------------------------------
# energy_monotone
# ---------------------------------------------------------------------------------------------------------
@register
class EnergyMonotoneStudy(Study):
    r"""The energy E_beta(X) = (1/(2 beta n^2)) sum_ij exp(beta <x_i, x_j>) is non-decreasing along SA and USA.

    R random initialisations (uniform on the sphere, the replica axis),
    n = 32, RK4 with every step saved; E_beta is evaluated at every step. A
    violation is a step with E_{k+1} < E_k - 1e-12 E_k (relative: rounding of
    a sum of n^2 exponentials is about 1e-15 E). Verdict per (kind, beta): no
    violation, and the energy did increase (otherwise the check is vacuous).
    USA is stiff for large beta (collapse rate 2 e^beta): dt is 0.01 or the
    power of two with dt 2 e^beta <= 0.6, whichever is smaller, and beta = 9
    is run for SA only. The states are integrated in segments of 200 steps
    (restarting an ODE from its last state is exact), so memory stays small. For SA the two first-order
    steps at dt = 0.1 are checked the same way, as information (a discrete
    scheme need not keep the monotonicity of the flow): the projected Euler
    step (``scheme="euler"``) and the ambient Euler step
    (``scheme="ambient_euler"``, the step of the authors' public scripts,
    ``phase-diagrams.py`` and ``sphere.py`` at commit 538ba83). Each run also
    stores E_beta of every initialisation at ``CURVE_POINTS`` evenly spaced
    steps (``result[scheme]["curve"]``) for the figure.

    Version 3: version 2 ran only the projected step and reported it as
    "the authors'" (``authors_euler_dt0.1``); it is not their step.
    """

    name = "energy_monotone"
    version = 3
    title = "The attention energy E_beta is non-decreasing along SA and USA"
    labels = ("T19", "T20")

    RTOL = 1e-12
    CURVE_POINTS = 101

    def grid(self, mode):
        full = _check_mode(mode) == "full"
        reps, t_end = (32, 20.0) if full else (6, 8.0)
        ds = (3, 8) if full else (3,)
        cases = [("SA", 1.0), ("SA", 4.0), ("SA", 9.0), ("USA", 1.0), ("USA", 4.0)]
        return [{"kind": k, "beta": b, "n": 32, "d": d, "R": reps, "T": t_end, "dt": self.step(k, b)}
                for d in ds for k, b in cases]

    @staticmethod
    def step(kind, beta):
        """RK4 step: 0.01, or a power of two with dt * 2 e^beta <= 0.6 where the collapse rate 2 e^beta is larger."""
        rate = 2.0 if kind == "SA" else 2.0 * math.exp(beta)
        return min(0.01, 2.0 ** -math.ceil(math.log2(rate / 0.6)))

    def _energies(self, system, x0, beta, t_end, dt, scheme, segment=200):
        """E_beta at every step, (steps + 1, R), integrating in segments (memory stays small; the ODE restarts
        exactly from the last state)."""
        nsteps = round(t_end / dt)
        x = x0
        out = [attention_energy(x0, beta)]
        done = 0
        while done < nsteps:
            m = min(segment, nsteps - done)
            tr = particles.solve(system, x, t_end=m * dt, dt=dt, scheme=scheme)
            out.append(attention_energy(tr.x[1:], beta).reshape(m, -1))
            x = tr.final
            done += m
        return np.vstack([out[0][None, :], *out[1:]])

    def measure(self, params, seed):
        kind, beta, n, d = params["kind"], params["beta"], params["n"], params["d"]
        x0 = initial.uniform_sphere(n, d, rng=np.random.default_rng(seed), replicas=params["R"])
        system = systems.attention(beta, kind)
        res = {}
        runs = [("rk4", params["dt"])]
        if kind == "SA":  # the two first-order steps at the paper's h = 0.1, as information
            runs += [("euler", 0.1), ("ambient_euler", 0.1)]
        for scheme, dt in runs:
            e = self._energies(system, x0, beta, params["T"], dt, scheme)  # (K, R)
            de = np.diff(e, axis=0) / e[:-1]
            idx = np.unique(np.rint(np.linspace(0, e.shape[0] - 1, self.CURVE_POINTS)).astype(int))
            res[scheme] = {"violations": int(np.count_nonzero(de < -self.RTOL)), "steps": int(de.shape[0]),
                           "min_relative_increment": float(de.min()), "gain_min": float((e[-1] / e[0]).min()),
                           "dt": dt, "curve": {"t": (idx * dt).tolist(), "energy": e[idx].T.tolist()}}
        return res

    def verdicts(self, records, mode):
        out = []
        for rec in sorted(records, key=lambda r: (r.params["d"], r.params["kind"], r.params["beta"])):
            p = rec.params
            r = rec.result["rk4"]
            ok = r["violations"] == 0 and r["gain_min"] > 1.0
            details = {**{k: v for k, v in r.items() if k != "curve"}, "R": p["R"], "n": p["n"], "T": p["T"],
                       "kind": p["kind"], "beta": p["beta"], "d": p["d"], "energy_max": attention_energy_max(p["beta"])}
            if "euler" in rec.result:
                details["projected_euler_dt0.1"] = {k: v for k, v in rec.result["euler"].items() if k != "curve"}
            if "ambient_euler" in rec.result:  # the step of the authors' scripts
                details["ambient_euler_dt0.1"] = {k: v for k, v in rec.result["ambient_euler"].items()
                                                  if k != "curve"}
            out.append(Verdict(
                study=self.name,
                claim=f"E_beta is non-decreasing along {p['kind']} (beta = {p['beta']:g}, n = {p['n']}, d = {p['d']}, "
                      f"{p['R']} random initialisations)",
                label="T19" if p["kind"] == "SA" else "T20", predicted=0.0, measured=float(r["violations"]),
                interval=None, tolerance=self.RTOL, passed=bool(ok),
                rule=(f"no step with E_(k+1) < E_k (1 - {self.RTOL:g}) (RK4, dt = {r['dt']:g}, every step), and "
                      "E(T) > E(0) for every initialisation"),
                details=details))
        return out
