"""The cost study (validation.studies.cost): grid, the measurement contract, memory, verdicts.

Wall-clock times are machine measurements: these tests check that they exist,
are positive and are stored with their repeats, never how fast anything is
(speed targets live in benchmarks/). Peak memory (tracemalloc) is
deterministic and is checked structurally.
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from tests._study_helpers import relabel
from validation.studies import cost
from validation.study import REGISTRY, Record, cell_seed, get_study

pytestmark = pytest.mark.usefixtures("one_numba_thread")

STUDY = "cost_scaling"


def verdict_json(v):
    return json.dumps({"study": v.study, "claim": v.claim, "label": v.label, "predicted": v.predicted,
                       "measured": v.measured, "interval": v.interval, "tolerance": v.tolerance, "passed": v.passed,
                       "rule": v.rule, "details": v.details}, allow_nan=False)


def _cell(kind, n, mode="quick"):
    study = get_study(STUDY)
    params = next(p for p in study.grid(mode) if p["kind"] == kind)
    return {**params, "n": n}


# --- registration and grid ------------------------------------------------------------------------------------
def test_study_is_registered_with_labels_and_grids():
    study = get_study(STUDY)
    assert REGISTRY[STUDY] is study
    assert study.title and study.labels
    quick, full = study.cells("quick"), study.cells("full")
    assert 0 < len(quick) < len(full)
    for mode in ("quick", "full"):
        grid = study.grid(mode)
        for p in grid:
            json.dumps(p, allow_nan=False)
            assert p["kind"] in cost.KINDS and p["n"] >= 2 and p["repeats"] >= 3
            assert ("steps" in p) == (cost.KINDS[p["kind"]]["group"] == "particles")
        for kind in cost.KINDS:  # every kind has at least 4 sizes, enough for a fit with an interval
            ns = [p["n"] for p in grid if p["kind"] == kind]
            assert len(ns) >= 4 and ns == sorted(set(ns))
    assert max(p["n"] for p in study.grid("full")) > max(p["n"] for p in study.grid("quick"))
    with pytest.raises(ValueError, match="mode"):
        study.cells("medium")


def test_kinds_declare_expected_exponents_and_the_library_costs():
    assert {k: v["time_exponent"] for k, v in cost.KINDS.items()} == {
        "exact": 2.0, "rba": 1.0, "lara": 1.0, "rfa": 1.0, "full": 2.0, "rbm1": 1.0}
    assert cost.KINDS["exact"]["memory_exponent"] == 2.0
    assert all(v["memory_exponent"] == 1.0 for k, v in cost.KINDS.items() if k != "exact")
    # the declared costs are read from the library, and say the same thing
    assert "N M" in cost.KINDS["exact"]["declared_time"]
    assert "N^2" in cost.KINDS["full"]["declared_time"]
    for kind in ("rba", "rbm1"):
        assert "N p" in cost.KINDS[kind]["declared_time"]


# --- helpers ------------------------------------------------------------------------------------------------------
def test_traced_peak_bytes_sees_numpy_allocations_and_keeps_an_outer_trace():
    peak, out = cost.traced_peak_bytes(lambda: np.ones(1 << 20))
    assert out.shape == (1 << 20,)
    assert 8 * (1 << 20) <= peak < 9 * (1 << 20)
    assert not tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        peak2, _ = cost.traced_peak_bytes(lambda: np.ones(1 << 18))
        assert tracemalloc.is_tracing()  # an outer trace is left running
    finally:
        tracemalloc.stop()
    assert 2 * (1 << 20) <= peak2 < 3 * (1 << 20)


def test_numba_allocations_check_returns_a_bool():
    assert cost.numba_allocations_traced() in (True, False)


def test_single_thread_sets_and_restores_thread_counts():
    import numba

    numba.set_num_threads(1)  # the module fixture's setting; raise it when the machine has more
    most = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(most)
    try:
        with cost.single_thread() as threads:
            assert threads["numba"] == 1 == numba.get_num_threads()
            assert threads["blas"] is None or set(threads["blas"].values()) == {1}
        assert numba.get_num_threads() == most
    finally:
        numba.set_num_threads(1)


def test_host_info_is_json_and_names_the_cpu():
    info = cost.host_info()
    json.dumps(info, allow_nan=False)
    assert info["cpu"] and info["logical_cpus"] >= 1


# --- measure ---------------------------------------------------------------------------------------------------
def test_measure_contract_on_the_quick_cells(quick_records):
    recs = quick_records(STUDY)
    study = get_study(STUDY)
    assert len(recs) == len(study.cells("quick"))
    for r in recs:
        res = r.result
        json.dumps(res, allow_nan=False)
        assert len(res["seconds_all"]) == r.params["repeats"]
        assert all(t > 0 for t in res["seconds_all"]) and res["seconds"] == min(res["seconds_all"])
        assert len(res["cpu_seconds_all"]) == r.params["repeats"]
        assert all(t >= 0 for t in res["cpu_seconds_all"]) and res["cpu_seconds"] == min(res["cpu_seconds_all"])
        assert res["first_call_seconds"] > 0 and res["cpu_per_wall"] > 0
        assert res["unit"] == ("call" if cost.KINDS[r.params["kind"]]["group"] == "attention" else "step")
        assert res["steps_per_call"] == r.params.get("steps", 1)
        assert res["peak_bytes"] > 0 and res["threads"]["numba"] == 1
        assert res["machine"]["cpu"] and "load_average_start" in res["machine"]
        if res["numba_allocations_traced"] or cost.KINDS[r.params["kind"]]["group"] == "attention":
            # the output is allocated inside the call and counted; the inputs are not
            assert res["peak_bytes"] >= res["output_bytes"]


def test_exact_softmax_memory_grows_like_n_squared(quick_records):
    recs = sorted((r for r in quick_records(STUDY) if r.params["kind"] == "exact"), key=lambda r: r.params["n"])
    ns = np.array([r.params["n"] for r in recs], dtype=float)
    peak = np.array([r.result["peak_bytes"] for r in recs], dtype=float)
    # at least the N x N float64 scores are held at once (unchunked), and not much more than a few copies
    assert np.all(peak >= 8 * ns**2)
    assert np.all(peak <= 4 * 8 * ns**2 + 8 * 64 * ns * 4)
    ratios = peak[1:] / peak[:-1]  # doubling N: 4 for a pure N^2, a bit less with the O(N) output
    assert np.all((ratios > 3.0) & (ratios < 4.5))
    # the linear estimators: doubling N at most about doubles their peak
    for kind in ("rba", "lara", "rfa"):
        rs = sorted((r for r in quick_records(STUDY) if r.params["kind"] == kind), key=lambda r: r.params["n"])
        pk = np.array([r.result["peak_bytes"] for r in rs], dtype=float)
        assert np.all(pk[1:] / pk[:-1] < 2.3), kind


def test_peak_memory_is_deterministic_and_inputs_follow_the_seed():
    study = get_study(STUDY)
    params = _cell("exact", 128)
    seed = cell_seed(STUDY, study.version, params, 0)
    a, b = study.measure(params, seed), study.measure(params, seed)
    assert a["peak_bytes"] == pytest.approx(b["peak_bytes"], rel=0.01)
    assert a["max_scores"] == 128 * 128 and a["output_bytes"] == 128 * cost.DV_ATTN * 8
    call1, _, _ = cost._attention_call("rfa", 64, seed)
    call2, _, _ = cost._attention_call("rfa", 64, seed)
    np.testing.assert_array_equal(call1(), call2())  # same seed, same inputs and features


def test_measure_particle_step_records_time_per_step():
    study = get_study(STUDY)
    params = {**_cell("rbm1", 256), "steps": 4}
    res = study.measure(params, 11)
    assert res["unit"] == "step" and res["steps_per_call"] == 4
    assert res["peak_bytes"] >= res["output_bytes"] == 2 * 256 * cost.D_PART * 8


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind"):
        get_study(STUDY).measure({"kind": "nope", "n": 8, "repeats": 3}, 0)


# --- verdicts ---------------------------------------------------------------------------------------------------
def test_verdicts_shape_time_informational_memory_checked(quick_records):
    study = get_study(STUDY)
    verdicts = study.verdicts(quick_records(STUDY), "quick")
    assert len(verdicts) == 2 * len(cost.KINDS)
    for v in verdicts:
        verdict_json(v)
        kind = v.details["kind"]
        lo, hi = v.interval
        assert lo <= v.measured <= hi
        if v.claim.startswith("time exponent"):
            assert v.passed is None and v.tolerance is None  # never fails on a noisy timing
            assert v.predicted == cost.KINDS[kind]["time_exponent"]
            assert "benchmarks" in v.rule
            assert v.details["n"] == sorted(v.details["n"]) and len(v.details["cpu_seconds"]) == len(v.details["n"])
            assert v.details["cpu_fit"] is None or v.details["cpu_fit"]["n_levels"] == len(v.details["n"])
        else:
            assert v.claim.startswith("peak-memory exponent")
            assert v.predicted == cost.KINDS[kind]["memory_exponent"]
            assert v.passed is True, (v.claim, v.measured)
    assert {v.details["kind"] for v in verdicts} == set(cost.KINDS)


def test_memory_verdict_fails_on_a_quadratic_method_labelled_linear(quick_records):
    # negative control: the exact softmax's records presented as RBA must fail the linear-memory rule
    exact = [r for r in quick_records(STUDY) if r.params["kind"] == "exact"]
    fake = relabel(exact, kind=lambda p: "rba")
    verdicts = get_study(STUDY).verdicts(fake, "quick")
    mem = [v for v in verdicts if v.claim.startswith("peak-memory")]
    assert len(mem) == 1 and mem[0].details["kind"] == "rba" and mem[0].passed is False


def test_kinds_with_fewer_than_three_sizes_get_no_verdict(quick_records):
    recs = [r for r in quick_records(STUDY) if r.params["kind"] in ("rba", "full")]
    recs = [r for r in recs if r.params["kind"] == "rba" or r.params["n"] <= 512]
    verdicts = get_study(STUDY).verdicts(recs, "quick")
    assert {v.details["kind"] for v in verdicts} == {"rba"}
    assert get_study(STUDY).verdicts([], "quick") == []


def test_series_sorts_by_n():
    recs = [Record({"kind": "rfa", "n": n, "repeats": 3}, 0, 0,
                   {"seconds": 1.0 / n, "seconds_all": [1.0 / n] * 3, "cpu_seconds": 0.5 / n, "peak_bytes": n,
                    "cpu_per_wall": 0.5, "unit": "call"}) for n in (64, 16, 32)]
    s = cost.CostScalingStudy.series(recs)
    assert list(s) == ["rfa"] and s["rfa"]["n"] == [16, 32, 64] and s["rfa"]["peak_bytes"] == [16, 32, 64]
    assert s["rfa"]["cpu_seconds"] == [0.5 / 16, 0.5 / 32, 0.5 / 64]
