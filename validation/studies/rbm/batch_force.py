"""The batch-force lemma (T3) at frozen positions."""

from __future__ import annotations

import math

import numpy as np

import particles
from attention_theory.bounds.ips import kernel_lambdas
from particles import integrators, systems
from validation.stats import bonferroni_z, compare_to_prediction, two_sided_p
from validation.study import Study, Verdict, register

# --------------------------------------------------------------------------- T3: batch-force lemma


@register
class BatchForceLemma(Study):
    r"""The batch-force lemma (T3) at frozen positions, by Monte Carlo over many reshuffles.

    Positions x (N particles in d = 2, i.i.d. N(0, 1) from the fixed
    ``x_seed``, identical in every cell of a grid point) and the confined tanh
    kernel with L = 0.6. Broadcasting x to shape (R, N, d) gives R independent
    RBM-1 partitions in one :func:`particles.drift` call (replica r uses its
    own permutation stream). chi_i = batch force - full force (the drift b
    cancels). With S_r = (1/N) sum_i ``|chi_i^r|^2`` per partition, T3 predicts

        E chi_i = 0,    E S = batch_variance_factor(N, p) * (1/N) sum_i Lambda_i,

    with Lambda_i the finite-population variance of the K_ij (computed from
    the kernel in NumPy).

    Decisions, family-wise false-alarm rate ``ALPHA`` = 1e-3, split equally
    between the two checks and Bonferroni-corrected inside each:

    - second moment, per p: z = (mean S - predicted) / (sd S / sqrt R),
      two-sided, rejected when p-value < ALPHA / 2 / n_p;
    - mean zero, all p together: z per (p, i, coordinate), rejected when the
      smallest p-value < ALPHA / 2 / (n_p N d).

    Negative controls (power), at the same thresholds, for every p:

    - the mean-zero test must reject the wrong batch weight 1/``|C|`` instead of
      1/(``|C|``-1) (the batch sum times (p-1)/p, biased by -Kbar_i/p);
    - the second-moment test must reject the textbook factor 1/(p-1) without
      the finite-population correction -1/(N-1) (relative error
      (p-1)/(N-p): 0.85% at p = 2, N = 120). The wrong weight is no good
      control here: its second moment differs from the right one by
      -2 factor Lambda/p + ``|Kbar|^2``/p^2, which nearly vanishes at large p
      (measured z = -3.7 at p = 60, N = 120).

    Batch sizes divide N, so every batch has size p.
    """

    name = "batch_force_lemma"
    version = 1
    title = "Batch-force lemma at frozen positions: E chi = 0 and E|chi|^2 = factor * Lambda"
    labels = ("T3",)
    result_fields = {
        "n": ("()", "independent batch partitions (R)"),
        "lambda_mean": ("()", "mean over particles of Lambda_i (T3) at the fixed positions"),
        "chi_sum": ("(N, d)", "sum over partitions of chi = batch force - full force"),
        "chi_sumsq": ("(N, d)", "sum over partitions of chi^2, per particle and coordinate"),
        "chi_S_sum": ("()", "sum over partitions of S = mean over particles of |chi_i|^2"),
        "chi_S_sumsq": ("()", "sum over partitions of S^2"),
        "control_sum": ("(N, d)", "the same sums for the negative control (batch force scaled by (p-1)/p)"),
        "control_sumsq": ("(N, d)", "control: sum of squares"),
        "control_S_sum": ("()", "control: sum of S"),
        "control_S_sumsq": ("()", "control: sum of S^2"),
    }
    ALPHA = 1e-3
    QUICK = {"N": 40, "d": 2, "r": 1.0, "L": 0.6, "x_seed": 2026, "R": 10000, "ps": [2, 4, 5, 8]}
    FULL = {"N": 120, "d": 2, "r": 1.0, "L": 0.6, "x_seed": 2026, "R": 20000,
            "ps": [2, 3, 4, 5, 6, 8, 10, 12, 20, 30, 40, 60]}
    BLOCKS = {"quick": 2, "full": 10}
    REPLICATES = BLOCKS

    def grid(self, mode):
        base = dict(self.QUICK if mode == "quick" else self.FULL)
        ps = base.pop("ps")
        return [{**base, "p": int(p)} for p in ps]

    @staticmethod
    def positions(params):
        return np.random.default_rng(params["x_seed"]).standard_normal((params["N"], params["d"]))

    @staticmethod
    def lambdas(system, x):
        """Lambda_i of T3 at positions x (:func:`attention_theory.bounds.ips.kernel_lambdas`)."""
        return kernel_lambdas(system, x)

    def measure(self, params, seed):
        n, d, p, R = params["N"], params["d"], params["p"], params["R"]
        if n % p:
            raise ValueError(f"batch size p={p} must divide N={n} (the negative control assumes batches of size p)")
        system = systems.confined_tanh(r=params["r"], L=params["L"], sigma=0.0)
        free = systems.confined_tanh(r=params["r"], L=0.0, sigma=0.0)
        x = self.positions(params)
        ens = np.broadcast_to(x, (R, n, d))
        b = particles.drift(free, x, method="full")
        full = particles.drift(system, x, method="full") - b
        batch = particles.drift(system, ens, method="rbm1", batch_size=p, seed=seed) - b
        chi = batch - full
        bad = batch * ((p - 1) / p) - full
        out = {"n": R, "lambda_mean": float(self.lambdas(system, x).mean())}
        for name, c in (("chi", chi), ("control", bad)):
            s = np.mean(np.sum(c**2, axis=2), axis=1)  # S_r, shape (R,)
            out[f"{name}_sum"] = c.sum(axis=0).tolist()
            out[f"{name}_sumsq"] = (c**2).sum(axis=0).tolist()
            out[f"{name}_S_sum"] = float(s.sum())
            out[f"{name}_S_sumsq"] = float((s**2).sum())
        return out

    @staticmethod
    def _tests(recs, name):
        n = sum(r.result["n"] for r in recs)
        s1 = np.sum([np.asarray(r.result[f"{name}_sum"]) for r in recs], axis=0)
        s2 = np.sum([np.asarray(r.result[f"{name}_sumsq"]) for r in recs], axis=0)
        mean = s1 / n
        var = (s2 - n * mean**2) / (n - 1)
        z_mean = mean / np.sqrt(var / n)
        S1 = sum(r.result[f"{name}_S_sum"] for r in recs)
        S2 = sum(r.result[f"{name}_S_sumsq"] for r in recs)
        mS = S1 / n
        seS = math.sqrt(max(S2 - n * mS**2, 0.0) / (n - 1) / n)
        return {"n": n, "mean_S": mS, "se_S": seS,
                "max_abs_z_mean": float(np.max(np.abs(z_mean))),
                "p_mean_min": two_sided_p(np.max(np.abs(z_mean))), "n_coords": int(z_mean.size)}

    @staticmethod
    def _curves(groups):
        """T3 and the textbook factor on a fine grid of batch sizes, times the mean Lambda (for the figure)."""
        n = groups[0][0]["N"]
        ps = np.array(sorted(p["p"] for p, _ in groups), dtype=float)
        lam = float(np.mean([r.result["lambda_mean"] for _, recs in groups for r in recs]))
        pc = np.geomspace(ps.min(), min(ps.max() * 1.15, n - 0.5), 200)
        # 1/(p-1) - 1/(N-1): batch_variance_factor when p divides N, drawn through the p that do not
        return {"p": pc.tolist(), "lambda_mean": lam, "t3": ((1.0 / (pc - 1.0) - 1.0 / (n - 1.0)) * lam).tolist(),
                "textbook": (lam / (pc - 1.0)).tolist(),
                "textbook_relative_percent": (100.0 * (pc - 1.0) / (n - pc)).tolist()}

    def verdicts(self, records, mode):
        groups = [(p, recs) for p, recs in self.group(records, mode) if recs]
        if not groups:
            return [self.info("batch-force lemma (T3)", "T3", "factor * Lambda", "no stored cells")]
        n_p = len(groups)
        # family-wise ALPHA, half for each of the two checks, Bonferroni inside each
        a_second = self.ALPHA / 2 / n_p
        out = []
        mean_rows, control_rows, textbook_rejected = [], [], []
        for params, recs in groups:
            p, n = params["p"], params["N"]
            lam = recs[0].result["lambda_mean"]
            predicted = integrators.batch_variance_factor(n, p) * lam
            t = self._tests(recs, "chi")
            c = self._tests(recs, "control")
            cmp = compare_to_prediction(t["mean_S"], predicted, t["se_S"], alpha=self.ALPHA / 2, m=n_p)
            out.append(Verdict(
                study=self.name, claim=f"E|chi_i|^2 = batch_variance_factor(N, p) Lambda_i, p = {p}, N = {n}",
                label="T3", predicted=predicted, measured=t["mean_S"], interval=cmp.interval, tolerance=None,
                passed=cmp.agrees,
                rule=(f"two-sided z-test of the mean over {t['n']} partitions of (1/N) sum_i |chi_i|^2 against "
                      f"batch_variance_factor(N, p) * mean Lambda_i; pass when p-value >= {a_second:.3g} "
                      f"(family-wise {self.ALPHA:g}, half for this check, Bonferroni over {n_p} batch sizes); the "
                      "interval is the matching (1 - alpha) interval"),
                details={"p": p, "N": n, "factor": integrators.batch_variance_factor(n, p), "lambda_mean": lam,
                         "z": cmp.z, "p_value": two_sided_p(cmp.z), "partitions": t["n"]}))
            mean_rows.append({"p": p, **{k: t[k] for k in ("max_abs_z_mean", "p_mean_min", "n_coords")}})
            textbook = lam / (p - 1)  # the deliberately wrong factor of the second-moment control
            tb = compare_to_prediction(t["mean_S"], textbook, t["se_S"], alpha=self.ALPHA / 2, m=n_p)
            textbook_rejected.append(not tb.agrees)
            control_rows.append({"p": p, "textbook_prediction": textbook, "z_second_textbook": tb.z,
                                 "p_second_textbook": two_sided_p(tb.z),
                                 "wrong_weight_max_abs_z_mean": c["max_abs_z_mean"],
                                 "wrong_weight_p_mean_min": c["p_mean_min"],
                                 "wrong_weight_z_second": compare_to_prediction(
                                     c["mean_S"], predicted, c["se_S"], alpha=self.ALPHA / 2, m=n_p).z})
        n_coords = sum(r["n_coords"] for r in mean_rows)
        a_mean = self.ALPHA / 2 / n_coords
        z_mean_crit = bonferroni_z(self.ALPHA / 2, n_coords)
        worst = max(mean_rows, key=lambda r: r["max_abs_z_mean"])
        out.append(Verdict(
            study=self.name, claim="E chi_i = 0 for every particle, coordinate and batch size", label="T3",
            predicted=0.0, measured=worst["max_abs_z_mean"], interval=None, tolerance=None,
            passed=bool(worst["max_abs_z_mean"] <= z_mean_crit),
            rule=(f"two-sided z-test per (p, i, coordinate) ({n_coords} tests); pass when the smallest p-value >= "
                  f"{a_mean:.3g} (family-wise {self.ALPHA:g}, half for this check, Bonferroni); measured = largest "
                  "|z|"),
            details={"per_p": mean_rows, "z_crit": z_mean_crit, "alpha_per_test": a_mean}))
        rejected = [bool(tb_rejected and r["wrong_weight_max_abs_z_mean"] > z_mean_crit)
                    for tb_rejected, r in zip(textbook_rejected, control_rows)]
        out.append(Verdict(
            study=self.name, claim=("negative controls: the mean test rejects the wrong batch weight 1/|C|, the "
                                    "second-moment test rejects the factor 1/(p-1) without finite-N correction"),
            label="T3", predicted=f"both rejected for all {n_p} batch sizes", measured=float(sum(rejected)),
            interval=None, tolerance=None, passed=all(rejected),
            rule=("at the same thresholds, for every p: the mean-zero test applied to batch sum * (p-1)/p rejects, "
                  "and the second-moment z-test against (1/(p-1)) mean Lambda_i rejects (measured = number of batch "
                  "sizes where both reject)"),
            details={"per_p": control_rows, "curves": self._curves(groups)}))
        return out
