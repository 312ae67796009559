"""Study ``lara_consistency`` (T17, B4): self-normalised LARA's bias vs samples per proposal, RMSE vs proposals."""

from __future__ import annotations

import math

import numpy as np

import attention_theory as at
from validation.rates import fit_rate
from validation.studies.estimators._common import INPUT_SEED, _by, _check_mode, _generator, _inputs, _mean_var, _pool
from validation.study import Study, Verdict, register

__all__ = ["LARAConsistencyStudy"]


@register
class LARAConsistencyStudy(Study):
    r"""Self-normalised LARA (T17) is biased, with the bias shrinking as samples per proposal grow.

    Inputs: 16 queries and 16 keys, d = 2, d_v = 2, largest T16 = 4 (a bias
    large enough to measure). Balance-heuristic weights.

    - J sweep (C = 4 proposals, J = 1, 2, 4, ... samples per proposal): the
      bias is projected on a fixed unit vector, the direction of the mean
      error of an independent pilot run at (C = 4, J = 1) (the first-order
      SNIS bias has a fixed direction and size ~ 1/J). Verdict: the log-log
      slope of the projected bias vs J has a 95% regression interval below 0.
      (First-order SNIS theory suggests -1; measured -0.81 quick, -0.85 in
      full mode over J = 1..32: still pre-asymptotic at J = 1, 2; reported,
      not a verdict.)
    - C sweep (J = 1, C = 1, 2, 4, 8, 16): RMSE over replicates and output
      coordinates. Verdict: the log-log slope of the RMSE vs C has a 95%
      bootstrap interval below 0.
    - The deterministic mode (w_c = mu_c, the authors' inference mode) is a
      plug-in, not an IS estimate: its error vs C is reported as information.
    """

    name = "lara_consistency"
    version = 1
    title = "LARA: bias vs samples per proposal, RMSE vs number of proposals; deterministic plug-in apart"
    labels = ("T17", "B4")
    result_fields = {
        "n": ("()", "LARA calls in the cell (n_rep)"),
        "mean": ("(n*dv,)", "mean error (LARA - exact softmax attention), flattened"),
        "var": ("(n*dv,)", "sample variance of the error, per coordinate"),
        "sq_err": ("(n_rep,)", "per call: mean squared error over the output coordinates"),
        "det_rmse": ("()", "RMS error of deterministic-mode LARA at this C (sweep 'C' only)"),
    }

    INPUTS = {"n": 16, "m": 16, "d": 2, "dv": 2, "seed": INPUT_SEED + 2, "t16_max": 4.0}
    C_FIXED = 4

    REPLICATES = {"quick": 4, "full": 8}

    def grid(self, mode):
        full = _check_mode(mode) == "full"
        n_rep = 2000 if full else 250
        js = [1, 2, 4, 8, 16, 32] if full else [1, 2, 4, 8, 16]
        cs = [1, 2, 4, 8, 16]
        inputs = dict(self.INPUTS)
        g = [{"sweep": "pilot", "C": self.C_FIXED, "J": 1, "n_rep": n_rep, "inputs": inputs}]
        g += [{"sweep": "J", "C": self.C_FIXED, "J": j, "n_rep": n_rep, "inputs": inputs} for j in js]
        g += [{"sweep": "C", "C": c, "J": 1, "n_rep": n_rep, "inputs": inputs} for c in cs]
        return g

    def measure(self, params, seed):
        q, k, v = _inputs(params["inputs"])
        exact = at.softmax_attention(q, k, v)
        c, j, n = int(params["C"]), int(params["J"]), int(params["n_rep"])
        gen = _generator(seed)
        err = np.empty((n, exact.size))
        for r in range(n):
            err[r] = (at.lara(q, k, v, num_proposals=c, samples_per_proposal=j, rng=gen) - exact).ravel()
        mean, var = _mean_var(err)
        out = {"n": n, "mean": mean, "var": var, "sq_err": (err**2).mean(axis=1).tolist()}
        if params["sweep"] == "C":
            det = at.lara(q, k, v, num_proposals=c, rng=None, mode="deterministic") - exact
            out["det_rmse"] = float(np.sqrt(np.mean(det**2)))
        return out

    def verdicts(self, records, mode):
        groups = _by(records, "sweep", "J", "C")
        pilot = [r.result for (s, _, _), recs in groups.items() if s == "pilot" for r in recs]
        _, pmean, _ = _pool(pilot)
        u = pmean / np.linalg.norm(pmean)
        out = []
        # bias vs J
        js, b, bse = [], [], []
        for (s, j, _), recs in sorted(groups.items(), key=lambda kv: kv[0][1]):
            if s != "J":
                continue
            n, mean, var = _pool([r.result for r in recs])
            js.append(j)
            b.append(float(mean @ u))
            # variance of u . mean <= (sum |u_i| sd_i)^2 / n (triangle inequality; coordinates correlated)
            bse.append(float(np.abs(u) @ np.sqrt(var) / math.sqrt(n)))
        details = {"J": js, "projected_bias": b, "projected_bias_se_bound": bse, "C": self.C_FIXED}
        if min(b) <= 0:
            out.append(Verdict(study=self.name, claim="LARA bias shrinks as samples per proposal J grow", label="T17",
                               predicted="slope < 0", measured=0.0, interval=None, tolerance=None, passed=False,
                               rule="non-positive projected bias at some J: no log-log fit", details=details))
        else:
            fit = fit_rate(js, b)
            out.append(Verdict(
                study=self.name, claim=f"self-normalised LARA (C = {self.C_FIXED}) bias shrinks as samples per "
                                       "proposal J grow (consistent, B4)",
                label="T17", predicted="slope < 0 (first-order SNIS: -1)", measured=fit.slope,
                interval=(fit.ci_low, fit.ci_high), tolerance=0.0, passed=bool(fit.ci_high < 0),
                rule="95% regression interval of the log-log slope of the projected bias vs J lies below 0",
                details={**details, "fit": fit.as_dict()}))
        # RMSE vs C
        cs, rep_rows, det = [], [], []
        for (s, _, c), recs in sorted(groups.items(), key=lambda kv: kv[0][2]):
            if s != "C":
                continue
            cs.append(c)
            rep_rows.append(np.concatenate([r.result["sq_err"] for r in recs]))
            det.append(recs[0].result["det_rmse"])
        rep = np.column_stack(rep_rows)
        fit = fit_rate(cs, None, replicate_errors=rep)
        out.append(Verdict(
            study=self.name, claim="self-normalised LARA (J = 1) RMSE decreases with the number of proposals C",
            label="T17", predicted="slope < 0", measured=fit.slope, interval=(fit.ci_low, fit.ci_high),
            tolerance=0.0, passed=bool(fit.ci_high < 0),
            rule="95% bootstrap interval (over replicates) of the log-log slope of the RMSE vs C lies below 0",
            details={"C": cs, "rmse": np.sqrt(rep.mean(axis=0)).tolist(), "fit": fit.as_dict()}))
        out.append(Verdict(
            study=self.name,
            claim="information: deterministic LARA (w_c = mu_c) is a plug-in, not an IS estimate; its error vs C",
            label="B4", predicted="no Monte Carlo statement applies", measured=float(det[-1]), interval=None,
            tolerance=None, passed=None, rule="reported only",
            details={"C": cs, "deterministic_rmse": det,
                     "sampled_rmse_J1": np.sqrt(rep.mean(axis=0)).tolist()}))
        return out
