"""Figures of Part A (validation/figures/rbm_strong.py, rbm_weak.py, batch_force.py, dyson.py).

Each figure is drawn once per module from the session's quick store (the
quick records are shared with the study tests). Checks:

- the files: PNG, PDF and JSON exist and are non-trivial; the JSON sidecar
  holds the plotted data and the provenance (study versions, modes, seeds
  matching the stored records, package versions);
- the numbers: what is plotted equals an independent recomputation from the
  stored records (RMS errors from the per-replica squared errors, weak errors
  from the block sums, Monte Carlo second moments, Kolmogorov distances,
  histograms), the slopes and intervals shown are the studies' verdicts, the
  reference lines have the declared slopes, the semicircle integrates to 1.

The expected values are computed here from the records with plain NumPy,
never by the figure modules.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from particles import integrators
from validation.figures import FIGURES, draw
from validation.figures._base import load_inputs
from validation.study import cell_seed, get_study

RBM_FIGURES = ("rbm_strong", "rbm_weak", "batch_force", "dyson")


@pytest.fixture(scope="module")
def drawn(quick_store, tmp_path_factory):
    """name -> (paths, sidecar dict, store path), every figure drawn once from the quick store."""
    out_dir = tmp_path_factory.mktemp("figures_rbm")
    out = {}
    for name in RBM_FIGURES:
        store = quick_store(*FIGURES[name].studies)
        paths = draw(name, store, out_dir, mode="quick")
        sidecar = json.loads(paths[2].read_text(encoding="utf-8"))
        out[name] = (paths, sidecar, store)
    return out


def _verdicts(quick_records, name):
    return get_study(name).verdicts(quick_records(name), "quick")


def _rms(sq):
    return np.sqrt(np.mean(np.asarray(sq, dtype=float), axis=0))


def _loglog_slope(line):
    x, y = (np.asarray(a, dtype=float) for a in line.get_data())
    return math.log(y[-1] / y[0]) / math.log(x[-1] / x[0])


# --------------------------------------------------------------------------- files and provenance


def test_the_four_figures_are_registered():
    assert set(RBM_FIGURES) <= set(FIGURES)
    assert FIGURES["rbm_strong"].studies == ("rbm_strong_order", "rbm_batch_size", "rbm_particle_number",
                                            "rbm_uniform_in_time")
    assert FIGURES["dyson"].studies == ("dyson_semicircle",)


@pytest.mark.parametrize("name", RBM_FIGURES)
def test_files_and_provenance(drawn, quick_records, name):
    paths, sidecar, _ = drawn[name]
    png, pdf, js = paths
    assert [p.suffix for p in paths] == [".png", ".pdf", ".json"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 30_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
    assert sidecar["figure"] == name and sidecar["data"]
    prov = sidecar["provenance"]
    assert {"numpy", "scipy", "numba", "matplotlib", "python", "particle-attention"} <= set(prov["versions"])
    assert set(prov["studies"]) == set(FIGURES[name].studies)
    assert prov["incomplete_studies"] == []
    for study_name, sp in prov["studies"].items():
        study = get_study(study_name)
        assert sp["version"] == study.version and sp["mode"] == "quick" and sp["complete"]
        records = quick_records(study_name)
        assert sp["cells_stored"] == len(records) == len(study.cells("quick"))
        # every seed is the cell's own seed (reproducible from the study, version and parameters)
        stored = sorted((json.dumps(p, sort_keys=True), rep, seed) for p, rep, seed in sp["seeds"])
        expected = sorted((json.dumps(r.params, sort_keys=True), r.replicate,
                           cell_seed(study.name, study.version, r.params, r.replicate)) for r in records)
        assert stored == expected


# --------------------------------------------------------------------------- figure 1: strong error


def test_rbm_strong_tau_panel(drawn, quick_records):
    data = drawn["rbm_strong"][1]["data"]["tau"]
    recs = quick_records("rbm_strong_order")
    verdicts = _verdicts(quick_records, "rbm_strong_order")
    assert [int(p) for p in data["p"]] == [2, 4, 8]
    for p, v in zip((2, 4, 8), verdicts, strict=True):
        sq = np.concatenate([np.asarray(r.result["sq_errors"][str(p)]) for r in recs], axis=0)
        panel = data["p"][str(p)]
        np.testing.assert_allclose(panel["rms_error"], _rms(sq), rtol=1e-12)
        # 95% interval: Student t on the mean square over all replicas, through the square root
        m, se = sq.mean(axis=0), sq.std(axis=0, ddof=1) / math.sqrt(sq.shape[0])
        t = stats.t.ppf(0.975, sq.shape[0] - 1)
        np.testing.assert_allclose(panel["ci_low"], np.sqrt(m - t * se), rtol=1e-12)
        np.testing.assert_allclose(panel["ci_high"], np.sqrt(m + t * se), rtol=1e-12)
        assert v.details["p"] == p
        assert panel["slope"] == v.measured and panel["slope_interval"] == list(v.interval)
        assert panel["slope"] == pytest.approx(0.5, abs=0.1)
    assert data["reference_slope"] == integrators.RBM1.strong_order
    assert data["replicas"] == sum(r.params["R"] for r in recs)


def test_rbm_strong_artists_show_the_numbers(quick_store, quick_records):
    """The drawn artists (not only the JSON) carry the recomputed RMS errors, the verdict slopes, slope 1/2."""
    from validation.figures import rbm_strong

    names = FIGURES["rbm_strong"].studies
    inputs = load_inputs(quick_store(*names), names, "quick")
    fig, _ = rbm_strong.plot(inputs)
    ax = fig.axes[0]
    recs = quick_records("rbm_strong_order")
    ys = [np.asarray(line.get_ydata()) for line in ax.lines if line.get_marker() == "o"]
    for p in (2, 4, 8):
        sq = np.concatenate([np.asarray(r.result["sq_errors"][str(p)]) for r in recs], axis=0)
        assert any(y.shape == (sq.shape[1],) and np.allclose(y, _rms(sq), rtol=1e-12) for y in ys)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    for v in _verdicts(quick_records, "rbm_strong_order"):
        assert any(f"{v.measured:.3f} [{v.interval[0]:.3f}, {v.interval[1]:.3f}]" in s for s in texts)
    ref = next(line for line in ax.lines if line.get_linestyle() == "--")
    assert _loglog_slope(ref) == pytest.approx(integrators.RBM1.strong_order, abs=1e-12)
    # the fitted lines of panel (b)-(d) have the verdicts' slopes
    for ax_, study in zip(fig.axes[1:4], names[1:], strict=True):
        v = next(v for v in _verdicts(quick_records, study) if v.label == "T4")
        fits = [line for line in ax_.lines if line.get_linestyle() == "-" and line.get_marker() in ("None", "", None)]
        assert any(_loglog_slope(line) == pytest.approx(v.measured, abs=1e-9) for line in fits), study


def test_rbm_strong_companion_panels(drawn, quick_records):
    data = drawn["rbm_strong"][1]["data"]
    # (b) batch size: RMS over all replicas per p, against (p - 1)
    recs = quick_records("rbm_batch_size")
    sq = np.concatenate([np.asarray(r.result["sq_errors"]) for r in recs], axis=0)
    np.testing.assert_allclose(data["batch_size"]["rms_error"], _rms(sq), rtol=1e-12)
    np.testing.assert_allclose(data["batch_size"]["p_minus_1"], np.asarray(recs[0].params["ps"]) - 1)
    v = next(v for v in _verdicts(quick_records, "rbm_batch_size") if v.label == "T4")
    assert data["batch_size"]["slope"] == v.measured and data["batch_size"]["slope_interval"] == list(v.interval)
    assert data["batch_size"]["reference_slope"] == integrators.RBM1.batch_exponent
    # (c) particle number: one column per N (equal replica counts), RMS independent of the verdict's code
    recs = quick_records("rbm_particle_number")
    ns = sorted({r.params["N"] for r in recs})
    cols = [np.concatenate([np.asarray(r.result["sq_errors"]) for r in sorted(recs, key=lambda r: r.replicate)
                            if r.params["N"] == n]) for n in ns]
    m = min(c.size for c in cols)
    np.testing.assert_allclose(data["particle_number"]["N"], ns)
    np.testing.assert_allclose(data["particle_number"]["rms_error"], [math.sqrt(np.mean(c[:m])) for c in cols],
                               rtol=1e-12)
    v = _verdicts(quick_records, "rbm_particle_number")[0]
    assert data["particle_number"]["slope"] == v.measured
    # (d) time: RMS per saved time
    recs = quick_records("rbm_uniform_in_time")
    sq = np.concatenate([np.asarray(r.result["sq_errors"]) for r in recs], axis=0)
    np.testing.assert_allclose(data["time"]["rms_error"], _rms(sq), rtol=1e-12)
    np.testing.assert_allclose(data["time"]["times"], recs[0].params["times"])
    v = _verdicts(quick_records, "rbm_uniform_in_time")[0]
    assert data["time"]["slope"] == v.measured and data["time"]["ratio_interval"] == v.details["ratio_interval"]
    for panel in ("batch_size", "particle_number", "time"):
        d = data[panel]
        assert np.all(np.asarray(d["ci_low"]) < d["rms_error"]) and np.all(np.asarray(d["ci_high"]) > d["rms_error"])


# --------------------------------------------------------------------------- figure 2: weak error


def test_rbm_weak_numbers(drawn, quick_records):
    data = drawn["rbm_weak"][1]["data"]
    recs = quick_records("rbm_weak_order")
    n = sum(r.result["n"] for r in recs)
    verdicts = _verdicts(quick_records, "rbm_weak_order")
    for phi in ("x2", "cos"):
        s = sum(np.asarray(r.result[f"sum_{phi}"]) for r in recs)
        o = sum(np.asarray(r.result[f"outer_{phi}"]) for r in recs)
        mean = s / n
        se = np.sqrt((np.diag(o) / n - mean**2) * n / (n - 1) / n)
        panel = data["phi"][phi]
        np.testing.assert_allclose(panel["weak_error"], mean, rtol=1e-10)
        np.testing.assert_allclose(panel["standard_error"], se, rtol=1e-8)
        np.testing.assert_allclose(panel["ci_high"], np.abs(mean) + 1.959963984540054 * se, rtol=1e-9)
        v = next(v for v in verdicts if ("cos" in v.claim) == (phi == "cos"))
        assert panel["slope"] == v.measured and panel["slope_interval"] == list(v.interval)
        # the fitted line passes through the geometric centre of the plotted points
        taus = np.asarray(data["taus"])
        centre = np.exp(np.mean(np.log(np.abs(mean))))
        line_at_centre = math.exp(panel["intercept"]) * np.exp(np.mean(np.log(taus))) ** panel["slope"]
        assert line_at_centre == pytest.approx(centre, rel=1e-10)
    assert data["phi"]["x2"]["passed"] is True
    assert data["phi"]["x2"]["slope"] == pytest.approx(integrators.RBM1.weak_order, abs=0.2)
    strong = np.sqrt(np.mean([r.result["strong_msq"] for r in recs], axis=0))
    np.testing.assert_allclose(data["strong"]["rms_error"], strong, rtol=1e-12)


# --------------------------------------------------------------------------- figure 3: batch-force lemma


def _lambda_bar(params):
    """mean_i Lambda_i of T3 by an explicit double loop, K(x, y) = -L tanh(x - y) componentwise."""
    x = np.random.default_rng(params["x_seed"]).standard_normal((params["N"], params["d"]))
    n = x.shape[0]
    lam = []
    for i in range(n):
        k = np.array([-params["L"] * np.tanh(x[i] - x[j]) for j in range(n) if j != i])
        lam.append(np.sum((k - k.mean(axis=0)) ** 2) / (n - 2))
    return float(np.mean(lam))


def test_batch_force_numbers(drawn, quick_records):
    data = drawn["batch_force"][1]["data"]
    recs = quick_records("batch_force_lemma")
    params = recs[0].params
    n, d = params["N"], params["d"]
    lam = _lambda_bar(params)
    assert data["lambda_mean"] == pytest.approx(lam, rel=1e-10)
    ps = sorted({r.params["p"] for r in recs})
    assert [row["p"] for row in data["per_p"]] == ps
    verdicts = _verdicts(quick_records, "batch_force_lemma")
    for row in data["per_p"]:
        p = row["p"]
        mine = [r for r in recs if r.params["p"] == p]
        count = sum(r.result["n"] for r in mine)
        mean_s = sum(r.result["chi_S_sum"] for r in mine) / count
        var_s = (sum(r.result["chi_S_sumsq"] for r in mine) / count - mean_s**2) * count / (count - 1)
        assert row["mean_S"] == pytest.approx(mean_s, rel=1e-10)
        assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * 1.959963984540054 * math.sqrt(var_s / count),
                                                                rel=1e-6)
        # the formula of T3 with the finite-population factor, written out
        assert row["predicted_T3"] == pytest.approx((1 / (p - 1) - 1 / (n - 1)) * lam, rel=1e-10)
        assert row["textbook"] == pytest.approx(lam / (p - 1), rel=1e-10)
        v = next(v for v in verdicts if v.claim.startswith("E|chi_i|^2") and v.details["p"] == p)
        assert row["mean_S"] == pytest.approx(v.measured, rel=1e-12) and row["passed"] is v.passed is True
        # the mean-zero z statistics, recomputed from the stored sums
        s1 = sum(np.asarray(r.result["chi_sum"]) for r in mine)
        s2 = sum(np.asarray(r.result["chi_sumsq"]) for r in mine)
        m = s1 / count
        z = m / np.sqrt((s2 / count - m**2) * count / (count - 1) / count)
        k = ps.index(p)
        assert data["mean_zero"]["max_abs_z"][k] == pytest.approx(np.max(np.abs(z)), rel=1e-8)
    alpha = 1e-3 / 2 / (len(ps) * n * d)
    assert data["mean_zero"]["z_threshold"] == pytest.approx(stats.norm.isf(alpha / 2), rel=1e-12)
    assert max(data["mean_zero"]["max_abs_z"]) < data["mean_zero"]["z_threshold"]
    assert min(data["mean_zero"]["wrong_weight_max_abs_z"]) > data["mean_zero"]["z_threshold"]
    # relative deviations are consistent with the plotted means, and tiny next to the textbook curve's
    rel = np.asarray(data["relative_deviation_percent"])
    np.testing.assert_allclose(rel, [100 * (r["mean_S"] / r["predicted_T3"] - 1) for r in data["per_p"]], rtol=1e-9)
    assert np.all(np.abs(rel) < 100 * (np.asarray(ps) - 1) / (n - np.asarray(ps)))


# --------------------------------------------------------------------------- figure 4: Dyson


def test_the_drawn_semicircle_density_integrates_to_one(drawn):
    # the figure draws the density the study stores (its formula is tested in tests/attention_theory/test_bounds_ips.py)
    data = drawn["dyson"][1]["data"]
    x, rho = np.asarray(data["semicircle_x"]), np.asarray(data["semicircle_density"])
    assert integrate.trapezoid(rho, x) == pytest.approx(1.0, abs=2e-3)
    assert integrate.trapezoid(x * x * rho, x) == pytest.approx(0.5, abs=2e-3)  # the stationary m2 of the study
    assert np.max(np.abs(rho - np.sqrt(np.clip(2 - x * x, 0, None)) / math.pi)) < 1e-15


def _semicircle_bin_means(edges):
    dens = lambda x: math.sqrt(max(2 - x * x, 0.0)) / math.pi  # noqa: E731
    return np.array([integrate.quad(dens, a, b)[0] / (b - a) for a, b in zip(edges[:-1], edges[1:])])


def test_dyson_histograms(drawn, quick_records):
    data = drawn["dyson"][1]["data"]
    recs = quick_records("dyson_semicircle")
    n_h = max(r.params["N"] for r in recs)
    assert data["N_histograms"] == n_h
    for method in ("full", "rbm1"):
        mine = [r for r in recs if r.params["method"] == method and r.params["regime"] == "small_dt"
                and r.params["N"] == n_h]
        t = np.asarray(mine[0].result["t"])
        samples_per_time = sum(r.params["R"] for r in mine) * n_h
        panels = data["snapshots"][method]["panels"]
        assert [p["t"][0] for p in panels[:3]] == pytest.approx([0.0, 0.4, 1.0], abs=0.11)
        for panel in panels:
            idx = [int(np.argmin(np.abs(t - s))) for s in panel["t"]]
            counts = sum(np.asarray(r.result["hist_counts"])[idx].sum(axis=0) for r in mine)
            edges = np.asarray(panel["edges"])
            merge = round((len(mine[0].result["hist_edges"]) - 1) / (len(edges) - 1))
            counts = counts.reshape(-1, merge).sum(axis=1)
            assert panel["samples"] == samples_per_time * len(idx)
            np.testing.assert_allclose(np.asarray(panel["density"]) * np.diff(edges) * panel["samples"], counts,
                                       rtol=1e-9)
            mass = float(np.sum(np.asarray(panel["density"]) * np.diff(edges)))
            assert 0.98 <= mass <= 1.0 + 1e-12  # the histogram range [-2, 2] holds nearly all particles
        # stationary: close to the semicircle; at t = 0: the Gaussian initial law, not the semicircle
        stat = panels[-1]
        assert min(stat["t"]) >= mine[0].params["t_burn"] - 1e-9 and len(stat["t"]) > 10
        edges = np.asarray(stat["edges"])
        assert np.max(np.abs(np.asarray(stat["density"]) - _semicircle_bin_means(edges))) < 0.06
        first = panels[0]
        e0 = np.asarray(first["edges"])
        gauss = np.diff(stats.norm.cdf(e0, scale=math.sqrt(0.5))) / np.diff(e0)
        d0 = np.asarray(first["density"])
        assert np.sum((d0 - gauss) ** 2) < np.sum((d0 - _semicircle_bin_means(e0)) ** 2)


def test_dyson_distance_panel(drawn, quick_records):
    data = drawn["dyson"][1]["data"]["distance"]
    recs = quick_records("dyson_semicircle")
    verdicts = _verdicts(quick_records, "dyson_semicircle")
    for method in ("full", "rbm1"):
        mine = [r for r in recs if r.params["method"] == method and r.params["regime"] == "small_dt"]
        ns = sorted({r.params["N"] for r in mine})
        ks = [np.mean(np.concatenate([r.result["ks_replica"] for r in mine if r.params["N"] == n])) for n in ns]
        np.testing.assert_allclose(data[method]["N"], ns)
        np.testing.assert_allclose(data[method]["ks"], ks, rtol=1e-12)
        assert np.all(np.asarray(data[method]["ci_low"]) < ks) and np.all(np.asarray(data[method]["ci_high"]) > ks)
        v = next(v for v in verdicts if "decreases with N" in v.claim
                 and v.claim.startswith("full system" if method == "full" else "RBM-1"))
        assert data[method]["slope"] == v.measured and data[method]["slope_interval"] == list(v.interval)
        assert data[method]["slope"] < 0
    ctrl = data["negative_control"]
    coarse = [r for r in recs if r.params["regime"] == "coarse_dt"]
    assert ctrl["ks"] == pytest.approx(np.mean(np.concatenate([r.result["ks_replica"] for r in coarse])), rel=1e-12)
    assert ctrl["interval"][0] > data["threshold"] == get_study("dyson_semicircle").KS_THRESHOLD
