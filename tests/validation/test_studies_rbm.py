"""The Random Batch Method studies (validation/studies/rbm.py).

Three tiers of checks per study:

- verdict logic on synthetic records (no simulation): a record set built to
  obey the declared law passes, one built to violate it fails;
- one real cell: ``measure`` is deterministic for a given seed, depends on
  the seed, and returns strict JSON (no NaN, no NumPy scalars);
- the whole quick study, in-process (every quick cell measured with its
  :func:`validation.study.cell_seed`): every verdict passes, predictions equal
  the declarations, and a wrong declaration (monkeypatched) makes the verdict
  fail (negative control). The quick records are computed once per module.

The quick studies make statistical decisions at the false-alarm rates
documented in the study classes; their seeds are fixed, so the outcome is
reproducible.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from particles import integrators
from tests._study_helpers import quick_records_of
from validation.studies import rbm
from validation.study import REGISTRY, Record, Verdict, canonical, get_study

NAMES = ["rbm_strong_order", "rbm_batch_size", "rbm_particle_number", "rbm_uniform_in_time", "rbm_weak_order",
         "rbmr_order", "batch_force_lemma", "dyson_semicircle"]


def quick_records(name):
    """The quick records of a study, measured once per test session (shared with the figure tests)."""
    return quick_records_of(name)


def _strict_json(obj):
    return json.dumps(obj, sort_keys=True, allow_nan=False)


def _verdict_json(v: Verdict):
    d = dataclasses.asdict(v)
    if d["measured"] is not None and isinstance(d["measured"], float) and math.isnan(d["measured"]):
        assert v.passed is None, "only informational verdicts may have no measurement"
        d["measured"] = None
    return json.dumps(d, allow_nan=False)


# --------------------------------------------------------------------------- registry and grids


def test_all_rbm_studies_are_registered_with_quick_and_full_sizes():
    for name in NAMES:
        study = get_study(name)
        assert REGISTRY[name] is study
        assert study.title and study.labels and study.version >= 1
        assert set(study.labels) <= {"T1", "T2", "T3", "T4", "T5", "T6"}
        for mode in ("quick", "full"):
            cells = study.cells(mode)
            assert cells
            for c in cells:
                assert json.loads(canonical(c.params)) == c.params
        assert len(study.cells("full")) >= len(study.cells("quick"))


# --------------------------------------------------------------------------- formulas


def test_semicircle_cdf_is_the_integral_of_the_density():
    dens = lambda x: math.sqrt(2 - x * x) / math.pi  # noqa: E731
    for x in (-1.3, -0.5, 0.0, 0.2, 1.0, 1.41):
        val, _ = integrate.quad(dens, -math.sqrt(2), x)
        assert rbm.semicircle_cdf(x) == pytest.approx(val, abs=1e-10)
    assert rbm.semicircle_cdf(-3.0) == 0.0 and rbm.semicircle_cdf(3.0) == 1.0


def test_kolmogorov_distance_matches_scipy():
    x = np.random.default_rng(3).uniform(-1.2, 1.2, size=500)
    expected = stats.kstest(x, rbm.semicircle_cdf).statistic
    assert rbm.kolmogorov_distance(x) == pytest.approx(expected, rel=1e-12)


def test_dyson_identity_continuous_limit_is_one_half():
    for n in (2, 16, 1000):
        assert rbm.dyson_stationary_second_moment(n) == pytest.approx(0.5, abs=1e-15)
    # Euler, eps = 0, full system with B -> its continuous value: the dt correction is O(dt)
    n, dt = 64, 1e-3
    a = (n - 1) / (2 * n)
    assert rbm.dyson_stationary_second_moment(n, dt, a, 0.5) == pytest.approx(0.5, abs=2 * dt)
    with pytest.raises(ValueError, match="force_sq"):
        rbm.dyson_stationary_second_moment(n, dt)


# --------------------------------------------------------------------------- synthetic records


def _noise(gen, shape, k=20.0):
    """Multiplicative noise with mean 1 (a scaled chi-square), like a mean of squared errors."""
    return gen.gamma(k, 1.0 / k, size=shape)


def _synthetic(study, make, mode="quick"):
    """Records for the cells of ``study`` with results ``make(params, replicate, gen)``."""
    gen = np.random.default_rng(1)
    return [Record(c.params, c.replicate, 0, make(c.params, c.replicate, gen)) for c in study.cells(mode)]


def _passed(verdicts):
    return [v.passed for v in verdicts if v.passed is not None]


@pytest.mark.parametrize(("order", "ok"), [(0.5, True), (0.9, False)])
def test_strong_order_verdict_logic(order, ok):
    st = get_study("rbm_strong_order")

    def make(params, rep, gen):
        t = np.asarray(params["taus"])
        return {"sq_errors": {str(p): (0.01 / (p - 1) * t ** (2 * order) * _noise(gen, (params["R"], t.size)))
                              .tolist() for p in params["ps"]}}

    res = _passed(st.verdicts(_synthetic(st, make), "quick"))
    assert len(res) == 3 and all(r is ok for r in res)


@pytest.mark.parametrize(("exponent", "ok"), [(-0.5, True), (-1.0, False)])
def test_batch_size_verdict_logic(exponent, ok):
    st = get_study("rbm_batch_size")

    def make(params, rep, gen):
        p = np.asarray(params["ps"]) - 1.0
        return {"sq_errors": (1e-4 * p ** (2 * exponent) * _noise(gen, (params["R"], p.size))).tolist()}

    vs = st.verdicts(_synthetic(st, make), "quick")
    assert _passed(vs) == [ok]
    params = st.grid("quick")[0]
    factor = [integrators.batch_variance_factor(params["N"], p) for p in params["ps"]]
    expected = np.polyfit(np.log(np.asarray(params["ps"]) - 1.0), 0.5 * np.log(factor), 1)[0]
    assert vs[1].passed is None and vs[1].predicted == pytest.approx(expected)


@pytest.mark.parametrize(("power", "ok"), [(0.0, True), (0.4, False)])
def test_particle_number_verdict_logic(power, ok):
    st = get_study("rbm_particle_number")

    def make(params, rep, gen):
        return {"sq_errors": (2e-4 * params["N"] ** (2 * power) * _noise(gen, params["R"])).tolist()}

    assert _passed(st.verdicts(_synthetic(st, make), "quick")) == [ok]


@pytest.mark.parametrize(("power", "ok"), [(0.0, True), (-0.5, True), (0.5, False)])
def test_uniform_in_time_verdict_logic(power, ok):
    """No growth passes, a decaying error passes (ratio clause), a growing one fails."""
    st = get_study("rbm_uniform_in_time")

    def make(params, rep, gen):
        t = np.asarray(params["times"], dtype=float)
        return {"sq_errors": (2e-4 * t ** (2 * power) * _noise(gen, (params["R"], t.size))).tolist()}

    assert _passed(st.verdicts(_synthetic(st, make), "quick")) == [ok]


@pytest.mark.parametrize(("order", "scale", "expected"), [(1.0, 0.02, True), (2.0, 0.3, False), (1.0, 2e-4, None)])
def test_weak_order_verdict_logic(order, scale, expected):
    """Resolved O(tau) passes, O(tau^2) fails, an unresolved signal is informational in quick mode."""
    st = get_study("rbm_weak_order")

    def make(params, rep, gen):
        t = np.asarray(params["taus"])
        d = scale * t**order + 0.005 * np.sqrt(t) * gen.standard_normal((params["R"], t.size))
        out = {"n": params["R"], "strong_msq": (0.01 * t).tolist()}
        for phi in ("x2", "cos"):
            out[f"sum_{phi}"] = d.sum(axis=0).tolist()
            out[f"outer_{phi}"] = (d.T @ d).tolist()
        return out

    vs = st.verdicts(_synthetic(st, make), "quick")
    main = [v for v in vs if "cos" not in v.claim]
    assert len(main) == 1 and main[0].passed is expected
    if expected is None:
        assert "NOT resolved" in main[0].claim
        full = [v for v in st.verdicts(_synthetic(st, make, "full"), "full") if "cos" not in v.claim]
        assert len(full) == 1 and full[0].passed is False and "NOT resolved" in full[0].claim


@pytest.mark.parametrize(("noisy_order", "ok"), [(0.25, True), (0.05, False)])
def test_rbmr_verdict_logic(noisy_order, ok):
    st = get_study("rbmr_order")

    def make(params, rep, gen):
        t = np.asarray(params["taus"])
        q = noisy_order if params["sigma"] > 0 else 0.5
        sq = 0.3 * t ** (2 * q) * _noise(gen, (params["R"], t.size))
        return {"sq_coupled": sq.tolist(), "sq_sorted": (0.5 * sq).tolist()}

    assert _passed(st.verdicts(_synthetic(st, make), "quick")) == [ok, True]


@pytest.mark.parametrize(("bias", "ok"), [(0.0, True), (0.2, False)])
def test_batch_force_lemma_verdict_logic(bias, ok):
    st = get_study("batch_force_lemma")
    lam = 0.1

    def make(params, rep, gen):
        n, d, R = params["N"], params["d"], 2000
        predicted = integrators.batch_variance_factor(n, params["p"]) * lam
        out = {"n": R, "lambda_mean": lam}
        for name, shift in (("chi", bias), ("control", 1.0)):
            c = gen.standard_normal((R, n, d)) * math.sqrt(predicted / d) + shift
            s = np.mean(np.sum(c**2, axis=2), axis=1)
            out.update({f"{name}_sum": c.sum(axis=0).tolist(), f"{name}_sumsq": (c**2).sum(axis=0).tolist(),
                        f"{name}_S_sum": float(s.sum()), f"{name}_S_sumsq": float((s**2).sum())})
        return out

    vs = st.verdicts(_synthetic(st, make), "quick")
    assert len(vs) == len(st.grid("quick")) + 2
    mean_zero, control = vs[-2], vs[-1]
    assert mean_zero.passed is ok and control.passed is True
    assert all(v.passed is ok for v in vs[:-2])


@pytest.mark.parametrize(("ks_power", "ok"), [(-1.0, True), (0.0, False)])
def test_dyson_verdict_logic(ks_power, ok):
    st = get_study("dyson_semicircle")

    def make(params, rep, gen):
        n, R = params["N"], params["R"]
        coarse = params["regime"] == "coarse_dt"
        ks = (0.04 if coarse else 0.3 * n**ks_power) * _noise(gen, R)
        A = np.full(R, (n - 1) / (2 * n))
        B = np.full(R, 1.0)
        m2 = np.array([rbm.dyson_stationary_second_moment(n, params["dt"], a, b) for a, b in zip(A, B)])
        m2 = m2 + 0.01 / n * gen.standard_normal(R)
        return {"ks_replica": ks.tolist(), "ks_block": float(ks.mean()), "m2": m2.tolist(), "A": A.tolist(),
                "B": B.tolist(), "saves_used": 10, "finite": True, "t": [0.0, 1.0], "ks_t": [0.1, 0.01],
                "m2_t": [0.5, 0.5]}

    vs = st.verdicts(_synthetic(st, make), "quick")
    decreasing = [v for v in vs if "decreases with N" in v.claim]
    assert len(decreasing) == 2 and all(v.passed is ok for v in decreasing)
    others = [v for v in vs if v not in decreasing and v.passed is not None]
    assert others and all(v.passed for v in others if "below threshold" not in v.claim)


# --------------------------------------------------------------------------- whole quick studies


@pytest.mark.statistical
@pytest.mark.parametrize("name", NAMES)
def test_quick_study_verdicts_pass(name):
    st = get_study(name)
    records = quick_records(name)
    for r in records:
        _strict_json(r.result)
    verdicts = st.verdicts(records, "quick")
    assert verdicts
    for v in verdicts:
        assert isinstance(v, Verdict) and v.study == name
        assert v.passed is not False, f"{v.claim}: measured {v.measured} {v.interval}, rule: {v.rule}"
        _verdict_json(v)
    assert any(v.passed for v in verdicts)


def _with(monkeypatch, **changes):
    monkeypatch.setattr(integrators, "RBM1", dataclasses.replace(integrators.RBM1, **changes))


@pytest.mark.statistical
def test_strong_order_reads_the_declaration(monkeypatch):
    st = get_study("rbm_strong_order")
    records = quick_records(st.name)
    vs = st.verdicts(records, "quick")
    assert [v.predicted for v in vs] == [integrators.RBM1.strong_order] * 3
    _with(monkeypatch, strong_order=1.0)
    bad = st.verdicts(records, "quick")
    assert [v.predicted for v in bad] == [1.0] * 3 and not any(v.passed for v in bad)


@pytest.mark.statistical
def test_batch_size_reads_the_declaration(monkeypatch):
    st = get_study("rbm_batch_size")
    records = quick_records(st.name)
    assert st.verdicts(records, "quick")[0].predicted == integrators.RBM1.batch_exponent
    _with(monkeypatch, batch_exponent=-1.0)
    assert st.verdicts(records, "quick")[0].passed is False


@pytest.mark.statistical
def test_particle_number_and_time_read_the_declaration(monkeypatch):
    for name in ("rbm_particle_number", "rbm_uniform_in_time"):
        st = get_study(name)
        records = quick_records(name)
        assert st.verdicts(records, "quick")[0].predicted == 0.0
    _with(monkeypatch, n_uniform=False, time_uniform=False)
    for name in ("rbm_particle_number", "rbm_uniform_in_time"):
        v = get_study(name).verdicts(quick_records(name), "quick")[0]
        assert v.passed is None and "no claim" in v.predicted


@pytest.mark.statistical
def test_weak_order_reads_the_declaration(monkeypatch):
    st = get_study("rbm_weak_order")
    records = quick_records(st.name)
    v = st.verdicts(records, "quick")[0]
    assert v.predicted == integrators.RBM1.weak_order and v.details["resolved"]
    _with(monkeypatch, weak_order=2.0)
    assert st.verdicts(records, "quick")[0].passed is False


@pytest.mark.statistical
def test_rbmr_reads_the_declaration(monkeypatch):
    st = get_study("rbmr_order")
    records = quick_records(st.name)
    main = [v for v in st.verdicts(records, "quick") if v.passed is not None]
    assert [v.predicted for v in main] == [integrators.RBMR.w2_order_noisy, integrators.RBMR.w2_order_deterministic]
    monkeypatch.setattr(integrators, "RBMR", dataclasses.replace(integrators.RBMR, w2_order_noisy=0.5,
                                                                  w2_order_deterministic=1.0))
    assert [v.passed for v in st.verdicts(records, "quick") if v.passed is not None] == [False, False]


@pytest.mark.statistical
def test_batch_force_lemma_rejects_the_factor_without_finite_population_correction(monkeypatch):
    st = get_study("batch_force_lemma")
    records = quick_records(st.name)
    vs = st.verdicts(records, "quick")
    p, n = vs[0].details["p"], vs[0].details["N"]
    assert vs[0].predicted == pytest.approx(integrators.batch_variance_factor(n, p) * vs[0].details["lambda_mean"])
    monkeypatch.setattr(integrators, "batch_variance_factor", lambda n, p: 1.0 / (p - 1))
    bad = st.verdicts(records, "quick")
    assert not any(v.passed for v in bad if v.claim.startswith("E|chi_i|^2"))


def test_dyson_stores_histograms_of_the_saved_states():
    """The per-time histograms (for the figures) count the block's particles, and their second moment agrees
    with the stored m2(t) of the same states up to the binning (bins of width 0.1)."""
    st = get_study("dyson_semicircle")
    for rec in quick_records(st.name):
        res, n, R = rec.result, rec.params["N"], rec.params["R"]
        edges = np.asarray(res["hist_edges"])
        counts = np.asarray(res["hist_counts"])
        np.testing.assert_allclose(edges, np.linspace(-st.HIST_RANGE, st.HIST_RANGE, st.HIST_BINS + 1))
        assert counts.shape == (len(res["t"]), st.HIST_BINS) and counts.dtype.kind == "i" and counts.min() >= 0
        assert res["hist_n"] == n * R
        inside = counts.sum(axis=1) / res["hist_n"]
        assert np.all(inside <= 1) and np.all(inside[np.asarray(res["t"]) >= 1.0] > 0.995)
        mid = 0.5 * (edges[1:] + edges[:-1])
        m2_hist = counts @ mid**2 / counts.sum(axis=1)
        late = np.asarray(res["t"]) >= 1.0
        np.testing.assert_allclose(m2_hist[late], np.asarray(res["m2_t"])[late], atol=0.03)


@pytest.mark.statistical
def test_dyson_reads_the_identity(monkeypatch):
    st = get_study("dyson_semicircle")
    records = quick_records(st.name)
    m2 = [v for v in st.verdicts(records, "quick") if "= 1/2" in v.claim]
    assert len(m2) == 2 and all(v.predicted == rbm.dyson_stationary_second_moment(64) for v in m2)
    true_law = rbm.dyson_stationary_second_moment
    # the study reads the law where its module looks it up (imported from attention_theory.bounds.ips)
    monkeypatch.setattr(rbm.dyson, "dyson_stationary_second_moment", lambda n, *a: true_law(n, *a) + 0.05)
    bad = [v for v in st.verdicts(records, "quick")
           if v.passed is not None and ("= 1/2" in v.claim or "identity" in v.claim)]
    assert len(bad) == 3 and not any(v.passed for v in bad)


# --------------------------------------------------------------------------- one real cell


@pytest.mark.parametrize("name", NAMES)
def test_measure_is_deterministic_and_seed_dependent(name):
    """A stored quick cell, measured again from its seed, is bitwise identical; other blocks differ."""
    st = get_study(name)
    records = quick_records(name)
    rec = min(records, key=lambda r: (r.params.get("N", 0) * r.params.get("R", 1), r.replicate))
    again = st.measure(rec.params, rec.seed)
    assert _strict_json(again) == _strict_json(rec.result)
    sibling = next(r for r in records if r.params == rec.params and r.replicate != rec.replicate)
    assert sibling.seed != rec.seed and _strict_json(sibling.result) != _strict_json(rec.result)
