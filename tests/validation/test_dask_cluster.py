"""The Dask path as users run it: a real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

The scheduler and the workers are separate processes started with the ``dask`` command line (``python -m dask``,
the same program as the ``dask`` console script), exactly as the tutorial says: one thread per worker, no nanny
(so that the PID we hold is the worker itself and SIGKILL really kills it), the repository on ``PYTHONPATH`` (the
toy studies live in ``tests/``), one Numba thread and a Numba cache directory per worker (DESIGN, pitfalls). The
scheduler picks a free port itself (``--port 0``) and writes its address to a scheduler file. Every process is
stopped by PID at teardown; its log is shown when an assertion fails.

No ``dask.distributed.Client`` of this process is the default client while the runner works (a user's script
has none; a LocalCluster test with ``Client(cluster)`` would hide the bug where ``distributed.as_completed``
looked one up), and the runner must not leave one behind.

Every result is compared, cell by cell, with a serial run in this process: the same seeds give identical records.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import _toy_studies as toys
from validation.runner import run_study
from validation.store import ResultStore

distributed = pytest.importorskip("distributed")

toys.uninstall()  # registered on import (for worker processes); the tests install them one at a time

ROOT = Path(__file__).resolve().parents[2]
TOYS = ["--import", "tests._toy_studies"]
START_TIMEOUT_S = 60.0  # a loaded 2-core CI machine: starting a worker (imports) takes a few seconds
CELL_SLEEP_S = 0.25  # seconds a toy_slow cell sleeps on the workers (long enough to be killed inside one)


def _no_default_client() -> bool:
    try:
        distributed.default_client()
    except ValueError:
        return True
    return False


class LocalDaskCluster:
    """A scheduler and workers started as ``python -m dask scheduler|worker`` processes, stopped by PID."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.scheduler_file = directory / "scheduler.json"
        self.markers = directory / "markers"
        self.markers.mkdir()
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs_of: dict[str, Path] = {}
        self.address = ""

    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = self.dir / f"{name}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "dask", *argv], cwd=ROOT, env=env, stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name], self.logs_of[name] = proc, log
        return proc

    def _env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        env.update(extra)
        return env

    def start_scheduler(self) -> str:
        self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(self.scheduler_file),
                                  "--idle-timeout", "600"], self._env())  # gone even if teardown never runs
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.procs["scheduler"].poll() is not None:
                raise RuntimeError(f"the scheduler exited with {self.procs['scheduler'].returncode}\n{self.logs()}")
            try:
                self.address = json.loads(self.scheduler_file.read_text())["address"]
                return self.address
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        raise RuntimeError(f"no scheduler address after {START_TIMEOUT_S:g} s\n{self.logs()}")

    def start_worker(self, name: str) -> subprocess.Popen:
        env = self._env(NUMBA_NUM_THREADS="1", NUMBA_CACHE_DIR=str(self.dir / f"numba-{name}"),
                        PA_TOY_SLEEP=str(CELL_SLEEP_S), PA_TOY_MARKERS=str(self.markers))
        return self._spawn(name, ["worker", "--scheduler-file", str(self.scheduler_file), "--nthreads", "1",
                                  "--no-nanny", "--host", "127.0.0.1", "--no-dashboard", "--name", name,
                                  "--local-directory", str(self.dir / name), "--death-timeout", "60"], env)

    def wait_for_workers(self, n: int) -> None:
        with distributed.Client(self.address, set_as_default=False, timeout=START_TIMEOUT_S) as client:
            try:
                client.wait_for_workers(n, timeout=START_TIMEOUT_S)
            except TimeoutError:
                raise RuntimeError(f"fewer than {n} workers after {START_TIMEOUT_S:g} s\n{self.logs()}") from None

    def worker_pids(self) -> set[int]:
        return {p.pid for name, p in self.procs.items() if name != "scheduler" and p.poll() is None}

    def logs(self, tail: int = 4000) -> str:
        out = []
        for name, path in self.logs_of.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            state = "running" if self.procs[name].poll() is None else f"exited {self.procs[name].returncode}"
            out.append(f"--- {name} (pid {self.procs[name].pid}, {state}) ---\n{text[-tail:]}")
        return "\n".join(out)

    def stop(self) -> None:
        order = [n for n in self.procs if n != "scheduler"] + [n for n in self.procs if n == "scheduler"]
        for name in order:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a worker still closing its connections: it has had its chance
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers for the tests of this module."""
    c = LocalDaskCluster(tmp_path_factory.mktemp("dask_cluster"))
    try:
        c.start_scheduler()
        c.start_worker("w0")
        c.start_worker("w1")
        c.wait_for_workers(2)
        yield c
    finally:
        c.stop()


@pytest.fixture
def toy():
    with toys.installed() as studies:
        yield studies


_SERIAL: dict = {}


def _serial(study, mode, tmp_path):
    """Records of a serial run in this process (the reference every cluster run must reproduce exactly)."""
    key = (study.name, mode)
    if key not in _SERIAL:
        path = tmp_path / f"serial-{study.name}-{mode}.sqlite"
        run_study(study, mode=mode, store=path, executor="serial", progress=False)
        with ResultStore(path) as store:
            _SERIAL[key] = store.records(study.name, study.version)
    return _SERIAL[key]


def _stored(path, study):
    with ResultStore(path, create=False) as store:
        return store.records(study.name, study.version), store.rows(study.name)


def _worker_pids(rows) -> set[int]:
    return {int(r["worker"].rsplit(":", 1)[1]) for r in rows}


def _cli(*argv, timeout=120):
    return subprocess.run([sys.executable, "-m", "validation", *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_cli_run_on_a_real_cluster(cluster, toy, tmp_path):
    store = tmp_path / "cli.sqlite"
    proc = _cli("run", "toy_sum", "--quick", "--scheduler", cluster.address, "--store", store, "--no-progress", *TOYS)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{cluster.logs()}"
    assert "Traceback" not in proc.stderr and f"[dask {cluster.address}]" in proc.stderr
    assert "12 computed" in proc.stderr and "PASS" in proc.stdout
    records, rows = _stored(store, toy["toy_sum"])
    assert records == _serial(toy["toy_sum"], "quick", tmp_path)
    assert _worker_pids(rows) <= cluster.worker_pids(), "the cells ran elsewhere than on the Dask workers"


def test_run_study_with_a_scheduler_address_and_no_default_client(cluster, toy, tmp_path):
    assert _no_default_client(), "a default Dask client exists before the test: it would hide the bug"
    path = tmp_path / "api.sqlite"
    s = run_study("toy_sum", mode="quick", store=path, scheduler=cluster.address, progress=False)
    assert (s.computed, s.failed) == (12, 0) and s.executor == f"dask {cluster.address}", cluster.logs()
    assert _no_default_client(), "run_study made its client the process's default"
    records, rows = _stored(path, toy["toy_sum"])
    assert records == _serial(toy["toy_sum"], "quick", tmp_path)
    assert _worker_pids(rows) <= cluster.worker_pids()
    # a client of the user's own that is not the default, given as the executor; the worker set-up on a real
    # worker process: one Numba thread, a cache directory of its own
    with distributed.Client(cluster.address, set_as_default=False) as client:
        env = run_study("toy_env", mode="quick", store=path, executor=client, progress=False)
        assert (env.computed, env.failed) == (4, 0), cluster.logs()
        assert _no_default_client()
    with ResultStore(path) as store:
        results = [r.result for r in store.records("toy_env", 1)]
    assert {r["env_threads"] for r in results} == {"1"} and {r["numba_threads"] for r in results} == {1}
    by_pid: dict = {}
    for r in results:
        by_pid.setdefault(r["pid"], set()).add(r["cache_dir"])
    assert set(by_pid) <= cluster.worker_pids() and all(len(d) == 1 for d in by_pid.values())


def test_reproduce_on_a_real_cluster(cluster, toy, tmp_path):
    out = tmp_path / "out"
    proc = _cli("reproduce", "toy_sum", "toy_slow", "--quick", "--scheduler", cluster.address, "--out", out,
                "--no-progress", *TOYS)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{cluster.logs()}"
    assert "Traceback" not in proc.stderr and proc.stderr.count(f"[dask {cluster.address}]") == 2
    assert json.loads((out / "report.json").read_text())["ok"] is True
    for name in ("toy_sum", "toy_slow"):
        records, rows = _stored(out / "results.sqlite", toy[name])
        assert records == _serial(toy[name], "quick", tmp_path), name
        assert _worker_pids(rows) <= cluster.worker_pids()


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(cluster, toy, tmp_path):
    """SIGKILL a worker while it is inside a cell: the scheduler gives its cells to the others, the study ends
    complete, with exactly one record per cell, equal to the serial run's; a rerun has nothing left to do."""
    n_before = len(cluster.worker_pids())
    victim = cluster.start_worker("victim")
    cluster.wait_for_workers(n_before + 1)
    killed: dict = {}
    stop = threading.Event()

    def kill_inside_a_cell():
        while not stop.is_set():
            started = {p.stem for p in cluster.markers.glob(f"{victim.pid}-*.started")}
            running = started - {p.stem for p in cluster.markers.glob(f"{victim.pid}-*.done")}
            if running:
                os.kill(victim.pid, signal.SIGKILL)
                killed["seeds"] = {int(s.split("-", 1)[1]) for s in running}
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_inside_a_cell, daemon=True)
    watcher.start()
    path = tmp_path / "killed.sqlite"
    study = toy["toy_slow"]
    try:
        s = run_study(study, mode="full", store=path, scheduler=cluster.address, progress=False)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert killed, f"the victim never started a cell\n{cluster.logs()}"
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert (s.total, s.computed, s.failed) == (32, 32, 0), f"{s}\n{s.failures}\n{cluster.logs()}"
    records, rows = _stored(path, study)
    assert len(rows) == 32 and len({(r["params"], r["replicate"]) for r in rows}) == 32
    assert records == _serial(study, "full", tmp_path)
    # the cell the victim was inside was computed again, by another worker
    redone = [r for r in rows if r["seed"] in killed["seeds"]]
    assert redone and all(int(r["worker"].rsplit(":", 1)[1]) != victim.pid for r in redone)
    again = run_study(study, mode="full", store=path, scheduler=cluster.address, progress=False)
    assert (again.done_before, again.computed, again.failed) == (32, 0, 0)


def test_a_killed_run_on_the_cluster_resumes(cluster, toy, tmp_path):
    """SIGKILL the command that drives the run (not a worker) after some cells are stored; rerunning the same
    command computes only the missing cells, and the store ends equal to the serial run's."""
    path = tmp_path / "resume.sqlite"
    argv = ["run", "toy_slow", "--full", "--scheduler", cluster.address, "--store", str(path), "--no-progress", *TOYS]
    proc = subprocess.Popen([sys.executable, "-m", "validation", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    stored = 0
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists():
                try:
                    with ResultStore(path, create=False) as store:
                        stored = store.count("toy_slow", 1)
                except Exception:  # the store is being created by the run
                    stored = 0
            if stored >= 4:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=30)
    assert 4 <= stored < 32, f"{stored} cells stored when the run was killed\n{out}\n{err}\n{cluster.logs()}"
    again = _cli(*argv)
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}\n{cluster.logs()}"
    done_before = int(again.stderr.split(" already stored")[0].rsplit(", ", 1)[1])
    assert stored <= done_before < 32 and f"{32 - done_before} computed" in again.stderr
    records, rows = _stored(path, toy["toy_slow"])
    assert len(rows) == 32 and records == _serial(toy["toy_slow"], "full", tmp_path)
