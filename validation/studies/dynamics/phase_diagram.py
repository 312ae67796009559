"""The phase diagram of Geshkovski et al.: P(<x_1(t), x_2(t)> > 1 - eps) over (t, beta) (T19)."""

from __future__ import annotations

import math

import numpy as np

from attention_theory.bounds.dynamics import equiangular_time
from particles import initial, systems
from validation.stats import binomial_lower
from validation.studies._pairstats import PairTracker
from validation.study import Study, Verdict, register

from ._common import _check_mode, _first_crossing, _saved_states, span_coordinates, step_words


# ---------------------------------------------------------------------------------------------------------
# phase_diagram
# ---------------------------------------------------------------------------------------------------------
@register
class PhaseDiagramStudy(Study):
    r"""Phase diagram of P(<x_1(t), x_2(t)> > 1 - 1e-3) over (t, beta) (Geshkovski et al., Part C).

    SA (T19) with Q = K = V = I, n = 32 tokens, i.i.d. uniform on
    S^(d-1), d in {2, 8, 32, 128, 512, 1024}; the step of the authors'
    ``phase-diagrams.py`` (``--use_softmax``, the paper's phase diagram; read
    at commit 538ba83 of ``borjanG/2023-transformers-rotf``): ambient
    explicit Euler, ``scheme="ambient_euler"``, ``x <- (x + h a)/|x + h a|`` with
    a = softmax(beta X X^T) X (self included, not projected), h = 0.1, up to
    t = 30, every step saved. The event is strict, ``<x_i, x_j> > 1 - eps``,
    as the script's ``inner_prods > 0.999``. The script's 200 checkpoints
    (``linspace(0, 30, 200)``, time accumulated in floating point, checkpoint
    0 after the first step) are steps of this run: :func:`authors_checkpoints`
    maps them, and ``tests/validation/test_authors_procedure.py`` checks that the stored
    fractions at those steps equal, exactly, an independent NumPy restatement
    of the script's loop on the same initial tokens (its statistic is over the
    ordered pairs i != j, the same fraction as over the unordered pairs
    stored here). What is not the script's: the initial tokens (the
    library's generator, not torch's) and the number of initialisations
    (2^10 per cell here, batch 2048 there). Version 2: version 1 ran the
    projected step (``scheme="euler"``), which clusters about 7% earlier at
    h = 0.1; the distance of either step from the ODE is measured by the
    ``phase_discretisation`` study.
    THEORY Part C does not say whether the paper's phase diagram is of SA or
    USA; SA is the dynamics of the paper's equiangular high-dimensional
    analysis and of its gamma ODE with the e^beta + (n-1) e^(beta gamma)
    denominator, and it is what is run here (stated in the figure).

    A cell is one (d, beta); a replicate is a block of R initialisations
    integrated as one ensemble (x0 of shape (R, n, d)). For d > n the tokens
    are integrated in the n-dimensional span of the initial tokens
    (:func:`span_coordinates`: exact up to rounding, so a cell costs about the
    same for d = 32 and d = 1024 and the cells are balanced on a cluster).
    Full mode: beta = 0.1, 0.2, .., 9 (90 values), 4 blocks of 256 = 2^10
    initialisations per cell (2160 cells of 0.4-1.6 s on one core with the
    cpu backend's fused ensemble kernel and the incremental pair tracker
    :class:`validation.studies._pairstats.PairTracker`: 19 min wall on 2 local
    processes of an idle 2-core machine, about 500 MB per worker; see
    benchmarks/README.md); quick mode:
    beta in {0.5, 1, 2, .., 9}, one block of 8 (about 6 s).

    Stored per cell and saved time: the number of initialisations with
    <x_1, x_2> > 1 - eps (the paper's event), the mean over initialisations
    of the fraction of the n(n-1)/2 pairs with <x_i, x_j> > 1 - eps (the same
    probability by exchangeability: i.i.d. tokens, permutation-equivariant
    dynamics; much less noisy, and what the figure shows), and the number of
    initialisations with every pair clustered (one cluster); the number of
    initialisations whose pair (1, 2), and of (initialisation, pair)s whose
    indicator, falls back to 0 after being 1; and per initialisation the first
    saved time with one cluster.

    Verdicts:

    - d >= 3 (one-cluster theorem, any beta, asymptotic in t): for beta <= 1,
      where the clustering is fast (measured by ``one_cluster``: at most 15
      time units for d = 3, beta = 1; here, with version 1 (projected step),
      d = 8 and beta = 0.9, 1 with the full 2^10 initialisations each: all one
      cluster by t = 8.1; the ambient step is 5-10% slower), every
      initialisation is one cluster at t = 30. PASS/FAIL; interval: one-sided
      95% Clopper-Pearson lower bound of the probability.
    - informational, per d: the smallest beta at which not every
      initialisation is one cluster by t = 30 (slow clustering and
      metastability, not a contradiction of an asymptotic theorem), compared
      with the beta at which the equiangular time reaches 30 (6.925; measured
      with version 1, the projected step, 4 initialisations per cell on the
      full grid: 6.9 for d >= 128, 5.5 for d = 32, 2.8 for d = 8, 1.7 for
      d = 2; not yet remeasured with the ambient step).
    - informational: P is non-decreasing in t within noise: the largest drop
      of the estimated P between two saved times, and the declustering events.
    - informational: the equiangular curve gamma_beta(t) = 1 - eps
      (:func:`equiangular_time`, on a fine beta grid: the figure's overlay) vs
      the empirical transition t_50(beta), the first time the estimated P
      reaches 1/2 (measured with version 1, the projected step, median ratio
      t_50 / t_eq over beta: 0.985-0.99 for d >= 128, 0.99-1.0 for d = 32,
      1.08-1.14 for d = 8, 1.34-1.37 for d = 2: the curve describes the
      transition in high dimension, where random tokens are nearly
      orthogonal; the ambient step clusters later, see
      ``phase_discretisation`` for both steps against the ODE).
    """

    name = "phase_diagram"
    version = 2
    title = ("Phase diagram of P(<x_1(t), x_2(t)> > 1 - 1e-3) over (t, beta), SA, n = 32, ambient Euler h = 0.1 "
             "(the authors' step)")
    labels = ("T19",)

    KIND = "SA"
    N = 32
    T_END = 30.0
    DT = 0.1
    SCHEME = "ambient_euler"  # the step of the authors' phase-diagrams.py
    EPS = 1e-3
    DIMS = (2, 8, 32, 128, 512, 1024)
    CONVERGED_BETA = 1.0
    CONFIDENCE = 0.95
    CURVE_BETAS = tuple(round(0.1 + 0.025 * k, 10) for k in range(357))  # 0.1 .. 9.0

    def _sizes(self, mode):
        if _check_mode(mode) == "full":
            return {"betas": [round(0.1 * k, 10) for k in range(1, 91)], "R": 256, "blocks": 4}
        return {"betas": [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], "R": 8, "blocks": 1}

    def grid(self, mode):
        s = self._sizes(mode)
        return [{"kind": self.KIND, "d": d, "beta": b, "n": self.N, "R": s["R"], "T": self.T_END, "dt": self.DT,
                 "scheme": self.SCHEME, "eps": self.EPS} for d in self.DIMS for b in s["betas"]]

    def replicates(self, mode):
        return self._sizes(mode)["blocks"]

    def measure(self, params, seed):
        n, d, reps = params["n"], params["d"], params["R"]
        x0 = initial.uniform_sphere(n, d, rng=np.random.default_rng(seed), replicas=reps)
        y0 = span_coordinates(x0)
        system = systems.attention(params["beta"], params["kind"])
        # strict > 1 - eps, as the script; each inner product is computed only when it may have crossed
        tracker = PairTracker(reps, n, y0.shape[-1], 1.0 - params["eps"], strict=True)
        npairs = n * (n - 1) // 2
        first_all = np.full(reps, np.nan)
        times, pair12, pairs, one = [], [], [], []
        for t, x in _saved_states(system, y0, params["T"], params["dt"], scheme=params["scheme"]):
            count, first_pair, allk = tracker.update(x)  # (m, R) each
            hit = allk.any(axis=0) & np.isnan(first_all)
            first_all[hit] = t[np.argmax(allk[:, hit], axis=0)]
            times += t.tolist()
            pair12 += first_pair.sum(axis=1).tolist()
            pairs += (count.sum(axis=1) / (reps * npairs)).tolist()
            one += allk.sum(axis=1).tolist()
        dropped = tracker.dropped
        return {"t": times, "pair12": pair12, "pairs": pairs, "one_cluster": one,
                "pair12_drops": int(dropped[:, 0].sum()), "pair_drops": int(dropped.sum()),
                "first_one_cluster_time": [None if math.isnan(v) else float(v) for v in first_all],
                "dim_integrated": int(y0.shape[-1])}

    # -- analysis ---------------------------------------------------------------------------------------------
    def aggregate(self, records):
        """Blocks merged per (d, beta): ``{(d, beta): dict(t, m, p_pairs, p12, one, ...)}`` (numpy arrays)."""
        groups: dict = {}
        for r in records:
            groups.setdefault((r.params["d"], r.params["beta"]), []).append(r)
        out = {}
        for key, recs in sorted(groups.items()):
            ms = np.array([r.params["R"] for r in recs], dtype=float)
            m = int(ms.sum())
            t = np.asarray(recs[0].result["t"], dtype=float)
            out[key] = {
                "t": t, "m": m,
                "p_pairs": sum(w * np.asarray(r.result["pairs"]) for w, r in zip(ms, recs)) / m,
                "pair12": sum(np.asarray(r.result["pair12"]) for r in recs),
                "one_cluster": sum(np.asarray(r.result["one_cluster"]) for r in recs),
                "pair12_drops": sum(r.result["pair12_drops"] for r in recs),
                "pair_drops": sum(r.result["pair_drops"] for r in recs),
                "first": [f for r in recs for f in r.result["first_one_cluster_time"]],
            }
        return out

    def curve(self, betas=None, n=None):
        """The equiangular curve: for each beta, the time at which gamma_beta reaches 1 - eps."""
        betas = self.CURVE_BETAS if betas is None else betas
        n = self.N if n is None else n
        return [equiangular_time(self.KIND, b, n, 1.0 - self.EPS) for b in betas]

    def verdicts(self, records, mode):
        agg = self.aggregate(records)
        dims = sorted({d for d, _ in agg})
        n = records[0].params["n"]
        t_end = records[0].params["T"]
        out = []
        curve_t = self.curve(n=n)
        beta_at_horizon = next((b for b, t in zip(self.CURVE_BETAS, curve_t) if t > t_end), None)
        # 1. one cluster by t = T at small beta (d >= 3)
        for d in dims:
            if d < 3:
                continue
            cells = [(b, a) for (dd, b), a in agg.items() if dd == d and b <= self.CONVERGED_BETA]
            if not cells:
                continue
            k = int(sum(a["one_cluster"][-1] for _, a in cells))
            m = int(sum(a["m"] for _, a in cells))
            firsts = [f for _, a in cells for f in a["first"] if f is not None]
            out.append(Verdict(
                study=self.name,
                claim=f"SA, d = {d}, n = {n}, beta <= {self.CONVERGED_BETA:g}: every random initialisation is one "
                      f"cluster by t = {t_end:g} (one-cluster theorem, d >= 3)",
                label="T19", predicted=1.0, measured=k / m, interval=(binomial_lower(k, m, self.CONFIDENCE), 1.0),
                tolerance=None, passed=bool(k == m),
                rule=(f"all {m} initialisations (betas {[b for b, _ in cells]}) have every <x_i, x_j> > "
                      f"1 - {self.EPS:g} at t = {t_end:g} ({step_words(records[0].params)}); interval: one-sided "
                      f"{self.CONFIDENCE:.0%} Clopper-Pearson lower bound of the probability"),
                details={"clustered": k, "initialisations": m,
                         "by_beta": {f"{b:g}": [int(a["one_cluster"][-1]), a["m"]] for b, a in cells},
                         "latest_one_cluster_time": max(firsts) if firsts else None}))
        # 2. where the runs have not converged by T (informational)
        for d in dims:
            cells = sorted((b, a) for (dd, b), a in agg.items() if dd == d)
            frac = [float(a["one_cluster"][-1] / a["m"]) for _, a in cells]
            open_betas = [b for (b, _), f in zip(cells, frac) if f < 1.0]
            converged = [b for (b, _), f in zip(cells, frac) if f == 1.0]
            out.append(Verdict(
                study=self.name,
                claim=f"SA, d = {d}, n = {n}: the smallest beta at which some initialisations are not one cluster by "
                      f"t = {t_end:g} (slow clustering or metastable states; the theorem is asymptotic in t), vs the "
                      f"beta at which the equiangular time reaches {t_end:g} (equiangular tokens need d >= n)",
                label="T19", predicted=float("nan") if beta_at_horizon is None else beta_at_horizon,
                measured=min(open_betas) if open_betas else float("nan"), interval=None, tolerance=None,
                passed=None,
                rule=(f"informational: smallest beta of the grid where the fraction of initialisations with one "
                      f"cluster at t = {t_end:g} is below 1; predicted: the beta with equiangular_time = {t_end:g}"),
                details={"beta": [b for b, _ in cells], "fraction_one_cluster_at_T": frac,
                         "betas_not_all_converged": open_betas,
                         "largest_beta_all_converged": max(converged) if converged else None}))
        # 3. monotone in t within noise (informational)
        worst, where, drops12, drops = 0.0, None, 0, 0
        for (d, b), a in agg.items():
            p = a["p_pairs"]
            drop = float(np.max(np.maximum.accumulate(p) - p))
            p12 = a["pair12"] / a["m"]
            drop12 = float(np.max(np.maximum.accumulate(p12) - p12))
            if drop > worst:
                worst, where = drop, {"d": d, "beta": b, "pair12_largest_drop": drop12,
                                      "pair12_binomial_se_at_0.5": 0.5 / math.sqrt(a["m"])}
            drops12 += a["pair12_drops"]
            drops += a["pair_drops"]
        m_total = sum(a["m"] for a in agg.values())
        out.append(Verdict(
            study=self.name, claim="P(<x_1(t), x_2(t)> > 1 - eps) is non-decreasing in t (within noise)",
            label="T19", predicted=0.0, measured=worst, interval=None, tolerance=None, passed=None,
            rule=("informational: largest decrease max_{s < t} (P(s) - P(t)) of the all-pairs estimate over every "
                  "(d, beta); events: pairs whose indicator falls back to 0 after being 1 at a saved time"),
            details={"largest_drop_at": where, "pair12_declustering_initialisations": drops12,
                     "declustering_pairs": drops, "initialisations": m_total,
                     "pairs_per_initialisation": n * (n - 1) // 2}))
        # 4. equiangular curve vs the empirical transition (informational)
        per_d = {}
        for d in dims:
            cells = sorted((b, a) for (dd, b), a in agg.items() if dd == d)
            bs = [b for b, _ in cells]
            t50 = [_first_crossing(a["t"], a["p_pairs"], 0.5) for _, a in cells]
            teq = self.curve(bs, n)
            ratios = [x / y for x, y in zip(t50, teq) if x is not None and y <= t_end]
            per_d[str(d)] = {"beta": bs, "t50": t50, "t_equiangular": teq,
                             "median_ratio": float(np.median(ratios)) if ratios else None}
        top = per_d[str(dims[-1])]["median_ratio"]
        out.append(Verdict(
            study=self.name,
            claim=f"the equiangular curve gamma_beta(t) = 1 - {self.EPS:g} vs the empirical transition t_50(beta) "
                  "(first t with P >= 1/2)",
            label="T19", predicted=1.0, measured=float("nan") if top is None else top, interval=None,
            tolerance=None, passed=None,
            rule=(f"informational: median over beta (where the curve is below t = {t_end:g}) of t_50 / t_equiangular; "
                  f"measured is that of d = {dims[-1]}"),
            details={"curve": {"beta": list(self.CURVE_BETAS), "t": curve_t}, "per_d": per_d,
                     "beta_where_curve_reaches_T": beta_at_horizon, "step": step_words(records[0].params)}))
        return out
