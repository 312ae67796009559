"""The SQLite results store (validation.store): layout, idempotence, refusal of foreign files."""

from __future__ import annotations

import math
import os
import sqlite3

import numpy as np
import pytest

from validation.store import APPLICATION_ID, MAGIC, SCHEMA_VERSION, ResultStore, StoreError
from validation.study import Record, canonical


def _rec(a=1.0, replicate=0, seed=123, **result):
    return Record(params={"a": a, "b": [1, 2]}, replicate=replicate, seed=seed, result=result or {"y": a * 2})


def test_create_and_reopen(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        meta = store.meta()
        assert meta["magic"] == MAGIC and meta["schema_version"] == str(SCHEMA_VERSION)
        assert meta["created_by"] and meta["created_at"]
        assert store.studies() == [] and store.records("s", 1) == []
        assert store.put("s", 1, _rec(1.0), 0.5, "host:1", base_seed=0)
        assert store.put("s", 1, _rec(2.0, seed=7), 0.25, "host:2")
        assert store.put("s", 2, _rec(1.0), None, None)
        assert store.put("t", 1, _rec(1.0, replicate=3), 1.0, "w")
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"
    with ResultStore(path, create=False) as store:
        assert store.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert store.studies() == [("s", 1), ("s", 2), ("t", 1)]
        recs = store.records("s", 1)
        assert recs == [_rec(1.0), _rec(2.0, seed=7)]  # ordered by canonical params, replicate
        assert store.has("s", 1, {"b": [1, 2], "a": 1.0}, 0)  # key order of the dict does not matter
        assert not store.has("s", 1, {"a": 1.0, "b": [1, 2]}, 1)
        assert not store.has("s", 3, {"a": 1.0, "b": [1, 2]}, 0)
        key = canonical({"a": 1.0, "b": [1, 2]})
        assert store.done_keys("s", 1) == {(key, 0), (canonical({"a": 2.0, "b": [1, 2]}), 0)}
        assert store.done_seeds("t", 1) == {(key, 3): 123}
        assert store.count("s", 1) == 2
        row = store.rows("t")[0]
        assert row["worker"] == "w" and row["elapsed"] == 1.0 and row["host"] and row["finished_at"]
        assert row["package_version"] == store.meta()["created_by"]


def test_put_is_idempotent(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.put("s", 1, _rec(1.0, y=1.0))
        assert not store.put("s", 1, _rec(1.0, y=1.0))
        assert not store.put("s", 1, _rec(1.0, y=999.0))  # a present cell is never replaced nor duplicated
        assert store.conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 1
        assert store.records("s", 1)[0].result == {"y": 1.0}


def test_result_round_trip(tmp_path):
    result = {"x": np.float64(0.1), "n": np.int64(3), "v": np.arange(3.0), "nan": math.nan, "s": "text"}
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.put("s", 1, Record({"a": 1}, 0, 2**63 - 1, result))
        (rec,) = store.records("s", 1)
    assert rec.seed == 2**63 - 1
    assert rec.result["x"] == 0.1 and rec.result["n"] == 3 and rec.result["v"] == [0.0, 1.0, 2.0]
    assert math.isnan(rec.result["nan"]) and rec.result["s"] == "text"
    with ResultStore(tmp_path / "r.sqlite") as store, pytest.raises(TypeError, match="must return a dict"):
        store.put("s", 1, Record({"a": 2}, 0, 1, [1, 2]))


def test_two_connections_see_each_other(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as a, ResultStore(path) as b:
        a.put("s", 1, _rec(1.0))
        assert b.has("s", 1, _rec(1.0).params, 0)
        assert not b.put("s", 1, _rec(1.0))
        assert a.count("s", 1) == 1


def test_empty_file_becomes_a_store(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.write_bytes(b"")
    with ResultStore(path) as store:
        assert store.meta()["magic"] == MAGIC


# -- bad input: StoreError (one line, naming the path) and the file is left byte for byte as it was -------------

def _assert_refused(path, match, **kwargs):
    before = path.read_bytes() if path.is_file() else None
    siblings = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(StoreError, match=match) as exc:
        ResultStore(path, **kwargs)
    message = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert "\n" not in message and str(path) in message
    if before is not None:
        assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == siblings  # no -wal/-shm/-journal left behind


def test_not_sqlite(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"these are my notes, not a database\n" * 50)
    _assert_refused(path, "not a SQLite database")


def test_truncated_sqlite_header_only(tmp_path):
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 84)
    _assert_refused(path, "broken.sqlite")


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_foreign_sqlite(tmp_path, journal):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA journal_mode = {journal}")
    con.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
    con.execute("INSERT INTO accounts (owner) VALUES ('x')")
    con.commit()
    con.close()
    _assert_refused(path, "not a particle-attention results store")


def test_foreign_meta_table(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('magic', 'somebody else'), ('schema_version', '1')")
    con.commit()
    con.close()
    _assert_refused(path, "wrong magic")


def test_newer_schema(tmp_path):
    path = tmp_path / "future.sqlite"
    with ResultStore(path) as store:
        store.put("s", 1, _rec(1.0))
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    _assert_refused(path, f"schema version {SCHEMA_VERSION + 1}.*upgrade")


def test_unreadable_paths(tmp_path):
    folder = tmp_path / "folder.sqlite"
    folder.mkdir()
    _assert_refused(folder, "is a directory")
    _assert_refused(tmp_path / "missing.sqlite", "no such results store", create=False)
    with pytest.raises(StoreError, match="does not exist"):
        ResultStore(tmp_path / "no" / "such" / "dir.sqlite")
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.sqlite"
    with ResultStore(path) as store:
        store.put("s", 1, _rec(1.0))
    before = path.read_bytes()
    path.chmod(0)
    try:
        with pytest.raises(StoreError, match="cannot read"):
            ResultStore(path)
    finally:
        path.chmod(0o644)
    assert path.read_bytes() == before
