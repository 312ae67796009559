"""The estimator figures (rfa_snis, estimator_mse, rba_bias): drawn from quick records; what they plot is checked.

Each figure is drawn once per module from the session's quick store. The
plotted numbers in the JSON sidecar are compared with values recomputed
here from the stored records and from :mod:`attention_theory` (the T15
prediction, the closed form T16, the cost formulas), never with the
figure's own helpers; the plotted slopes are compared with the studies'
verdicts and refitted from the plotted points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from attention_theory import bounds
from validation import figures
from validation.figures._base import FigureError, load_inputs
from validation.store import ResultStore
from validation.studies import estimators as est
from validation.study import get_study

FIGS = {"rfa_snis": ("rfa_bias_variance", "ess_vs_proposal_mean"), "estimator_mse": ("estimator_mse",),
        "rba_bias": ("rba_bias", "sa_floor_vs_usa")}


@pytest.fixture(scope="module")
def drawn(quick_store, tmp_path_factory):
    """name -> (store path, [png, pdf, json], sidecar dict), drawn lazily."""
    cache = {}

    def get(name):
        if name not in cache:
            store = quick_store(*FIGS[name])
            out = tmp_path_factory.mktemp(f"fig_{name}")
            paths = figures.draw(name, store, out, mode="quick")
            cache[name] = (store, paths, json.loads(paths[2].read_text()))
        return cache[name]

    return get


def _verdicts(store, study):
    return load_inputs(store, (study,), "quick")[study].verdicts()


def _records(store, study):
    s = get_study(study)
    with ResultStore(store, create=False) as st:
        return st.records(study, s.version)


# --- every figure -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FIGS))
def test_figure_is_registered_with_its_studies(name):
    spec = figures.get_figure(name)
    assert spec.studies == FIGS[name] and spec.title


@pytest.mark.parametrize("name", sorted(FIGS))
def test_draws_png_pdf_and_a_sidecar_with_provenance(drawn, name):
    _, paths, side = drawn(name)
    assert [p.name for p in paths] == [f"{name}.png", f"{name}.pdf", f"{name}.json"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 50_000
    assert paths[1].read_bytes()[:5] == b"%PDF-" and paths[1].stat().st_size > 10_000
    assert side["figure"] == name and side["data"]
    prov = side["provenance"]["studies"]
    assert set(prov) == set(FIGS[name])
    for study in FIGS[name]:
        assert prov[study]["mode"] == "quick" and prov[study]["complete"]
        assert prov[study]["version"] == get_study(study).version and prov[study]["seeds"]


@pytest.mark.parametrize("name", sorted(FIGS))
def test_plotting_code_never_imports_pyplot_nor_measures(name):
    src = Path(figures.__file__).with_name(f"{name}.py").read_text()
    assert "pyplot" not in src and ".measure(" not in src and "run_cells" not in src


def test_a_missing_study_is_a_figure_error(tmp_path):
    empty = tmp_path / "empty.sqlite"
    ResultStore(empty).close()
    with pytest.raises(FigureError, match="no stored results of study"):
        figures.draw("estimator_mse", empty, tmp_path / "out", mode="quick")


# --- rfa_snis ---------------------------------------------------------------------------------------------------
def test_rfa_snis_t15_overlay_is_the_bounds_prediction(drawn):
    _, _, side = drawn("rfa_snis")
    data = side["data"]
    spec = data["sizes"]["rfa_inputs"]
    q, k, v = est.synthetic_qkv(spec["n"], spec["m"], spec["d"], spec["dv"], spec["seed"], spec["t16_max"])
    pr = bounds.rfa_bias_variance(q, k, v, 1, rng=est.PREDICTION_SEED, n_mc=est.PREDICTION_DRAWS)
    c_bias = float(np.linalg.norm(np.ravel(pr.bias)))  # the bias projected on its own direction
    c_var = float(np.sum(pr.variance))
    s = np.asarray(data["bias"]["S"], dtype=float)
    np.testing.assert_allclose(data["bias"]["t15_coefficient"], c_bias, rtol=1e-10)
    np.testing.assert_allclose(data["variance"]["t15_coefficient"], c_var, rtol=1e-10)
    np.testing.assert_allclose(data["bias"]["t15_line"], c_bias / s, rtol=1e-10)
    np.testing.assert_allclose(data["variance"]["t15_line"], c_var / s, rtol=1e-10)


def test_rfa_snis_points_are_the_pooled_records_and_slopes_the_verdicts(drawn):
    store, _, side = drawn("rfa_snis")
    data = side["data"]
    recs = _records(store, "rfa_bias_variance")
    for i, s in enumerate(data["bias"]["S"]):
        mine = [r.result for r in recs if r.params["S"] == s]
        n = np.array([r["n"] for r in mine], dtype=float)
        np.testing.assert_allclose(data["bias"]["value"][i], np.sum(n * [r["proj_mean"] for r in mine]) / n.sum(),
                                   rtol=1e-10)
        np.testing.assert_allclose(data["variance"]["value"][i], np.sum(n * [r["tvar"] for r in mine]) / n.sum(),
                                   rtol=1e-10)
    verdicts = _verdicts(store, "rfa_bias_variance")
    for key, word in (("bias", "RFA bias decays"), ("variance", "RFA variance decays")):
        v = next(v for v in verdicts if word in v.claim)
        panel = data[key]
        assert panel["slope"] == v.measured and panel["slope_interval"] == list(v.interval)
        # the plotted fit line is the least-squares line through the plotted points with S >= FIT_MIN_S
        s = np.asarray(panel["S"], dtype=float)
        keep = s >= panel["fit_min_S"]
        slope = np.polyfit(np.log(s[keep]), np.log(np.asarray(panel["value"])[keep]), 1)[0]
        np.testing.assert_allclose(slope, panel["slope"], rtol=1e-9)
        assert np.all(np.asarray(panel["ci_low"]) < panel["value"]) and np.all(np.asarray(panel["ci_high"]) >
                                                                               panel["value"])


def test_rfa_snis_ess_is_the_closed_form_t16(drawn):
    store, _, side = drawn("rfa_snis")
    ess = side["data"]["ess"]
    spec = side["data"]["sizes"]["ess_inputs"]
    q, k, _ = est.synthetic_qkv(spec["n"], spec["m"], spec["d"], spec["dv"], spec["seed"], spec["t16_max"])
    qn = q[ess["query"]]
    for t, e in zip(ess["closed_form_t"][::10], ess["closed_form_ess"][::10], strict=True):
        np.testing.assert_allclose(e, ess["S"] / bounds.weight_second_moment(qn, k, t * (qn + k.mean(axis=0))),
                                   rtol=1e-10)
    recs = _records(store, "ess_vs_proposal_mean")
    for t, mc in zip(ess["t"], ess["mc_second_moment"], strict=True):
        mine = [r.result for r in recs if r.params["t"] == t]
        n = np.array([r["n"] for r in mine], dtype=float)
        np.testing.assert_allclose(mc, np.sum(n * [r["mean"] for r in mine]) / n.sum(), rtol=1e-10)
    # RFA's proposal (t = 0) has the smallest effective sample size along the segment
    assert ess["ess_mc"][0] < ess["ess_mc"][-1] and ess["closed_form_ess"][0] == min(ess["closed_form_ess"])


# --- estimator_mse ----------------------------------------------------------------------------------------------
def test_estimator_mse_points_are_the_mean_squared_errors_of_the_records(drawn):
    store, _, side = drawn("estimator_mse")
    recs = _records(store, "estimator_mse")
    scales = side["data"]["scales"]
    assert set(scales) == {"small", "medium", "large"}
    n_curves = 0
    for scale, entry in scales.items():
        for variant, curve in entry["curves"].items():
            mine = [r for r in recs if r.params["scale"] == scale and r.params["variant"] == variant]
            calls = np.array([c for r in mine for c in r.result["sq_err"]], dtype=float)
            if variant.endswith("_deterministic"):
                calls = calls[:1]  # one evaluation: the replicates repeat it
            np.testing.assert_allclose(curve["mse"], calls.mean(axis=0), rtol=1e-12)
            assert curve["n_calls"] == calls.shape[0]
            n_curves += 1
    assert n_curves == 3 * 9


def test_estimator_mse_costs_slopes_and_exact_rba(drawn):
    store, _, side = drawn("estimator_mse")
    data = side["data"]
    n, m = data["sizes"]["N"], data["sizes"]["M"]
    verdicts = _verdicts(store, "estimator_mse")
    for scale, entry in data["scales"].items():
        c = entry["curves"]
        sizes = np.asarray(c["rfa_positive"]["sizes"], dtype=float)
        np.testing.assert_allclose(c["rfa_positive"]["cost_per_query"], sizes * (n + m) / n)
        np.testing.assert_allclose(c["randomized_attention"]["cost_per_query"], m * (sizes + 1.0))
        np.testing.assert_allclose(c["random_batch_attention"]["cost_per_query"], sizes)
        assert c["random_batch_attention"]["exact_zero_at"] == [float(n)]
        assert c["random_batch_attention"]["mse"][-1] < 1e-24
        # the RA slope: the verdict's, and the least-squares slope of the plotted MSE (log-log) over all R
        ra = next(v for v in verdicts if v.claim.startswith("RA MSE") and v.details["scale"] == scale)
        assert entry["slopes"]["randomized_attention"]["slope"] == ra.measured
        assert entry["slopes"]["randomized_attention"]["passed"] is True
        slope = np.polyfit(np.log(sizes), np.log(c["randomized_attention"]["mse"]), 1)[0]
        np.testing.assert_allclose(slope, ra.measured, rtol=1e-9)
        for v in verdicts:
            var = v.details.get("variant")
            if v.details.get("scale") == scale and var in entry["slopes"]:
                assert entry["slopes"][var]["slope"] == v.measured
                assert entry["slopes"][var]["passed"] == v.passed


def test_estimator_mse_t15_overlay_is_the_bounds_prediction(drawn):
    _, _, side = drawn("estimator_mse")
    study = get_study("estimator_mse")
    for entry in side["data"]["scales"].values():
        spec = entry["inputs"]
        q, k, v = est.synthetic_qkv(spec["n"], spec["m"], spec["d"], spec["dv"], spec["seed"], spec["t16_max"])
        pr = bounds.rfa_bias_variance(q, k, v, 1, rng=est.PREDICTION_SEED, n_mc=study.T15_DRAWS["quick"])
        c1 = float(np.mean(pr.variance))
        np.testing.assert_allclose(entry["t15"]["coefficient"], c1, rtol=1e-10)
        np.testing.assert_allclose(entry["t15"]["line"], c1 / np.asarray(entry["t15"]["S"]), rtol=1e-10)
        np.testing.assert_allclose(entry["t16_max"], spec["t16_max"], rtol=1e-9)


# --- rba_bias ---------------------------------------------------------------------------------------------------
def test_rba_bias_points_are_the_debiased_rms_bias_of_the_records(drawn):
    store, _, side = drawn("rba_bias")
    data = side["data"]["bias_vs_p"]
    recs = [r for r in _records(store, "rba_bias") if r.params["part"] == "mc"]
    d = data["d"]
    for key, include_self in (("with_self", True), ("without_self", False)):
        panel = data[key]
        for p, plotted, lo, hi in zip(panel["p"], panel["rms_bias"], panel["ci_low"], panel["ci_high"], strict=True):
            chunks = [r.result for r in recs if r.params["p"] == p and r.params["include_self"] == include_self]
            n = np.array([c["n"] for c in chunks], dtype=float)
            means = np.array([c["mean"] for c in chunks])
            mean = (n[:, None] * means).sum(axis=0) / n.sum()
            ss = sum((c["n"] - 1) * np.asarray(c["var"]) + c["n"] * (np.asarray(c["mean"]) - mean) ** 2
                     for c in chunks)
            var = ss / (n.sum() - 1)
            b2 = np.mean((mean**2 - var / n.sum()).reshape(-1, d).sum(axis=1))
            np.testing.assert_allclose(plotted, math.sqrt(max(b2, 0.0)), rtol=1e-9)
            assert lo < plotted < hi
    verdicts = _verdicts(store, "rba_bias")
    for key, tag in (("with_self", "with the token itself"), ("without_self", "without the token itself")):
        v = next(v for v in verdicts if f"({tag}) decreases" in v.claim)
        assert data[key]["slope"] == v.measured and data[key]["slope_interval"] == list(v.interval)
    # THEORY B5 at |x|^2 = 1: much larger with the token itself at every p
    assert all(a > b for a, b in zip(data["with_self"]["rms_bias"], data["without_self"]["rms_bias"], strict=True))


def test_rba_bias_floor_panel_is_the_rms_error_of_the_records(drawn):
    store, _, side = drawn("rba_bias")
    panel = side["data"]["sa_floor"]
    recs = _records(store, "sa_floor_vs_usa")
    verdicts = _verdicts(store, "sa_floor_vs_usa")
    for kind in ("USA", "SA"):
        for p in panel["ps"]:
            curve = panel[kind][str(p)]
            for tau, rms in zip(panel[kind]["tau"], curve["rms_error"], strict=True):
                rec = next(r for r in recs if r.params["kind"] == kind and r.params["tau"] == tau)
                np.testing.assert_allclose(rms, math.sqrt(np.mean(rec.result[str(p)])), rtol=1e-12)
            v = next(v for v in verdicts if f"(p = {p}) integrating {kind} " in v.claim)
            assert curve["slope"] == v.measured and curve["passed"] is True
    floor = next(v for v in verdicts if "SA floor (p = 2)" in v.claim)
    assert panel["floor"]["predicted"] == floor.predicted and panel["floor"]["measured"] == floor.measured
    # the USA error keeps falling, the SA error levels off: the last SA step is flatter than the last USA step
    usa, sa = panel["USA"]["2"]["rms_error"], panel["SA"]["2"]["rms_error"]
    assert usa[-1] / usa[-2] < 0.8 < sa[-1] / sa[-2]


def test_rba_bias_regime_panel_is_the_exact_enumeration(drawn):
    store, _, side = drawn("rba_bias")
    panel = side["data"]["self_ratio"]
    rec = {r.params["radius2"]: r.result for r in _records(store, "rba_bias")
           if r.params["part"] == "exact" and r.params["kind"] == "sphere"}
    for s, ratios in zip(panel["scales"], panel["ratios"], strict=True):
        np.testing.assert_allclose(ratios, np.asarray(rec[s]["rms_with_self"]) / rec[s]["rms_without_self"],
                                   rtol=1e-12)
    assert min(panel["ratios"][0]) > 2.0 and max(panel["ratios"][-1]) < 1.0
