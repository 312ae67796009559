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

from tests._study_helpers import quick_records_of
from validation.figures import FIGURES, draw
from validation.study import get_study

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
    # the plotted transition at d = 1024 (nearly orthogonal random tokens) for beta <= 4: on the equiangular
    # solution of the records' own step (the recursion below, to the step), and after the ODE's (the first-order
    # lag of the ambient step at h = 0.1, measured 5-8% here)
    assert data["scheme"] == "ambient_euler" and data["dt"] == 0.1
    t = np.asarray(data["t"])
    panel = data["panels"]["1024"]
    for beta, row in zip(panel["beta"], panel["P"]):
        if beta > 4:
            continue
        sol = solve_ivp(_gamma_rhs("SA", beta, 32), (0, 30), [0.0], dense_output=True, rtol=1e-10, atol=1e-13)
        t_eq = t[np.argmax(sol.sol(t)[0] >= 1 - EPS)]
        t_half = t[np.argmax(np.asarray(row) >= 0.5)]
        t_step = _ambient_euler_equiangular_time(beta, 32, 0.1, 1 - EPS)
        assert abs(t_half - t_step) <= 0.1 + 1e-9, (beta, t_half, t_step)
        assert t_half > t_eq, (beta, t_half, t_eq)
    # the overlay of the converged transition: t_50 of the phase_discretisation records, recomputed here as the
    # ceil(N/2)-th smallest first-passage time over the (initialisation, pair)s of each run
    disc = quick_records_of("phase_discretisation")
    marks = data["transitions"]
    assert sum(len(v) for v in marks.values()) == sum(1 for r in disc if _reaches_half(r))
    for r in disc:
        if not _reaches_half(r):
            continue
        (row,) = [m for m in marks[str(r.params["d"])] if m["beta"] == r.params["beta"]]
        assert row["h"] == 0.1
        assert row["t50_ode"] == _t50(r, "rk4@0p025") and row["t50_h"] == _t50(r, "ambient_euler@0p1")
        assert row["t50_h"] > row["t50_ode"]


def _t50(record, run):
    tau = np.array(record.result["runs"][run]["tau"], dtype=float).ravel()
    tau[np.isnan(tau)] = np.inf
    return float(np.sort(tau)[math.ceil(tau.size / 2) - 1])


def _reaches_half(record):
    return all(math.isfinite(_t50(record, k)) for k in record.result["runs"])


def _ambient_euler_equiangular_time(beta, n, h, level):
    """Equiangular tokens under the ambient Euler step of SA: y_i = u x_i + v sum_(j != i) x_j with the softmax
    weights u - 1 = h w_self, v = h w_other, so the common inner product g follows a scalar recursion (written
    here from the step); the time of the first step with g >= level."""
    g, k = 0.0, 0
    while g < level:
        e = math.exp(beta * (g - 1.0))
        w_self = 1.0 / (1.0 + (n - 1) * e)
        u, v = 1.0 + h * w_self, h * e * w_self
        num = u * u * g + 2 * u * v * (1 + (n - 2) * g) + v * v * ((n - 2) + ((n - 1) ** 2 - (n - 2)) * g)
        den = u * u + 2 * u * v * (n - 1) * g + v * v * ((n - 1) + (n - 1) * (n - 2) * g)
        g, k = num / den, k + 1
    return k * h


# --- circle_clusters ------------------------------------------------------------------------------------
def _sa_euler_circle(theta0, beta, dt, steps):
    """Independent ambient Euler for SA (Q = K = V = I) on the circle: the step of the authors' sphere.py,
    x + dt softmax(beta x x^T) x, normalised (the field is not projected)."""
    x = np.column_stack([np.cos(theta0), np.sin(theta0)])
    for _ in range(steps):
        s = beta * (x @ x.T)
        w = np.exp(s - s.max(axis=1, keepdims=True))
        f = (w @ x) / w.sum(axis=1, keepdims=True)
        x = x + dt * f
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
        # the snapshot is the SA dynamics: an independent ambient Euler from the t = 0 snapshot
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
