"""``solve`` and ``drift``: run a method on a system with a backend.

Binding semantics (see THEORY A2, A3 and DESIGN "Randomness"):

- the Brownian increment of particle i on fine noise step n of replica r is
  a pure function of (seed, r, n, i): ``full`` and ``rbm1`` with one seed
  are synchronously coupled, and runs at different ``dt`` that are whole
  multiples of one ``noise_dt`` share one Brownian path (the increment over
  a coarse step is the sum of the fine ones);
- the RBM-1 permutation of reshuffle m is a pure function of (seed, r, m),
  from a stream independent of the noise;
- results do not depend on the number of threads.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from particles import integrators
from particles._validate import check_choice, check_finite_scalar, check_int, check_seed, check_state
from particles.backends import BUILTIN_BACKENDS, get_backend, remainder_kwargs
from particles.batching import check_remainder
from particles.systems import System, check_user_functions

__all__ = ["solve", "drift", "Trajectory", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 2 * 1024**3
BACKENDS = BUILTIN_BACKENDS  # the built-in ones; particles.backends.available_backends() adds the registered ones
_RTOL_GRID = 1e-9


@dataclass(frozen=True)
class Plan:
    """Everything a backend needs besides the system and the arrays (see the contract in ``particles.backends``)."""

    method: str
    nsteps: int
    save_every: int
    tau_steps: int
    nfine: int
    dt: float
    noise_dt: float
    scale: float  # sigma_N * sqrt(noise_dt): multiplies each standard normal
    coupling: float
    batch_size: int
    seed: int
    sphere: bool
    A: np.ndarray
    B: np.ndarray
    scheme: str = "euler"  # name of the one-step scheme (integrators.SCHEMES)
    project: bool = False  # forces projected on the tangent space (sphere and a projected scheme)
    dt_last: float = float("nan")  # length of the last step: dt, or less when t_end is not a whole number of steps
    scale_last: float = float("nan")  # noise scale of the last step: scale * sqrt(dt_last / dt)
    remainder: str = "spread"  # how RBM-1 cuts the permutation (particles._batches.REMAINDERS); "spread" otherwise


@dataclass(frozen=True)
class Trajectory:
    """Result of :func:`solve`.

    Attributes
    ----------
    t : ndarray, shape (K,)
        Save times.
    x : ndarray, shape (K, N, d), or (K, R, N, d) for an ensemble input
        States at the save times.
    method : Method
        The integrator's declaration (orders, batch exponent).
    metadata : dict
        seed, method, scheme, backend, dt, noise_dt, tau, batch_size,
        save_every, remainder (``None`` unless ``method="rbm1"``), system
        name and parameters, package versions.
    """

    t: np.ndarray
    x: np.ndarray
    method: integrators.Method
    metadata: dict = field(default_factory=dict)

    @property
    def final(self):
        """The state at the last save time."""
        return self.x[-1]


def _versions():
    import numba

    from particles import __version__

    return {"particles": __version__, "numpy": np.__version__, "numba": numba.__version__}


def _whole_multiple(name_a, a, name_b, b):
    ratio = a / b
    if not math.isfinite(ratio):
        raise ValueError(f"{name_a}/{name_b} must be finite; got {name_a}={a!r}, {name_b}={b!r} (ratio {ratio!r})")
    k = round(ratio)
    if k < 1 or abs(ratio - k) > _RTOL_GRID * max(1.0, ratio):
        raise ValueError(f"{name_a} must be a whole multiple of {name_b}; got {name_a}={a!r}, {name_b}={b!r} "
                         f"(ratio {ratio!r})")
    return int(k)


def _steps(t_end, dt):
    """(number of steps, length of the last step): the last step is shortened when t_end / dt is not whole.

    A ratio within ``_RTOL_GRID`` of an integer k counts as k whole steps (so
    that t_end = 0.3, dt = 0.1 is 3 steps, not 3 steps and a step of 5e-17).
    """
    ratio = t_end / dt
    if not math.isfinite(ratio):
        raise ValueError(f"t_end/dt must be finite; got t_end={t_end!r}, dt={dt!r} (ratio {ratio!r})")
    k = round(ratio)
    if k >= 1 and abs(ratio - k) <= _RTOL_GRID * max(1.0, ratio):
        return int(k), dt
    n = math.ceil(ratio)
    return int(n), t_end - (n - 1) * dt


def _backend(name):
    # the registry imports a built-in backend on first use (numba-cuda only when asked for) and runs its
    # require(): ImportError / RuntimeError saying how to install numba-cuda or enable the simulator
    return get_backend(name)


def _check_system(system):
    if not isinstance(system, System):
        raise TypeError(f"system must be a particles.systems.System (e.g. confined_tanh()), "
                        f"got {type(system).__name__}")


def _check_remainder(method, remainder):
    """``remainder`` validated; for a method other than RBM-1 a non-default one is ignored, with a warning."""
    remainder = check_remainder(remainder)
    if method != "rbm1" and remainder != "spread":
        warnings.warn(f"remainder={remainder!r} is ignored by method={method!r}: only method='rbm1' cuts a "
                      f"permutation into batches (full sums over all N, rbmr draws subsets of exactly "
                      f"batch_size)", UserWarning, stacklevel=3)
        return "spread"
    return remainder


def _check_batch_size(method, batch_size, n):
    if method == "full":
        if batch_size is not None:
            check_int("batch_size", batch_size, low=2, high=n)
            warnings.warn(f"batch_size={int(batch_size)} is ignored by method='full' (direct summation over all N "
                          f"particles); use method='rbm1' or 'rbmr' for random batches", UserWarning, stacklevel=3)
        return n
    if batch_size is None:
        raise ValueError(f"batch_size is required for method={method!r} (an integer with 2 <= batch_size <= N={n})")
    return check_int("batch_size", batch_size, low=2, high=n)


def solve(system, x0, *, t_end, dt, method="full", batch_size=None, seed=0, backend="cpu", save_every=1,
          noise_dt=None, scheme="euler", tau=None, max_bytes=DEFAULT_MAX_BYTES, remainder="spread"):
    """Integrate an interacting particle system.

    Parameters
    ----------
    system : System
        From :mod:`particles.systems`.
    x0 : array_like, shape (N, d) or (R, N, d)
        Initial state; a leading axis holds R independent replicas
        integrated in one call (replica r uses the streams of (seed, r)).
        Integers are cast to float64.
    t_end : float
        Final time, > 0. When it is not a whole multiple of ``dt`` the last
        step is shortened to end exactly at ``t_end`` (as
        ``scipy.integrate.solve_ivp`` and diffrax do): see Notes.
    dt : float
        Integration step h > 0.
    method : {"full", "rbm1", "rbmr"}
        Direct O(N^2) summation, Random Batch Method without replacement
        (T2), or with replacement.
    batch_size : int, optional
        p, with 2 <= p <= N; required for the random-batch methods;
        ``method="full"`` ignores it, with a ``UserWarning``.
        When p does not divide N the batches of RBM-1 are cut as
        ``remainder`` says; each batch has the weight ``1/(|C| - 1)`` of
        its actual size ``|C|``.
    seed : int
        0 <= seed < 2**64. Determines the noise and the batches.
    backend : {"cpu", "reference", "cuda"} or a registered name
        See :mod:`particles.backends` (:func:`~particles.backends.register_backend`).
    save_every : int
        Keep every ``save_every``-th step (the final state is always kept).
    noise_dt : float, optional
        Finest Brownian grid (default ``dt``); ``dt`` must be a whole
        multiple of it.
    scheme : {"euler", "heun", "rk4", "ambient_euler"}
        One-step scheme; Heun, RK4 and ambient Euler require sigma = 0. On
        the sphere the forces are projected on the tangent space and every
        step ends with a normalisation; ``"ambient_euler"`` (systems on the
        sphere only) steps along the unprojected field instead,
        ``x <- (x + dt a)/|x + dt a|`` (see :mod:`particles.integrators`).
    tau : float, optional
        RBM-1 reshuffle interval, a whole multiple of ``dt`` (default ``dt``:
        h = tau). An interval longer than ``t_end`` means one partition for
        the whole run. The other methods ignore it, with a ``UserWarning``.
    max_bytes : int
        Memory budget in bytes for the saved trajectory; a larger request is
        refused before any work is done, with the ``save_every`` that fits.
    remainder : {"spread", "pad"}
        How RBM-1 cuts each permutation of the N particles into batches
        (:func:`particles.batching.batch_bounds`, THEORY A2). ``"spread"``
        (default): N // p batches whose sizes differ by at most one (p or
        p + 1 only while N mod p <= N // p; N = 1000, p = 64 gives 66 and
        67). ``"pad"``: the pad-and-crop of random batch attention,
        ceil(N / p) batches of p, the last one holding the N mod p left
        over. When N mod p == 1 that last batch holds one particle (the
        *lone* one), which has no batch-mates: its batch is widened to all
        N particles, so it feels the exact force (weight ``1/(N-1)``) and
        the batch-force lemma T3 stays exact
        (:func:`~particles.integrators.batch_variance_factor`); the other
        particles keep their batches. When p divides N both give the same
        batches (the same bits). The permutation is the same in both.
        Only ``method="rbm1"`` cuts batches: the other methods ignore a
        non-default value, with a ``UserWarning``. A registered backend
        runs ``"pad"`` only if its ``drift`` accepts the keyword
        ``remainder`` (see :mod:`particles.backends`).

    Returns
    -------
    Trajectory

    Notes
    -----
    A shortened last step (t_end = (n - 1) dt + h_last, 0 < h_last < dt)
    uses the scheme with step h_last. Its Brownian increment is the one of
    a whole step n (the sum of its ``dt / noise_dt`` fine increments) times
    sqrt(h_last / dt): exactly N(0, sigma^2 h_last), independent of the
    past, but not the restriction of the path that a run on a finer grid
    would see, so runs at different ``dt`` share one Brownian path only up
    to their last whole step. The RBM-1 partition of the last step is the one
    of its reshuffle interval (reshuffle index n // (tau / dt), as for a
    whole step), so ``full`` and ``rbm1`` stay synchronously coupled; RBM-r
    advances the N/p subsets of that step by the pseudo-time h_last. Where
    t_end is a whole number of steps nothing changes (the coupling contract
    is exact).

    Noise on the sphere (``system.sphere`` and sigma > 0, scheme
    ``"euler"``): each step is ``y = x + h F(x) + sigma P_x dW`` followed by
    ``x = y / |y|``, with P_x = I - x x^T and dW the step's Brownian
    increment. F and P_x dW are tangent, so ``|y|^2 = 1 + sigma^2 |P_x dW|^2``
    to leading order and the normalisation adds the drift
    -(d - 1) sigma^2 x h / 2 in expectation: the Ito drift of Brownian
    motion on S^(d-1), generator (sigma^2 / 2) Laplace-Beltrami, for which
    E<x(t), x(0)> = exp(-(d - 1) sigma^2 t / 2) under pure noise. The scheme
    has weak order 1 and strong order 1/2 (the noise is multiplicative and
    non-commutative, so the flat systems' strong order 1 for additive noise
    does not carry over); tests/particles/test_sphere_noise.py measures both
    (see the engine guide, "Noise on the sphere").
    """
    _check_system(system)
    method = check_choice("method", method, tuple(integrators.METHODS))
    scheme_obj = integrators.SCHEMES[check_choice("scheme", scheme, tuple(integrators.SCHEMES))]
    bk = _backend(backend)
    x, ensemble = check_state("x0", x0, system=system)
    R, N, d = x.shape
    check_user_functions(system, d)
    p = _check_batch_size(method, batch_size, N)
    remainder = _check_remainder(method, remainder)
    remainder_kwargs(bk, backend, remainder)  # a registered backend that cannot cut "pad" is refused here
    dt = check_finite_scalar("dt", dt, low=0.0, low_inclusive=False)
    t_end = check_finite_scalar("t_end", t_end, low=0.0, low_inclusive=False)
    nsteps, dt_last = _steps(t_end, dt)
    noise_dt = dt if noise_dt is None else check_finite_scalar("noise_dt", noise_dt, low=0.0, low_inclusive=False)
    nfine = _whole_multiple("dt", dt, "noise_dt", noise_dt)
    if tau is not None and method != "rbm1":
        tau = check_finite_scalar("tau", tau, low=0.0, low_inclusive=False)
        warnings.warn(f"tau={tau!r} is ignored by method={method!r}: only method='rbm1' keeps a partition for an "
                      f"interval tau", UserWarning, stacklevel=2)
        tau = None
    tau_steps = 1 if tau is None else _whole_multiple("tau", check_finite_scalar("tau", tau, low=0.0,
                                                                                  low_inclusive=False), "dt", dt)
    tau_steps = min(tau_steps, nsteps)  # a longer interval means the same thing: one partition for the run
    save_every = check_int("save_every", save_every, low=1)
    seed = check_seed(seed)
    sigma = system.sigma_for(N)
    if scheme_obj.sphere_only and not system.sphere:
        raise ValueError(f"scheme={scheme!r} steps along the field before its projection on the sphere's tangent "
                         f"space and is defined only for systems on the sphere; system {system.name!r} lives in "
                         f"R^d (use scheme='euler')")
    if sigma > 0 and not scheme_obj.stochastic:
        raise ValueError(f"scheme={scheme!r} is deterministic; it requires sigma = 0, but the system has "
                         f"sigma={sigma!r} (use scheme='euler')")
    max_bytes = check_int("max_bytes", max_bytes, low=1)
    nsave = _num_saves(nsteps, save_every)
    state_bytes = R * N * d * 8
    if nsave * state_bytes > max_bytes:
        fits = max_bytes // state_bytes  # whole states that fit in the budget
        hint = (f"increase save_every to at least {math.ceil(nsteps / (fits - 1))}" if fits >= 2 else
                f"even the initial and final states need {2 * state_bytes} bytes")
        raise ValueError(f"the trajectory would need {nsave * state_bytes} bytes ({nsave} saved states), more than "
                         f"max_bytes={max_bytes}; {hint}, or raise max_bytes")
    A, B = scheme_obj.tableau()
    plan = Plan(method=method, nsteps=nsteps, save_every=save_every, tau_steps=tau_steps, nfine=nfine, dt=dt,
                noise_dt=noise_dt, scale=sigma * math.sqrt(noise_dt), coupling=system.coupling_for(N),
                batch_size=p, seed=seed, sphere=system.sphere, A=A, B=B, scheme=scheme_obj.name,
                project=system.sphere and scheme_obj.projected, dt_last=dt_last,
                scale_last=sigma * math.sqrt(noise_dt) * (1.0 if dt_last == dt else math.sqrt(dt_last / dt)),
                remainder=remainder)
    traj = np.empty((nsave, R, N, d))
    x = x.copy()
    bk.run(system, x, traj, plan)
    steps = np.minimum(np.arange(nsave) * save_every, nsteps)
    t = steps * dt
    if dt_last != dt:
        t[-1] = t_end
    if not np.all(np.isfinite(traj)):
        bad = int(np.argmax(~np.all(np.isfinite(traj.reshape(nsave, -1)), axis=1)))
        warnings.warn(f"the state became non-finite by t={float(t[bad])!r} (save index {bad}); reduce dt "
                      f"(system {system.name!r})", RuntimeWarning, stacklevel=2)
    meta = {
        "system": system.name, "system_info": dict(system.info), "method": method, "scheme": scheme_obj.name,
        "backend": backend, "seed": seed, "dt": dt, "noise_dt": noise_dt, "tau": dt * tau_steps,
        "batch_size": None if method == "full" else p, "save_every": save_every,
        "remainder": remainder if method == "rbm1" else None,
        "t_end": nsteps * dt if dt_last == dt else t_end, "dt_last": dt_last,
        "n_particles": N, "dim": d, "replicas": R if ensemble else None, "versions": _versions(),
    }
    xs = traj if ensemble else traj[:, 0]
    return Trajectory(t=t, x=xs, method=integrators.METHODS[method], metadata=meta)


def _num_saves(nsteps, save_every):
    """Saved states: t = 0, every save_every steps, and the final step."""
    return nsteps // save_every + 1 + (1 if nsteps % save_every else 0)


def drift(system, x, *, method="full", batch_size=None, seed=0, step=0, backend="cpu", remainder="spread"):
    """The drift of the system at frozen positions.

    For ``method="full"``: b(x_i) + c_N/(N-1) sum_{j != i} K(x_i, x_j) (or
    the attention force), projected on the sphere if the system lives there.
    For ``method="rbm1"``: the same with the batch sums of the RBM-1
    partition of reshuffle index ``step`` (the one :func:`solve` uses at that
    reshuffle with the same seed), so that the batch-force lemma (T3) can be
    checked directly.

    Parameters
    ----------
    system : System
    x : array_like, shape (N, d) or (R, N, d)
    method : {"full", "rbm1"}
    batch_size : int, optional
        p, required for ``"rbm1"`` (as in :func:`solve`).
    seed, step : int
        The partition is the one of reshuffle ``step`` under ``seed``
        (replica r of an ensemble input uses the streams of (seed, r)).
    backend : str
    remainder : {"spread", "pad"}
        How the permutation is cut into batches, as in :func:`solve` (a
        lone particle under ``"pad"`` gets the full drift);
        ``method="full"`` ignores a non-default value, with a
        ``UserWarning``.

    Returns
    -------
    ndarray, same shape as ``x``
    """
    _check_system(system)
    method = check_choice("method", method, ("full", "rbm1"))
    bk = _backend(backend)
    xa, ensemble = check_state("x", x, system=system)
    R, N, d = xa.shape
    check_user_functions(system, d)
    p = _check_batch_size(method, batch_size, N)
    seed = check_seed(seed)
    step = check_int("step", step, low=0)
    remainder = _check_remainder(method, remainder)
    extra = remainder_kwargs(bk, backend, remainder)
    out = np.empty_like(xa)
    bk.drift(system, xa, out, method=method, batch_size=p, seed=seed, step=step, coupling=system.coupling_for(N),
             **extra)
    return out if ensemble else out[0]
