"""The ``phase_diagram`` study against a hand-written restatement of the authors' phase-diagram procedure.

The restatement below is written from ``phase-diagrams.py`` of ``borjanG/2023-transformers-rotf`` (read at
commit 538ba83; ``--use_softmax``, the mode of the paper's phase diagram), not from the library:

- ``simu_xform.step_1``: ``SM = softmax(beta * M M^T)`` over all tokens (self included), ``M2 = SM @ M``,
  ``M2 *= eta``, ``M2 += M``, then ``torch.nn.functional.normalize`` (divide by ``max(|row|, 1e-12)``);
  ``eta = args.step = 0.1`` (the step is not rescaled with softmax); float64 throughout;
- ``do_single_beta``: ``times_list = linspace(0, maxtime, 200)``, ``cur_time = 0.``, after each step
  ``cur_time += eta``; if ``cur_time >= times[c]`` the statistic of the current state is stored for every
  checkpoint c with ``cur_time >= times[c]``; stop when ``cur_time >= maxtime`` (30);
- ``check_stats``: ``IP = M M^T``, the entries off the diagonal (ordered pairs i != j, over the whole batch),
  ``(inner_prods > 0.999).sum() / len(inner_prods)``.

The initial tokens are the study's own (the same seed gives the same x0): torch's generator is not
reproduced, so this checks the procedure on the same token sets, not the script's random draws.
"""

from __future__ import annotations

import numpy as np
import pytest

from particles import initial
from validation.studies import dynamics as dyn
from validation.study import get_study

pytestmark = pytest.mark.usefixtures("one_numba_thread")

N, R, T, ETA = 32, 8, 30.0, 0.1


def _softmax_rows(s):
    s = s - s.max(axis=-1, keepdims=True)  # torch.nn.functional.softmax subtracts the row maximum
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def authors_phase_curve(x0, beta, *, projected=False, eta=ETA, maxtime=T, checkpoints=200):
    """The script's density at its checkpoints for one beta; x0 of shape (batch, n, d).

    ``projected=True`` is the negative control: the same loop with the tangent projection of the field
    (the library's ``scheme="euler"``), which is not the script's step.
    """
    m = np.array(x0, dtype=np.float64)
    n = m.shape[1]
    times = np.linspace(0.0, maxtime, checkpoints)
    dens = np.full(checkpoints, np.nan)
    off = ~np.eye(n, dtype=bool)
    cur_ckpt, cur_time = 0, 0.0
    while True:
        sm = _softmax_rows(beta * (m @ np.swapaxes(m, 1, 2)))
        m2 = sm @ m
        if projected:
            m2 = m2 - np.sum(m2 * m, axis=-1, keepdims=True) * m
        m2 *= eta
        m2 += m
        m = m2 / np.maximum(np.linalg.norm(m2, axis=-1, keepdims=True), 1e-12)
        cur_time += eta
        if cur_time >= times[cur_ckpt]:
            ip = m @ np.swapaxes(m, 1, 2)
            inner = ip[:, off]  # (batch, n (n - 1)): ordered pairs
            value = np.count_nonzero(inner > 0.999) / inner.size
            while cur_time >= times[cur_ckpt]:
                dens[cur_ckpt] = value
                cur_ckpt += 1
                if cur_ckpt >= checkpoints:
                    break
        if cur_time >= maxtime:
            break
    assert cur_ckpt == checkpoints
    return dens


def _params(d, beta):
    study = get_study("phase_diagram")
    return {"kind": "SA", "d": d, "beta": beta, "n": N, "R": R, "T": T, "dt": study.DT, "scheme": study.SCHEME,
            "eps": study.EPS}


def test_authors_checkpoints_follow_the_float_time_of_the_script():
    times, steps = dyn.authors_checkpoints(0.1, 30.0)
    assert times.shape == steps.shape == (200,)
    # restated: the script's loop, counting steps
    want, cur, k, c = [], 0.0, 0, 0
    while c < 200:
        cur += 0.1
        k += 1
        while c < 200 and cur >= times[c]:
            want.append(k)
            c += 1
    assert steps.tolist() == want
    assert steps[0] == 1 and steps[-1] == 300  # checkpoint 0 is after the first step; 30.000000000000156 >= 30
    assert len(set(steps.tolist())) == 200  # at dt = 0.1 no step serves two checkpoints
    assert steps.tolist() == np.ceil(300 * np.arange(200) / 199).astype(int).clip(min=1).tolist()
    # a coarser step serves several checkpoints
    _, coarse = dyn.authors_checkpoints(1.0, 30.0)
    assert coarse[0] == 1 and coarse[-1] == 30 and len(set(coarse.tolist())) == 30
    for bad, name in ((dict(dt=0.0, t_end=30.0), "dt"), (dict(dt=0.1, t_end=-1.0), "t_end"),
                      (dict(dt=0.1, t_end=30.0, count=1), "count")):
        with pytest.raises(ValueError, match=f"^{name} must"):
            dyn.authors_checkpoints(**bad)


@pytest.mark.parametrize("d, betas", [(2, (1.0, 2.0)), (8, (2.0, 4.0)), (32, (4.0, 6.0)), (128, (4.0, 6.0))])
def test_phase_diagram_study_is_the_authors_procedure(d, betas):
    study = get_study("phase_diagram")
    times, steps = dyn.authors_checkpoints(study.DT, T)
    for k, beta in enumerate(betas):
        params = _params(d, beta)
        seed = 1000 + 10 * d + k
        res = study.measure(params, seed)
        x0 = initial.uniform_sphere(N, d, rng=np.random.default_rng(seed), replicas=R)  # the study's x0
        want = authors_phase_curve(x0, beta)
        got = np.asarray(res["pairs"])[steps]
        assert np.asarray(res["t"])[steps] == pytest.approx(steps * 0.1, abs=1e-12)
        # the transition is inside the window: the check compares more than zeros and ones
        assert np.count_nonzero((want > 0) & (want < 1)) >= 5, want  # d = 128: a sharp transition, 8 of 200
        np.testing.assert_array_equal(got, want)  # exactly (==), every checkpoint
        # negative controls: the projected step, and the checkpoints read one step early, differ at several
        # checkpoints (at d = 128 the transition takes about 8 checkpoints, so "several" is >= 5)
        proj = authors_phase_curve(x0, beta, projected=True)
        assert np.count_nonzero(proj != want) >= 5
        assert np.count_nonzero(np.asarray(res["pairs"])[steps - 1] != want) >= 5
