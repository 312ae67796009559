"""The RBM-1 strong-order measurement and the demo that reports it (validation.strong_order, CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

import particles
from validation.__main__ import main
from validation.strong_order import format_table, rbm_strong_error, run_demo

TINY = {"n_particles": 16, "replicas": 16, "taus": tuple(2.0 ** -k for k in range(3, 8))}  # 5 levels


def _tiny_error(batch_size):
    return rbm_strong_error(particles.systems.confined_tanh(), n_particles=16, dim=1, replicas=16, t_end=1.0,
                            taus=TINY["taus"], batch_size=batch_size, seed=3, x0_seed=4)


def test_strong_error_shapes():
    res = _tiny_error(2)
    assert res.sq_errors.shape == (16, 5)
    assert res.rms.shape == (5,)
    assert_allclose(res.rms, np.sqrt(res.sq_errors.mean(axis=0)), rtol=1e-14)
    assert np.all(res.sq_errors > 0)
    assert res.rms[0] > res.rms[-1]  # coarsest tau has the largest error
    assert res.params["noise_dt"] == min(TINY["taus"])
    assert_allclose(res.taus, TINY["taus"], rtol=0, atol=0)


def test_strong_error_vanishes_for_full_batch():
    # p = N is the full system with the same noise (THEORY A2): the coupling leaves only round-off.
    res = _tiny_error(16)
    assert np.max(res.sq_errors) < 1e-24


def test_strong_error_rejects_incommensurate_taus():
    with pytest.raises(ValueError, match="whole multiple"):
        rbm_strong_error(particles.systems.confined_tanh(), n_particles=16, dim=1, replicas=2, t_end=1.0,
                         taus=[0.1, 0.25], batch_size=2, seed=0, x0_seed=0)


def test_run_demo_tiny_writes_outputs(tmp_path):
    res = run_demo(tmp_path / "out", batch_sizes=(2,), verbose=False, **TINY)
    assert set(res.sq_errors) == {2}
    assert res.sq_errors[2].shape == (16, 5)
    assert res.fits[2].method == "bootstrap" and res.fits[2].n_levels == 5
    assert res.verdicts[2] in {"consistent", "inconsistent"}
    assert res.theory_order == particles.RBM1.strong_order
    png = tmp_path / "out" / "rbm_strong_order.png"
    pdf = png.with_suffix(".pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    data = json.loads(png.with_suffix(".json").read_text())
    assert data["taus"] == list(TINY["taus"])
    r = data["results"]["2"]
    assert np.array(r["sq_errors_per_replica"]).shape == (16, 5)
    assert_allclose(r["rms_error"], res.rms[2], rtol=1e-15)
    assert r["fit"]["slope"] == res.fits[2].slope
    assert data["parameters"]["n_particles"] == 16 and data["parameters"]["seed"] == res.params["seed"]
    prov = data["provenance"]
    assert prov["versions"]["particle-attention"] == particles.__version__
    assert {"numpy", "numba"} <= set(prov["versions"])
    assert "git_revision" in prov
    table = format_table(res)
    assert "p" in table and res.verdicts[2] in table


def test_cli_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--bogus"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


@pytest.mark.slow
def test_full_size_demo(tmp_path, capsys):
    # The quick demo as a user runs it: every batch size consistent with strong order 1/2 (exit status 0).
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("consistent") >= 3 and "inconsistent" not in out
    data = json.loads((tmp_path / "rbm_strong_order.json").read_text())
    assert all(v["verdict"] == "consistent" for v in data["results"].values())
