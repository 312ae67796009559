"""Plumbing shared by the attention-dynamics studies: modes, JSON lists, chunked runs, the authors' procedure."""

from __future__ import annotations

import math

import numpy as np

import particles


def _check_mode(mode):
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
    return mode


def _finite_list(a):
    """A list of floats for JSON (non-finite values become None)."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, dtype=float).ravel()]


def span_coordinates(x):
    r"""Coordinates of n tokens in an orthonormal basis of their span: shape (..., n, min(n, d)).

    The SA/USA velocity of a token (Q = K = V = I) is a combination of the
    tokens, and the projected or ambient Euler or RK4 update stays in their span; the
    dynamics only sees inner products, which an orthonormal change of basis
    keeps. So n tokens in d > n dimensions evolve exactly like their
    coordinates in the n-dimensional span of the initial tokens: the cost of
    a run no longer grows with d. The coordinates are the rows of the
    Cholesky factor L of the Gram matrix X X^T = L L^T (backward stable: the
    inner products are kept to rounding), rows renormalised. For d <= n the
    tokens are returned unchanged.
    """
    x = np.asarray(x, dtype=float)
    n, d = x.shape[-2:]
    if d <= n:
        return x.copy()
    y = np.linalg.cholesky(np.matmul(x, np.swapaxes(x, -1, -2)))
    return y / np.linalg.norm(y, axis=-1, keepdims=True)


def _saved_states(system, x0, t_end, dt, *, scheme, every=1, budget=2**26, per_save_bytes=None):
    """Yield (times, states) chunks of the trajectory saved every ``every`` steps, t = 0 first.

    ``scheme`` is required (a keyword of :func:`particles.solve`): the two
    Euler steps differ visibly at dt = 0.1, so no default is chosen silently.

    The run is cut into segments of at most ``budget // per_save_bytes``
    saved states (default ``per_save_bytes``: one state; pass more when the
    caller derives larger arrays per saved state, e.g. Gram matrices);
    restarting the deterministic scheme from the last state is exact, so the
    chunks are those of one long run.
    """
    nsteps = round(t_end / dt)
    if nsteps % every:
        raise ValueError(f"t_end / dt = {nsteps} steps is not a multiple of every = {every}")
    per_save = max(1, budget // max(1, x0.nbytes if per_save_bytes is None else per_save_bytes))
    seg = max(1, per_save - 1) * every
    yield np.zeros(1), x0[None]
    done = 0
    x = x0
    while done < nsteps:
        m = min(seg, nsteps - done)
        tr = particles.solve(system, x, t_end=m * dt, dt=dt, scheme=scheme, save_every=every)
        steps = done + np.rint(tr.t[1:] / dt).astype(int)
        yield steps * dt, tr.x[1:]
        x = tr.final
        done += m


#: How each ``scheme`` of the figure studies is named in rules, figures and reports.
STEP_WORDS = {
    "ambient_euler": "ambient Euler x <- (x + h a)/|x + h a|, as in the authors' phase-diagrams.py and sphere.py",
    "euler": "projected Euler x <- (x + h P_x a)/|x + h P_x a| (not the authors' step)",
    "rk4": "RK4",
}


def step_words(params):
    """The scheme and step of a figure-study cell in words, e.g. for a rule or a figure title."""
    scheme = params.get("scheme", "euler")  # version 1 of the figure studies ran the projected step
    return f"{STEP_WORDS.get(scheme, scheme)}, h = {params['dt']:g}"


def authors_checkpoints(dt, t_end, count=200):
    r"""The checkpoints of the authors' ``phase-diagrams.py`` as step indices: which step each checkpoint reads.

    The script (``borjanG/2023-transformers-rotf``, read at commit 538ba83,
    function ``do_single_beta``) takes the checkpoint times
    ``linspace(0, maxtime, 200)``, accumulates the time in floating point
    (``cur_time += eta`` after every step, starting from 0.0), and after each
    step, while ``cur_time >= times[c]``, stores the statistic of the current
    state as checkpoint c and moves to c + 1; it stops when
    ``cur_time >= maxtime``. So checkpoint 0 (time 0) is the state after the
    first step, not the initial state, and a step can serve several
    checkpoints. The result is the smallest k >= 1 whose accumulated time
    (k additions of ``dt``) is ``>= times[c]``.

    The accumulated time differs from k dt by rounding (about 1.6e-13 at
    k = 300, dt = 0.1, above k dt); for dt = 0.1, t_end = 30 every interior
    checkpoint 30 c / 199 is at least 5e-4 away from a multiple of 0.1, so
    neither that rounding nor how ``linspace`` rounds its interior points
    can move a checkpoint; the last one (30 exactly) is reached at k = 300,
    where the accumulated time is 30.000000000000156.

    Parameters
    ----------
    dt : float
        The step (the script's ``eta``), > 0.
    t_end : float
        The script's ``maxtime``, > 0.
    count : int, default 200
        Number of checkpoints (the script's 200), >= 2.

    Returns
    -------
    times : ndarray, shape (count,)
        The checkpoint times ``linspace(0, t_end, count)``.
    steps : ndarray of int, shape (count,)
        For each checkpoint, the number of steps taken when the script stores it: index into states saved at
        every step with the initial state first (the ``phase_diagram`` study's ``t = k dt``).
    """
    dt, t_end = float(dt), float(t_end)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    if not (math.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be a finite number > 0, got {t_end!r}")
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 2:
        raise ValueError(f"count must be an integer >= 2, got {count!r}")
    times = np.linspace(0.0, t_end, int(count))
    steps = np.empty(int(count), dtype=int)
    cur, k, c = 0.0, 0, 0
    while c < count:
        cur += dt  # the script's float accumulation, one addition per step
        k += 1
        while c < count and cur >= times[c]:
            steps[c] = k
            c += 1
        if cur >= t_end:
            break
    if c < count:  # pragma: no cover (times[-1] == t_end is always reached before the loop stops)
        raise RuntimeError(f"checkpoint {c} at t = {times[c]} not reached by t_end = {t_end}")
    return times, steps


def _first_crossing(t, p, level):
    """Linearly interpolated first time at which p(t) >= level; None if never."""
    above = np.flatnonzero(np.asarray(p) >= level)
    if above.size == 0:
        return None
    k = int(above[0])
    if k == 0:
        return float(t[0])
    t0, t1, p0, p1 = t[k - 1], t[k], p[k - 1], p[k]
    return float(t0 + (level - p0) * (t1 - t0) / (p1 - p0))
