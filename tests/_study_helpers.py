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


@pytest.fixture(scope="module")
def quick_records():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = run_cells(get_study(name))
        return cache[name]

    return get


def relabel(records, **changes):
    """Copies of the records with some parameters changed (a mislabelled input for negative controls)."""
    return [dataclasses.replace(r, params={**r.params, **{k: f(r.params) for k, f in changes.items()}})
            for r in records]
