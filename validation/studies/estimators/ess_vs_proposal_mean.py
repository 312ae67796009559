"""Study ``ess_vs_proposal_mean`` (T16): the weight second moment of N(mu, I) proposals against its closed form."""

from __future__ import annotations

import math

import numpy as np

import attention_theory as at
from attention_theory import bounds
from validation.stats import compare_to_prediction
from validation.studies.estimators._common import INPUT_SEED, _by, _check_mode, _generator, _inputs, _pool
from validation.study import Study, Verdict, register

__all__ = ["ESSVsProposalMeanStudy"]


@register
class ESSVsProposalMeanStudy(Study):
    r"""Weight second moment of a Gaussian proposal N(mu, I): Monte Carlo vs the closed form T16.

    One query q_n (the one of 8 with the largest T16 at mu = 0), 16 keys,
    d = 2; inputs scaled so that this largest T16 at mu = 0 is 2 (the variance of the Monte Carlo estimate
    involves the fourth moment of the weight, which stays moderate there).
    The proposal mean moves on the segment mu_t = t (q_n + mean_m k_m),
    t = 0, 1/4, ..., 1. At each mu: draws w ~ N(mu, I), weights
    wbar = p_n(w) / N(w; mu, I) with the mixture density of T12
    (:func:`attention_theory.target_mixture_logpdf`), estimate of E[wbar^2]
    and its standard error. Verdict per mu: the closed form
    (:func:`attention_theory.bounds.weight_second_moment`) lies in the
    Bonferroni-corrected interval (family-wise alpha = 0.01 over the mus).
    The effective sample size S / T16 (:func:`~attention_theory.bounds.
    effective_sample_size`, S = 64) is reported.
    """

    name = "ess_vs_proposal_mean"
    version = 1
    title = "Effective sample size of N(mu, I) proposals: weight second moment vs T16"
    labels = ("T16", "T12")
    result_fields = {
        "n": ("()", "proposal draws (n_draws)"),
        "mean": ("()", "mean of the squared importance weight w^2 (its second moment, T16)"),
        "var": ("()", "sample variance of w^2"),
    }

    INPUTS = {"n": 8, "m": 16, "d": 2, "dv": 1, "seed": INPUT_SEED + 3, "t16_max": 2.0}
    ALPHA = 0.01
    ESS_S = 64

    REPLICATES = {"quick": 2, "full": 4}

    def grid(self, mode):
        full = _check_mode(mode) == "full"
        n_draws = 400_000 if full else 40_000
        q, k, _ = _inputs(self.INPUTS)
        query = int(np.argmax(bounds.weight_second_moment(q, k, np.zeros(q.shape[1]))))
        return [{"t": t, "n_draws": n_draws, "query": query, "inputs": dict(self.INPUTS)}
                for t in (0.0, 0.25, 0.5, 0.75, 1.0)]

    @staticmethod
    def proposal_mean(params):
        q, k, _ = _inputs(params["inputs"])
        qn = q[params["query"]]
        return qn, k, params["t"] * (qn + k.mean(axis=0))

    def measure(self, params, seed):
        qn, k, mu = self.proposal_mean(params)
        n = int(params["n_draws"])
        d = qn.size
        eps = _generator(seed).standard_normal((n, d))
        w = mu + eps
        log_q = -0.5 * np.einsum("ij,ij->i", eps, eps) - 0.5 * d * math.log(2.0 * math.pi)
        w2 = np.exp(2.0 * (at.target_mixture_logpdf(w, qn, k) - log_q))
        return {"n": n, "mean": float(w2.mean()), "var": float(w2.var(ddof=1))}

    def verdicts(self, records, mode):
        groups = _by(records, "t")
        out = []
        ess = {}
        for (t,), recs in sorted(groups.items()):
            n, mean, var = _pool([r.result for r in recs])
            mc, se = float(mean[0]), float(math.sqrt(var[0] / n))
            qn, k, mu = self.proposal_mean(recs[0].params)
            pred = float(bounds.weight_second_moment(qn, k, mu))
            ess[t] = float(bounds.effective_sample_size(qn, k, mu, self.ESS_S))
            c = compare_to_prediction(mc, pred, se, alpha=self.ALPHA, m=len(groups))
            out.append(Verdict(
                study=self.name, claim=f"E_N(mu,I)[wbar^2] = T16 closed form at mu = {t:g} (q_n + mean k)",
                label="T16", predicted=pred, measured=mc, interval=c.interval, tolerance=c.z_crit,
                passed=c.agrees,
                rule=(f"closed form inside the Monte Carlo interval mean +- z se, z = {c.z_crit:.3f} (two-sided, "
                      f"Bonferroni over {len(groups)} means, family-wise alpha = {self.ALPHA})"),
                details={"t": t, "mu": mu.tolist(), "n_draws": int(n), "se": se, "z": c.z,
                         "ess_at_S": ess[t], "S": self.ESS_S}))
        ts = sorted(ess)
        fine, curve = self.closed_form_curve(records[0].params)
        out.append(Verdict(
            study=self.name, claim=f"information: effective sample size S / T16 (S = {self.ESS_S}) along the segment",
            label="T16", predicted="largest near the target's mean", measured=float(max(ess.values())),
            interval=None, tolerance=None, passed=None, rule="reported only",
            details={"t": ts, "ess": [ess[t] for t in ts], "query": records[0].params["query"],
                     "closed_form_t": fine, "closed_form_second_moment": curve}))
        return out

    def closed_form_curve(self, params, points=101):
        """T16 along the whole segment, on ``points`` equally spaced t in [0, 1] (for the figure's curve)."""
        fine = np.linspace(0.0, 1.0, points)
        curve = []
        for tf in fine:
            qn, k, mu = self.proposal_mean({**params, "t": float(tf)})
            curve.append(float(bounds.weight_second_moment(qn, k, mu)))
        return fine.tolist(), curve
