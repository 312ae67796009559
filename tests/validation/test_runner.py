"""The study runner (validation.runner): resumable, executor-independent, crash-safe."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import _toy_studies as toys
from validation.runner import RunError, RunInterrupted, execute_cell, run_study
from validation.store import ResultStore, StoreError
from validation.study import Study, Verdict, canonical, cell_seed

toys.uninstall()  # registered on import (for worker processes); the tests install them one at a time

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def toy():
    with toys.installed() as studies:
        yield studies


def _rows(path, study):
    """Every stored row of a study as (params, replicate, seed, result JSON text), read with plain sqlite3."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(con.execute("SELECT params, replicate, seed, result FROM cells WHERE study = ?", (study,)))
    finally:
        con.close()


def _expected(study, mode, base_seed=0):
    return sorted((canonical(c.params), c.replicate, cell_seed(study.name, study.version, c.params, c.replicate,
                                                               base_seed)) for c in study.cells(mode))


def test_serial_run_then_skip(toy, tmp_path):
    study = toy["toy_sum"]
    path = tmp_path / "r.sqlite"
    s1 = run_study(study, mode="quick", store=path, executor="serial", progress=False)
    assert (s1.total, s1.done_before, s1.computed, s1.failed, s1.ok) == (12, 0, 12, 0, True)
    rows = _rows(path, "toy_sum")
    assert [r[:3] for r in rows] == _expected(study, "quick")
    # Each result is measure(params, seed) of its own cell: the seed comes from the cell, not the worker.
    with ResultStore(path) as store:
        for rec in store.records("toy_sum", 1):
            fresh = execute_cell("toy_sum", rec.params, rec.seed)
            assert rec.result["x"] == fresh["x"] and rec.result["u"] == fresh["u"].tolist()
        s2 = run_study("toy_sum", mode="quick", store=store, executor="serial", progress=False)
        assert (s2.done_before, s2.computed, s2.failed, s2.ok) == (12, 0, 0, True)
        # full mode shares cells with quick mode (same parameters and replicate): only the new ones run
        s3 = run_study(study, mode="full", store=store, executor="serial", progress=False)
        assert (s3.total, s3.done_before, s3.computed) == (24, 12, 12)
    after = _rows(path, "toy_sum")
    assert len(after) == 24 and set(rows) <= set(after)  # the quick cells were kept as they were


def test_resume_computes_only_missing_cells(toy, tmp_path):
    path = tmp_path / "r.sqlite"
    run_study("toy_sum", mode="quick", store=path, executor="serial", progress=False)
    complete = _rows(path, "toy_sum")
    con = sqlite3.connect(path)
    con.execute("DELETE FROM cells WHERE id % 3 = 0")
    con.commit()
    con.close()
    left = len(_rows(path, "toy_sum"))
    s = run_study("toy_sum", mode="quick", store=path, executor="local", workers=2, progress=False)
    assert (s.done_before, s.computed, s.failed) == (left, 12 - left, 0)
    assert _rows(path, "toy_sum") == complete


def test_failing_cells_are_reported_not_stored(toy, tmp_path, capsys):
    path = tmp_path / "r.sqlite"
    for executor in ("serial", "local"):
        s = run_study("toy_fail", mode="quick", store=path, executor=executor, progress=False)
        assert s.failed == 2 and not s.ok
        assert {(canonical(f.params), f.replicate) for f in s.failures} == {('{"a":2}', 0), ('{"a":2}', 1)}
        assert all(f.message == "ValueError: boom at a=2" and "Traceback" in f.traceback for f in s.failures)
        err = capsys.readouterr().err
        assert 'cell failed: toy_fail {"a":2} replicate 0: ValueError: boom at a=2' in err
        assert 'cell failed: toy_fail {"a":2} replicate 1: ValueError: boom at a=2' in err
        assert "Traceback" not in err
        assert s.computed == (4 if executor == "serial" else 0) and s.done_before == (0 if executor == "serial" else 4)
    rows = _rows(path, "toy_fail")
    assert len(rows) == 4 and all('"a":2' not in r[0] for r in rows)


def test_seeds_do_not_depend_on_the_executor(toy, tmp_path):
    study = toy["toy_sum"]
    serial, local = tmp_path / "serial.sqlite", tmp_path / "local.sqlite"
    run_study(study, mode="quick", store=serial, executor="serial", progress=False)
    run_study(study, mode="quick", store=local, executor="local", workers=2, progress=False)
    assert _rows(serial, "toy_sum") == _rows(local, "toy_sum")
    with ResultStore(local) as store:
        assert len({r["worker"] for r in store.rows("toy_sum")}) >= 1
    # another base seed gives other seeds, and a store keeps one base seed per study
    other = tmp_path / "seed1.sqlite"
    run_study(study, mode="quick", store=other, executor="serial", base_seed=1, progress=False)
    assert [r[:3] for r in _rows(other, "toy_sum")] == _expected(study, "quick", base_seed=1)
    assert {r[2] for r in _rows(other, "toy_sum")}.isdisjoint({r[2] for r in _rows(serial, "toy_sum")})
    with pytest.raises(RunError, match="another base seed"):
        run_study(study, mode="quick", store=other, executor="serial", base_seed=0, progress=False)


def test_dask_local_cluster(toy, tmp_path):
    distributed = pytest.importorskip("distributed")
    study = toy["toy_sum"]
    reference = tmp_path / "serial.sqlite"
    run_study(study, mode="quick", store=reference, executor="serial", progress=False)
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        path = tmp_path / "dask.sqlite"
        s = run_study(study, mode="quick", store=path, executor=client, progress=False)
        assert (s.computed, s.failed) == (12, 0) and s.executor.startswith("dask tcp://127.0.0.1:")
        assert _rows(path, "toy_sum") == _rows(reference, "toy_sum")
        # connecting by address, and a failing cell on a Dask worker
        f = run_study("toy_fail", mode="quick", store=path, scheduler=cluster.scheduler_address, progress=False)
        assert (f.computed, f.failed) == (4, 2) and f.failures[0].message == "ValueError: boom at a=2"
        # the worker set-up: one Numba thread, a private cache directory
        env = run_study("toy_env", mode="quick", store=path, executor=client, progress=False)
        assert env.computed == 4
        with ResultStore(path) as store:
            results = [r.result for r in store.records("toy_env", 1)]
        assert {r["env_threads"] for r in results} == {"1"} and {r["numba_threads"] for r in results} == {1}
        assert all(re.search(r"worker-\d+$", r["cache_dir"]) for r in results)


def test_local_workers_use_one_numba_thread_and_own_cache(toy, tmp_path):
    s = run_study("toy_env", mode="quick", store=tmp_path / "r.sqlite", executor="local", workers=2, progress=False)
    assert s.computed == 4
    with ResultStore(tmp_path / "r.sqlite") as store:
        results = [r.result for r in store.records("toy_env", 1)]
    assert {r["env_threads"] for r in results} == {"1"} and {r["numba_threads"] for r in results} == {1}
    by_pid = {}
    for r in results:
        by_pid.setdefault(r["pid"], set()).add(r["cache_dir"])
    assert all(len(dirs) == 1 for dirs in by_pid.values())
    dirs = [d for ds in by_pid.values() for d in ds]
    assert len(set(dirs)) == len(dirs) and all(re.search(r"worker-\d+$", d) for d in dirs)
    assert os.getpid() not in by_pid


def test_unreachable_scheduler(toy, tmp_path):
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(RunError, match=f"cannot reach Dask scheduler at tcp://127.0.0.1:{port}"):
        run_study("toy_sum", mode="quick", store=tmp_path / "r.sqlite", scheduler=f"tcp://127.0.0.1:{port}")
    assert time.monotonic() - t0 < 5


def test_bad_arguments(toy, tmp_path):
    with pytest.raises(ValueError, match="mode must be"):
        run_study("toy_sum", mode="huge", store=tmp_path / "r.sqlite", executor="serial")
    with pytest.raises(ValueError, match="executor must be"):
        run_study("toy_sum", mode="quick", store=tmp_path / "r.sqlite", executor="threads")
    with pytest.raises(KeyError, match="unknown study 'nope'.*toy_sum"):
        run_study("nope", store=tmp_path / "r.sqlite")
    (tmp_path / "text.sqlite").write_text("not a store")
    with pytest.raises(StoreError, match="text.sqlite"):
        run_study("toy_sum", store=tmp_path / "text.sqlite")


class _Interrupting(Study):
    """The fourth cell is interrupted (as if by Ctrl-C)."""

    name = "toy_interrupting"
    title = "Toy: Ctrl-C during the fourth cell"

    def grid(self, mode):
        return [{"i": i} for i in range(6)]

    def measure(self, params, seed):
        if params["i"] == 3 and not getattr(self, "resumed", False):
            raise KeyboardInterrupt
        return {"i": params["i"], "s": seed % 97}

    def verdicts(self, records, mode):
        return [Verdict(self.name, "ok", "-", 0, 0.0, None, None, True)]


def test_keyboard_interrupt_keeps_finished_cells(tmp_path):
    study = _Interrupting()
    path = tmp_path / "r.sqlite"
    with pytest.raises(RunInterrupted) as exc:
        run_study(study, mode="quick", store=path, executor="serial", progress=False)
    assert isinstance(exc.value, KeyboardInterrupt)
    assert (exc.value.summary.computed, exc.value.summary.total) == (3, 6)
    assert [r[0] for r in _rows(path, study.name)] == ['{"i":0}', '{"i":1}', '{"i":2}']
    study.resumed = True
    s = run_study(study, mode="quick", store=path, executor="serial", progress=False)
    assert (s.done_before, s.computed) == (3, 3)
    assert [r[:3] for r in _rows(path, study.name)] == _expected(study, "quick")


def _cli(store, *extra):
    return [sys.executable, "-m", "validation", "run", "toy_many", "--quick", "--import", "tests._toy_studies",
            "--store", str(store), "--workers", "2", "--no-progress", *extra]


def _count(path):
    try:
        with ResultStore(path, create=False) as store:
            return store.count("toy_many", 1)
    except StoreError:  # not created yet
        return 0


def _start_and_signal(store, sig, at_least):
    """Start a run in a new process group, send ``sig`` to the group once ``at_least`` cells are stored."""
    proc = subprocess.Popen(_cli(store), cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            n = _count(store)
            if n >= at_least:
                os.killpg(proc.pid, sig)
                break
            time.sleep(0.005)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # pragma: no cover
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err, proc.pid


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_then_resume_gives_the_uninterrupted_results(toy, tmp_path):
    study = toy["toy_many"]
    reference = tmp_path / "reference.sqlite"
    run_study(study, mode="quick", store=reference, executor="local", workers=2, progress=False)
    total = len(study.cells("quick"))
    killed = tmp_path / "killed.sqlite"
    stored = []
    for at_least in (5, 120):  # killed twice, at different moments
        rc, _, _, _ = _start_and_signal(killed, signal.SIGKILL, at_least)
        assert rc == -signal.SIGKILL, "the run finished before it could be killed"
        stored.append(_count(killed))
        assert at_least <= stored[-1] < total
        rows = _rows(killed, "toy_many")
        assert len(rows) == len({r[:2] for r in rows}) == stored[-1]  # no duplicate, no partial row
    assert stored[0] < stored[1]
    done = subprocess.run(_cli(killed), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{stored[1]} already stored, {total - stored[1]} computed" in done.stderr
    assert _rows(killed, "toy_many") == _rows(reference, "toy_many")
    assert [r[:3] for r in _rows(reference, "toy_many")] == _expected(study, "quick")


def test_ctrl_c_stops_the_workers_and_resumes(toy, tmp_path):
    store = tmp_path / "r.sqlite"
    rc, _, err, pgid = _start_and_signal(store, signal.SIGINT, 10)
    assert rc == 130, err
    assert "interrupted" in err and "Traceback" not in err
    n = _count(store)
    assert 10 <= n < len(toy["toy_many"].cells("quick"))
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:  # the workers are gone with their parent
        time.sleep(0.05)
    assert not _group_alive(pgid)
    done = subprocess.run(_cli(store), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(_rows(store, "toy_many")) == len(toy["toy_many"].cells("quick"))
