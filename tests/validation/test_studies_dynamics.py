"""The attention-dynamics studies (validation.studies.dynamics): quick verdicts, determinism, controls.

Quick cells are measured once per module, in-process, with the runner's
seeds; every verdict must pass, results and verdicts must be
JSON-serialisable, a cell must be reproducible from its seed, and each
verdict family must fail on a deliberately wrong input (a mislabelled system,
a repulsive dynamics, a metastable configuration). The two studies behind the
paper's figures (``phase_diagram``, ``circle_clusters``) also have
informational verdicts; their helpers (span reduction, equiangular time,
cluster count) are checked against independent computations.
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

import particles
from particles import initial, systems
from tests._study_helpers import relabel, run_cells
from validation.stats import binomial_lower
from validation.studies import dynamics as dyn
from validation.studies.dynamics._common import _saved_states
from validation.study import REGISTRY, Record, cell_seed, get_study

pytestmark = pytest.mark.usefixtures("one_numba_thread")

NAMES = ("equiangular_ode", "energy_monotone", "one_cluster", "sa_floor_vs_usa")
FIGURE_STUDIES = ("phase_diagram", "circle_clusters")  # PASS/FAIL and informational verdicts


def verdict_json(v):
    return json.dumps({"study": v.study, "claim": v.claim, "label": v.label, "predicted": v.predicted,
                       "measured": v.measured, "interval": v.interval, "tolerance": v.tolerance, "passed": v.passed,
                       "rule": v.rule, "details": v.details}, allow_nan=False)


# --- registration and helpers ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES + FIGURE_STUDIES)
def test_study_is_registered_with_labels_and_grids(name):
    study = get_study(name)
    assert REGISTRY[name] is study
    assert study.title and study.labels
    quick, full = study.cells("quick"), study.cells("full")
    assert 0 < len(quick) <= len(full)
    for cell in quick + full:
        json.dumps(cell.params, allow_nan=False)
    with pytest.raises(ValueError, match="mode"):
        study.cells("medium")


def test_gamma_reference_matches_the_closed_form_at_beta_zero():
    # beta = 0: USA and SA coincide, gamma' = (2/n)(1 - g)((n-1) g + 1), solvable in closed form
    n = 5
    t = np.linspace(0.0, 3.0, 31)
    a = n - 1.0
    # separable: ln(((n-1) g + 1) / (1 - g)) = 2 t, i.e. g = (e^{2t} - 1) / (e^{2t} + n - 1)
    exact = (np.exp(2 * t) - 1) / (np.exp(2 * t) + a)
    assert_allclose(dyn.gamma_reference("USA", 0.0, n, t), exact, atol=1e-12)
    assert_allclose(dyn.gamma_reference("SA", 0.0, n, t), exact, atol=1e-12)


def test_averaged_pair_force_is_the_mean_of_the_pair_forces():
    # the averaged force of p = 2 equals the mean over all partners j of the RBM-1 pair force (engine, p = 2)
    n, d, beta = 6, 3, 1.3
    x = initial.uniform_sphere(n, d, rng=4)
    system = systems.attention(beta, "SA")
    forces = np.array([particles.drift(system, x, method="rbm1", batch_size=2, seed=7, step=s) for s in range(4000)])
    # every particle meets each partner with probability 1/(n-1): the Monte Carlo mean converges to the average
    assert_allclose(forces.mean(axis=0), dyn.averaged_pair_force(x, beta), atol=0.02)


# --- quick verdicts (one real test per study) ----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_quick_verdicts_pass_and_serialise(name, quick_records):
    study = get_study(name)
    records = quick_records(name)
    for r in records:
        json.dumps(r.result, allow_nan=False)
    verdicts = study.verdicts(records, "quick")
    assert verdicts
    for v in verdicts:
        verdict_json(v)
        assert v.study == name and v.label and v.rule
    failed = [(v.claim, v.measured, v.interval) for v in verdicts if v.passed is False]
    assert not failed
    assert all(v.passed is not None for v in verdicts)


CHEAP_CELL = {
    "equiangular_ode": lambda p: p["kind"] == "SA" and p["beta"] == 1.0,
    "energy_monotone": lambda p: p["kind"] == "USA" and p["beta"] == 1.0,
    "one_cluster": lambda p: p["kind"] == "SA" and p["beta"] == 1.0,
    "sa_floor_vs_usa": lambda p: p["kind"] == "SA" and p["tau"] == 0.0625,
}


@pytest.mark.parametrize("name", NAMES)
def test_a_cell_is_reproducible_from_its_seed(name):
    study = get_study(name)
    cell = next(c for c in study.cells("quick") if CHEAP_CELL[name](c.params))
    seed = cell_seed(study.name, study.version, cell.params, cell.replicate)
    a, b = study.measure(cell.params, seed), study.measure(cell.params, seed)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    if name in ("energy_monotone", "one_cluster", "sa_floor_vs_usa"):  # random initialisations or batches
        other = cell_seed(study.name, study.version, cell.params, cell.replicate, base_seed=1)
        assert json.dumps(study.measure(cell.params, other), sort_keys=True) != json.dumps(a, sort_keys=True)


# --- equiangular_ode -----------------------------------------------------------------------------------------
def test_equiangular_wrong_ode_fails(quick_records):
    study = get_study("equiangular_ode")
    wrong = relabel(quick_records("equiangular_ode"), kind=lambda p: "USA" if p["kind"] == "SA" else "SA")
    follow = [v for v in study.verdicts(wrong, "quick") if "follow gamma(t)" in v.claim]
    assert follow and not any(v.passed for v in follow)
    assert min(v.measured for v in follow) > 1e3 * study.TOL


def test_equiangular_breaks_under_random_batches():
    # a control for the equality verdict: RBM-1 with p = 2 treats the tokens unequally
    n = 6
    tr = particles.solve(systems.attention(1.0, "SA"), initial.equiangular(n, n), t_end=1.0, dt=0.01, method="rbm1",
                         batch_size=2, seed=3)
    g = (tr.final @ tr.final.T)[~np.eye(n, dtype=bool)]
    assert g.max() - g.min() > 1e3 * get_study("equiangular_ode").SPREAD_TOL


# --- energy_monotone -----------------------------------------------------------------------------------------
def test_energy_check_detects_a_decreasing_energy():
    # repulsive dynamics (V = -I) decrease E_beta: the same counting rule must see violations
    study = get_study("energy_monotone")
    x0 = initial.uniform_sphere(16, 3, rng=1, replicas=2)
    e = study._energies(systems.attention(1.0, "SA", V=-np.eye(3)), x0, 1.0, 2.0, 0.01, "rk4", segment=64)
    assert e.shape == (201, 2)
    de = np.diff(e, axis=0) / e[:-1]
    assert np.count_nonzero(de < -study.RTOL) > 100


def test_energy_segments_do_not_change_the_trajectory():
    study = get_study("energy_monotone")
    x0 = initial.uniform_sphere(8, 3, rng=2, replicas=2)
    system = systems.attention(2.0, "USA")
    a = study._energies(system, x0, 2.0, 1.0, 0.01, "rk4", segment=7)
    b = dyn.attention_energy(particles.solve(system, x0, t_end=1.0, dt=0.01, scheme="rk4").x, 2.0)
    assert_allclose(a, b, rtol=1e-13)


def test_energy_step_respects_the_collapse_rate():
    study = get_study("energy_monotone")
    assert study.step("SA", 9.0) == 0.01
    for beta in (1.0, 2.0, 4.0, 6.0):
        dt = study.step("USA", beta)
        assert dt <= 0.01 and dt * 2 * math.exp(beta) <= 0.6
        assert dt == 0.01 or math.log2(dt) == round(math.log2(dt))


# --- one_cluster ---------------------------------------------------------------------------------------------
def test_one_cluster_fails_on_a_metastable_configuration():
    # d = 2, beta = 4 (several clusters are long-lived on the circle) and a short horizon: not all clustered
    study = get_study("one_cluster")
    params = {"kind": "SA", "d": 2, "beta": 4.0, "T": 10.0, "dt": 0.1, "n": 32, "R": 8, "chunk": 0}
    rec = Record(params, 0, 5, study.measure(params, 5))
    (v,) = study.verdicts([rec], "quick")
    assert v.passed is False and v.measured < 1.0


def test_binomial_lower_bound():
    assert binomial_lower(8, 8, 0.95) == pytest.approx(0.05 ** (1 / 8))
    assert binomial_lower(0, 8, 0.95) == 0.0


# --- sa_floor_vs_usa -----------------------------------------------------------------------------------------
def test_floor_rules_have_power(quick_records):
    study = get_study("sa_floor_vs_usa")
    records = quick_records("sa_floor_vs_usa")
    swapped = relabel(records, kind=lambda p: "USA" if p["kind"] == "SA" else "SA")
    verdicts = study.verdicts(swapped, "quick")
    # USA data judged by the SA floor rule (decays like tau^1/2: no floor) and SA data by the USA rate rule: all fail
    # (the floor-value verdict compares USA errors with the SA prediction: it fails too)
    assert verdicts and not any(v.passed for v in verdicts)


def test_usa_measured_order_and_sa_floor_numbers(quick_records):
    study = get_study("sa_floor_vs_usa")
    verdicts = study.verdicts(quick_records("sa_floor_vs_usa"), "quick")
    usa = [v for v in verdicts if "integrating USA" in v.claim]
    sa = [v for v in verdicts if "stops at a bias floor" in v.claim]
    assert usa and sa
    for v in usa:
        assert v.predicted == particles.RBM1.strong_order and abs(v.measured - 0.5) < 0.1
    for v in sa:
        assert v.details["ratio_two_smallest_tau"] > 0.9 and v.measured < 0.1


# --- slower --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES + FIGURE_STUDIES)
def test_quick_verdicts_pass_with_another_base_seed(name):
    study = get_study(name)
    records = run_cells(study, base_seed=777)
    failed = [(v.claim, v.measured) for v in study.verdicts(records, "quick") if v.passed is False]
    assert not failed


@pytest.mark.slow
@pytest.mark.parametrize("name", ["equiangular_ode", "sa_floor_vs_usa"])
def test_full_verdicts_pass(name):
    study = get_study(name)
    records = run_cells(study, mode="full")
    failed = [(v.claim, v.measured) for v in study.verdicts(records, "full") if v.passed is False]
    assert not failed


# --- phase_diagram and circle_clusters (the studies behind the paper's figures) -----------------------------
def _swap(a, b):
    return lambda p: b if p["beta"] == a else (a if p["beta"] == b else p["beta"])


@pytest.mark.parametrize("name", FIGURE_STUDIES)
def test_figure_studies_quick_verdicts(name, quick_records):
    study = get_study(name)
    records = quick_records(name)
    for r in records:
        json.dumps(r.result, allow_nan=False)
    verdicts = study.verdicts(records, "quick")
    for v in verdicts:
        verdict_json(v)
        assert v.study == name and v.label and v.rule
    graded = [v for v in verdicts if v.passed is not None]
    assert graded and all(v.passed for v in graded), [(v.claim, v.measured) for v in graded if not v.passed]
    assert any(v.passed is None for v in verdicts)  # the informational lines are there too


def test_phase_diagram_grids():
    study = get_study("phase_diagram")
    full = study.grid("full")
    assert {p["d"] for p in full} == {2, 8, 32, 128, 512, 1024}
    betas = sorted({p["beta"] for p in full})
    assert_allclose(betas, np.arange(1, 91) / 10)
    assert all(p["R"] * study.replicates("full") == 2**10 for p in full)  # the paper's 2^10 initialisations
    assert all(p["n"] == 32 and p["T"] == 30.0 and p["dt"] == 0.1 and p["kind"] == "SA" for p in full)
    # the authors' step (phase-diagrams.py), in the full and the quick grid alike
    assert {p["scheme"] for p in full + study.grid("quick")} == {"ambient_euler"}
    assert {p["scheme"] for p in get_study("circle_clusters").grid("full")} == {"ambient_euler"}
    assert len(study.cells("quick")) < len(study.cells("full")) / 20


def test_phase_diagram_one_cluster_rule_rejects_slow_cells(quick_records):
    # beta = 9 (not clustered by t = 30 for d >= 32, partly for d = 8) labelled as beta = 0.5: every verdict fails
    study = get_study("phase_diagram")
    wrong = relabel(quick_records("phase_diagram"), beta=_swap(0.5, 9.0))
    graded = [v for v in study.verdicts(wrong, "quick") if v.passed is not None]
    assert graded and not any(v.passed for v in graded)


def test_phase_diagram_records_are_consistent(quick_records):
    study = get_study("phase_diagram")
    records = quick_records("phase_diagram")
    eps = study.EPS
    d2 = [r for r in records if r.params["d"] == 2]
    # t = 0: i.i.d. uniform points on the circle, P(<x_1, x_2> >= 1 - eps) = arccos(1 - eps) / pi; the pair
    # indicators are pairwise independent (rotation invariance), so the all-pairs mean has variance p(1-p)/N
    p0 = math.acos(1 - eps) / math.pi
    m = sum(r.params["R"] for r in d2)
    pairs = m * 32 * 31 // 2
    est = sum(r.params["R"] * r.result["pairs"][0] for r in d2) / m
    assert abs(est - p0) < 4 * math.sqrt(p0 * (1 - p0) / pairs)
    for r in records:
        t = np.asarray(r.result["t"])
        assert_allclose(t, np.arange(301) * 0.1, atol=1e-9)
        if r.params["d"] >= 8:  # P(<x_1, x_2> >= 0.999) < 1e-10 at t = 0 for d >= 8
            assert r.result["pairs"][0] == 0.0
        one, p12 = np.asarray(r.result["one_cluster"]), np.asarray(r.result["pair12"])
        assert np.all(one <= p12) and np.all(p12 <= r.params["R"])  # one cluster implies pair (1, 2) clustered
        assert np.all(np.asarray(r.result["pairs"]) >= one / r.params["R"] - 1e-15)
        assert r.result["dim_integrated"] == min(r.params["d"], r.params["n"])


def test_span_coordinates_give_the_same_dynamics():
    # tokens in d = 40 > n = 6 and their coordinates in the span: the same inner products along the run
    x0 = initial.uniform_sphere(6, 40, rng=11, replicas=2)
    y0 = dyn.span_coordinates(x0)
    assert y0.shape == (2, 6, 6)
    assert_allclose(np.einsum("rid,rjd->rij", y0, y0), np.einsum("rid,rjd->rij", x0, x0), atol=1e-14)
    system = systems.attention(3.0, "SA")
    a = particles.solve(system, x0, t_end=5.0, dt=0.1, save_every=10).x
    b = particles.solve(system, y0, t_end=5.0, dt=0.1, save_every=10).x
    assert_allclose(np.einsum("krid,krjd->krij", b, b), np.einsum("krid,krjd->krij", a, a), atol=1e-12)
    z = initial.uniform_sphere(6, 4, rng=1)
    assert_allclose(dyn.span_coordinates(z), z)


def test_saved_states_segments_equal_one_run():
    system = systems.attention(2.0, "SA")
    x0 = initial.uniform_sphere(5, 3, rng=3, replicas=2)
    chunks = list(_saved_states(system, x0, 3.0, 0.1, scheme="ambient_euler", every=2, budget=3 * x0.nbytes))
    assert len(chunks) > 3  # really segmented
    t = np.concatenate([c[0] for c in chunks])
    x = np.concatenate([c[1] for c in chunks])
    ref = particles.solve(system, x0, t_end=3.0, dt=0.1, save_every=2, scheme="ambient_euler")
    assert_allclose(t, ref.t, atol=1e-12)
    assert_allclose(x, ref.x, rtol=0, atol=1e-15)


@pytest.mark.parametrize("kind", ["SA", "USA"])
@pytest.mark.parametrize("n", [8, 32])
def test_equiangular_time_matches_an_ode_event(kind, n):
    # independent: integrate the scalar ODE of THEORY Part C and stop when gamma = 1 - 1e-3
    level = 1 - 1e-3
    for beta in (0.1, 1.0, 4.0, 9.0):
        def rhs(_, g, beta=beta):
            e = np.exp(beta * g[0])
            common = e * (1 - g[0]) * ((n - 1) * g[0] + 1)
            return [2 * common / (np.exp(beta) + (n - 1) * e) if kind == "SA" else 2 * common / n]

        def hit(_, g):
            return g[0] - level

        hit.terminal = True
        sol = solve_ivp(rhs, (0, 1e4), [0.0], events=hit, rtol=1e-10, atol=1e-13, method="DOP853")
        assert_allclose(dyn.equiangular_time(kind, beta, n, level), sol.t_events[0][0], rtol=1e-7)
    with pytest.raises(ValueError, match="level"):
        dyn.equiangular_time("SA", 1.0, 8, 1.0)


def _single_linkage_count(theta, delta):
    """Independent cluster count: scipy single linkage on the circular distance, cut at delta."""
    diff = np.abs(theta[:, None] - theta[None, :]) % (2 * math.pi)
    dist = np.minimum(diff, 2 * math.pi - diff)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform(dist, checks=False), method="single"), t=delta, criterion="distance")
    return len(set(labels))


def test_circle_cluster_count_is_single_linkage():
    gen = np.random.default_rng(5)
    delta = math.acos(1 - 1e-3)
    for k in range(60):
        centres = gen.uniform(-math.pi, math.pi, size=1 + k % 6)
        theta = (gen.choice(centres, size=32) + gen.normal(0, [1e-4, 0.02, 0.3][k % 3], size=32))
        theta = np.angle(np.exp(1j * theta))  # in (-pi, pi]
        assert dyn.circle_cluster_count(theta, delta) == _single_linkage_count(theta, delta)
    # a cluster across the branch cut of the angle is one cluster; evenly spread points are all separate
    assert dyn.circle_cluster_count(np.array([math.pi - 0.01, -math.pi + 0.01, 0.0]), delta) == 2
    assert dyn.circle_cluster_count(np.linspace(0, 2 * math.pi, 32, endpoint=False), delta) == 32
    assert dyn.circle_cluster_count(np.zeros(5), delta) == 1


def test_circle_snapshot_counts_match_single_linkage(quick_records):
    for r in quick_records("circle_clusters"):
        snap = r.result["snapshot"]
        for theta, count in zip(snap["theta"], snap["count"]):
            assert count == _single_linkage_count(np.asarray(theta), r.result["delta"])
        assert all(sum(h) == r.params["R"] for h in r.result["count_hist"])
        assert snap["t"][0] == 0.0 and snap["t"][-1] == r.params["T"]


def test_circle_theory_rule_rejects_swapped_betas(quick_records):
    study = get_study("circle_clusters")
    wrong = relabel(quick_records("circle_clusters"), beta=_swap(4.0, 9.0))
    graded = [v for v in study.verdicts(wrong, "quick") if v.passed is not None]
    assert len(graded) == 2 and not any(v.passed for v in graded)


def test_circle_theory_rule_needs_an_identified_mode():
    # mode 3 at beta = 9 but 50% vs 44% of 48 initialisations: not identified at 95%, so FAIL
    study = get_study("circle_clusters")
    params = {"kind": "SA", "beta": 9.0, "n": 32, "R": 48, "T": 30.0, "dt": 0.1, "save": 0.5, "eps": 1e-3}
    snap = {"t": [0.0], "theta": [[0.0] * 32], "count": [1]}
    result = {"t": [0.0, 30.0], "count_hist": [[0] * 31 + [48], [0, 3, 24, 21]], "delta": 0.0447, "snapshot": snap}
    (v,) = [v for v in study.verdicts([Record(params, 0, 1, result)], "quick") if v.passed is not None]
    assert v.measured == 3.0 and v.passed is False and v.details["lower_bound_difference"] < 0
    result["count_hist"][1] = [0, 3, 40, 5]
    (v,) = [v for v in study.verdicts([Record(params, 0, 1, result)], "quick") if v.passed is not None]
    assert v.passed is True


def test_circle_theory_rule_is_bonferroni_corrected_over_the_stated_betas():
    # two stated betas (4 and 9): each bound at level 1 - 0.05/2 (z = 1.960, not 1.645). Mode 2 at beta = 4,
    # n2 vs n3 of 48, z = (p1 - p2) / sqrt((p1 + p2 - (p1 - p2)^2) / 48), computed by hand:
    # 31 vs 17: z = 2.113 passes at both levels; 29 vs 19: z = 1.476 fails at both;
    # 30 vs 18: z = 1.789 passes at an uncorrected 95% but not at 97.5%, so FAIL
    study = get_study("circle_clusters")
    snap = {"t": [0.0], "theta": [[0.0] * 32], "count": [1]}

    def verdict4(n2, n3):
        recs = []
        for beta, last in ((4.0, [0, n2, n3]), (9.0, [0, 3, 40, 5])):
            params = {"kind": "SA", "beta": beta, "n": 32, "R": 48, "T": 30.0, "dt": 0.1, "save": 0.5, "eps": 1e-3}
            result = {"t": [0.0, 30.0], "count_hist": [[0] * 31 + [48], last], "delta": 0.0447, "snapshot": snap}
            recs.append(Record(params, 0, 1, result))
        graded = [v for v in study.verdicts(recs, "quick") if v.passed is not None]
        assert len(graded) == 2
        return next(v for v in graded if "beta = 4" in v.claim)

    assert verdict4(31, 17).passed
    assert not verdict4(29, 19).passed
    v = verdict4(30, 18)
    assert v.passed is False and "Bonferroni" in v.rule
    assert abs(v.details["lower_bound_difference"] - (0.25 - 1.959964 * 0.139754)) < 1e-5


@pytest.mark.parametrize("name, params", [
    ("phase_diagram", {"kind": "SA", "d": 3, "beta": 2.0, "n": 8, "R": 3, "T": 5.0, "dt": 0.1,
                       "scheme": "ambient_euler", "eps": 1e-3}),
    ("circle_clusters", {"kind": "SA", "beta": 4.0, "n": 8, "R": 3, "T": 5.0, "dt": 0.1, "scheme": "ambient_euler",
                         "save": 0.5, "eps": 1e-3}),
])
def test_figure_study_cells_are_reproducible(name, params):
    study = get_study(name)
    a, b = study.measure(params, 42), study.measure(params, 42)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert json.dumps(study.measure(params, 43), sort_keys=True) != json.dumps(a, sort_keys=True)
