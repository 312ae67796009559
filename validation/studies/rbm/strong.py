"""RBM-1 strong error against the full system (T3, T4): vs tau, batch size, particle number and time."""

from __future__ import annotations

import numpy as np

import particles
from attention_theory.bounds.ips import finite_n_batch_slope
from particles import integrators
from validation.stats import percentile_interval
from validation.strong_order import coupled_strong_errors
from validation.study import Study, Verdict, register

from ._common import BOOT_SEED, CONFIDENCE, N_BOOT, _fit, _msq, _pow2, _rows, _tanh, _windows, _x0

# --------------------------------------------------------------------------- T4: strong order in tau


@register
class RBMStrongOrder(Study):
    """Strong order of RBM-1 in tau (T4) at several batch sizes.

    System: confined tanh (r = 1, L = 0.3, sigma = 1; r > 2L so T4 applies),
    d = 1, horizon T = 1, i.i.d. N(0, 1) initial states. For every tau the full
    system (T1) and RBM-1 (T2) with p = 2, 4, 8 are integrated by
    Euler-Maruyama with h = tau, same x0, same seed, ``noise_dt`` = the finest
    tau (common random numbers across levels and methods, THEORY A3). The
    full-system reference of a level uses the same h as RBM-1, so only the
    batching error remains.

    Measured per replica and level: e^2 = mean over particles of
    (Xtilde^i(T) - X^i(T))^2. Verdict per p: the least-squares slope of
    log RMS(e) vs log tau, with a 95% percentile bootstrap interval over
    replicas, widened by ``TOL`` = 0.1, contains ``RBM1.strong_order``.

    Cells: one block of R replicas per cell, all levels and all p inside
    (the full-system run of a level is shared by the three batch sizes).
    """

    name = "rbm_strong_order"
    version = 1
    title = "RBM-1 strong error vs tau at p = 2, 4, 8 (confined tanh), slope = declared strong order"
    labels = ("T4",)
    result_fields = {
        "sq_errors.{p}": ("(R, len(taus))", "per replica and level: mean over particles of (RBM-1 - full)^2 at "
                                             "time T, for batch size p (one entry per p in ps)"),
    }
    TOL = 0.1
    QUICK = {"r": 1.0, "L": 0.3, "sigma": 1.0, "N": 64, "d": 1, "T": 1.0, "taus": _pow2(range(3, 9)),
             "ps": [2, 4, 8], "R": 32}
    FULL = {"r": 1.0, "L": 0.3, "sigma": 1.0, "N": 256, "d": 1, "T": 1.0, "taus": _pow2(range(3, 11)),
            "ps": [2, 4, 8], "R": 16}
    BLOCKS = {"quick": 4, "full": 16}
    GRID = {"quick": QUICK, "full": FULL}
    REPLICATES = BLOCKS

    def measure(self, params, seed):
        system = _tanh(params)
        taus = np.asarray(params["taus"], dtype=np.float64)
        x0 = _x0(seed, params["R"], params["N"], params["d"])
        sq = coupled_strong_errors(system, x0, taus=taus, batch_sizes=params["ps"], t_end=params["T"], seed=seed)
        return {"sq_errors": {str(p): sq[p].tolist() for p in params["ps"]}}

    def verdicts(self, records, mode):
        order = integrators.RBM1.strong_order
        out = []
        for params, recs in self.group(records, mode):
            taus = np.asarray(params["taus"])
            for p in params["ps"]:
                claim = f"RBM-1 strong error ~ tau^{order:g} at p = {p} (N = {params['N']}, T = {params['T']:g})"
                if len(recs) == 0:
                    out.append(self.info(claim, "T4", order, "no stored cells"))
                    continue
                sq = np.concatenate([np.asarray(r.result["sq_errors"][str(p)]) for r in recs], axis=0)
                fit = _fit(taus, sq)
                rms = np.sqrt(sq.mean(axis=0))
                out.append(Verdict(
                    study=self.name, claim=claim, label="T4", predicted=order, measured=fit.slope,
                    interval=(fit.ci_low, fit.ci_high), tolerance=self.TOL, passed=fit.contains(order, self.TOL),
                    rule=(f"95% bootstrap interval (over {sq.shape[0]} replicas) of the log-log slope of the RMS "
                          f"strong error vs tau, widened by +-{self.TOL:g}, contains RBM1.strong_order"),
                    details={"p": p, "taus": taus.tolist(), "rms_error": rms.tolist(), "fit": fit.as_dict(),
                             "replicas": int(sq.shape[0]), "N": params["N"], "T": params["T"],
                             "noise_dt": float(taus.min()),
                             "preasymptotic_windows": _windows(taus, rms, order)}))
        return out


# --------------------------------------------------------------------------- T3/T4: batch size


@register
class RBMBatchSize(Study):
    """Strong error of RBM-1 vs the batch size p (T3, T4): error ~ (p - 1)^batch_exponent.

    T4 bounds the error by C sqrt(tau/(p-1) + tau^2): the (p-1)^{-1/2} law
    holds while tau << 1/(p-1) (so that tau^2 is negligible next to
    tau/(p-1)) and N >> p (so that the finite-population correction of T3,
    1/(p-1) - 1/(N-1), is close to 1/(p-1)). The levels are chosen in that
    regime: quick N = 256, tau = 2^-7, p in {2, 3, 5, 9} (tau (p-1) <= 1/16);
    full N = 1024, tau = 2^-9, p up to 33 (tau (p-1) <= 1/16).

    One full-system run per block is shared by all p (same x0, same seed,
    same h = tau). Verdict: the slope of log RMS error vs log(p - 1), with a
    95% bootstrap interval over replicas widened by ``TOL`` = 0.1, contains
    ``RBM1.batch_exponent``. Informational line: the slope predicted when the
    finite-N factor ``batch_variance_factor(N, p)`` of T3 replaces 1/(p-1),
    i.e. the least-squares slope of 0.5 log factor(N, p) vs log(p - 1), and
    the ratio error / sqrt(factor) per p (constant if error^2 ~ factor).
    """

    name = "rbm_batch_size"
    version = 1
    title = "RBM-1 strong error vs batch size p at small tau, slope = declared batch exponent"
    labels = ("T3", "T4")
    result_fields = {
        "sq_errors": ("(R, len(ps))", "per replica and batch size: mean over particles of (RBM-1 - full)^2 at T"),
    }
    TOL = 0.1
    QUICK = {"r": 1.0, "L": 0.3, "sigma": 1.0, "N": 256, "d": 1, "T": 1.0, "tau": 2.0**-7, "ps": [2, 3, 5, 9],
             "R": 16}
    FULL = {"r": 1.0, "L": 0.3, "sigma": 1.0, "N": 1024, "d": 1, "T": 1.0, "tau": 2.0**-9,
            "ps": [2, 3, 5, 9, 17, 33], "R": 16}
    BLOCKS = {"quick": 2, "full": 4}
    GRID = {"quick": QUICK, "full": FULL}
    REPLICATES = BLOCKS

    def measure(self, params, seed):
        system = _tanh(params)
        x0 = _x0(seed, params["R"], params["N"], params["d"])
        sq = coupled_strong_errors(system, x0, taus=[params["tau"]], batch_sizes=params["ps"], t_end=params["T"],
                                   seed=seed)
        return {"sq_errors": np.column_stack([sq[p][:, 0] for p in params["ps"]]).tolist()}

    def verdicts(self, records, mode):
        exponent = integrators.RBM1.batch_exponent
        out = []
        for params, recs in self.group(records, mode):
            ps = np.asarray(params["ps"])
            n = params["N"]
            claim = (f"RBM-1 strong error ~ (p-1)^{exponent:g} at tau = {params['tau']:g}, N = {n} "
                     f"(p = {ps.min()}..{ps.max()})")
            if len(recs) == 0:
                out.append(self.info(claim, "T4", exponent, "no stored cells"))
                continue
            sq = _rows(recs, "sq_errors")
            fit = _fit(ps - 1.0, sq)
            rms = np.sqrt(sq.mean(axis=0))
            factor = np.array([integrators.batch_variance_factor(n, int(p)) for p in ps])
            finite_n_slope = finite_n_batch_slope(n, ps)
            out.append(Verdict(
                study=self.name, claim=claim, label="T4", predicted=exponent, measured=fit.slope,
                interval=(fit.ci_low, fit.ci_high), tolerance=self.TOL, passed=fit.contains(exponent, self.TOL),
                rule=(f"95% bootstrap interval (over {sq.shape[0]} replicas) of the log-log slope of the RMS error "
                      f"vs (p - 1), widened by +-{self.TOL:g}, contains RBM1.batch_exponent"),
                details={"ps": ps.tolist(), "rms_error": rms.tolist(), "fit": fit.as_dict(), "N": n,
                         "tau": params["tau"], "tau_times_pmax_minus_1": float(params["tau"] * (ps.max() - 1)),
                         "replicas": int(sq.shape[0])}))
            out.append(Verdict(
                study=self.name, claim=(f"with the finite-N factor of T3, batch_variance_factor(N={n}, p), the "
                                        f"predicted slope is {finite_n_slope:.3f}"),
                label="T3", predicted=finite_n_slope, measured=fit.slope, interval=(fit.ci_low, fit.ci_high),
                tolerance=None, passed=None,
                rule="informational: slope of 0.5 log batch_variance_factor(N, p) vs log(p - 1); no verdict",
                details={"ps": ps.tolist(), "batch_variance_factor": factor.tolist(),
                         "rms_over_sqrt_factor": (rms / np.sqrt(factor)).tolist()}))
        return out


# --------------------------------------------------------------------------- T4: uniform in N


@register
class RBMParticleNumber(Study):
    """Strong error of RBM-1 at fixed (tau, p) vs the number of particles N (T4: C independent of N).

    Confined tanh, p = 2, T = 1; quick tau = 2^-5, N in {32, 64, 128, 256};
    full tau = 2^-6, N in {64, ..., 1024}. Each N is its own grid point (cells
    = N x block). Verdict: the slope of log RMS error vs log N, with a 95%
    bootstrap interval over replicas widened by ``TOL`` = 0.1, contains 0,
    the slope implied by ``RBM1.n_uniform``. (The levels are independent
    here; the bootstrap resamples replica rows of equal count per N.)
    """

    name = "rbm_particle_number"
    version = 1
    title = "RBM-1 strong error at fixed (tau, p) vs N: independent of N"
    labels = ("T4",)
    result_fields = {
        "sq_errors": ("(R,)", "per replica: mean over particles of (RBM-1 - full)^2 at T, for this N"),
    }
    TOL = 0.1
    QUICK = {"Ns": [32, 64, 128, 256], "r": 1.0, "L": 0.3, "sigma": 1.0, "d": 1, "T": 1.0, "tau": 2.0**-5,
             "p": 2, "R": 16}
    FULL = {"Ns": [64, 128, 256, 512, 1024], "r": 1.0, "L": 0.3, "sigma": 1.0, "d": 1, "T": 1.0,
            "tau": 2.0**-6, "p": 2, "R": 32}
    BLOCKS = {"quick": 2, "full": 4}
    REPLICATES = BLOCKS

    def grid(self, mode):
        base = dict(self.QUICK if mode == "quick" else self.FULL)
        ns = base.pop("Ns")
        return [{**base, "N": int(n)} for n in ns]

    def measure(self, params, seed):
        system = _tanh(params)
        x0 = _x0(seed, params["R"], params["N"], params["d"])
        sq = coupled_strong_errors(system, x0, taus=[params["tau"]], batch_sizes=[params["p"]], t_end=params["T"],
                                   seed=seed)
        return {"sq_errors": sq[params["p"]][:, 0].tolist()}

    def verdicts(self, records, mode):
        uniform = integrators.RBM1.n_uniform
        predicted = 0.0 if uniform else "no claim (RBM1.n_uniform is False)"
        groups = [(p, recs) for p, recs in self.group(records, mode) if recs]
        first = self.grid(mode)[0]
        claim = f"RBM-1 strong error independent of N at tau = {first['tau']:g}, p = {first['p']}"
        if len(groups) < 3:
            return [self.info(claim, "T4", predicted, f"{len(groups)} values of N stored, 3 needed")]
        ns = np.array([p["N"] for p, _ in groups], dtype=np.float64)
        cols = [np.concatenate([np.asarray(r.result["sq_errors"]) for r in recs]) for _, recs in groups]
        m = min(c.size for c in cols)
        sq = np.stack([c[:m] for c in cols], axis=1)
        fit = _fit(ns, sq)
        rms = np.sqrt(sq.mean(axis=0))
        return [Verdict(
            study=self.name, claim=claim, label="T4", predicted=predicted, measured=fit.slope,
            interval=(fit.ci_low, fit.ci_high), tolerance=self.TOL,
            passed=fit.contains(0.0, self.TOL) if uniform else None,
            rule=(f"95% bootstrap interval (over {m} replicas per N) of the log-log slope of the RMS error vs N, "
                  f"widened by +-{self.TOL:g}, contains 0 (RBM1.n_uniform)"),
            details={"Ns": ns.tolist(), "rms_error": rms.tolist(), "fit": fit.as_dict(), "replicas_per_N": m,
                     "batch_variance_factor": [integrators.batch_variance_factor(int(n), first["p"]) for n in ns]})]


# --------------------------------------------------------------------------- T4: uniform in time


@register
class RBMUniformInTime(Study):
    """Strong error of RBM-1 at fixed (tau, p) at several times t (T4: sup over t >= 0).

    One solve per block and method to the last time, saving at whole times;
    the coupled error e(t) is read at t in ``times``. The error saturates in
    less than one time unit on the confined tanh system (measured: e(0.5)
    within 5% of the plateau), so the first time t = 1 is already on the
    plateau and no transient is fitted.

    Rule (stated here and in each verdict): PASS when the 95% bootstrap
    interval of the log-log slope of the RMS error vs t, widened by
    ``TOL`` = 0.1, contains 0 (the slope implied by ``RBM1.time_uniform``),
    OR when the error at the last time is not larger than at the first beyond
    the 95% bootstrap interval of their ratio (lower end <= 1). The first
    clause says "no power-law growth", the second "no significant growth at
    all" (a decreasing error passes).
    """

    name = "rbm_uniform_in_time"
    version = 1
    title = "RBM-1 strong error vs time: no growth (uniform in time)"
    labels = ("T4",)
    result_fields = {
        "sq_errors": ("(R, len(times))", "per replica and horizon: mean over particles of (RBM-1 - full)^2"),
    }
    TOL = 0.1
    QUICK = {"r": 1.0, "L": 0.3, "sigma": 1.0, "N": 64, "d": 1, "tau": 2.0**-5, "p": 2, "times": [1, 2, 4, 8],
             "R": 16}
    FULL = {"r": 1.0, "L": 0.3, "sigma": 1.0, "N": 256, "d": 1, "tau": 2.0**-6, "p": 2,
            "times": [1, 2, 4, 8, 16, 32, 64], "R": 16}
    BLOCKS = {"quick": 2, "full": 4}
    GRID = {"quick": QUICK, "full": FULL}
    REPLICATES = BLOCKS

    def measure(self, params, seed):
        system = _tanh(params)
        x0 = _x0(seed, params["R"], params["N"], params["d"])
        tau = params["tau"]
        every = round(1.0 / tau)
        t_end = float(max(params["times"]))
        kw = dict(t_end=t_end, dt=tau, seed=seed, save_every=every)
        ref = particles.solve(system, x0, method="full", **kw)
        rbm = particles.solve(system, x0, method="rbm1", batch_size=params["p"], **kw)
        idx = [int(np.argmin(np.abs(ref.t - t))) for t in params["times"]]
        sq = np.stack([_msq(rbm.x[k], ref.x[k]) for k in idx], axis=1)
        return {"sq_errors": sq.tolist()}

    def verdicts(self, records, mode):
        uniform = integrators.RBM1.time_uniform
        predicted = 0.0 if uniform else "no claim (RBM1.time_uniform is False)"
        out = []
        for params, recs in self.group(records, mode):
            times = np.asarray(params["times"], dtype=np.float64)
            claim = (f"RBM-1 strong error does not grow in time (t = {times.min():g}..{times.max():g}, "
                     f"tau = {params['tau']:g}, p = {params['p']}, N = {params['N']})")
            if len(recs) == 0:
                out.append(self.info(claim, "T4", predicted, "no stored cells"))
                continue
            sq = _rows(recs, "sq_errors")
            fit = _fit(times, sq)
            rms = np.sqrt(sq.mean(axis=0))
            gen = np.random.default_rng(BOOT_SEED)
            r = sq.shape[0]
            counts = gen.multinomial(r, np.full(r, 1.0 / r), size=N_BOOT).astype(np.float64)
            ratio_boot = np.sqrt((counts @ sq[:, -1]) / (counts @ sq[:, 0]))
            a = 1.0 - CONFIDENCE
            rlo, rhi = percentile_interval(ratio_boot, a)
            no_power_growth = fit.contains(0.0, self.TOL)
            no_growth = rlo <= 1.0
            out.append(Verdict(
                study=self.name, claim=claim, label="T4", predicted=predicted, measured=fit.slope,
                interval=(fit.ci_low, fit.ci_high), tolerance=self.TOL,
                passed=(no_power_growth or no_growth) if uniform else None,
                rule=(f"PASS if the 95% bootstrap interval (over {r} replicas) of the log-log slope of the RMS error "
                      f"vs t, widened by +-{self.TOL:g}, contains 0, OR if the 95% bootstrap interval of "
                      "e(t_last)/e(t_first) reaches down to 1 (no significant growth)"),
                details={"times": times.tolist(), "rms_error": rms.tolist(), "fit": fit.as_dict(),
                         "ratio_last_first": float(rms[-1] / rms[0]), "ratio_interval": [rlo, rhi],
                         "slope_clause": no_power_growth, "ratio_clause": no_growth, "replicas": r}))
        return out
