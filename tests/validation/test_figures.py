"""The figures framework: registry, reading the store, files and sidecar, failures, the ``figure`` command."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

from tests import _toy_studies as toys
from validation import figures
from validation.__main__ import main
from validation.figures._base import DPI, FigureError
from validation.runner import run_study
from validation.store import ResultStore


@pytest.fixture
def toy_figures(monkeypatch):
    """The toy studies and the toy figures registered for one test, removed afterwards."""
    with toys.installed():
        monkeypatch.setattr(figures, "FIGURES", dict(figures.FIGURES))
        import tests._toy_figures as good

        figures.register(good)  # an import cached by an earlier test does not re-run the module's register
        figures.register("tests._toy_figures_broken")
        yield


@pytest.fixture
def toy_store(tmp_path, toy_figures):
    path = tmp_path / "results.sqlite"
    with ResultStore(path) as store:
        assert run_study("toy_sum", mode="quick", store=store, executor="serial", progress=False).ok
    return path


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_importing_figures_does_not_import_matplotlib():
    code = "import sys, validation.figures; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_builtin_figure_names_registered_studies():
    import validation.studies  # noqa: F401
    from validation.study import REGISTRY

    for spec in figures.FIGURES.values():
        assert spec.studies, spec.name
        unknown = [s for s in spec.studies if s not in REGISTRY]
        assert not unknown, f"figure {spec.name} reads unknown studies {unknown}"


def test_draw_writes_png_pdf_and_sidecar_with_provenance(toy_store, tmp_path):
    out = tmp_path / "figs"
    paths = figures.draw("toy_hist", toy_store, out, mode="quick")
    assert [p.name for p in paths] == ["toy_hist.png", "toy_hist.pdf", "toy_hist.json"]
    assert _png_size(paths[0]) == (4 * DPI, 3 * DPI)  # figsize 4 x 3 inches at the declared resolution
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    side = json.loads(paths[2].read_text())
    with ResultStore(toy_store, create=False) as store:
        recs = store.records("toy_sum", 1)
    # the plotted data are the stored values, in cell order
    assert sorted(side["data"]["x"]) == sorted(r.result["x"] for r in recs)
    prov = side["provenance"]
    st = prov["studies"]["toy_sum"]
    assert st["version"] == 1 and st["mode"] == "quick" and st["complete"]
    assert st["cells_stored"] == st["cells_expected"] == len(recs) == 12
    assert sorted(s for _, _, s in st["seeds"]) == sorted(r.seed for r in recs)
    assert {"numpy", "numba", "matplotlib", "particle-attention"} <= set(prov["versions"])
    assert "git_revision" in prov and prov["incomplete_studies"] == []


def test_incomplete_study_is_drawn_and_flagged(toy_store, tmp_path):
    with ResultStore(toy_store) as store:
        store.conn.execute("DELETE FROM cells WHERE id = (SELECT MAX(id) FROM cells)")
    side = json.loads(figures.draw("toy_hist", toy_store, tmp_path, mode="quick")[2].read_text())
    assert side["provenance"]["incomplete_studies"] == ["toy_sum"]
    assert len(side["data"]["x"]) == 11


def test_missing_study_raises_with_the_command_to_run(tmp_path, toy_figures):
    path = tmp_path / "empty.sqlite"
    ResultStore(path).close()
    with pytest.raises(FigureError, match=r"no stored results of study toy_sum .*python -m validation run toy_sum"):
        figures.draw("toy_hist", path, tmp_path, mode="quick")
    assert not list(tmp_path.glob("toy_hist.*"))


def test_unknown_figure_lists_the_known_ones(tmp_path):
    with pytest.raises(KeyError, match="unknown figure 'nope'; known figures"):
        figures.draw("nope", tmp_path / "x.sqlite", tmp_path)


def test_register_rejects_incomplete_modules_and_name_clashes(toy_figures):
    import types

    bad = types.ModuleType("bad_fig")
    bad.NAME, bad.TITLE = "bad", "no studies, no plot"
    with pytest.raises(TypeError, match="lacks STUDIES, plot"):
        figures.register(bad)
    clash = types.ModuleType("clash_fig")
    clash.NAME, clash.TITLE, clash.STUDIES, clash.plot = "toy_hist", "t", ("toy_sum",), lambda d: None
    with pytest.raises(ValueError, match="already registered"):
        figures.register(clash)


def test_make_figures_goes_on_after_a_failure(toy_store, tmp_path, capsys):
    with pytest.raises(FigureError, match="1 of 2 figures failed"):
        figures.make_figures(toy_store, tmp_path, mode="quick", studies=["toy_sum"])
    assert "toy_broken: ArithmeticError: deliberately broken" in capsys.readouterr().err
    assert (tmp_path / "toy_hist.png").exists()  # the good one was drawn anyway
    # figures whose studies were not run are not attempted
    assert figures.make_figures(toy_store, tmp_path, mode="quick", studies=["toy_many"]) == []


def test_cli_figure_draws_from_store_and_runs_missing_studies(tmp_path, toy_figures, capsys):
    store = tmp_path / "r.sqlite"
    imp = ["--import", "tests._toy_figures"]
    assert main(["figure", "toy_hist", "--store", str(store), "--out", str(tmp_path), *imp]) == 1
    assert "no results store" in capsys.readouterr().err
    assert main(["figure", "toy_hist", "--run", "--quick", "--workers", "0", "--no-progress",
                 "--store", str(store), "--out", str(tmp_path / "o"), *imp]) == 0
    assert (tmp_path / "o" / "toy_hist.json").exists()
    # second time: nothing to compute, drawn from the store alone
    assert main(["figure", "toy_hist", "--store", str(store), "--out", str(tmp_path / "o2"), *imp]) == 0
    a = json.loads((tmp_path / "o" / "toy_hist.json").read_text())["data"]
    b = json.loads((tmp_path / "o2" / "toy_hist.json").read_text())["data"]
    assert a == b
    assert main(["figure", "toy_broken", "--store", str(store), "--out", str(tmp_path), *imp]) == 1
    assert main(["figure", "nope", "--store", str(store), *imp]) == 2
    capsys.readouterr()
    assert main(["figure", "--list", *imp]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert ["toy_hist", "toy_sum"] in listed and ["toy_broken", "toy_sum"] in listed
