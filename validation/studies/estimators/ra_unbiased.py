"""Study ``ra_unbiased`` (T12-T14, B3): randomized attention is unbiased; RFA at S = 2 is rejected."""

from __future__ import annotations

import numpy as np

import attention_theory as at
from attention_theory import bounds
from validation.stats import bonferroni_z, chi2_variance_upper
from validation.studies.estimators._common import INPUT_SEED, _by, _check_mode, _generator, _inputs, _mean_var, _pool
from validation.study import Study, Verdict, register

__all__ = ["RAUnbiasedStudy"]


@register
class RAUnbiasedStudy(Study):
    r"""Randomized attention is unbiased (B3, T14); the same test rejects a biased estimator.

    Each cell makes ``n_calls`` independent calls of an estimator on fixed
    inputs (8 queries, 16 keys, d = 2, d_v = 2, largest T16 = 2) and returns
    the mean and variance of the error per output coordinate. The test: a
    z statistic per coordinate (16 of them), two-sided, Bonferroni at the
    declared family-wise false-alarm rate alpha = 0.01. The estimator under
    test is the one declared unbiased in :data:`attention_theory.REGISTRY`
    (``randomized_attention``, 16 samples per call); the negative control is
    one declared biased (``rfa`` with S = 2 features), which must be rejected
    by the same rule, with the same number of calls: that shows the test
    has power. A third check: each coordinate's single-draw variance of RA
    is at most range^2/4 (B3), at the upper 99% confidence limit.
    """

    name = "ra_unbiased"
    version = 1
    title = "Randomized attention is unbiased; RFA at S = 2 is rejected by the same test"
    labels = ("T14", "B3", "T12")
    result_fields = {
        "n": ("()", "estimator calls in the cell (n_calls)"),
        "mean": ("(n*dv,)", "mean error (estimate - exact softmax attention), flattened"),
        "var": ("(n*dv,)", "sample variance of the error, per coordinate"),
    }

    INPUTS = {"n": 8, "m": 16, "d": 2, "dv": 2, "seed": INPUT_SEED + 1, "t16_max": 2.0}
    ALPHA = 0.01
    CASES = (("randomized_attention", "num_samples", 16), ("rfa", "num_features", 2))

    REPLICATES = {"quick": 4, "full": 8}

    def grid(self, mode):
        n_calls = 2500 if _check_mode(mode) == "full" else 500
        return [{"estimator": e, "size_parameter": sp, "size": s, "n_calls": n_calls, "inputs": dict(self.INPUTS)}
                for e, sp, s in self.CASES]

    def measure(self, params, seed):
        q, k, v = _inputs(params["inputs"])
        exact = at.softmax_attention(q, k, v)
        info = at.REGISTRY[params["estimator"]]
        kwargs = {**dict(info.options), params["size_parameter"]: int(params["size"])}
        gen = _generator(seed)
        n = int(params["n_calls"])
        err = np.empty((n, exact.size))
        for r in range(n):
            err[r] = (info.function(q, k, v, rng=gen, **kwargs) - exact).ravel()
        mean, var = _mean_var(err)
        return {"n": n, "mean": mean, "var": var}

    def test(self, chunks):
        """The declared test on pooled chunks: (worst coordinate index, mean, se, z, critical value)."""
        n, mean, var = _pool(chunks)
        se = np.sqrt(var / n)
        z = mean / se
        worst = int(np.argmax(np.abs(z)))
        return {"n": int(n), "worst": worst, "mean": float(mean[worst]), "se": float(se[worst]),
                "z": float(z[worst]), "z_crit": bonferroni_z(self.ALPHA, mean.size), "m": int(mean.size),
                "all_z": z.tolist(), "var": var}

    def verdicts(self, records, mode):
        groups = _by(records, "estimator")
        out = []
        for name, size_parameter, size in self.CASES:
            recs = groups.get((name,))
            if not recs:
                continue
            declared_unbiased = at.REGISTRY[name].unbiased
            t = self.test([r.result for r in recs])
            lo = t["mean"] - t["z_crit"] * t["se"]
            hi = t["mean"] + t["z_crit"] * t["se"]
            rejected = bool(abs(t["z"]) > t["z_crit"])
            expected = "not rejected" if declared_unbiased else "rejected"
            role = "estimator under test" if declared_unbiased else "negative control (must be rejected: power)"
            out.append(Verdict(
                study=self.name,
                claim=(f"{name} ({size_parameter}={size}) is {'un' if declared_unbiased else ''}biased as declared "
                       f"in REGISTRY: {role}"),
                label="T14, B3" if declared_unbiased else "T15, B2",
                predicted=expected, measured=t["mean"], interval=(lo, hi), tolerance=t["z_crit"],
                passed=bool(rejected != declared_unbiased),
                rule=(f"z-test per output coordinate ({t['m']}), two-sided, Bonferroni at family-wise alpha = "
                      f"{self.ALPHA}: rejected when max |z| > {t['z_crit']:.3f}; measured and interval: the worst "
                      "coordinate's bias and its simultaneous interval"),
                details={"n_calls": t["n"], "max_abs_z": abs(t["z"]), "worst_coordinate": t["worst"],
                         "rejected": rejected, "declared_unbiased": declared_unbiased, "z": t["all_z"]}))
            if name == "randomized_attention":
                q, k, v = _inputs(recs[0].params["inputs"])
                bound = np.tile(bounds.ra_variance_bound(v), q.shape[0])  # per (query, coordinate), row-major
                single = t["var"] * size  # single-draw variance (a mean of `size` i.i.d. draws per call)
                dof = t["n"] - 1
                upper = chi2_variance_upper(single, dof, self.ALPHA)
                ratio = upper / bound
                out.append(Verdict(
                    study=self.name, claim="RA single-draw variance per coordinate <= range(v)^2/4 (B3)", label="B3",
                    predicted=1.0, measured=float(np.max(single / bound)),
                    interval=(0.0, float(np.max(ratio))), tolerance=None, passed=bool(np.all(ratio <= 1.0)),
                    rule="upper 99% chi-square confidence limit of variance / bound <= 1 for every coordinate",
                    details={"max_ratio_point": float(np.max(single / bound)), "max_ratio_upper": float(ratio.max())}))
        return out
