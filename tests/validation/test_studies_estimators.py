"""The attention-estimator studies (validation.studies.estimators): quick verdicts, determinism, controls.

Each study's quick cells are measured once per session (module-scoped
fixture), in-process, with the seeds the runner would use
(:func:`validation.study.cell_seed`); the tests then check that every
verdict passes, that the results and verdicts are JSON-serialisable, that a
cell is reproducible from its seed, and that a deliberately wrong prediction
or a mislabelled input makes the corresponding verdict fail (so the verdicts
have power).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tests._study_helpers import relabel, run_cells
from validation.studies import estimators as est
from validation.studies.estimators import rfa_bias_variance as rfa_study
from validation.study import REGISTRY, cell_seed, get_study

pytestmark = pytest.mark.usefixtures("one_numba_thread")

NAMES = ("rfa_bias_variance", "ra_unbiased", "lara_consistency", "ess_vs_proposal_mean", "rba_bias", "rba_operator",
         "estimator_mse")


def assert_json(obj):
    json.dumps(obj, allow_nan=False)


def verdict_json(v):
    return {"study": v.study, "claim": v.claim, "label": v.label, "predicted": v.predicted, "measured": v.measured,
            "interval": v.interval, "tolerance": v.tolerance, "passed": v.passed, "rule": v.rule,
            "details": v.details}


# --- registration ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_study_is_registered_with_labels_and_grids(name):
    study = get_study(name)
    assert REGISTRY[name] is study
    assert study.title and study.labels and study.version >= 1
    quick, full = study.cells("quick"), study.cells("full")
    assert 0 < len(quick) <= len(full)
    for cell in quick + full:
        assert_json(cell.params)
    with pytest.raises(ValueError, match="mode"):
        study.grid("medium")


def test_synthetic_inputs_have_the_declared_weight_second_moment():
    from attention_theory import bounds

    q, k, v = est.synthetic_qkv(8, 16, 2, 2, seed=3, t16_max=1.7)
    m2 = bounds.weight_second_moment(q, k, np.zeros(2))
    np.testing.assert_allclose(m2.max(), 1.7, rtol=1e-9)
    assert not q.flags.writeable and v.shape == (16, 2)


# --- quick verdicts (one real test per study) ----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_quick_verdicts_pass_and_serialise(name, quick_records):
    study = get_study(name)
    records = quick_records(name)
    for r in records:
        assert_json(r.result)
    verdicts = study.verdicts(records, "quick")
    assert verdicts
    for v in verdicts:
        assert_json(verdict_json(v))
        assert v.study == name and v.label and v.rule
    failed = [(v.claim, v.measured, v.interval) for v in verdicts if v.passed is False]
    assert not failed
    assert sum(v.passed is True for v in verdicts) >= 2


CHEAP_CELL = {
    "rfa_bias_variance": lambda p: p["S"] == 4,
    "ra_unbiased": lambda p: p["estimator"] == "rfa",
    "lara_consistency": lambda p: p["sweep"] == "C" and p["C"] == 2,
    "ess_vs_proposal_mean": lambda p: p["t"] == 0.5,
    "rba_bias": lambda p: p["part"] == "small",
    "rba_operator": lambda p: p["part"] == "cover" and p["N"] == 7 and p["p"] == 2,
    "estimator_mse": lambda p: p["scale"] == "small" and p["variant"] == "rfa_positive",
}


@pytest.mark.parametrize("name", NAMES)
def test_a_cell_is_reproducible_from_its_seed(name):
    study = get_study(name)
    cell = next(c for c in study.cells("quick") if CHEAP_CELL[name](c.params))
    seed = cell_seed(study.name, study.version, cell.params, cell.replicate)
    a, b = study.measure(cell.params, seed), study.measure(cell.params, seed)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    other = cell_seed(study.name, study.version, cell.params, cell.replicate, base_seed=1)
    assert json.dumps(study.measure(cell.params, other), sort_keys=True) != json.dumps(a, sort_keys=True)


# --- rfa_bias_variance ---------------------------------------------------------------------------------------
def test_rfa_measured_numbers_are_first_order(quick_records):
    study = get_study("rfa_bias_variance")
    rows = study.summarise(quick_records("rfa_bias_variance"))
    c_var = rfa_study._rfa_prediction(study.INPUTS).trace_variance
    s = np.array([r["S"] for r in rows])
    np.testing.assert_allclose(np.array([r["tvar"] for r in rows]) * s, c_var, rtol=0.2)
    assert all(r["bias"] > 0 for r in rows)


def test_rfa_wrong_prediction_fails(quick_records, monkeypatch):
    study = get_study("rfa_bias_variance")
    records = quick_records("rfa_bias_variance")
    true = rfa_study._rfa_prediction(study.INPUTS)
    wrong = dataclasses.replace(true, bias=1.6 * true.bias, variance=1.3 * true.variance)
    monkeypatch.setattr(rfa_study, "_rfa_prediction", lambda spec: wrong)
    verdicts = [v for v in study.verdicts(records, "quick") if "matches the first-order" in v.claim]
    assert len(verdicts) == 2 and not any(v.passed for v in verdicts)


def test_rfa_slope_verdict_rejects_a_wrong_order(quick_records):
    study = get_study("rfa_bias_variance")
    records = quick_records("rfa_bias_variance")
    # the same measurements labelled with S^2 instead of S: the slopes halve, and -1 is no longer in reach
    wrong = relabel(records, S=lambda p: p["S"] ** 2)
    slopes = [v for v in study.verdicts(wrong, "quick") if "decays like 1/S" in v.claim]
    assert len(slopes) == 2 and not any(v.passed for v in slopes)


# --- ra_unbiased ---------------------------------------------------------------------------------------------
def test_ra_negative_control_is_a_verdict_and_is_rejected(quick_records):
    study = get_study("ra_unbiased")
    verdicts = study.verdicts(quick_records("ra_unbiased"), "quick")
    control = [v for v in verdicts if "negative control" in v.claim]
    tested = [v for v in verdicts if "estimator under test" in v.claim]
    assert len(control) == 1 and len(tested) == 1
    assert control[0].details["rejected"] and not tested[0].details["rejected"]
    assert control[0].passed and tested[0].passed
    assert abs(control[0].details["max_abs_z"]) > 2 * control[0].tolerance


def test_ra_test_rejects_when_the_estimator_is_shifted(quick_records):
    # a biased variant of RA: the same draws shifted by a small constant (0.01, a few standard errors)
    study = get_study("ra_unbiased")
    recs = [r for r in quick_records("ra_unbiased") if r.params["estimator"] == "randomized_attention"]
    shifted = [dataclasses.replace(r, result={**r.result, "mean": (np.asarray(r.result["mean"]) + 0.01).tolist()})
               for r in recs]
    t = study.test([r.result for r in shifted])
    assert abs(t["z"]) > t["z_crit"]


# --- lara_consistency ----------------------------------------------------------------------------------------
def test_lara_bias_verdict_fails_when_the_bias_grows(quick_records):
    study = get_study("lara_consistency")
    records = quick_records("lara_consistency")
    js = sorted({r.params["J"] for r in records if r.params["sweep"] == "J"})
    flip = dict(zip(js, reversed(js), strict=True))
    wrong = relabel(records, J=lambda p: flip[p["J"]] if p["sweep"] == "J" else p["J"])
    v = next(v for v in study.verdicts(wrong, "quick") if "bias shrinks" in v.claim)
    assert v.passed is False and v.measured > 0


def test_lara_deterministic_mode_is_informational(quick_records):
    study = get_study("lara_consistency")
    v = next(v for v in study.verdicts(quick_records("lara_consistency"), "quick") if "plug-in" in v.claim)
    assert v.passed is None and len(v.details["deterministic_rmse"]) == len(v.details["C"])


# --- ess_vs_proposal_mean ------------------------------------------------------------------------------------
def test_ess_wrong_proposal_mean_fails(quick_records, monkeypatch):
    study = get_study("ess_vs_proposal_mean")
    records = quick_records("ess_vs_proposal_mean")
    true = study.proposal_mean

    def at_zero(params):  # the closed form evaluated at mu = 0 whatever the proposal: a wrong prediction
        qn, k, mu = true(params)
        return qn, k, 0.0 * mu

    monkeypatch.setattr(type(study), "proposal_mean", staticmethod(at_zero))
    verdicts = [v for v in study.verdicts(records, "quick") if v.passed is not None]
    assert verdicts[0].passed  # t = 0: the same prediction
    assert not any(v.passed for v in verdicts[1:])


def test_ess_grows_towards_the_target_mean(quick_records):
    study = get_study("ess_vs_proposal_mean")
    info = next(v for v in study.verdicts(quick_records("ess_vs_proposal_mean"), "quick") if v.passed is None)
    ess = info.details["ess"]
    assert ess[-1] > ess[0] and max(ess) <= study.ESS_S


# --- rba_bias ------------------------------------------------------------------------------------------------
def test_rba_monte_carlo_against_the_wrong_enumeration_fails(quick_records):
    study = get_study("rba_bias")
    records = quick_records("rba_bias")
    # Monte Carlo with the token itself compared with the enumeration without it (and vice versa)
    wrong = relabel(records, include_self=lambda p: (not p["include_self"]) if p["part"] == "small"
                    else p.get("include_self"))
    agree = [v for v in study.verdicts(wrong, "quick") if "agrees with exact enumeration" in v.claim]
    assert len(agree) == 2 and not any(v.passed for v in agree)


def test_rba_regime_dependence_is_reported_with_numbers(quick_records):
    study = get_study("rba_bias")
    verdicts = study.verdicts(quick_records("rba_bias"), "quick")
    small = next(v for v in verdicts if "regime of small scores" in v.claim)
    large = next(v for v in verdicts if "regime of large scores" in v.claim)
    assert small.passed and large.passed
    assert "does not hold" in large.claim
    ratios = dict(zip(small.details["scales_|x|^2"], small.details["ratio_with_over_without"], strict=True))
    assert min(ratios[0.25]) > 2.0 > 1.0 > max(ratios[4.0])
    # the ratio falls with the score scale
    assert np.all(np.diff([np.mean(ratios[s]) for s in sorted(ratios)]) < 0)


def test_rba_decrease_verdict_fails_when_p_is_mislabelled(quick_records):
    study = get_study("rba_bias")
    records = quick_records("rba_bias")
    ps = sorted({r.params["p"] for r in records if r.params["part"] == "mc" and r.params["p"] < study.N_MC})
    flip = dict(zip(ps, reversed(ps), strict=True))
    wrong = relabel(records, p=lambda p: flip.get(p["p"], p["p"]) if p["part"] == "mc" else p.get("p"))
    dec = [v for v in study.verdicts(wrong, "quick") if "decreases as the batch size" in v.claim]
    assert len(dec) == 2 and not any(v.passed for v in dec)


# --- rba_operator --------------------------------------------------------------------------------------------
def _rba_op(records, text):
    return [v for v in get_study("rba_operator").verdicts(records, "quick") if text in v.claim]


def test_rba_operator_coverage_fails_against_the_other_convention(quick_records):
    records = quick_records("rba_operator")
    # the Monte Carlo operator of one convention compared with the other's enumeration
    wrong = [dataclasses.replace(r, result={**r.result, "exact_gap": r.result["other_gap"]})
             if r.params["part"] == "cover" and r.params["N"] == 7 else r for r in records]
    (agree,) = _rba_op(wrong, "agrees with exact enumeration")
    assert agree.passed is False


def test_rba_operator_decrease_fails_when_p_is_mislabelled(quick_records):
    study = get_study("rba_operator")
    records = quick_records("rba_operator")
    ps = sorted({r.params["p"] for r in records if r.params["part"] == "bias_p" and r.params["p"] < study.BIAS_N})
    flip = dict(zip(ps, reversed(ps), strict=True))
    wrong = relabel(records, p=lambda p: flip.get(p["p"], p["p"]) if p["part"] == "bias_p" else p["p"])
    dec = _rba_op(wrong, "decreases as p grows")
    assert len(dec) == 4 and not any(v.passed for v in dec)


def test_rba_operator_scale_regimes_swap_when_the_scales_are_swapped(quick_records):
    study = get_study("rba_operator")
    records = quick_records("rba_operator")
    swap = {study.SMALL_SCALE: study.LARGE_SCALE, study.LARGE_SCALE: study.SMALL_SCALE}
    wrong = relabel(records, radius2=lambda p: swap.get(p.get("radius2"), p.get("radius2")))
    regime = _rba_op(wrong, "B5 ")
    assert len(regime) == 2 and not any(v.passed for v in regime)


def test_rba_operator_batch_sum_test_rejects_the_biased_estimator(quick_records):
    records = quick_records("rba_operator")
    # the normalised RBA's numbers put in the place of the batch sum's
    wrong = [dataclasses.replace(r, result={**r.result, "bias": r.result["rba_bias"], "se": r.result["rba_se"]})
             if r.params["part"] == "sum" else r for r in records]
    (unbiased,) = _rba_op(wrong, "is unbiased under both remainder conventions")
    assert unbiased.passed is False


# --- estimator_mse -------------------------------------------------------------------------------------------
def _mse_verdicts(records, family_claim):
    study = get_study("estimator_mse")
    return [v for v in study.verdicts(records, "quick") if family_claim in v.claim]


def test_estimator_mse_inputs_have_the_declared_weight_second_moment():
    from attention_theory import bounds

    study = get_study("estimator_mse")
    for mode in ("quick", "full"):
        for _, t16 in study.SCALES:
            spec = study.inputs(mode, t16)
            q, k, _ = est.synthetic_qkv(spec["n"], spec["m"], spec["d"], spec["dv"], spec["seed"], spec["t16_max"])
            assert q.shape == k.shape == (spec["n"], study.D)
            np.testing.assert_allclose(bounds.weight_second_moment(q, k, np.zeros(study.D)).max(), t16, rtol=1e-9)


def test_estimator_mse_records_hold_the_squared_error_of_each_call(quick_records):
    import attention_theory as at

    study = get_study("estimator_mse")
    records = quick_records("estimator_mse")
    # the deterministic plug-in, recomputed directly from the library (no randomness involved)
    rec = next(r for r in records
               if r.params["variant"] == "lara_optimal_deterministic" and r.params["scale"] == "large")
    spec = rec.params["inputs"]
    q, k, v = est.synthetic_qkv(spec["n"], spec["m"], spec["d"], spec["dv"], spec["seed"], spec["t16_max"])
    exact = at.softmax_attention(q, k, v)
    expected = [np.mean((at.lara(q, k, v, num_proposals=c, rng=None, mode="deterministic", weights="optimal")
                         - exact) ** 2) for c in rec.params["sizes"]]
    np.testing.assert_allclose(rec.result["sq_err"][0], expected, rtol=1e-12)
    # the summary is the mean over every call of every replicate, with a Student interval around it
    rows = study.summarise(records)
    for (scale, variant), row in rows.items():
        recs = [r for r in records if r.params["scale"] == scale and r.params["variant"] == variant]
        calls = np.array([c for r in recs for c in r.result["sq_err"]], dtype=float)
        if variant.endswith("_deterministic"):
            calls = calls[:1]
        np.testing.assert_allclose(row["mse"], calls.mean(axis=0), rtol=1e-12)
        assert np.all(np.asarray(row["mse_low"]) <= row["mse"]) and np.all(np.asarray(row["mse_high"]) >= row["mse"])
    n = records[0].params["inputs"]["n"]
    assert rows[("small", "rfa_positive")]["cost_per_query"] == [2.0 * s for s in records[0].params["sizes"]]
    assert rows[("small", "randomized_attention")]["cost_per_query"] == [n * (s + 1.0) for s in
                                                                         records[0].params["sizes"]]


def test_estimator_mse_claims_and_information_lines(quick_records):
    study = get_study("estimator_mse")
    verdicts = study.verdicts(quick_records("estimator_mse"), "quick")
    ra = [v for v in verdicts if v.claim.startswith("RA MSE decays")]
    rfa = [v for v in verdicts if "RFA (positive features" in v.claim]
    assert len(ra) == 3 and all(v.passed for v in ra)
    # the RFA rate is a verdict only where T16 is moderate, information elsewhere (1 + 2 scales, 2 variants)
    assert sum(v.passed is True for v in rfa) == 2 and sum(v.passed is None for v in rfa) == 4
    for v in rfa:
        assert (v.passed is None) == (v.details["t16_max_declared"] > study.RFA_RATE_T16)
        assert v.details["t15_first_order_coefficient"] > 0
    assert all(v.passed is None for v in verdicts if "trigonometric" in v.claim or "deterministic" in v.claim)
    zero = next(v for v in verdicts if "p = N equals exact" in v.claim)
    assert zero.passed and zero.measured <= study.ZERO_TOL
    # RFA far from the 1/S regime at the largest T16: the measured slope is much shallower than -1 (reported)
    large = next(v for v in rfa if v.details["scale"] == "large" and v.details["variant"] == "rfa_positive")
    assert large.measured > -0.85


def test_estimator_mse_rates_reject_relabelled_sample_sizes(quick_records):
    records = quick_records("estimator_mse")
    # the same measurements labelled with S^2 (R^2, C^2) instead of S: every slope halves
    wrong = relabel(records, sizes=lambda p: [s * s for s in p["sizes"]])
    ra = _mse_verdicts(wrong, "RA MSE decays")
    rfa = [v for v in _mse_verdicts(wrong, "RFA (positive features") if v.passed is not None]
    assert len(ra) == 3 and len(rfa) == 2
    assert not any(v.passed for v in ra + rfa)
    # sizes in reverse order: the MSE grows with C, and RBA at "p = N" holds the errors of p = 2
    rev = relabel(records, sizes=lambda p: list(reversed(p["sizes"])))
    lara = _mse_verdicts(rev, "self-normalised LARA")
    assert len(lara) == 6 and not any(v.passed for v in lara)
    zero = _mse_verdicts(rev, "p = N equals exact")
    assert len(zero) == 1 and zero[0].passed is False


def test_estimator_mse_ra_rate_rejects_a_biased_estimator(monkeypatch):
    # negative control: randomized attention plus a constant 0.05 (MSE = var/R + 0.0025 levels off), re-measured
    import attention_theory as at

    study = get_study("estimator_mse")
    true = at.randomized_attention
    monkeypatch.setattr(at, "randomized_attention", lambda *a, **kw: true(*a, **kw) + 0.05)
    cells = [c for c in study.cells("quick") if c.params["variant"] == "randomized_attention"]
    ra = _mse_verdicts(run_cells(study, cells=cells), "RA MSE decays")
    assert len(ra) == 3 and not any(v.passed for v in ra)
    assert all(v.measured > -0.8 for v in ra)


# --- slower: another base seed, full-size cheap studies ----------------------------------------------------------
# rba_operator with base seed 12345: its batch-sum family (432 coordinates, Bonferroni at alpha = 0.01) gives
# max |z| = 4.33 against 4.23 at spread p = 5, a false alarm of the declared kind (about a 0.6% event): the same
# cell with 40000 partitions at two other seeds gives max |z| 2.53 and 3.37, and T3 is exact by enumeration
# (tests/attention_theory/test_rba_operator.py). Strict: if it starts passing, the numbers above changed.
_FALSE_ALARM = pytest.mark.xfail(strict=True, reason="a measured false alarm at the declared alpha (see comment)")


@pytest.mark.slow
@pytest.mark.statistical
@pytest.mark.parametrize("name", [pytest.param(n, marks=_FALSE_ALARM) if n == "rba_operator" else n for n in NAMES])
def test_quick_verdicts_pass_with_another_base_seed(name):
    study = get_study(name)
    records = run_cells(study, base_seed=12345)
    failed = [(v.claim, v.measured, v.interval) for v in study.verdicts(records, "quick") if v.passed is False]
    assert not failed


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ra_unbiased", "ess_vs_proposal_mean", "lara_consistency"])
def test_full_verdicts_pass(name):
    study = get_study(name)
    records = run_cells(study, mode="full")
    failed = [(v.claim, v.measured, v.interval) for v in study.verdicts(records, "full") if v.passed is False]
    assert not failed
