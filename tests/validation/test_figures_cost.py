"""The cost figure (validation.figures.cost): drawn from quick records, data and provenance in the sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from validation import figures
from validation.figures._base import load_inputs
from validation.store import ResultStore

STUDY = "cost_scaling"


@pytest.fixture(scope="module")
def drawn(quick_store, tmp_path_factory):
    store = quick_store(STUDY)
    out = tmp_path_factory.mktemp("fig_cost")
    paths = figures.draw("cost", store, out, mode="quick")
    return store, paths


def test_figure_is_registered():
    spec = figures.get_figure("cost")
    assert spec.studies == (STUDY,) and spec.title


def test_draws_png_pdf_and_sidecar(drawn):
    _, paths = drawn
    assert [p.name for p in paths] == ["cost.png", "cost.pdf", "cost.json"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 20_000
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_sidecar_holds_the_stored_data_and_provenance(drawn):
    store, paths = drawn
    side = json.loads(paths[2].read_text())
    data = side["data"]
    assert data["mode"] == "quick" and "logical CPUs" in data["machine"] and "Numba 1" in data["machine"]
    with ResultStore(store, create=False) as st:
        from validation.study import get_study

        study = get_study(STUDY)
        recs = st.records(STUDY, study.version)
    kinds = data["kinds"]
    assert set(kinds) == {"exact", "rba", "lara", "rfa", "full", "rbm1"}
    for kind, k in kinds.items():
        mine = sorted((r for r in recs if r.params["kind"] == kind), key=lambda r: r.params["n"])
        assert k["n"] == [r.params["n"] for r in mine]
        assert k["seconds"] == [r.result["seconds"] for r in mine]
        assert k["peak_bytes"] == [r.result["peak_bytes"] for r in mine]
    prov = side["provenance"]["studies"][STUDY]
    assert prov["mode"] == "quick" and prov["complete"] and prov["cells_stored"] == len(recs)


def test_plotted_exponents_equal_the_verdicts(drawn):
    store, paths = drawn
    kinds = json.loads(paths[2].read_text())["data"]["kinds"]
    verdicts = load_inputs(store, (STUDY,), "quick")[STUDY].verdicts()
    assert len(verdicts) == 2 * len(kinds)
    for v in verdicts:
        what = "time_exponent" if v.claim.startswith("time") else "memory_exponent"
        plotted = kinds[v.details["kind"]][what]
        assert plotted["measured"] == v.measured and plotted["interval"] == list(v.interval)
        assert plotted["predicted"] == v.predicted
        if what == "time_exponent":
            cpu = v.details["cpu_fit"]
            assert plotted["cpu_time_exponent"] == (None if cpu is None else cpu["slope"])


def test_plotting_code_never_imports_pyplot_nor_measures():
    src = Path(figures.__file__).with_name("cost.py").read_text()
    assert "pyplot" not in src and "measure(" not in src and "perf_counter" not in src


def test_the_dense_score_line_is_eight_bytes_per_score_at_rba_sizes(drawn):
    store, paths = drawn
    data = json.loads(paths[2].read_text())["data"]
    dense, rba = data["dense_scores"], data["kinds"]["rba"]
    assert dense["n"] == rba["n"]
    assert dense["bytes"] == [8 * n * n for n in rba["n"]]  # float64 N x N, computed by hand here
    # the memory argument: the dense matrix is above what RBA took at the same N, by a factor growing with N
    ratio = [b / p for b, p in zip(dense["bytes"], rba["peak_bytes"], strict=True)]
    assert min(ratio) > 10 and all(a < b for a, b in zip(ratio, ratio[1:], strict=False))
