"""The ``phase_discretisation`` study: quick verdicts, its helpers against independent computations, controls.

The first-passage times are recomputed from a full trajectory with ``numpy.polyfit`` through three steps;
t_50 of a bootstrap resample from the repeated sample; and the order verdict must reject a zeroth-order error
(a constant offset added to every Euler run) and a second-order one (the Euler-minus-RK4 differences scaled
by h / h_max), and the reference check must reject a reference that is not converged.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

import particles
from particles import initial, systems
from validation.rates import fit_rate_resampled
from validation.studies import discretisation as disc
from validation.study import REGISTRY, get_study

pytestmark = pytest.mark.usefixtures("one_numba_thread")

NAME = "phase_discretisation"


def test_registered_with_grids():
    study = get_study(NAME)
    assert REGISTRY[NAME] is study and study.labels == ("T19",)
    quick, full = study.cells("quick"), study.cells("full")
    assert 0 < len(quick) < len(full)
    for c in quick + full:
        json.dumps(c.params, allow_nan=False)
        assert c.params["hs"] == [0.1, 0.05, 0.025] and min(c.params["ref_hs"]) < min(c.params["hs"]) * 1.01
        assert c.params["T"] == 30.0 and c.params["n"] == 32 and c.params["kind"] == "SA"
    assert {(c.params["d"], c.params["beta"]) for c in quick} >= {(2, 4.0), (2, 9.0)}  # the circle counts
    assert {c.params["d"] for c in full} == {2, 32, 128}
    assert [s for s, _ in study.runs(quick[0].params)][:6] == ["ambient_euler"] * 3 + ["euler"] * 3


def test_quick_verdicts(quick_records):
    study = get_study(NAME)
    records = quick_records(NAME)
    for r in records:
        json.dumps(r.result, allow_nan=False)
    verdicts = study.verdicts(records, "quick")
    graded = [v for v in verdicts if v.passed is not None]
    orders = [v for v in graded if "first order in h" in v.claim]
    assert len(orders) >= 4  # both variants, at least two cells
    assert all(v.passed for v in graded), [(v.claim, v.measured, v.interval) for v in graded if not v.passed]
    offsets = [v for v in verdicts if "offset of the transition time" in v.claim]
    assert offsets and all(v.interval[0] <= v.measured <= v.interval[1] for v in offsets)
    # the authors' step is late at h = 0.1 (positive offset), as the engine guide says
    assert all(v.measured > 0 for v in offsets if v.claim.startswith("ambient Euler"))
    assert any("cluster count" in v.claim for v in verdicts)


def _polyfit_crossings(g, thr, dt):
    """Independent first passage: per column of g (steps, pairs), the root in the last interval of the quadratic
    through the last three steps (numpy.polyfit), linear at the first step."""
    out = np.full(g.shape[1], np.inf)
    for p in range(g.shape[1]):
        above = np.flatnonzero(g[:, p] > thr)
        if above.size == 0:
            continue
        k = int(above[0])
        if k == 0:
            out[p] = 0.0
            continue
        if k == 1:
            out[p] = (k - 1 + (thr - g[k - 1, p]) / (g[k, p] - g[k - 1, p])) * dt
            continue
        c = np.polyfit([k - 2, k - 1, k], g[k - 2:k + 1, p] - thr, 2)
        roots = [r.real for r in np.roots(c) if abs(r.imag) < 1e-12 and k - 1 - 1e-9 <= r.real <= k + 1e-9]
        out[p] = min(roots) * dt
    return out


def test_first_passage_against_polyfit():
    system = systems.attention(3.0, "SA")
    x0 = initial.uniform_sphere(8, 3, rng=np.random.default_rng(4), replicas=2)
    thr = 1 - 1e-3
    tau, drops, final = disc.first_passage(system, x0, 12.0, 0.1, "ambient_euler", thr, backend="reference",
                                           segment=7)  # segments cut between the three points
    tr = particles.solve(system, x0, t_end=12.0, dt=0.1, scheme="ambient_euler", backend="reference")
    iu, ju = np.triu_indices(8, 1)
    g = np.einsum("krid,krjd->krij", tr.x, tr.x)[:, :, iu, ju]  # (steps + 1, R, pairs)
    assert np.isfinite(tau).mean() >= 0.4  # the check covers many crossings (half of the 56 here)
    for r in range(2):
        want = _polyfit_crossings(g[:, r], thr, 0.1)
        np.testing.assert_allclose(tau[r], want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(final, tr.final, rtol=0, atol=1e-14)
    ever = np.logical_or.accumulate(g > thr, axis=0)
    assert drops == int((ever & ~(g > thr)).any(axis=0).sum())


def test_t50_of_a_resample_is_the_t50_of_the_repeated_sample():
    gen = np.random.default_rng(1)
    tau = gen.exponential(size=(6, 10))
    tau[0, :3] = np.inf
    assert disc.t50_of(tau) == np.sort(tau, axis=None)[29]
    ws = gen.multinomial(6, np.full(6, 1 / 6), size=20)
    many = disc.t50_of(tau, ws, chunk=7)
    for w, value in zip(ws, many):
        rep = np.repeat(tau, w, axis=0)
        want = disc.t50_of(rep)
        assert disc.t50_of(tau, w) == want
        assert (math.isnan(value) and want is None) or value == want
    assert disc.t50_of(np.full((2, 3), np.inf)) is None


def _perturbed(records, change):
    """Copies of the records with every run's tau replaced by change(run_key, tau, rk4_tau)."""
    study = get_study(NAME)
    out = []
    for r in records:
        runs = r.result["runs"]
        ref = np.array(runs[study.run_key("rk4", min(r.params["ref_hs"]))]["tau"], dtype=float)
        new = {}
        for key, run in runs.items():
            tau = change(key, np.array(run["tau"], dtype=float), ref)
            new[key] = {**run, "tau": [[None if not math.isfinite(v) else float(v) for v in row] for row in tau]}
        out.append(dataclasses.replace(r, result={**r.result, "runs": new}))
    return out


def _order_verdicts(records):
    return [v for v in get_study(NAME).verdicts(records, "quick") if "first order in h" in v.claim]


def test_order_rule_rejects_zeroth_and_second_order_errors(quick_records):
    records = quick_records(NAME)
    base = {v.claim: v for v in _order_verdicts(records)}
    assert base and all(v.passed for v in base.values())
    # zeroth order: a constant offset (1.0, larger than every h = 0.1 error measured) on every Euler run
    zeroth = _order_verdicts(_perturbed(records, lambda k, tau, ref: tau + 1.0 if "euler" in k else tau))
    assert len(zeroth) == len(base) and not any(v.passed for v in zeroth)
    assert all(v.interval[1] < 1.0 - get_study(NAME).ORDER_TOL for v in zeroth), [(v.measured, v.interval)
                                                                                  for v in zeroth]
    # second order: each pair's Euler-minus-RK4 difference scaled by h / 0.1

    def second(key, tau, ref):
        if "euler" not in key:
            return tau
        h = float(key.split("@")[1].replace("p", "."))
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(tau) & np.isfinite(ref), ref + (tau - ref) * (h / 0.1), tau)

    sec = _order_verdicts(_perturbed(records, second))
    assert len(sec) == len(base) and not any(v.passed for v in sec)
    tol = get_study(NAME).ORDER_TOL
    assert all(abs(v.measured - 2.0) < 0.3 and v.interval[0] > 1.0 + tol for v in sec), [
        (v.measured, v.interval) for v in sec]


def test_reference_rule_rejects_an_unconverged_reference(quick_records):
    study = get_study(NAME)
    records = quick_records(NAME)

    def coarse_ref(key, tau, ref):  # the check run (RK4 at h = 0.05) moved by 0.05: not converged
        return tau + 0.05 if key == study.run_key("rk4", 0.05) else tau

    ok = [v for v in study.verdicts(records, "quick") if "reference t_50 is converged" in v.claim]
    bad = [v for v in study.verdicts(_perturbed(records, coarse_ref), "quick") if "reference t_50 is converged"
           in v.claim]
    assert ok and all(v.passed for v in ok)
    assert len(bad) == len(ok) and not any(v.passed for v in bad)


def test_count_verdicts_are_the_records_counts(quick_records):
    study = get_study(NAME)
    records = [r for r in quick_records(NAME) if r.params["d"] == 2]
    verdicts = [v for v in study.verdicts(records, "quick") if "cluster count" in v.claim]
    assert len(verdicts) == 2 * len(records)
    for v in verdicts:
        beta = float(v.claim.split("beta = ")[1].split(",")[0])
        rec = next(r for r in records if r.params["beta"] == beta)
        scheme = "ambient_euler" if v.claim.startswith("ambient") else "euler"
        ref = np.asarray(rec.result["runs"][study.run_key("rk4", 0.025)]["count_T"])
        assert v.details["rk4"]["mean"] == pytest.approx(ref.mean())
        for h in (0.1, 0.05, 0.025):
            c = np.asarray(rec.result["runs"][study.run_key(scheme, h)]["count_T"])
            row = v.details["by_h"][f"{h:g}"]
            vals, freq = np.unique(c, return_counts=True)
            assert row["mode"] == vals[np.argmax(freq)] and row["mean"] == pytest.approx(c.mean())
            assert row["fraction_differing"] == pytest.approx(np.mean(c != ref))


def test_fit_rate_resampled_checks_its_arguments():
    h = [0.1, 0.05, 0.025]
    rows = np.outer(np.linspace(0.5, 1.5, 200), h)
    fit = fit_rate_resampled(h, h, rows)
    assert fit.method == "bootstrap" and fit.slope == pytest.approx(1.0) and fit.contains(1.0)
    with pytest.raises(ValueError, match="resampled_errors must have shape"):
        fit_rate_resampled(h, h, rows[:, :2])
    with pytest.raises(ValueError, match="at least 100 rows"):
        fit_rate_resampled(h, h, rows[:50])
    with pytest.raises(ValueError, match="resampled_errors must be finite and > 0"):
        fit_rate_resampled(h, h, np.vstack([rows, [0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="errors must be positive"):
        fit_rate_resampled(h, [0.1, -0.05, 0.02], rows)
    with pytest.raises(ValueError, match="confidence"):
        fit_rate_resampled(h, h, rows, confidence=1.0)
