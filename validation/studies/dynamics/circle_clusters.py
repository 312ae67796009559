"""Metastable clusters on the circle, d = 2 (T19)."""

from __future__ import annotations

import math

import numpy as np

from attention_theory.bounds.dynamics import circle_cluster_count
from particles import initial, systems
from validation.stats import bonferroni_level, bonferroni_z
from validation.study import Study, Verdict, register

from ._common import _check_mode, _finite_list, _saved_states, step_words


# ---------------------------------------------------------------------------------------------------------
# circle_clusters
# ---------------------------------------------------------------------------------------------------------
@register
class CircleClustersStudy(Study):
    r"""d = 2: long-lived metastable states with several clusters on the circle before collapse (Part C).

    SA (T19), Q = K = V = I, n = 32 tokens i.i.d. uniform on the circle, the
    step of the authors' public scripts (``sphere.py``, which draws their
    circle and sphere movies, and ``phase-diagrams.py``, read at commit
    538ba83 of ``borjanG/2023-transformers-rotf``): ambient explicit Euler,
    ``scheme="ambient_euler"``, ``x <- (x + h a)/|x + h a|`` with the unprojected
    attention output a, h = 0.1; states saved every 0.5. (Only the step is
    theirs: ``sphere.py`` runs n = 64, d = 3, beta = 1 by default and counts
    no clusters; n, beta and the count rule here are the library's.)
    Version 2: version 1 ran the projected step (``scheme="euler"``); the
    effect of the step on the counts at t = 30 is measured by
    ``phase_discretisation``. The step is checked against the authors'
    update by ``tests/particles/test_ambient_euler.py`` (a NumPy statement of it, to
    1e-10 over 300 steps) and the stored snapshots by
    ``tests/validation/test_figures_dynamics.py`` (an independent ambient Euler run).
    Cluster count (:func:`circle_cluster_count`): the tokens are grouped
    by single linkage at angular distance delta = arccos(1 - eps), eps =
    1e-3 (delta = 0.0447 rad: two tokens closer than that have <x_i, x_j> >=
    1 - eps, the threshold of the phase diagram), i.e. the number of circular
    gaps between sorted neighbours larger than delta (1 when none). At t = 0
    this counts spread-out tokens (about 25 of 32), not clusters; after the
    fast initial phase (t of order 10) it counts the clusters.

    A cell is one beta; a replicate is a block of R initialisations (one
    ensemble). Each block also integrates one fixed initialisation (seed
    ``SNAPSHOT_SEED``, the same for every beta, excluded from the statistics)
    whose angles are stored at ``snapshot_times`` for the figure. Quick mode:
    beta in {1, 4, 9}, 48 initialisations, T = 60 (about 4 s); full mode:
    beta in {1, 2, 4, 6, 9, 16}, 4 blocks of 256, T = 300 (24 cells of about
    40 s).

    Stored per cell: the histogram over initialisations of the count at every
    saved time, and the snapshot angles and counts.

    Verdicts:

    - THEORY: "about 2 clusters at beta = 4, 3 at beta = 9". Made precise as:
      at t = 30 (the phase diagram's horizon, after the fast phase, where the
      counts change slowly) the most frequent count over initialisations is
      2 at beta = 4 and 3 at beta = 9, and it is identified: the one-sided
      lower confidence bound of p_mode - p_second (normal approximation of
      the multinomial difference, var = (p1 + p2 - (p1 - p2)^2) / m) is
      positive, at level 1 - 0.05/K for the K betas with a stated count
      (Bonferroni: the chance of a false PASS in the family is at most 5%).
      PASS/FAIL per beta. (Measured with version 1, the projected step, 512 initialisations: beta = 4:
      90% two clusters at t = 30, 93% at t = 100 (7% one); beta = 9: 78%
      three clusters at t = 30 (17% four), 79% at t = 100 (18% two). With
      these frequencies the rule, at the Bonferroni level 97.5% for K = 2,
      passes with probability about 0.98 for 24 initialisations and above
      0.9998 for the 48 of quick mode, by the normal approximation.)
    - informational, per beta: the count distribution at t = 10, 30, 100 and
      T and the fraction with one cluster at T (metastability: slow decay of
      the count toward 1).
    """

    name = "circle_clusters"
    version = 2
    title = ("d = 2: metastable clusters on the circle (about 2 at beta = 4, 3 at beta = 9) before collapse, "
             "ambient Euler h = 0.1 (the authors' step)")
    labels = ("T19",)

    KIND = "SA"
    N = 32
    DT = 0.1
    SCHEME = "ambient_euler"  # the step of the authors' sphere.py and phase-diagrams.py
    SAVE = 0.5
    EPS = 1e-3
    T_EVAL = 30.0
    REPORT_TIMES = (10.0, 30.0, 100.0, 300.0)
    THEORY_COUNTS = {4.0: 2, 9.0: 3}
    SNAPSHOT_SEED = 20261201
    CONFIDENCE = 0.95

    def _sizes(self, mode):
        if _check_mode(mode) == "full":
            return {"betas": [1.0, 2.0, 4.0, 6.0, 9.0, 16.0], "R": 256, "blocks": 4, "T": 300.0}
        return {"betas": [1.0, 4.0, 9.0], "R": 48, "blocks": 1, "T": 60.0}

    def grid(self, mode):
        s = self._sizes(mode)
        return [{"kind": self.KIND, "beta": b, "n": self.N, "R": s["R"], "T": s["T"], "dt": self.DT,
                 "scheme": self.SCHEME, "save": self.SAVE, "eps": self.EPS} for b in s["betas"]]

    def replicates(self, mode):
        return self._sizes(mode)["blocks"]

    @staticmethod
    def delta(eps):
        """The angular resolution of the count: arccos(1 - eps)."""
        return math.acos(1.0 - eps)

    @staticmethod
    def snapshot_times(t_end, save):
        """Times at which the snapshot angles are stored: every save up to 10, every 1 up to 30, every 5 after."""
        k = np.arange(round(t_end / save) + 1)
        t = k * save
        keep = (t <= 10.0 + 1e-9) | ((np.abs(t - np.round(t)) < 1e-9) & (t <= 30.0 + 1e-9)) | \
            (np.abs(t / 5.0 - np.round(t / 5.0)) < 1e-9)
        return [float(round(v, 10)) for v in t[keep]]

    def snapshot_initial(self, n):
        """The fixed initialisation whose snapshots are stored (the same for every beta)."""
        return initial.uniform_sphere(n, 2, rng=np.random.default_rng(self.SNAPSHOT_SEED))

    def measure(self, params, seed):
        n, reps, t_end, save = params["n"], params["R"], params["T"], params["save"]
        x0 = np.concatenate([self.snapshot_initial(n)[None],
                             initial.uniform_sphere(n, 2, rng=np.random.default_rng(seed), replicas=reps)])
        system = systems.attention(params["beta"], params["kind"])
        delta = self.delta(params["eps"])
        keep = set(self.snapshot_times(t_end, save))
        times, hist, snap_t, snap_theta, snap_count = [], [], [], [], []
        for t, x in _saved_states(system, x0, t_end, params["dt"], scheme=params["scheme"],
                                  every=round(save / params["dt"])):
            theta = np.arctan2(x[..., 1], x[..., 0])  # (m, R + 1, n)
            counts = circle_cluster_count(theta, delta)  # (m, R + 1)
            for k in range(t.size):
                tk = float(round(t[k], 10))
                times.append(tk)
                h = np.bincount(counts[k, 1:], minlength=n + 1)[1:]
                hist.append(h[: int(np.flatnonzero(h)[-1]) + 1].tolist())
                if tk in keep:
                    snap_t.append(tk)
                    snap_theta.append(_finite_list(theta[k, 0]))
                    snap_count.append(int(counts[k, 0]))
        return {"t": times, "count_hist": hist, "delta": delta,
                "snapshot": {"t": snap_t, "theta": snap_theta, "count": snap_count}}

    # -- analysis ---------------------------------------------------------------------------------------------
    def aggregate(self, records):
        """Blocks merged per beta: ``{beta: dict(t, hist (K, n) ints, m, snapshot)}``."""
        groups: dict = {}
        for r in records:
            groups.setdefault(r.params["beta"], []).append(r)
        out = {}
        for beta, recs in sorted(groups.items()):
            n = recs[0].params["n"]
            t = np.asarray(recs[0].result["t"], dtype=float)
            hist = np.zeros((t.size, n), dtype=int)
            for r in recs:
                for k, h in enumerate(r.result["count_hist"]):
                    hist[k, : len(h)] += h
            out[beta] = {"t": t, "hist": hist, "m": int(hist[0].sum()), "snapshot": recs[0].result["snapshot"]}
        return out

    @staticmethod
    def distribution_at(agg_beta, t):
        """Count distribution (fractions over initialisations, index 0 = one cluster) at the saved time nearest t."""
        k = int(np.argmin(np.abs(agg_beta["t"] - t)))
        h = agg_beta["hist"][k]
        return h / h.sum(), float(agg_beta["t"][k])

    def verdicts(self, records, mode):
        agg = self.aggregate(records)
        # one claim per beta with a stated count: Bonferroni keeps the family-wise false-pass rate at 1 - CONFIDENCE
        n_claims = max(1, sum(b in self.THEORY_COUNTS for b in agg))
        level = bonferroni_level(self.CONFIDENCE, n_claims)
        z = bonferroni_z(1.0 - self.CONFIDENCE, n_claims, sides=1)
        out = []
        for beta, a in agg.items():
            m = a["m"]
            dist, t_eval = self.distribution_at(a, self.T_EVAL)
            order = np.argsort(-dist, kind="stable")
            mode_count, p1 = int(order[0]) + 1, float(dist[order[0]])
            p2 = float(dist[order[1]]) if dist.size > 1 else 0.0
            se = math.sqrt(max(p1 + p2 - (p1 - p2) ** 2, 0.0) / m)
            lower = (p1 - p2) - z * se
            dists, mean_count = {}, {}
            for tr in (*self.REPORT_TIMES, float(a["t"][-1])):
                if tr <= a["t"][-1] + 1e-9:
                    dd, tt = self.distribution_at(a, tr)
                    dists[f"{tt:g}"] = {str(c + 1): round(float(p), 6) for c, p in enumerate(dd) if p > 0}
                    mean_count[f"{tt:g}"] = float(np.dot(np.arange(1, dd.size + 1), dd))
            details = {"initialisations": m, "t": t_eval, "distribution": dists, "mean_count": mean_count,
                       "mode": mode_count, "p_mode": p1, "p_second": p2, "lower_bound_difference": lower,
                       "one_cluster_at_T": float(a["hist"][-1][0] / m), "delta_rad": self.delta(self.EPS)}
            stated = self.THEORY_COUNTS.get(beta)
            if stated is not None:
                out.append(Verdict(
                    study=self.name,
                    claim=f"d = 2, n = {records[0].params['n']}, beta = {beta:g}: about {stated} clusters before "
                          f"collapse (metastable); the most frequent count at t = {t_eval:g} is {stated}",
                    label="T19", predicted=float(stated), measured=float(mode_count), interval=None, tolerance=0.0,
                    passed=bool(mode_count == stated and lower > 0.0),
                    rule=(f"mode of the cluster count (single linkage at arccos(1 - {self.EPS:g})) over {m} "
                          f"initialisations at t = {t_eval:g} ({step_words(records[0].params)}) equals {stated}, "
                          f"and the one-sided {level:.2%} lower bound of p_mode - p_second is > 0 (family-wise "
                          f"{self.CONFIDENCE:.0%}: Bonferroni over "
                          f"the {n_claims} betas with a stated count)"),
                    details=details))
            out.append(Verdict(
                study=self.name,
                claim=f"d = 2, n = {records[0].params['n']}, beta = {beta:g}: the cluster count decays slowly "
                      "toward one cluster (metastability)",
                label="T19", predicted="decreasing toward 1", measured=mean_count.get(f"{t_eval:g}", float("nan")),
                interval=None, tolerance=None, passed=None,
                rule="informational: count distribution over initialisations at t = 10, 30, 100, T; measured is "
                     f"the mean count at t = {t_eval:g}",
                details=details))
        return out
