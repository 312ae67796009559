"""The command line (python -m validation): list, run, report, reproduce; exit codes and one-line errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import _toy_studies as toys
from validation.__main__ import main
from validation.report import report
from validation.store import ResultStore, StoreError
from validation.study import Record

toys.uninstall()  # registered on import (for worker processes); the tests install them one at a time

ROOT = Path(__file__).resolve().parents[2]
TOYS = ["--import", "tests._toy_studies"]


@pytest.fixture
def toy():
    with toys.installed() as studies:
        yield studies


def test_list(toy, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("toy_sum "))
    assert line.split()[:5] == ["toy_sum", "1", "12", "24", "X1"] and line.endswith("Toy: Gaussian mean")
    assert "toy_many" in out and out.splitlines()[0].split()[:4] == ["study", "version", "quick", "full"]


def test_run_report_and_rerun(toy, tmp_path, capsys):
    store = str(tmp_path / "r.sqlite")
    assert main(["run", "toy_sum", "--quick", "--store", store, "--workers", "0", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "toy_sum v1 - Toy: Gaussian mean (quick, 12/12 cells)" in out and "PASS" in out
    assert "12 computed" in err and "time taken:" in err
    assert main(["run", "toy_sum", "--quick", "--store", store, "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "12 already stored, 0 computed" in err and "PASS" in out
    # report as text and as JSON
    assert main(["report", "toy_sum", "--store", store]) == 0
    text = capsys.readouterr().out
    assert "mean of x - a is zero" in text and "rule: |mean| <= 4 standard errors" in text
    assert "1 study, 2 verdicts: 1 PASS, 0 FAIL, 1 info -> OK" in text
    assert main(["report", "--store", store, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["summary"]["PASS"] == 1
    (study,) = data["studies"]
    assert (study["study"], study["mode"], study["cells"], study["status"]) == (
        "toy_sum", "quick", {"stored": 12, "expected": 12}, "PASS")
    assert [v["verdict"] for v in study["verdicts"]] == ["PASS", "info"]
    assert study["verdicts"][0]["label"] == "X1" and len(study["verdicts"][0]["interval"]) == 2
    # a full run adds the missing cells only; the report then judges full mode
    assert main(["run", "toy_sum", "--store", store, "--workers", "0", "--no-progress"]) == 0
    assert "12 already stored, 12 computed" in capsys.readouterr().err
    assert main(["report", "--store", store]) == 0
    assert "(full, 24/24 cells)" in capsys.readouterr().out


def test_failures_give_nonzero_exit(toy, tmp_path, capsys):
    store = str(tmp_path / "r.sqlite")
    args = ["--quick", "--store", store, "--workers", "0", "--no-progress"]
    assert main(["run", "toy_fail", *args]) == 1
    out, err = capsys.readouterr()
    assert "2 cells of toy_fail failed" in err and "boom at a=2" in err and out == ""
    assert main(["run", "toy_verdict_fails", *args]) == 1
    assert "FAIL     X4     y is 2" in capsys.readouterr().out
    assert main(["run", "toy_verdict_raises", *args]) == 1
    out, err = capsys.readouterr()
    assert "ERROR: verdicts failed: ZeroDivisionError: no verdict for you" in out and "Traceback" not in out + err
    assert main(["report", "--store", store]) == 1
    text = capsys.readouterr().out
    assert "INCOMPLETE: 4 of 6 cells stored" in text and text.rstrip().endswith("-> NOT OK")


def test_report_notes_unregistered_studies(toy, tmp_path, capsys):
    store = tmp_path / "r.sqlite"
    assert main(["run", "toy_sum", "--quick", "--store", str(store), "--workers", "0", "--no-progress"]) == 0
    with ResultStore(store) as s:
        s.put("gone_study", 3, s.records("toy_sum", 1)[0])
        s.put("toy_sum", 1, Record({"a": 99.0}, 0, 1, {"x": 1.0}))  # a cell of no grid (study changed)
    capsys.readouterr()
    assert main(["report", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "note: the store holds gone_study v3, which is not a registered study; skipped" in out
    assert "note: 1 stored cells of v1 belong to neither grid" in out and "(quick, 12/12 cells)" in out


def test_report_api_json_is_standard(toy, tmp_path):
    store = tmp_path / "r.sqlite"
    with ResultStore(store) as s:
        s.put("toy_verdict_fails", 1, Record({"a": 1}, 0, 5, {"y": math.nan}))
    rep = report(store, mode="quick")
    assert not rep.ok and rep.studies[0].status == "FAIL" and rep.counts()["FAIL"] == 1
    data = json.loads(rep.json())  # standard JSON (no NaN)
    assert data["studies"][0]["verdicts"][0]["interval"] == [0.9, 1.1]
    with pytest.raises(StoreError, match="no such results store"):
        report(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
    empty = report(store, ["toy_sum"])
    assert empty.studies[0].status == "ERROR" and "no stored cells" in empty.studies[0].error


def test_reproduce(toy, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main(["reproduce", "toy_sum", "--quick", "--out", str(out_dir), "--workers", "2", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert {p.name for p in out_dir.iterdir()} >= {"report.txt", "report.json", "results.sqlite"}
    assert (out_dir / "report.txt").read_text() == out
    assert json.loads((out_dir / "report.json").read_text())["ok"] is True
    assert "time taken:" in err and "figures:" in err
    with ResultStore(out_dir / "results.sqlite") as store:
        assert store.count("toy_sum", 1) == 12
    # resumable, and a failing verdict makes the exit status 1
    store = str(tmp_path / "other.sqlite")
    args = ["--quick", "--out", str(out_dir), "--store", store, "--workers", "0", "--no-progress"]
    assert main(["reproduce", "toy_sum", "toy_verdict_fails", *args]) == 1
    assert main(["reproduce", "toy_sum", *args]) == 0
    assert "12 already stored, 0 computed" in capsys.readouterr().err


def test_bad_arguments_in_process(toy, tmp_path, capsys):
    assert main(["run", "nope", "--store", str(tmp_path / "r.sqlite")]) == 2
    assert "unknown study 'nope'; known studies:" in capsys.readouterr().err
    assert main(["list", "--import", "no_such_module_xyz"]) == 2
    assert "cannot import no_such_module_xyz" in capsys.readouterr().err
    for argv in (["run"], ["run", "toy_sum", "--workers", "-1"], ["report", "--quick", "--full"], ["bogus"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error:" in err


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_exit_codes_and_one_line_errors_in_subprocesses(tmp_path):
    """``python -m validation`` as a user runs it: exit status and a single error line, never a traceback."""
    (tmp_path / "notes.txt").write_text("not a database\n")
    store = str(tmp_path / "r.sqlite")
    run = ["run", "toy_sum", "--quick", "--no-progress", *TOYS]
    cases = {  # name: (argv, exit status, text of the one stderr line, or None for a successful run)
        "ok": ([*run, "--store", store, "--workers", "0"], 0, None),
        "cell fails": (["run", "toy_fail", "--quick", "--no-progress", "--workers", "2", *TOYS,
                        "--store", str(tmp_path / "f.sqlite")], 1, None),
        "unknown study": (["run", "nope", *TOYS], 2, "unknown study 'nope'; known studies:"),
        "not a store": ([*run, "--store", str(tmp_path / "notes.txt")], 1, "notes.txt: not a SQLite database"),
        "no scheduler": ([*run, "--store", str(tmp_path / "s.sqlite"), "--scheduler",
                          f"tcp://127.0.0.1:{_free_port()}"], 1, "cannot reach Dask scheduler at tcp://127.0.0.1:"),
        "bad mode": ([*run, "--full"], 2, "not allowed with argument --quick"),
        "bad workers": ([*run, "--workers", "two"], 2, "argument --workers: not an integer"),
        "missing store": (["report", "--store", str(tmp_path / "missing.sqlite")], 1, "no such results store"),
        "no command": ([], 2, "the following arguments are required: COMMAND"),
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "validation", *argv], cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (argv, _, _) in cases.items()}
    outs = {}
    for name, proc in procs.items():
        out, err = outs[name] = proc.communicate(timeout=120)
        argv, status, line = cases[name]
        assert proc.returncode == status, (name, err)
        assert "Traceback" not in out + err, name
        if line is not None:
            assert len(err.strip().splitlines()) == 1 and line in err and out == "", (name, err)
    assert "PASS" in outs["ok"][0] and "time taken:" in outs["ok"][1]
    assert 'cell failed: toy_fail {"a":2} replicate 0: ValueError: boom at a=2' in outs["cell fails"][1]


@pytest.mark.skipif(shutil.which("particle-attention") is None and not (Path(sys.executable).parent /
                    "particle-attention").exists(), reason="console script not installed")
def test_console_script():
    exe = shutil.which("particle-attention") or str(Path(sys.executable).parent / "particle-attention")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "reproduce" in proc.stdout and "report" in proc.stdout


_MY_STUDIES = '''
"""A study of a user's own, in the current directory (not installed, not on PYTHONPATH)."""
import numpy as np

from validation.study import Study, Verdict, register


@register
class MyTiny(Study):
    name = "my_tiny"
    title = "a user's study"
    labels = ("U1",)
    result_fields = {"u": ("()", "a uniform draw")}

    def grid(self, mode):
        return [{"k": k} for k in range(3)]

    def measure(self, params, seed):
        return {"u": float(np.random.default_rng(seed).random())}

    def verdicts(self, records, mode):
        return [Verdict(self.name, "draws in [0, 1)", "U1", 0, 0.0, None, None,
                        passed=all(0 <= r.result["u"] < 1 for r in records))]
'''


def _console_script():
    exe = Path(sys.executable).parent / "particle-attention"
    return str(exe) if exe.exists() else shutil.which("particle-attention")


@pytest.mark.skipif(_console_script() is None, reason="console script not installed (pip install -e .)")
def test_console_script_imports_modules_from_the_current_directory(tmp_path):
    """``particle-attention --import my_studies`` behaves like ``python -m validation --import my_studies``: the
    current directory is searched (the console script's own sys.path[0] is its bin directory), also by the
    local worker processes."""
    (tmp_path / "my_studies.py").write_text(_MY_STUDIES)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outs = {}
    for label, prog, workers in (("script, in process", [_console_script()], "0"),
                                 ("script, worker process", [_console_script()], "1"),
                                 ("python -m", [sys.executable, "-m", "validation"], "0")):
        store = tmp_path / f"{label.replace(' ', '_').replace(',', '')}.sqlite"
        proc = subprocess.run([*prog, "run", "my_tiny", "--quick", "--import", "my_studies", "--workers", workers,
                               "--store", str(store), "--no-progress"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, (label, proc.stderr)
        assert "PASS" in proc.stdout and "3 computed" in proc.stderr, label
        with ResultStore(store) as s:
            outs[label] = s.records("my_tiny", 1)
    assert outs["script, in process"] == outs["script, worker process"] == outs["python -m"]
    # a module that is not there is still a one-line error (exit status 2)
    proc = subprocess.run([_console_script(), "list", "--import", "not_here_xyz"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot import not_here_xyz" in proc.stderr and "Traceback" not in proc.stderr


def test_help_texts_show_no_format_escapes():
    """argparse %-formats help strings but not descriptions: '95%%' in a description shows as written."""
    from validation.__main__ import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    texts = {"": parser.format_help(), **{name: p.format_help() for name, p in sub.choices.items()}}
    for name, text in texts.items():
        assert "%%" not in text and "%(" not in text, name
    assert "95% intervals" in texts["demo"]
