"""Helpers shared by the study test modules: run quick cells in-process with the runner's seeds."""

from __future__ import annotations

import dataclasses

import pytest

from validation.study import Record, cell_seed, get_study


def run_cells(study, mode="quick", base_seed=0, cells=None):
    records = []
    for cell in cells if cells is not None else study.cells(mode):
        seed = cell_seed(study.name, study.version, cell.params, cell.replicate, base_seed)
        records.append(Record(cell.params, cell.replicate, seed, study.measure(cell.params, seed)))
    return records


@pytest.fixture(scope="module")
def one_numba_thread():
    """One Numba thread while these tests run: results do not depend on the thread count (the engine's
    counter-based streams), but on a shared, oversubscribed machine parallel regions of many short steps
    spend most of their time waiting for each other (measured: 250 s instead of 3 s for energy_monotone)."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


#: Quick-mode records per study name, computed once per test session (study tests and figure tests share them).
_QUICK: dict[str, list] = {}


def quick_records_of(name):
    """Quick-mode records of a registered study, computed in-process (one Numba thread) once per session."""
    if name not in _QUICK:
        import numba

        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            _QUICK[name] = run_cells(get_study(name))
        finally:
            numba.set_num_threads(before)
    return _QUICK[name]


@pytest.fixture(scope="session")
def quick_records():
    return quick_records_of


@pytest.fixture(scope="session")
def quick_store(tmp_path_factory):
    """``get(*study_names) -> path`` of a results store holding the quick records of those studies.

    One store per session, filled on demand from :func:`quick_records_of` (so a study is computed once
    whether study tests or figure tests ask first).
    """
    from validation.store import ResultStore

    path = tmp_path_factory.mktemp("quick_store") / "results.sqlite"

    def get(*names):
        with ResultStore(path) as store:
            for name in names:
                study = get_study(name)
                if store.count(study.name, study.version) < len(study.cells("quick")):
                    for rec in quick_records_of(name):
                        store.put(study.name, study.version, rec)
        return path

    return get


def relabel(records, **changes):
    """Copies of the records with some parameters changed (a mislabelled input for negative controls)."""
    return [dataclasses.replace(r, params={**r.params, **{k: f(r.params) for k, f in changes.items()}})
            for r in records]
