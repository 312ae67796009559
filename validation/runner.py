"""Run the cells of a study on an executor and write each result to the store at once.

:func:`run_study` lists the cells of a study (parameter grid x replicates),
skips those already in the :class:`~validation.store.ResultStore`, submits
the rest to an executor and writes every finished cell to the store as soon
as it arrives, in its own transaction. The seed of a cell is
:func:`validation.study.cell_seed` of the cell itself, computed here in the
parent, never in the worker, so the results do not depend on the executor,
on the number of workers or on the order of completion, and a run that is
interrupted (Ctrl-C, a crash, ``kill -9``) resumes to exactly the results of
an uninterrupted one.

Executors
---------
``"serial"``
    every cell in this process, one after the other (Numba keeps all its threads);
``"local"`` (default)
    a :class:`concurrent.futures.ProcessPoolExecutor` of ``workers`` processes
    (start method "spawn"), see :func:`local_pool`;
a :class:`concurrent.futures.Executor`
    used as given, e.g. one :func:`local_pool` shared by several studies;
a ``dask.distributed.Client``, or ``scheduler="tcp://HOST:PORT"``
    the cells run on a Dask cluster (``pip install "particle-attention[distributed]"``).
    Start workers with one thread each (``dask worker ADDR --nthreads 1 --nworkers N``).

Worker processes follow the Numba rules of the project (DESIGN, pitfalls):
one Numba thread per process (``NUMBA_NUM_THREADS=1``), a Numba cache
directory of their own (``$NUMBA_CACHE_DIR/worker-K``, claimed with a lock
file, because concurrent ``cache=True`` writes to one directory can crash),
and never two cells at once in one process (Numba's default threading layer
aborts when parallel functions are entered from several threads), so a Dask
worker with several threads runs its cells one at a time.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime
import importlib
import json
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

from validation.catalog import get_study
from validation.store import ResultStore, dump_result
from validation.study import MODES, Record, Study, canonical, cell_seed

__all__ = ["run_study", "execute_cell", "local_pool", "stop_pool", "connect_scheduler", "RunSummary", "CellFailure",
           "RunError", "RunInterrupted", "MAX_FAILURE_LINES"]

#: At most this many failed cells are reported one per line during a run (all are in the summary).
MAX_FAILURE_LINES = 10
#: Seconds to wait for a Dask scheduler.
CONNECT_TIMEOUT_S = 10.0
#: Seconds between two progress lines when stderr is not a terminal.
PLAIN_PROGRESS_INTERVAL_S = 30.0


class RunError(RuntimeError):
    """A run could not be carried out (unreachable scheduler, inconsistent store, ...); one-line message."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C; ``summary`` counts what was stored before (and kept)."""

    def __init__(self, summary: RunSummary):
        super().__init__(str(summary))
        self.summary = summary


@dataclass(frozen=True)
class CellFailure:
    """A cell whose measurement raised (or whose worker died): never stored."""

    study: str
    params: dict
    replicate: int
    seed: int
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"cell failed: {self.study} {canonical(self.params)} replicate {self.replicate}: {self.message}"


@dataclass
class RunSummary:
    """What :func:`run_study` did: cells stored before, computed now, failed; wall time in seconds."""

    study: str
    version: int
    mode: str
    total: int
    done_before: int
    computed: int
    failed: int
    elapsed: float
    executor: str
    store: str
    failures: list[CellFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """All cells of the study are stored (nothing failed, nothing left)."""
        return self.failed == 0 and self.done_before + self.computed == self.total

    def __str__(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        cells = f"{self.total} cell" + ("" if self.total == 1 else "s")
        return (f"{self.study} v{self.version} ({self.mode}): {cells}, {self.done_before} already stored, "
                f"{self.computed} computed{failed} in {_fmt_duration(self.elapsed)} [{self.executor}]")


def _fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------------------
# Worker side (module level, so that every executor can pickle it by reference)
# ---------------------------------------------------------------------------------------------------------------

_SETUP_LOCK = threading.Lock()
_MEASURE_LOCK = threading.Lock()
_WORKER_READY = False
_CACHE_LOCK_FD: int | None = None


def execute_cell(study_name: str, params: dict, seed: int, *, module: str | None = None,
                 version: int | None = None) -> dict:
    """Measure one cell: the entry point on the worker side.

    Imports the study registry in the worker (``module`` first, when the study
    is defined outside :mod:`validation.studies`), looks the study up with
    :func:`validation.catalog.get_study` and returns ``study.measure(params, seed)``.
    With ``version`` given, a worker whose study has another version refuses
    (a cluster running other code must not mix its results in).
    """
    if module:
        importlib.import_module(module)
    # the catalog imports the built-in study families (scipy & co.) only when the module did not register it
    study = get_study(study_name)
    if version is not None and study.version != version:
        raise RuntimeError(f"the worker has {study_name} version {study.version}, the runner expects {version}")
    return study.measure(params, seed)


def _claim_cache_dir() -> str:
    """A Numba cache directory for this process alone: ``$NUMBA_CACHE_DIR/worker-K`` held by a lock file."""
    global _CACHE_LOCK_FD
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "particle-attention-numba-cache")
    try:
        import fcntl
    except ImportError:  # pragma: no cover  (Windows)
        return os.path.join(base, f"worker-pid{os.getpid()}")
    try:
        os.makedirs(base, exist_ok=True)
        for k in range(1024):
            fd = os.open(os.path.join(base, f"worker-{k}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            _CACHE_LOCK_FD = fd  # held until the process exits
            return os.path.join(base, f"worker-{k}")
    except OSError:  # pragma: no cover  (read-only base directory)
        pass
    return os.path.join(tempfile.gettempdir(), f"particle-attention-numba-cache-{os.getpid()}")  # pragma: no cover


def _worker_setup() -> None:
    """Once per worker process: one Numba thread, a private Numba cache directory."""
    global _WORKER_READY
    with _SETUP_LOCK:
        if _WORKER_READY:
            return
        cache_dir = _claim_cache_dir()
        os.environ["NUMBA_NUM_THREADS"] = "1"
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
        numba = sys.modules.get("numba")
        if numba is not None:  # imported before us: environment variables come too late
            numba.config.CACHE_DIR = cache_dir
        _WORKER_READY = True


def _watch_parent(parent_pid: int) -> None:  # pragma: no cover  (runs in a worker process)
    """Exit when the parent is gone (e.g. killed with SIGKILL), instead of lingering as an orphan."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(1)


def _pool_initializer(parent_pid: int) -> None:  # pragma: no cover  (runs in a worker process)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business: it cancels and stops us
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent").start()
    _worker_setup()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _measure(study_name, params, seed, module, version, study=None):
    """Run one cell; never raises for a failing measurement: returns ("ok"|"error", payload, info).

    ``study``: the instance itself (in-process runs), else it is looked up by name in the worker.
    """
    started_at = _now()
    t0 = time.perf_counter()
    try:
        if study is not None:
            result = study.measure(params, seed)
        else:
            result = execute_cell(study_name, params, seed, module=module, version=version)
        result = dump_result(result)
        status, payload = "ok", result
    except Exception as exc:
        status, payload = "error", (_one_line(exc), traceback.format_exc())
    info = {"elapsed": time.perf_counter() - t0, "started_at": started_at,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}
    return status, payload, info


def _worker_task(study_name, params, seed, module, version):
    """The task sent to worker processes and Dask workers."""
    _worker_setup()
    with _MEASURE_LOCK:  # one cell at a time per process (Numba parallel code is not thread-safe)
        numba = sys.modules.get("numba")
        if numba is not None:
            numba.set_num_threads(1)  # thread-local in Numba; the environment caps it already when it applies
        return _measure(study_name, params, seed, module, version)


# ---------------------------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------------------------

def local_pool(workers: int = 2) -> cf.ProcessPoolExecutor:
    """A process pool that follows the Numba rules: "spawn" start method, one Numba thread per worker,
    a private Numba cache directory per worker, Ctrl-C handled by the parent only, workers that exit
    with their parent. Shut it down when done (it is a context manager)."""
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_pool_initializer, initargs=(os.getpid(),))


def stop_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel what is queued and stop the worker processes of a :func:`local_pool` now (for Ctrl-C: the
    cells they were computing are lost, never stored)."""
    pool.shutdown(wait=False, cancel_futures=True)
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:  # pragma: no cover
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.terminate()
        except Exception:  # pragma: no cover  (already gone)
            pass


def connect_scheduler(address: str, timeout: float = CONNECT_TIMEOUT_S):
    """A ``dask.distributed.Client`` connected to ``address`` ("tcp://HOST:PORT"); RunError when unreachable."""
    try:
        from distributed import Client
        from distributed.comm.addressing import parse_address, parse_host_port
    except ImportError:
        raise RunError(f"a Dask scheduler ({address}) needs dask.distributed: "
                       "pip install 'particle-attention[distributed]'") from None
    try:
        scheme, location = parse_address(address)
        if scheme == "tcp":
            host, port = parse_host_port(location, default_port=8786)
            # Check the address ourselves first: fails at once when nothing listens there.
            with socket.create_connection((host, port), timeout=timeout):
                pass
    except (OSError, ValueError, TypeError) as exc:
        raise RunError(f"cannot reach Dask scheduler at {address}: {_one_line(exc)}") from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:
        raise RunError(f"cannot connect to Dask scheduler at {address}: {_one_line(exc)}") from None


def _is_dask_client(obj) -> bool:
    return type(obj).__name__ == "Client" and type(obj).__module__.startswith("distributed")


def _dask_threads_warning(client) -> str | None:
    try:
        workers = client.scheduler_info().get("workers", {})
    except Exception:  # pragma: no cover
        return None
    threads = sorted({int(w.get("nthreads", 1)) for w in workers.values()})
    if threads and max(threads) > 1:
        return (f"warning: Dask workers have {max(threads)} threads; each worker process runs one cell at a time "
                "(Numba parallel code is not thread-safe): start workers with --nthreads 1 --nworkers N")
    if not workers:
        return "warning: the Dask cluster has no workers yet; cells wait until some join"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------------------------

class _Progress:
    """A tqdm bar with ETA on a terminal, a plain line every 30 s otherwise, nothing when disabled."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.total, self.n, self.desc = total, initial, desc
        self.initial = initial
        self.enabled = enabled
        self.bar = None
        self.t0 = self.last = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="cell", file=sys.stderr,
                            dynamic_ncols=True, smoothing=0.05)

    def update(self) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled and time.monotonic() - self.last >= PLAIN_PROGRESS_INTERVAL_S:
            self.last = time.monotonic()
            spent = self.last - self.t0
            new = self.n - self.initial
            eta = spent / new * (self.total - self.n) if new else float("nan")
            print(f"{self.desc}: {self.n}/{self.total} cells, {_fmt_duration(spent)} elapsed, "
                  f"about {_fmt_duration(eta) if new else '?'} left", file=sys.stderr, flush=True)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Job:
    params: dict
    replicate: int
    seed: int


def _study_module(study: Study) -> str | None:
    module = type(study).__module__
    return None if module in ("__main__", "__mp_main__") else module


def _serial_outcomes(study, jobs, module) -> Iterator[tuple[_Job, tuple | BaseException]]:
    for job in jobs:
        yield job, _measure(study.name, job.params, job.seed, module, study.version, study=study)


@contextlib.contextmanager
def _sigint_ignored(active: bool):
    """Ignore SIGINT while worker processes are started, so that they are born ignoring it (an ignored signal
    stays ignored across exec, and Python then installs no KeyboardInterrupt handler): a Ctrl-C during a
    worker's start-up would otherwise print its traceback. The parent handles Ctrl-C and stops the workers."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _future_outcomes(submit, as_completed, jobs, study, module, futures_out, spawns_processes):
    futures = {}
    with _sigint_ignored(spawns_processes):  # ProcessPoolExecutor starts its processes in submit()
        for job in jobs:
            fut = submit(_worker_task, study.name, job.params, job.seed, module, study.version)
            futures[fut] = job
            futures_out.append(fut)
    for fut in as_completed(list(futures)):
        job = futures[fut]
        try:
            outcome = fut.result()
        except Exception as exc:  # the executor failed the task: worker died, cancelled, unpicklable, ...
            outcome = exc
        yield job, outcome


def run_study(study: Study | str, *, mode: str = "quick", store: ResultStore | str | os.PathLike,
              executor="local", workers: int = 2, scheduler: str | None = None, base_seed: int = 0,
              progress: bool = True) -> RunSummary:
    """Compute the missing cells of ``study`` in ``mode`` and store each one as soon as it is finished.

    Parameters
    ----------
    study : Study or str
        A study or its registered name.
    mode : {"quick", "full"}
    store : ResultStore or path
        Where finished cells go (and which cells are skipped because they are already there).
    executor : "local", "serial", concurrent.futures.Executor or dask.distributed.Client
        See the module docstring. Ignored when ``scheduler`` is given.
    workers : int
        Processes of the "local" executor.
    scheduler : str, optional
        Address of a Dask scheduler ("tcp://HOST:PORT") to connect to for this run.
    base_seed : int
        Enters every cell's seed (:func:`validation.study.cell_seed`); a store holds one base seed per study.
    progress : bool
        Progress bar with ETA on stderr (a plain line every 30 s when stderr is not a terminal).

    Returns
    -------
    RunSummary
        Failed cells are listed in ``summary.failures`` (and reported on stderr), never stored.

    Raises
    ------
    RunError
        The scheduler is unreachable, or the store holds cells of this study with other seeds.
    RunInterrupted
        On Ctrl-C (a KeyboardInterrupt): finished cells stay stored, pending ones are cancelled.
    """
    t0 = time.perf_counter()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if isinstance(study, str):
        study = get_study(study)
    own_store = not isinstance(store, ResultStore)
    if own_store:
        store = ResultStore(store)
    try:
        return _run(study, mode, store, executor, workers, scheduler, int(base_seed), progress, t0)
    finally:
        if own_store:
            store.close()


def _run(study, mode, store, executor, workers, scheduler, base_seed, progress, t0):
    name, version = study.name, study.version
    cells = study.cells(mode)
    jobs_all = [_Job(c.params, c.replicate, cell_seed(name, version, c.params, c.replicate, base_seed))
                for c in cells]
    done = store.done_seeds(name, version)
    pending, mismatched = [], 0
    for job in jobs_all:
        key = (canonical(job.params), job.replicate)
        if key in done:
            mismatched += done[key] != job.seed
        else:
            pending.append(job)
    if mismatched:
        raise RunError(f"{store.path}: {mismatched} stored cells of {name} v{version} have seeds of another "
                       f"base seed (not --seed {base_seed}); use another store")
    done_before = len(jobs_all) - len(pending)
    module = _study_module(study)

    own_client = own_pool = None
    if scheduler is not None:
        executor = own_client = connect_scheduler(scheduler)
    if isinstance(executor, str):
        if executor not in ("local", "serial"):
            raise ValueError(f"executor must be 'local', 'serial', an Executor or a dask Client; got {executor!r}")
    elif isinstance(executor, cf.ThreadPoolExecutor):
        raise TypeError("a thread pool cannot run cells (Numba parallel code must not be entered from several "
                        "threads): use 'local' processes")
    elif not (_is_dask_client(executor) or isinstance(executor, cf.Executor)):
        raise TypeError(f"executor must be 'local', 'serial', an Executor or a dask Client; got {executor!r}")
    if executor == "local" and pending:
        executor = own_pool = local_pool(max(1, min(int(workers), len(pending))))

    if _is_dask_client(executor):
        from distributed import as_completed as dask_as_completed

        label = f"dask {getattr(executor, 'scheduler', None) and executor.scheduler.address}"
        warning = _dask_threads_warning(executor) if pending else None
        if warning:
            print(warning, file=sys.stderr, flush=True)
        client = executor
        submit = lambda fn, *args: client.submit(fn, *args, pure=False)  # noqa: E731
        # distributed.as_completed runs on the loop of the *default* client unless given one: a client made
        # with set_as_default=False (ours, so that a run never changes the user's default) has none, and with
        # several clients the default may belong to another cluster. The futures' own client's loop is right.
        as_completed = lambda futures: dask_as_completed(futures, loop=client.loop)  # noqa: E731
    elif isinstance(executor, cf.Executor):
        label = f"{getattr(executor, '_max_workers', '?')} local processes" if isinstance(
            executor, cf.ProcessPoolExecutor) else type(executor).__name__
        submit, as_completed = executor.submit, cf.as_completed
    else:
        label = "serial" if executor == "serial" else "local"

    failures: list[CellFailure] = []
    computed = 0
    futures: list = []
    bar = _Progress(len(jobs_all), done_before, f"{name} ({mode})", progress and bool(pending))
    try:
        if executor == "serial" or not pending:
            outcomes = _serial_outcomes(study, pending, module)
        else:
            outcomes = _future_outcomes(submit, as_completed, pending, study, module, futures,
                                        isinstance(executor, cf.ProcessPoolExecutor))
        for job, outcome in outcomes:
            if isinstance(outcome, BaseException):
                failure = CellFailure(name, job.params, job.replicate, job.seed, _one_line(outcome))
            elif outcome[0] == "error":
                failure = CellFailure(name, job.params, job.replicate, job.seed, *outcome[1])
            else:
                failure = None
                _, payload, info = outcome
                record = Record(params=job.params, replicate=job.replicate, seed=job.seed,
                                result=json.loads(payload))
                store.put(name, version, record, info["elapsed"], info["worker"], base_seed=base_seed,
                          started_at=info["started_at"])
                computed += 1
            if failure is not None:
                failures.append(failure)
                if len(failures) <= MAX_FAILURE_LINES:
                    bar.write(str(failure))
                elif len(failures) == MAX_FAILURE_LINES + 1:
                    bar.write(f"(further failed cells of {name} are not listed one by one)")
            bar.update()
    except KeyboardInterrupt:
        bar.close()
        if own_pool is not None:
            stop_pool(own_pool)
            own_pool = None
        elif futures:
            _cancel(executor, futures)
        raise RunInterrupted(RunSummary(name, version, mode, len(jobs_all), done_before, computed, len(failures),
                                        time.perf_counter() - t0, label, str(store.path), failures)) from None
    finally:
        bar.close()
        if own_pool is not None:
            own_pool.shutdown(wait=True)
        if own_client is not None:
            own_client.close()
    return RunSummary(name, version, mode, len(jobs_all), done_before, computed, len(failures),
                      time.perf_counter() - t0, label, str(store.path), failures)


def _cancel(executor, futures) -> None:
    if _is_dask_client(executor):
        try:
            executor.cancel(futures)
        except Exception:  # pragma: no cover
            pass
    else:
        for fut in futures:
            fut.cancel()
