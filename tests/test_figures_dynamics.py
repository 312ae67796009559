"""Figures of Part C (phase_diagram, circle_clusters, attention_dynamics) drawn from quick-mode records.

Each figure is drawn from a store holding the quick records of its studies
(computed once per session); the files and the sidecar (data, provenance)
are checked, and the plotted numbers are recomputed independently here: the
phase-diagram probabilities from the raw records, the equiangular curve and
the ODE gamma(t) from a scipy solve of the scalar ODE written in this file,
the circle snapshots by an independent NumPy integration and a scipy
single-linkage count.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.integrate import solve_ivp
from scipy.spatial.distance import squareform

from validation.figures import FIGURES, draw
from validation.study import get_study

from ._study_helpers import quick_records_of

pytestmark = pytest.mark.usefixtures("one_numba_thread")

EPS = 1e-3


def _gamma_rhs(kind, beta, n):
    """The scalar ODE of THEORY Part C (written here, independently of the library)."""
    def rhs(_, g):
        e = np.exp(beta * g[0])
        common = e * (1.0 - g[0]) * ((n - 1) * g[0] + 1.0)
        return [2.0 * common / (np.exp(beta) + (n - 1) * e) if kind == "SA" else 2.0 * common / n]
    return rhs


def _draw(name, quick_store, tmp_path):
    spec = FIGURES[name]
    paths = draw(name, quick_store(*spec.studies), tmp_path, mode="quick")
    assert sorted(p.suffix for p in paths) == [".json", ".pdf", ".png"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    side = json.loads((tmp_path / f"{name}.json").read_text())
    assert side["figure"] == name and side["title"] == spec.title
    prov = side["provenance"]["studies"]
    assert set(prov) == set(spec.studies)
    for study in spec.studies:
        assert prov[study]["version"] == get_study(study).version
        assert prov[study]["mode"] == "quick" and prov[study]["complete"]
        assert len(prov[study]["seeds"]) == len(get_study(study).cells("quick"))
    assert side["provenance"]["incomplete_studies"] == []
    return side["data"]


@pytest.mark.parametrize("name", ["phase_diagram", "circle_clusters", "attention_dynamics"])
def test_figure_is_registered(name):
    spec = FIGURES[name]
    mod = spec.load()
    assert mod.NAME == name and mod.TITLE == spec.title
    assert all(get_study(s) for s in spec.studies)


# --- phase_diagram ---------------------------------------------------------------------------------------
def test_phase_diagram(quick_store, tmp_path):
    data = _draw("phase_diagram", quick_store, tmp_path)
    records = quick_records_of("phase_diagram")
    assert data["dims"] == [2, 8, 32, 128, 512, 1024] and data["kind"] == "SA" and data["n"] == 32
    assert_allclose(data["t"], np.arange(301) * 0.1, atol=1e-9)
    for d in data["dims"]:
        panel = data["panels"][str(d)]
        for beta, row in zip(panel["beta"], panel["P"]):
            recs = [r for r in records if r.params["d"] == d and r.params["beta"] == beta]
            m = sum(r.params["R"] for r in recs)
            expected = sum(r.params["R"] * np.asarray(r.result["pairs"]) for r in recs) / m
            assert_allclose(row, expected, rtol=1e-12)
            assert data["initialisations_per_cell"][str(d)] == [m]
        assert sorted(panel["beta"]) == sorted({r.params["beta"] for r in records if r.params["d"] == d})
    # the overlay: the time at which the equiangular ODE reaches 1 - 1e-3, by an event of solve_ivp
    curve = data["equiangular_curve"]
    assert min(curve["beta"]) <= 0.1 + 1e-12 and max(curve["beta"]) >= 9.0 - 1e-12
    for k in range(0, len(curve["beta"]), 40):
        beta = curve["beta"][k]

        def hit(_, g):
            return g[0] - (1 - EPS)

        hit.terminal = True
        sol = solve_ivp(_gamma_rhs("SA", beta, 32), (0, 1e4), [0.0], events=hit, method="DOP853", rtol=1e-10,
                        atol=1e-13)
        assert_allclose(curve["t"][k], sol.t_events[0][0], rtol=1e-7)
    assert np.all(np.diff(curve["t"]) > 0)  # slower clustering at larger beta
    # the plotted transition at d = 1024 (nearly orthogonal random tokens) sits on the curve for beta <= 4
    t = np.asarray(data["t"])
    panel = data["panels"]["1024"]
    for beta, row in zip(panel["beta"], panel["P"]):
        if beta > 4:
            continue
        sol = solve_ivp(_gamma_rhs("SA", beta, 32), (0, 30), [0.0], dense_output=True, rtol=1e-10, atol=1e-13)
        t_eq = t[np.argmax(sol.sol(t)[0] >= 1 - EPS)]
        t_half = t[np.argmax(np.asarray(row) >= 0.5)]
        assert abs(t_half - t_eq) <= 0.3, (beta, t_half, t_eq)


# --- circle_clusters ------------------------------------------------------------------------------------
def _sa_euler_circle(theta0, beta, dt, steps):
    """Independent projected Euler for SA (Q = K = V = I) on the circle."""
    x = np.column_stack([np.cos(theta0), np.sin(theta0)])
    for _ in range(steps):
        s = beta * (x @ x.T)
        w = np.exp(s - s.max(axis=1, keepdims=True))
        f = (w @ x) / w.sum(axis=1, keepdims=True)
        v = f - np.sum(f * x, axis=1, keepdims=True) * x
        x = x + dt * v
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _linkage_count(x, y):
    theta = np.arctan2(y, x)
    diff = np.abs(theta[:, None] - theta[None, :]) % (2 * math.pi)
    dist = np.minimum(diff, 2 * math.pi - diff)
    np.fill_diagonal(dist, 0.0)
    return len(set(fcluster(linkage(squareform(dist, checks=False), "single"), math.acos(1 - EPS), "distance")))


def test_circle_clusters(quick_store, tmp_path):
    data = _draw("circle_clusters", quick_store, tmp_path)
    records = quick_records_of("circle_clusters")
    assert data["snapshot_betas"] == [1.0, 4.0, 9.0]
    assert data["snapshot_times"][0] == 0.0 and data["snapshot_times"][-1] == records[0].params["T"]
    first = None
    for key, snap in data["snapshots"].items():
        x, y = np.asarray(snap["x"]), np.asarray(snap["y"])
        assert x.shape == (len(data["snapshot_times"]), 32)
        assert_allclose(x**2 + y**2, 1.0, atol=1e-12)  # on the unit circle
        first = x[0] if first is None else first
        assert_allclose(x[0], first)  # the same initialisation for every beta
        for k in range(len(snap["t"])):
            assert snap["count"][k] == _linkage_count(x[k], y[k])
        # the snapshot is the SA dynamics: an independent projected Euler from the t = 0 snapshot
        j = snap["t"].index(3.0)
        ref = _sa_euler_circle(np.arctan2(y[0], x[0]), float(key), 0.1, 30)
        assert_allclose(np.column_stack([x[j], y[j]]), ref, atol=1e-9)
    # counts vs time: the mean of the stored histograms, recomputed from the records
    for r in records:
        c = data["counts"][f"{r.params['beta']:g}"]
        hist = r.result["count_hist"]
        mean = [sum((i + 1) * h for i, h in enumerate(row)) / sum(row) for row in hist]
        assert_allclose(c["mean"], mean, rtol=1e-12)
        for k in range(0, len(hist), 7):  # the band: quantiles of the counts themselves (inverse CDF)
            counts = np.repeat(np.arange(1, len(hist[k]) + 1), hist[k])
            assert c["q10"][k] == np.quantile(counts, 0.1, method="inverted_cdf")
            assert c["q90"][k] == np.quantile(counts, 0.9, method="inverted_cdf")
        assert c["initialisations"] == r.params["R"]
    assert data["theory_counts"] == {"4": 2, "9": 3}


# --- attention_dynamics ---------------------------------------------------------------------------------
def test_attention_dynamics(quick_store, tmp_path):
    data = _draw("attention_dynamics", quick_store, tmp_path)
    en = data["energy"]
    assert set(en["cases"]) == {"SA", "USA"}
    for cases in en["cases"].values():
        for c in cases.values():
            e = np.asarray(c["E_over_Emax"])
            assert e.shape[0] == en["R"]
            assert np.all(np.diff(e, axis=1) >= -1e-12 * e[:, 1:])  # plotted energies never decrease
            assert np.all(e <= 1 + 1e-12) and np.all(e > 0)  # E <= e^beta/(2 beta): inner products <= 1
            assert c["violations"] == 0
    eq = data["equiangular"]
    n = eq["n"]
    for kind, cases in eq["cases"].items():
        for beta, c in cases.items():
            t = np.asarray(c["t"])
            sol = solve_ivp(_gamma_rhs(kind, float(beta), n), (0, t[-1]), [0.0], t_eval=t, method="DOP853",
                            rtol=1e-12, atol=1e-14)
            one_minus = np.asarray([np.nan if v is None else v for v in c["one_minus_gamma_ode"]], dtype=float)
            assert_allclose(one_minus, 1 - sol.y[0], rtol=1e-8, atol=1e-9)  # two ODE solves agree to ~1e-11
            part = np.asarray([np.nan if v is None else v for v in c["one_minus_gamma_particles"]], dtype=float)
            assert_allclose(part, 1 - sol.y[0], atol=1e-7)
            assert c["max_deviation"] is not None and c["max_deviation"] < 1e-7
