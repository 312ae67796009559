"""The results store: one SQLite file holding every finished cell of every study.

A study run (:mod:`validation.runner`) writes each finished cell here at once,
in its own transaction, so that a run killed at any moment loses at most the
cells that were still being computed, and a rerun resumes where it stopped.
The file is the single source of truth for reports and figures: nothing is
ever recomputed to draw or to judge.

Layout (schema version :data:`SCHEMA_VERSION`)::

    meta(key TEXT PRIMARY KEY, value TEXT)
        magic           "particle-attention results store"
        schema_version  "1"
        created_by      package version that created the file
        created_at      UTC time stamp
    cells(id INTEGER PRIMARY KEY,
          study, study_version, params, replicate,   -- UNIQUE: the cell's identity
          seed, base_seed, result,                    -- result: JSON of Study.measure
          elapsed, started_at, finished_at, host, worker, package_version)

``params`` is the canonical JSON of the parameter dict
(:func:`validation.study.canonical`), so a cell has exactly one row whatever
the dict's key order. The journal is SQLite's write-ahead log with
``synchronous=NORMAL``: a committed cell survives a crash of the writing
process (not necessarily a power cut, which costs at most the last cells).
Readers (a report while a run is going on) never block the writer.

Only one process should write a given store at a time (the parent process of
the runner), although concurrent writers are safe: a busy timeout serialises
them and inserting a cell that is already present is a no-op.

Files that are not stores of this kind (not readable, not SQLite, a SQLite
database of another application, a store written by a newer schema) raise
:class:`StoreError` before anything is written to them.

Getting the data out
--------------------
:func:`load_records` gives the records of one study and mode (the cells a
report judges), :func:`records_table` the same as flat rows, one per cell:
the columns ``study``, ``version``, ``mode``, ``replicate``, ``seed``,
``params.NAME`` for each parameter and ``result.NAME`` for each stored field
(nested dicts become dotted names: ``result.sq_errors.2``; what each study
stores is listed in the docs' study catalog, from ``Study.result_fields``),
then the cell's ``elapsed`` seconds, ``worker``, ``finished_at`` and
``package_version``. :func:`records_frame` returns them as a
``pandas.DataFrame`` when pandas is installed (``pip install
"particle-attention[data]"``) and as a dict of NumPy columns otherwise;
:func:`export_records` (``python -m validation export STUDY``) writes CSV,
JSON lines or Parquet.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import socket
import sqlite3
from pathlib import Path

from validation.study import MODES, Record, canonical

__all__ = ["ResultStore", "StoreError", "SCHEMA_VERSION", "MAGIC", "APPLICATION_ID", "package_version",
           "load_records", "records_table", "records_frame", "export_records", "EXPORT_FORMATS", "select_records"]

#: Value of ``meta.magic`` in every store.
MAGIC = "particle-attention results store"
#: Schema version written by this code; stores of a newer version are refused.
SCHEMA_VERSION = 1
#: SQLite header application id ("PATR"), so that ``file(1)`` and others can tell the file apart.
APPLICATION_ID = 0x50415452
#: Seconds a writer waits for a lock held by another connection.
BUSY_TIMEOUT_S = 30.0

_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    id              INTEGER PRIMARY KEY,
    study           TEXT    NOT NULL,
    study_version   INTEGER NOT NULL,
    params          TEXT    NOT NULL,
    replicate       INTEGER NOT NULL,
    seed            INTEGER NOT NULL,
    base_seed       INTEGER,
    result          TEXT    NOT NULL,
    elapsed         REAL,
    started_at      TEXT,
    finished_at     TEXT    NOT NULL,
    host            TEXT,
    worker          TEXT,
    package_version TEXT,
    UNIQUE (study, study_version, params, replicate)
);
"""


class StoreError(ValueError):
    """A path that cannot be used as a results store (the message is one line and names the path)."""


def package_version() -> str:
    """Version of the installed ``particle-attention`` distribution ("unknown" when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("particle-attention")
    except metadata.PackageNotFoundError:  # pragma: no cover  (running from a bare checkout)
        return "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _jsonable(obj):
    """``json.dumps`` default: NumPy scalars and arrays become plain Python numbers and lists."""
    item = getattr(obj, "item", None)
    tolist = getattr(obj, "tolist", None)
    if tolist is not None and getattr(obj, "ndim", 0) > 0:
        return tolist()
    if item is not None:
        return item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dump_result(result) -> str:
    """JSON text of a measured result (NaN and infinities kept, as Python's json module writes them)."""
    if not isinstance(result, dict):
        raise TypeError(f"a study's measure() must return a dict; got {type(result).__name__}")
    return json.dumps(result, sort_keys=True, default=_jsonable)


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class ResultStore:
    """A results store at ``path`` (created when absent, unless ``create=False``).

    Use as a context manager, or call :meth:`close`.

    Parameters
    ----------
    path : str or os.PathLike
    create : bool
        Create a new store when ``path`` does not exist (or is an empty file).
        With ``False`` a missing file raises :class:`StoreError`.

    Raises
    ------
    StoreError
        The path cannot be read, is not a SQLite file, is a SQLite database
        that is not a results store, or was written by a newer schema. Such a
        file is never modified.
    """

    def __init__(self, path, *, create: bool = True):
        self.path = Path(os.fspath(path))
        self._conn: sqlite3.Connection | None = None
        exists = self._check_existing()
        if not exists and not create:
            raise StoreError(f"{self.path}: no such results store")
        if not exists and not self.path.parent.is_dir():
            raise StoreError(f"{self.path}: directory {self.path.parent} does not exist")
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open results store ({_one_line(exc)})") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if exists:
                # Checked read-only above; check again on this connection (the file may have changed).
                self._validate(conn)
            else:
                self._initialise(conn)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # pragma: no cover  (e.g. a file system without shared memory)
                raise StoreError(f"{self.path}: cannot use write-ahead logging (journal mode {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{self.path}: cannot use as results store ({_one_line(exc)})") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._host = socket.gethostname()
        self._version = package_version()

    # -- opening -----------------------------------------------------------------------------------------

    def _check_existing(self) -> bool:
        """Return whether a (non-empty) store exists at the path; raise StoreError when it is unusable.

        Reads only: a read-only connection never writes to the database file.
        """
        path = self.path
        try:
            with open(path, "rb") as fh:
                head = fh.read(20)
                header = head[:len(_SQLITE_HEADER)]
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            raise StoreError(f"{path}: is a directory, not a results store file") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({exc.strerror or _one_line(exc)})") from None
        if not header:
            return False  # an empty file is an empty SQLite database: initialise it
        if header != _SQLITE_HEADER:
            raise StoreError(f"{path}: not a SQLite database, so not a results store")
        # A read-only connection to a database in WAL mode creates the -wal and -shm files when they are
        # absent; when there is no -wal file the main file holds everything, so read it as immutable instead
        # (nothing is created next to a file that may not be ours).
        wal_mode = len(head) == 20 and head[18] == 2
        uri = path.resolve().as_uri() + ("?immutable=1" if wal_mode and not _wal_path(path).exists() else "?mode=ro")
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open ({_one_line(exc)})") from None
        try:
            self._validate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: unreadable SQLite database ({_one_line(exc)})") from None
        finally:
            conn.close()
        return True

    def _validate(self, conn: sqlite3.Connection) -> None:
        path = self.path
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            raise StoreError(f"{path}: a SQLite database but not a particle-attention results store (no meta table)")
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error:
            raise StoreError(f"{path}: a SQLite database but not a particle-attention results store "
                             "(unexpected meta table)") from None
        if meta.get("magic") != MAGIC:
            raise StoreError(f"{path}: a SQLite database but not a particle-attention results store (wrong magic)")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise StoreError(f"{path}: results store with an invalid schema version "
                             f"{meta.get('schema_version')!r}") from None
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path}: results store written by schema version {version} (created by "
                             f"particle-attention {meta.get('created_by', '?')}); this version reads schema "
                             f"<= {SCHEMA_VERSION}: upgrade particle-attention")
        if version < 1 or "cells" not in tables:
            raise StoreError(f"{path}: damaged results store (schema version {version}, tables {sorted(tables)})")

    def _initialise(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:
                # Created meanwhile by another application: refuse, touch nothing.
                raise StoreError(f"{self.path}: a SQLite database but not a particle-attention results store")
            if "meta" in tables:
                conn.execute("ROLLBACK")  # created meanwhile by another runner
                self._validate(conn)
                return
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", [
                ("magic", MAGIC), ("schema_version", str(SCHEMA_VERSION)),
                ("created_by", package_version()), ("created_at", _now())])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- context manager ---------------------------------------------------------------------------------

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: results store is closed")
        return self._conn

    # -- queries -----------------------------------------------------------------------------------------

    def meta(self) -> dict:
        """The ``meta`` table as a dict."""
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def has(self, study: str, version: int, params: dict, replicate: int) -> bool:
        """Whether the cell (study, version, params, replicate) is stored."""
        row = self.conn.execute(
            "SELECT 1 FROM cells WHERE study = ? AND study_version = ? AND params = ? AND replicate = ?",
            (study, int(version), canonical(params), int(replicate))).fetchone()
        return row is not None

    def done_keys(self, study: str, version: int) -> set[tuple[str, int]]:
        """The stored cells of a study version, as (canonical params, replicate) pairs."""
        return set(self.done_seeds(study, version))

    def done_seeds(self, study: str, version: int) -> dict[tuple[str, int], int]:
        """The stored cells of a study version: {(canonical params, replicate): seed}."""
        rows = self.conn.execute("SELECT params, replicate, seed FROM cells WHERE study = ? AND study_version = ?",
                                 (study, int(version)))
        return {(p, int(r)): int(s) for p, r, s in rows}

    def count(self, study: str, version: int) -> int:
        """Number of stored cells of a study version."""
        return self.conn.execute("SELECT COUNT(*) FROM cells WHERE study = ? AND study_version = ?",
                                 (study, int(version))).fetchone()[0]

    def put(self, study: str, version: int, record: Record, elapsed: float | None = None,
            worker: str | None = None, *, base_seed: int | None = None, started_at: str | None = None,
            host: str | None = None) -> bool:
        """Store one finished cell in its own transaction; returns False when it was already stored.

        Idempotent: a cell that is already present (same study, version,
        parameters and replicate) is left as it is, never duplicated.
        """
        params = canonical(record.params)
        result = dump_result(record.result)
        if elapsed is not None and not math.isfinite(float(elapsed)):
            elapsed = None
        seed = int(record.seed)
        if not 0 <= seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63); got {seed}")
        cur = self.conn.execute(  # one statement, so one transaction per cell (autocommit connection)
            "INSERT OR IGNORE INTO cells (study, study_version, params, replicate, seed, base_seed, result, "
            "elapsed, started_at, finished_at, host, worker, package_version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (study, int(version), params, int(record.replicate), seed,
             None if base_seed is None else int(base_seed), result,
             None if elapsed is None else float(elapsed), started_at, _now(), host or self._host, worker,
             self._version))
        return cur.rowcount == 1

    def records(self, study: str, version: int) -> list[Record]:
        """The stored cells of a study version, ordered by (canonical params, replicate)."""
        rows = self.conn.execute(
            "SELECT params, replicate, seed, result FROM cells WHERE study = ? AND study_version = ? "
            "ORDER BY params, replicate", (study, int(version)))
        return [Record(params=json.loads(p), replicate=int(r), seed=int(s), result=json.loads(res))
                for p, r, s, res in rows]

    def rows(self, study: str | None = None) -> list[dict]:
        """Every stored row (all columns) as dicts, optionally for one study; for inspection and tests."""
        sql = "SELECT * FROM cells"
        args: tuple = ()
        if study is not None:
            sql += " WHERE study = ?"
            args = (study,)
        cur = self.conn.execute(sql + " ORDER BY study, study_version, params, replicate", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def studies(self) -> list[tuple[str, int]]:
        """The (study, version) pairs that have stored cells, sorted."""
        return [(s, int(v)) for s, v in self.conn.execute(
            "SELECT DISTINCT study, study_version FROM cells ORDER BY study, study_version")]


# ---------------------------------------------------------------------------------------------------------------
# Getting the data out
# ---------------------------------------------------------------------------------------------------------------

#: Formats of :func:`export_records`.
EXPORT_FORMATS = ("csv", "jsonl", "parquet")
#: Columns that come first in every exported row (then params.*, result.*, then _TAIL_COLUMNS).
_HEAD_COLUMNS = ("study", "version", "mode", "replicate", "seed")
_TAIL_COLUMNS = ("elapsed", "worker", "finished_at", "package_version")


def _resolve(store, study):
    # the store never loads the study plugins: a name must be registered (validation.catalog.get_study, the
    # command line and the runner register the built-ins)
    from validation.study import Study, get_study

    if isinstance(study, Study):
        return study
    return get_study(study)


def _opened(store):
    """(store, whether we opened it): a path must name an existing store."""
    if isinstance(store, ResultStore):
        return store, False
    return ResultStore(store, create=False), True


def load_records(store, study, *, mode: str | None = None) -> tuple[str, list[Record]]:
    """The stored records of one study that a report judges: ``(mode, records)`` in the study's cell order.

    Parameters
    ----------
    store : ResultStore or path
        A path must name an existing store.
    study : Study or str
        A study or its registered name.
    mode : {"quick", "full"}, optional
        Default: full when all its cells are stored, else quick when all are, else the mode with the larger
        stored fraction (as :func:`validation.report.report` chooses).
    """
    from validation.study import MODES

    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    study = _resolve(store, study)
    store, own = _opened(store)
    try:
        chosen, records, _, _ = select_records(store, study, mode)
        return chosen, records
    finally:
        if own:
            store.close()


def records_table(store, study, *, mode: str | None = None) -> tuple[list[str], list[dict]]:
    """The records of one study and mode as flat rows: ``(columns, rows)``, one dict per cell.

    Columns: see the module docstring (``params.*`` and ``result.*`` flattened with dotted names; a value
    that is a list stays a list). A field that some cells do not store is None in their rows.
    """
    from validation.study import MODES, canonical, flatten_result

    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    study = _resolve(store, study)
    store, own = _opened(store)
    try:
        chosen, records, _, _ = select_records(store, study, mode)
        extra = {(r["params"], int(r["replicate"])): r for r in store.rows(study.name)
                 if int(r["study_version"]) == study.version}
    finally:
        if own:
            store.close()
    columns: dict[str, None] = dict.fromkeys(_HEAD_COLUMNS)
    rows = []
    for rec in records:
        row = {"study": study.name, "version": study.version, "mode": chosen, "replicate": rec.replicate,
               "seed": rec.seed}
        row.update({f"params.{k}": v for k, v in flatten_result(rec.params).items()})
        row.update({f"result.{k}": v for k, v in flatten_result(rec.result).items()})
        meta = extra.get((canonical(rec.params), rec.replicate), {})
        row.update({k: meta.get(k) for k in _TAIL_COLUMNS})
        columns.update(dict.fromkeys(k for k in row if k not in _TAIL_COLUMNS))
        rows.append(row)
    names = [*columns, *_TAIL_COLUMNS]
    return names, [{k: row.get(k) for k in names} for row in rows]


def _column_array(values):
    import numpy as np

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present) and len(present) == len(values):
        return np.array(values, dtype=bool)
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present) \
            and len(present) == len(values):
        return np.array(values, dtype=np.int64)
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):  # lists become arrays (one per cell; shapes may differ between cells)
        if isinstance(v, list):
            try:
                v = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                pass
        out[i] = v
    return out


def records_frame(store, study, *, mode: str | None = None, as_frame: bool | None = None):
    """The records of one study and mode as a table: a ``pandas.DataFrame`` or a dict of NumPy columns.

    Parameters
    ----------
    store, study, mode
        As in :func:`load_records`.
    as_frame : bool, optional
        True: a DataFrame (ImportError naming the extra when pandas is missing); False: a dict
        ``{column: ndarray}``; None (default): a DataFrame when pandas is installed, else the dict.

    Returns
    -------
    pandas.DataFrame or dict of str to ndarray
        One row per cell, the columns of :func:`records_table`. In the dict, numeric columns are float64
        (NaN where a cell lacks the field), int64 or bool arrays; other columns are object arrays whose
        list values are NumPy arrays.
    """
    if as_frame is None or as_frame:
        try:
            import pandas as pd
        except ImportError:
            if as_frame:
                raise ImportError("records_frame(as_frame=True) needs pandas: pip install "
                                  "'particle-attention[data]'") from None
            pd = None
    else:
        pd = None
    columns, rows = records_table(store, study, mode=mode)
    data = {c: _column_array([r[c] for r in rows]) for c in columns}
    if pd is None:
        return data
    return pd.DataFrame(data, columns=columns)


def _finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))  # numbers, booleans (true/false), lists (JSON text)


def export_records(store, study, out, *, format: str = "csv", mode: str | None = None) -> tuple[str, int, int]:
    """Write the raw records of one study and mode as CSV, JSON lines or Parquet; returns (mode, rows, columns).

    Parameters
    ----------
    store, study, mode
        As in :func:`load_records`.
    out : path or text file object
        Where to write (a file object: CSV and JSON lines only).
    format : {"csv", "jsonl", "parquet"}
        ``csv``: one row per cell; numbers, booleans and lists as JSON text (``[0.1,0.2]``), missing fields
        empty. ``jsonl``: one JSON object per line, lists native, non-finite numbers null. ``parquet``:
        needs pyarrow (``pip install "particle-attention[data]"``); lists become list columns (a column whose
        values pyarrow cannot type is written as JSON text).

    Raises
    ------
    ValueError
        Unknown format or mode.
    ImportError
        Parquet without pyarrow (the message names the extra to install).
    StoreError
        The store does not exist or is not a results store.
    """
    import csv
    import io

    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}; got {format!r}")
    if format == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("parquet export needs pyarrow: pip install 'particle-attention[data]' "
                              "(or pip install pyarrow), or use --format csv or jsonl") from None
        if isinstance(out, io.TextIOBase):
            raise ValueError("parquet is binary: give a file path, not a text stream")
    study = _resolve(store, study)
    chosen, _ = load_records(store, study, mode=mode)
    columns, rows = records_table(store, study, mode=chosen)
    if format == "parquet":
        arrays = {}
        for c in columns:
            values = [_finite_or_none(r[c]) for r in rows]
            try:
                arrays[c] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arrays[c] = pa.array([None if v is None else json.dumps(v) for v in values], type=pa.string())
        pq.write_table(pa.table(arrays), os.fspath(out))
        return chosen, len(rows), len(columns)
    with contextlib.ExitStack() as stack:
        fh = out if hasattr(out, "write") else stack.enter_context(open(out, "w", encoding="utf-8", newline=""))
        if format == "csv":
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(columns)
            for r in rows:
                writer.writerow([_csv_cell(r[c]) for c in columns])
        else:
            for r in rows:
                fh.write(json.dumps({c: _finite_or_none(r[c]) for c in columns}, allow_nan=False) + "\n")
    return chosen, len(rows), len(columns)


# --------------------------------------------------------------------------- which records a report uses


def _pick_mode(cells_by_mode: dict, stored: set) -> str:
    for m in ("full", "quick"):
        if cells_by_mode[m] and set(cells_by_mode[m]) <= stored:
            return m

    def fraction(m):
        cells = cells_by_mode[m]
        return len(set(cells) & stored) / len(cells) if cells else 0.0

    return max(MODES, key=lambda m: (fraction(m), m == "quick"))


def select_records(store: ResultStore, study, mode: str | None = None) -> tuple[str, list, int, int]:
    """The stored records of ``study`` that a report (or a figure) uses.

    Returns ``(mode, records, expected, stray)``: the mode (``mode`` when
    given, else full when all its cells are stored, else quick when all are, else the mode with the
    larger stored fraction), the records of the
    study's current version whose cells belong to that mode's grid, in cell
    order, the number of cells the mode has, and the number of stored cells
    that belong to no grid. Raises whatever ``study.cells`` raises.
    """
    cells_by_mode = {m: [(canonical(c.params), c.replicate) for c in study.cells(m)] for m in MODES}
    records = {(canonical(r.params), r.replicate): r for r in store.records(study.name, study.version)}
    stray = len(set(records) - {k for cells in cells_by_mode.values() for k in cells})
    mode = mode or _pick_mode(cells_by_mode, set(records))
    order = cells_by_mode[mode]
    return mode, [records[k] for k in order if k in records], len(order), stray
