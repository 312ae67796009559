r"""How far the paper's h = 0.1 figures are from the ODE: discretisation error of the two Euler steps (T19).

One study, ``phase_discretisation``. The phase diagram and the circle clusters of Geshkovski et al. are
computed with a first-order step at h = 0.1 (the authors' scripts use the ambient Euler step,
``scheme="ambient_euler"``; the library's version-1 studies used the projected one, ``scheme="euler"``).
Both discretise the same ODE (T19) and differ from it, and from each other, by O(h). This study measures
that error on the quantities the figures show, on common random numbers (every run of a cell starts from
the same initial tokens):

- the transition time t_50: the first time at which half of the (initialisation, token pair)s have
  reached ``<x_i, x_j> > 1 - eps`` (eps = 1e-3, strict, as the phase diagram), with both Euler steps at
  h = 0.1, 0.05, 0.025 and RK4 at h = 0.025 (the reference; RK4 at 0.05 checks that it is converged);
- on the circle (d = 2), the cluster count at t = 30 (the ``circle_clusters`` rule) per initialisation.

**t_50.** Per (initialisation, pair) the first-passage time tau is the first step with
``<x_i, x_j> > 1 - eps``, interpolated linearly in the inner product between that step and the one before
(an O(h^2) interpolation error); t_50 is the ceil(N/2)-th smallest tau over the N (initialisation, pair)s,
i.e. the first time the *first-passage* fraction reaches 1/2. It differs from the phase diagram's t_50
(``_first_crossing`` of the current fraction sampled at the saved steps) in two ways, both chosen for the
error measurement: the per-pair interpolation replaces a linear interpolation of the ensemble fraction
between steps of different sizes, whose sampling error is O(h), the order of what is measured; and a
pair that leaves the threshold after reaching it still counts (such pairs are counted, ``drops``; with
none before t_50 the two fractions agree at t_50).

Verdicts (per cell (d, beta) where every run reaches 1/2 before T):

- PASS/FAIL per step variant: the error ``|t_50(h) - t_50(RK4)|`` is first order in h: the log-log slope
  over h = 0.1, 0.05, 0.025 has a 95% bootstrap interval (initialisations resampled with replacement, the
  same resample for every run: :func:`validation.rates.fit_rate_resampled`) that, widened by
  ``ORDER_TOL``, contains ``particles.integrators.<scheme>.order`` (1). A zeroth-order error (a constant
  offset) or a second-order one is rejected (tests/validation/test_studies_discretisation.py).
- PASS/FAIL: the reference is converged: ``|t_50(RK4, 0.05) - t_50(RK4, 0.025)|`` is below
  ``REF_FRACTION`` of the smallest Euler error (both variants at h = 0.025).
- informational, per variant: the offset ``t_50(0.1) - t_50(RK4)`` with its bootstrap interval, and
  relative to t_50(RK4): how far the paper's h = 0.1 transition is from the ODE's.
- informational (d = 2 cells): modal and mean cluster count at t = 30 per variant and h, against RK4, with a
  t-interval of the mean paired difference over initialisations and the fraction of initialisations whose
  count differs from RK4's. No PASS/FAIL: the count is an integer that jumps when two clusters merge near
  t = 30, so its discretisation error has no order to state.

The cells integrate in span coordinates for d > n (:func:`validation.studies.dynamics.span_coordinates`,
as ``phase_diagram``) and with the ``reference`` backend (vectorised over the replica axis; it measured
faster than the ``cpu`` backend's general loops for these small ensembles, before the fused ensemble kernel
existed; the two have not been compared since). Quick mode: 8 initialisations in each of the cells
(d, beta) = (32, 4), (2, 4) (t_50 and the counts) and (2, 9) (the counts; its t_50 is not reached by 30),
about 17 s on a loaded 2-core machine (load average 3.7); full mode: (2, 0.5), (2, 1), (32, 3), (32, 5),
(128, 4), (128, 6) and the two circle cells, 4 blocks of 32 initialisations each.

Measured in quick mode (8 initialisations; t_50(RK4) = 7.15 at d = 32, beta = 4 and 9.63 at d = 2,
beta = 4): the ambient step (the authors') at h = 0.1 is late by 0.52 (7.3%) and 0.92 (9.5%), fitted
orders 0.99 and 1.00 with intervals within 0.03 of 1; the projected step is off by -0.021 and +0.024
(0.3%), about 20-40 times less, with a nearly-cancelling first-order term (fitted orders 1.3 and 1.0,
wider intervals: the h^2 term is comparable there). On the circle at t = 30 the modal counts of both
steps at every h equal RK4's (2 at beta = 4, 3 at beta = 9 in 8 initialisations); one initialisation of 8
differs from RK4 with the ambient step at h = 0.1.

Measured in full mode (128 initialisations per cell; 10 min on 2 local processes, load average about 2.5;
a 68 MB store): every verdict PASS. Ambient step at h = 0.1: t_50 late by 4.7% (d = 2, beta = 0.5), 5.9%
(2, 1), 9.1% (2, 4; interval 2-14%: t_50 falls near a merger of two clusters), 6.2% (32, 3), 8.5% (32, 5),
7.0% (128, 4), 9.2% (128, 6), fitted orders 0.99-1.00; projected step: -1.0% to +0.4%, fitted orders
0.98-1.04. RK4 at 0.05 vs 0.025: at most 3e-5, 20-500 times below the bound. Counts at t = 30: modal
counts equal RK4's for both steps at every h; mean counts with the ambient step at h = 0.1 2.07 and 3.18
vs RK4's 2.05 and 3.16 (1.6% and 2.3% of the initialisations differ), projected step 0-0.8%.
"""

from __future__ import annotations

import math

import numpy as np

import particles
from attention_theory.bounds.dynamics import circle_cluster_count
from particles import initial, integrators, systems
from validation.rates import fit_rate_resampled
from validation.stats import mean_interval, percentile_interval
from validation.studies.dynamics import CircleClustersStudy, span_coordinates
from validation.study import Study, Verdict, register

__all__ = ["PhaseDiscretisationStudy", "first_passage", "t50_of", "VARIANTS"]

#: The two first-order steps on the sphere (``particles`` scheme names) and how they are named.
VARIANTS = {"ambient_euler": "ambient Euler (the authors' step)", "euler": "projected Euler"}


def _check_mode(mode):
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
    return mode


def first_passage(system, x0, t_end, dt, scheme, thr, *, backend="cpu", segment=200):
    """First-passage times of every pair over ``thr`` along one run, and the final state.

    Parameters
    ----------
    system, x0, t_end, dt, scheme, backend
        As for :func:`particles.solve`; x0 of shape (R, n, d).
    thr : float
        Threshold of ``<x_i, x_j>`` (strict: a pair has passed when its inner product is ``> thr``).
    segment : int
        Steps per :func:`particles.solve` call (memory; restarting is exact).

    Returns
    -------
    tau : ndarray, shape (R, n (n - 1) / 2)
        Per initialisation and pair (i < j, row-major), the first time with ``<x_i, x_j> > thr``: the
        crossing, in the last step interval, of the quadratic through the inner products of that step and
        the two before (interpolation error O(h^3); linear when the crossing is in the first step); 0 if
        already above at t = 0; inf if never by ``t_end``.
    drops : int
        (initialisation, pair)s whose inner product fell back to ``<= thr`` at a later step.
    final : ndarray, shape (R, n, d)
    """
    nsteps = round(t_end / dt)
    n = x0.shape[-2]
    iu, ju = np.triu_indices(n, 1)

    def gram(x):
        return np.matmul(x, np.swapaxes(x, -1, -2))[..., iu, ju]

    prev = gram(x0)  # (R, P): the inner products of the last two steps before the segment
    prev2 = prev.copy()  # (no step before t = 0: only used where the crossing is after the second step)
    tau = np.ascontiguousarray(np.where(prev > thr, 0.0, np.inf))  # written through tau.ravel() below
    ever = prev > thr
    dropped = np.zeros_like(ever)
    x, done = x0, 0
    while done < nsteps:
        m = min(segment, nsteps - done)
        tr = particles.solve(system, x, t_end=m * dt, dt=dt, scheme=scheme, backend=backend)
        g = gram(tr.x[1:])  # (m, R, P): steps done + 1 .. done + m
        above = g > thr
        new = above.any(axis=0) & ~ever
        if new.any():
            hist = np.concatenate([prev2[None], prev[None], g], axis=0)  # step done + k + 1 at index k + 2
            k = np.argmax(above, axis=0)[new]  # first step of the segment above, per new pair
            cols = np.flatnonzero(new.ravel())
            flat = hist.reshape(hist.shape[0], -1)
            g2, g1, g0 = flat[k + 2, cols], flat[k + 1, cols], flat[k, cols]
            with np.errstate(divide="ignore", invalid="ignore"):
                s_lin = -(g2 - thr) / (g2 - g1)  # in [-1, 0): linear crossing, in steps from step k
                a, b = 0.5 * (g2 - 2.0 * g1 + g0), 0.5 * (3.0 * g2 - 4.0 * g1 + g0)
                s_q = s_lin.copy()
                for _ in range(4):  # Newton on the quadratic a s^2 + b s + g2 - thr, from the linear root
                    s_q = s_q - (a * s_q**2 + b * s_q + g2 - thr) / (2.0 * a * s_q + b)
            quad = (done + k >= 1) & np.isfinite(s_q) & (s_q >= -1.0) & (s_q <= 0.0)
            frac = np.where(quad, s_q, s_lin)
            t_new = (done + k + 1 + frac) * dt  # step done + k + 1 is at time (done + k + 1) dt
            tau.ravel()[cols] = t_new
        both = np.concatenate([ever[None], above], axis=0)
        reached = np.logical_or.accumulate(both, axis=0)[1:]
        dropped |= (reached & ~above).any(axis=0)
        ever = reached[-1]
        prev2, prev = (g[-2] if m >= 2 else prev), g[-1]
        x = tr.final
        done += m
    return tau, int(dropped.sum()), x


def t50_of(tau, weights=None, *, chunk=64):
    """The first time the first-passage fraction reaches 1/2: the ceil(N/2)-th smallest tau (None if inf).

    ``tau`` of shape (R, P); ``weights`` integer resampling weights of the initialisations, shape (R,) for
    one bootstrap resample or (n_boot, R) for many (then an array of n_boot values, nan where not reached),
    or None for all once. With weights the result is the same order statistic of the resample (each
    initialisation's pairs repeated ``weights[r]`` times).
    """
    tau = np.asarray(tau, dtype=float)
    if weights is None:
        flat = np.sort(tau, axis=None)
        v = float(flat[math.ceil(flat.size / 2) - 1])
        return v if math.isfinite(v) else None
    w = np.asarray(weights, dtype=float)
    single = w.ndim == 1
    w = np.atleast_2d(w)
    order = np.argsort(tau, axis=None)  # sorted once for every resample
    owner = order // tau.shape[1]
    values = tau.ravel()[order]
    out = np.empty(w.shape[0])
    for start in range(0, w.shape[0], chunk):
        cum = np.cumsum(w[start:start + chunk][:, owner], axis=1)
        k = np.argmax(cum >= 0.5 * cum[:, -1:], axis=1)  # first index with cumulative weight >= half
        out[start:start + chunk] = values[k]
    out[~np.isfinite(out)] = np.nan
    if single:
        return None if math.isnan(out[0]) else float(out[0])
    return out


@register
class PhaseDiscretisationStudy(Study):
    __doc__ = __doc__  # the module docstring: one study, described once

    name = "phase_discretisation"
    version = 1
    title = ("Discretisation error of the paper's h = 0.1 figures: t_50 and circle counts with both Euler steps "
             "vs RK4")
    labels = ("T19",)

    KIND = "SA"
    N = 32
    T_END = 30.0
    EPS = 1e-3
    HS = (0.1, 0.05, 0.025)
    REF_HS = (0.05, 0.025)  # RK4; the finest is the reference, the other checks its convergence
    ORDER_TOL = 0.15
    REF_FRACTION = 0.05
    CONFIDENCE = 0.95
    N_BOOT = 1000
    BACKEND = "reference"  # vectorised NumPy over the replica axis: it beat the cpu backend's general loops here

    result_fields = {
        "runs.{run}.tau": ("(R, n (n - 1) / 2)", "per initialisation and pair (i < j): first time with "
                                                 "<x_i, x_j> > 1 - eps, interpolated, rounded to 1e-9 "
                                                 "(null: not by T); run = scheme@h with the point written p "
                                                 "(ambient_euler@0p1)"),
        "runs.{run}.drops": ("()", "(initialisation, pair)s that fell back to <= 1 - eps after passing it"),
        "runs.{run}.count_T": ("(R,)", "d = 2 only: cluster count at T per initialisation (circle_clusters rule)"),
        "dim_integrated": ("()", "dimension of the span the dynamics was integrated in"),
    }

    def _sizes(self, mode):
        if _check_mode(mode) == "full":
            return {"cells": [(2, 0.5), (2, 1.0), (32, 3.0), (32, 5.0), (128, 4.0), (128, 6.0), (2, 4.0),
                              (2, 9.0)], "R": 32, "blocks": 4}
        return {"cells": [(32, 4.0), (2, 4.0), (2, 9.0)], "R": 8, "blocks": 1}

    def grid(self, mode):
        s = self._sizes(mode)
        return [{"kind": self.KIND, "d": d, "beta": b, "n": self.N, "R": s["R"], "T": self.T_END,
                 "hs": list(self.HS), "ref_hs": list(self.REF_HS), "eps": self.EPS} for d, b in s["cells"]]

    def replicates(self, mode):
        return self._sizes(mode)["blocks"]

    @staticmethod
    def run_key(scheme, h):
        """The key of one run in the stored result: ``scheme@h`` with the decimal point written ``p``
        (``"ambient_euler@0p1"``), so that dotted field paths stay unambiguous."""
        return f"{scheme}@{h:g}".replace(".", "p")

    def runs(self, params):
        """(scheme, h) of every run of a cell: both Euler variants at each h, then RK4 at each reference h."""
        return [(s, h) for s in VARIANTS for h in params["hs"]] + [("rk4", h) for h in params["ref_hs"]]

    def measure(self, params, seed):
        n, d, reps = params["n"], params["d"], params["R"]
        x0 = initial.uniform_sphere(n, d, rng=np.random.default_rng(seed), replicas=reps)
        y0 = span_coordinates(x0)
        system = systems.attention(params["beta"], params["kind"])
        thr = 1.0 - params["eps"]
        delta = CircleClustersStudy.delta(params["eps"])
        runs = {}
        for scheme, h in self.runs(params):
            tau, drops, final = first_passage(system, y0, params["T"], h, scheme, thr, backend=self.BACKEND)
            # rounded to 1e-9 (a third of the JSON size; the errors measured are >= 1e-3, the reference check
            # ~1e-5)
            run = {"tau": [[round(float(v), 9) if math.isfinite(v) else None for v in row] for row in tau],
                   "drops": drops}
            if d == 2:
                run["count_T"] = circle_cluster_count(np.arctan2(final[..., 1], final[..., 0]), delta).tolist()
            runs[self.run_key(scheme, h)] = run
        return {"runs": runs, "dim_integrated": int(y0.shape[-1])}

    # -- analysis ---------------------------------------------------------------------------------------------
    def aggregate(self, records):
        """Blocks merged per (d, beta): ``{(d, beta): {"tau": {run: (R_total, P)}, "count": {run: (R_total,)},
        "drops": {run: int}, "params": params}}``."""
        groups: dict = {}
        for r in records:
            groups.setdefault((r.params["d"], r.params["beta"]), []).append(r)
        out = {}
        for key, recs in sorted(groups.items()):
            recs = sorted(recs, key=lambda r: r.replicate)
            keys = list(recs[0].result["runs"])
            agg = {"params": recs[0].params, "tau": {}, "count": {}, "drops": {}}
            for k in keys:
                agg["tau"][k] = np.vstack([np.array(r.result["runs"][k]["tau"], dtype=float) for r in recs])
                agg["drops"][k] = int(sum(r.result["runs"][k]["drops"] for r in recs))
                if "count_T" in recs[0].result["runs"][k]:
                    agg["count"][k] = np.concatenate([np.asarray(r.result["runs"][k]["count_T"]) for r in recs])
            out[key] = agg
        return out

    def t50_table(self, agg, n_boot=None, rng=0):
        """t_50 of every run of one aggregated cell and of ``n_boot`` bootstrap resamples of its initialisations.

        Returns ``(t50, boot)``: ``{run: float or None}`` and ``{run: (n_boot,) array}`` (nan where a resample
        does not reach 1/2), the same resamples for every run (common random numbers).
        """
        n_boot = self.N_BOOT if n_boot is None else n_boot
        taus = agg["tau"]
        m = next(iter(taus.values())).shape[0]
        gen = np.random.default_rng(rng)
        weights = gen.multinomial(m, np.full(m, 1.0 / m), size=n_boot)
        t50 = {k: t50_of(v) for k, v in taus.items()}
        boot = {k: t50_of(v, weights) for k, v in taus.items()}
        return t50, boot

    def verdicts(self, records, mode):
        out = []
        conf = self.CONFIDENCE
        for (d, beta), agg in self.aggregate(records).items():
            p = agg["params"]
            hs, ref_hs = list(p["hs"]), list(p["ref_hs"])
            m = next(iter(agg["tau"].values())).shape[0]
            where = f"SA, n = {p['n']}, d = {d}, beta = {beta:g}, {m} initialisations"
            ref_key, ref2_key = self.run_key("rk4", min(ref_hs)), self.run_key("rk4", max(ref_hs))
            t50, boot = self.t50_table(agg)
            if all(v is not None for v in t50.values()):
                ref = t50[ref_key]
                euler_min_err = {}
                for scheme, words in VARIANTS.items():
                    keys = [self.run_key(scheme, h) for h in hs]
                    err = np.array([t50[k] - ref for k in keys])
                    berr = np.column_stack([boot[k] - boot[ref_key] for k in keys])  # (n_boot, len(hs))
                    ok_rows = np.all(np.isfinite(berr), axis=1) & np.all(berr != 0.0, axis=1)
                    euler_min_err[scheme] = float(abs(err[int(np.argmin(hs))]))
                    order = float(integrators.SCHEMES[scheme].order)
                    details = {"h": hs, "t50": [t50[k] for k in keys], "t50_rk4": ref, "error": err.tolist(),
                               "drops": {k: agg["drops"][k] for k in keys + [ref_key]},
                               "resamples_used": int(ok_rows.sum()), "n_boot": int(berr.shape[0])}
                    if np.all(err != 0.0) and ok_rows.sum() >= 100:
                        fit = fit_rate_resampled(hs, np.abs(err), np.abs(berr[ok_rows]), confidence=conf)
                        passed = fit.contains(order, self.ORDER_TOL)
                        details["fit"] = fit.as_dict()
                        measured, interval = fit.slope, (fit.ci_low, fit.ci_high)
                    else:  # an error that is exactly zero, or a reference that resamples do not reach: no fit
                        passed, measured, interval = False, float("nan"), None
                    out.append(Verdict(
                        study=self.name,
                        claim=f"{words}: the error of the transition time t_50 is first order in h ({where})",
                        label="T19", predicted=order, measured=measured, interval=interval,
                        tolerance=self.ORDER_TOL, passed=bool(passed),
                        rule=(f"log-log slope of |t_50(h) - t_50(RK4, h = {min(ref_hs):g})| over h = {hs}; its "
                              f"{conf:.0%} bootstrap interval (initialisations resampled, the same resample for "
                              f"every run), widened by {self.ORDER_TOL}, contains particles.integrators."
                              f"SCHEMES[{scheme!r}].order"),
                        details=details))
                    # the offset of the paper's h = 0.1
                    k01 = self.run_key(scheme, max(hs))
                    b = boot[k01] - boot[ref_key]
                    b = b[np.isfinite(b)]
                    lo, hi = percentile_interval(b, 1 - conf)
                    out.append(Verdict(
                        study=self.name,
                        claim=f"{words} at h = {max(hs):g}: offset of the transition time t_50 from the ODE "
                              f"({where})",
                        label="T19", predicted=0.0, measured=t50[k01] - ref, interval=(lo, hi), tolerance=None,
                        passed=None,
                        rule=(f"informational: t_50(h = {max(hs):g}) - t_50(RK4, h = {min(ref_hs):g}); {conf:.0%} "
                              "bootstrap interval over initialisations"),
                        details={"t50": t50[k01], "t50_rk4": ref, "relative": (t50[k01] - ref) / ref,
                                 "relative_interval": [lo / ref, hi / ref]}))
                # the reference is converged
                change = abs(t50[ref2_key] - ref)
                bound = self.REF_FRACTION * min(euler_min_err.values())
                out.append(Verdict(
                    study=self.name,
                    claim=f"the RK4 reference t_50 is converged ({where})",
                    label="T19", predicted=0.0, measured=change, interval=None, tolerance=bound,
                    passed=bool(change <= bound),
                    rule=(f"|t_50(RK4, h = {max(ref_hs):g}) - t_50(RK4, h = {min(ref_hs):g})| <= {self.REF_FRACTION} "
                          f"x the smallest Euler error at h = {min(hs):g} (both variants)"),
                    details={"t50_rk4": {k: t50[k] for k in (ref2_key, ref_key)},
                             "euler_error_at_smallest_h": euler_min_err}))
            else:
                out.append(Verdict(
                    study=self.name, claim=f"t_50 is not reached by t = {p['T']:g} in every run ({where})",
                    label="T19", predicted=float("nan"), measured=float("nan"), interval=None, tolerance=None,
                    passed=None, rule="informational: no order verdict for this cell (the first-passage fraction "
                                      "stays below 1/2 in some run)",
                    details={"t50": t50}))
            if agg["count"]:
                out.extend(self._count_verdicts(agg, where, ref_key))
        return out

    def _count_verdicts(self, agg, where, ref_key):
        p = agg["params"]
        ref = agg["count"][ref_key].astype(float)
        out = []

        def summary(c):
            vals, freq = np.unique(c, return_counts=True)
            return {"mode": int(vals[np.argmax(freq)]), "mean": float(np.mean(c)),
                    "distribution": {str(int(v)): int(f) for v, f in zip(vals, freq)}}

        for scheme, words in VARIANTS.items():
            rows = {}
            for h in p["hs"]:
                c = agg["count"][self.run_key(scheme, h)].astype(float)
                diff = c - ref
                mi = mean_interval(diff, self.CONFIDENCE) if np.ptp(diff) > 0 else None
                rows[f"{h:g}"] = {**summary(c), "mean_difference": float(diff.mean()),
                                  "mean_difference_interval": None if mi is None else [mi.low, mi.high],
                                  "fraction_differing": float(np.mean(diff != 0))}
            h01 = rows[f"{max(p['hs']):g}"]
            out.append(Verdict(
                study=self.name,
                claim=f"{words}: cluster count at t = {p['T']:g} on the circle, by h, vs RK4 ({where})",
                label="T19", predicted=summary(ref)["mean"], measured=h01["mean"],
                interval=None if h01["mean_difference_interval"] is None else
                tuple(summary(ref)["mean"] + v for v in h01["mean_difference_interval"]),
                tolerance=None, passed=None,
                rule=(f"informational: mean count at h = {max(p['hs']):g} (predicted: RK4 at h = "
                      f"{min(p['ref_hs']):g}); interval: RK4 mean + {self.CONFIDENCE:.0%} t-interval of the mean "
                      "paired difference over initialisations; modes and distributions per h in details"),
                details={"rk4": summary(ref), "by_h": rows}))
        return out
