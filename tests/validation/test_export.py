"""Data out: ``validation.store.load_records / records_table / records_frame / export_records`` and the
``export`` command (CSV, JSON lines, Parquet), checked against the records as stored."""

from __future__ import annotations

import csv
import io
import json
import math
import sys

import numpy as np
import pytest

from tests import _toy_studies as toys
from validation.__main__ import main
from validation.runner import run_study
from validation.store import ResultStore, export_records, load_records, records_frame, records_table
from validation.study import Record, cell_seed

toys.uninstall()  # registered on import (for worker processes); the tests install them one at a time


@pytest.fixture
def toy():
    with toys.installed() as studies:
        yield studies


@pytest.fixture
def store(toy, tmp_path):
    """toy_sum: the quick cells as computed, plus one full-only cell with a nested dict and a NaN."""
    path = tmp_path / "r.sqlite"
    run_study("toy_sum", mode="quick", store=path, executor="serial", progress=False)
    with ResultStore(path) as s:
        seed = cell_seed("toy_sum", 1, {"a": 4.0}, 5)
        s.put("toy_sum", 1, Record({"a": 4.0}, 5, seed, {"x": math.nan, "u": [1, 2, 3], "deep": {"k": {"z": 7}}}))
    return path


def _expected_rows(path, mode="quick"):
    with ResultStore(path) as s:
        stored = {(r.params["a"], r.replicate): r for r in s.records("toy_sum", 1)}
    cells = toys.ToySum().cells(mode)
    return [stored[(c.params["a"], c.replicate)] for c in cells if (c.params["a"], c.replicate) in stored]


def test_records_table_has_one_flat_row_per_cell_in_cell_order(store):
    columns, rows = records_table(store, "toy_sum")
    assert columns == ["study", "version", "mode", "replicate", "seed", "params.a", "result.u", "result.x",
                       "elapsed", "worker", "finished_at", "package_version"]
    expected = _expected_rows(store)
    assert len(rows) == len(expected) == 12
    for row, rec in zip(rows, expected, strict=True):
        assert (row["study"], row["version"], row["mode"]) == ("toy_sum", 1, "quick")
        assert (row["params.a"], row["replicate"], row["seed"]) == (rec.params["a"], rec.replicate, rec.seed)
        assert row["seed"] == cell_seed("toy_sum", 1, rec.params, rec.replicate)
        assert row["result.x"] == rec.result["x"] and row["result.u"] == rec.result["u"]
        assert row["elapsed"] >= 0 and row["worker"].endswith(f":{__import__('os').getpid()}")
    mode, records = load_records(store, "toy_sum", mode="quick")
    assert mode == "quick" and records == expected
    # the full mode has the extra cell: nested dicts become dotted columns, missing fields None
    columns, rows = records_table(store, "toy_sum", mode="full")
    assert "result.deep.k.z" in columns and len(rows) == 13
    extra = next(r for r in rows if r["params.a"] == 4.0)
    assert extra["result.deep.k.z"] == 7 and math.isnan(extra["result.x"])
    assert all(r["result.deep.k.z"] is None for r in rows if r is not extra)
    with pytest.raises(ValueError, match="mode must be one of"):
        records_table(store, "toy_sum", mode="paper")


def test_csv_and_jsonl(store, tmp_path):
    buf = io.StringIO()
    assert export_records(store, "toy_sum", buf, format="csv", mode="full") == ("full", 13, 13)
    table = list(csv.DictReader(io.StringIO(buf.getvalue())))
    _, rows = records_table(store, "toy_sum", mode="full")
    assert len(table) == 13
    for got, want in zip(table, rows, strict=True):
        assert int(got["seed"]) == want["seed"] and float(got["params.a"]) == want["params.a"]
        assert json.loads(got["result.u"]) == want["result.u"]  # lists: JSON text
        x = float(got["result.x"])
        assert (math.isnan(x) and math.isnan(want["result.x"])) or x == want["result.x"]  # exact round trip
        assert got["result.deep.k.z"] == ("" if want["result.deep.k.z"] is None else "7")
    path = tmp_path / "t.jsonl"
    export_records(store, "toy_sum", path, format="jsonl", mode="full")
    lines = [json.loads(line) for line in path.read_text().splitlines()]  # standard JSON: NaN became null
    assert [ln["seed"] for ln in lines] == [r["seed"] for r in rows]
    assert lines[-1]["result.x"] is None and lines[-1]["result.u"] == [1, 2, 3]
    assert lines[0]["result.u"] == rows[0]["result.u"] and lines[0]["result.x"] == rows[0]["result.x"]
    with pytest.raises(ValueError, match="format must be one of csv, jsonl, parquet; got 'xlsx'"):
        export_records(store, "toy_sum", tmp_path / "x", format="xlsx")


def test_parquet_without_pyarrow_names_the_extra(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'particle-attention\[data\]'"):
        export_records(store, "toy_sum", tmp_path / "t.parquet", format="parquet")
    assert main(["export", "toy_sum", "--store", str(store), "--out", str(tmp_path / "t.parquet")]) == 1
    err = capsys.readouterr().err
    assert "parquet export needs pyarrow: pip install 'particle-attention[data]'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "t.parquet").exists()


def test_parquet_round_trip(store, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed (the 'data' extra)")
    path = tmp_path / "t.parquet"
    export_records(store, "toy_sum", path, format="parquet", mode="full")
    table = pq.read_table(path).to_pylist()
    _, rows = records_table(store, "toy_sum", mode="full")
    assert [t["seed"] for t in table] == [r["seed"] for r in rows]
    assert table[0]["result.u"] == rows[0]["result.u"] and table[-1]["result.x"] is None


def test_records_frame_without_and_with_pandas(store, monkeypatch):
    cols = records_frame(store, "toy_sum", as_frame=False)
    assert cols["seed"].dtype == np.int64 and cols["result.x"].dtype == np.float64
    assert cols["params.a"].tolist() == [r.params["a"] for r in _expected_rows(store)]
    assert cols["result.u"].dtype == object and cols["result.u"][0].shape == (3,)
    monkeypatch.setitem(sys.modules, "pandas", None)
    assert isinstance(records_frame(store, "toy_sum"), dict)  # no pandas: the dict
    with pytest.raises(ImportError, match=r"needs pandas: pip install 'particle-attention\[data\]'"):
        records_frame(store, "toy_sum", as_frame=True)
    monkeypatch.undo()
    pd = pytest.importorskip("pandas", reason="pandas not installed (the 'data' extra)")
    df = records_frame(store, "toy_sum", mode="full")
    assert isinstance(df, pd.DataFrame) and len(df) == 13 and list(df.columns)[:5] == [
        "study", "version", "mode", "replicate", "seed"]
    assert df["result.deep.k.z"].isna().sum() == 12


def test_export_command(store, tmp_path, capsys):
    assert main(["export", "toy_sum", "--store", str(store)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("study,version,mode,replicate,seed,params.a") and len(out.splitlines()) == 13
    assert "toy_sum v1 (quick mode): 12 cells x 12 columns as csv to standard output" in err
    assert main(["export", "toy_sum", "--store", str(store), "--full", "--out", str(tmp_path / "t.jsonl")]) == 0
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 13  # format from the suffix
    assert main(["export", "toy_sum", "--store", str(store), "--format", "jsonl"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["study"] == "toy_sum"
    # errors: one line each
    cases = [(["export", "toy_sum", "--store", str(store), "--out", str(tmp_path / "t.xlsx")], 2, "--format"),
             (["export", "toy_sum", "--store", str(store), "--format", "parquet"], 2, "give --out PATH"),
             (["export", "toy_sum", "--store", str(tmp_path / "none.sqlite")], 1, "no such results store"),
             (["export", "toy_many", "--store", str(store)], 1, "no stored cells of toy_many v1 (quick mode)"),
             (["export", "nope", "--store", str(store)], 2, "unknown study 'nope'")]
    for argv, status, text in cases:
        assert main(argv) == status, argv
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1, (argv, err)
