"""Compute backends: the registry, and the contract every backend implements.

:func:`particles.solve` and :func:`particles.drift` validate their arguments,
build a plan, allocate the output and hand the work to the backend named by
their ``backend=`` argument, looked up here with :func:`get_backend`. Three
are built in (imported on first use, so that naming one never imports
another's dependencies): ``"cpu"`` (Numba loops), ``"reference"`` (plain
NumPy, the oracle of the tests) and ``"cuda"`` (numba-cuda kernels).
:func:`register_backend` adds one of your own.

The implementer's contract
--------------------------
A backend is an object -- usually a module -- with two functions:

``run(system, x, traj, plan)``
    Integrate R replicas. ``system`` is a :class:`particles.systems.System`;
    ``x`` is the initial state, float64, C-contiguous, shape (R, N, d), to be
    advanced in place to the final state; ``traj`` is the caller-allocated
    float64 array of shape (K, R, N, d) to fill: ``traj[0]`` the initial
    state, ``traj[k]`` the state after step ``min(k * plan.save_every,
    plan.nsteps)`` (the last entry is the final state). Returns nothing.
    ``plan`` (``particles.solve.Plan``, frozen) holds the rest: ``method``
    (``"full"``, ``"rbm1"``, ``"rbmr"``), ``nsteps``, ``dt`` and
    ``dt_last`` (the last step's length), the scheme's Butcher tableau
    ``A`` (S, S) and ``B`` (S,), ``scale`` and ``scale_last`` (the factor
    of each standard normal; 0.0 without noise), ``nfine`` (fine noise
    steps per step), ``tau_steps`` (steps per RBM-1 reshuffle),
    ``batch_size``, ``coupling`` (c_N of T1), ``seed``, ``sphere`` (each
    step ends with a normalisation), ``project`` (forces projected on the
    tangent space), ``remainder`` (how RBM-1 cuts the permutation into
    batches, ``"spread"`` or ``"pad"``; always ``"spread"`` for the other
    methods).
``drift(system, x, out, *, method, batch_size, seed, step, coupling)``
    Write the force on every particle of ``x`` (R, N, d) into ``out`` (same
    shape, float64): ``method="full"`` sums over all particles,
    ``method="rbm1"`` within the batches of the RBM-1 partition of
    reshuffle ``step``; projected on the tangent space when
    ``system.sphere``. Returns nothing. Under ``remainder="pad"`` it is
    also passed ``remainder="pad"`` (never otherwise, so a backend written
    before the keyword existed keeps working with the default).

``remainder="pad"``: a backend supports it by accepting the keyword
``remainder`` in its ``drift`` (and honouring ``plan.remainder`` in
``run``); :func:`particles.solve` and :func:`particles.drift` refuse
``remainder="pad"`` with a ``TypeError`` on a registered backend whose
``drift`` does not accept it. The batches are then
``batch_bounds(N, p, "pad")``, and a batch of a single particle (N mod p
== 1: the last position of the permutation) is widened to all N positions:
that particle feels the full force, with the weight ``1/(N-1)``.

and, optionally, ``require()``: called by :func:`get_backend` before every
use, it raises ``ImportError`` or ``RuntimeError`` saying what to install or
set when the backend cannot run here (the ``cuda`` backend's check).

Rules every backend follows (the built-in ones are tested for each):

- **Arrays.** float64 in and out; the arrays passed are the ones to write
  (no reallocation of ``x``, ``traj`` or ``out``); ``system.params`` and the
  plan are read-only. The parameter vector's layout per family is defined
  in ``particles._layout``.
- **Determinism.** The result is a function of the arguments alone: the same
  bits for any number of threads, any block size, and across runs. Nothing
  reads or advances a global random state (no ``np.random``).
- **Random streams.** Every random number comes from the counter-based
  streams of ``particles._rng``, keyed by ``plan.seed`` and the replica
  index r: the Brownian increment of particle i on fine step n is
  ``normal(combine(combine(root_key(seed, r, STREAM_NOISE), n), i), c)``
  for coordinate c; the RBM-1 permutation of reshuffle m is
  ``build_permutation(combine(root_key(seed, r, STREAM_PERM), m), ...)``
  (``particles._batches``), cut into ``batch_bounds(N, p, plan.remainder)``; the RBM-r
  subset of sub-step k is ``draw_subset(combine(root_key(seed, r,
  STREAM_SUBSET), k), ...)`` on a persistent pool. A backend that follows
  this draws the numbers every other backend draws, which is what couples
  ``full`` and ``rbm1`` runs with one seed (THEORY A3) across backends.
- **Agreement.** With the same streams, a backend agrees with
  ``"reference"`` to rounding.

Registry
--------
:func:`register_backend` checks that the two functions exist and accept
those arguments, and refuses an incomplete backend with a ``TypeError``
naming what is missing. The names of the built-in backends cannot be taken.
"""

from __future__ import annotations

import importlib
import inspect

__all__ = ["BUILTIN_BACKENDS", "register_backend", "unregister_backend", "get_backend", "available_backends",
           "remainder_kwargs"]

#: The built-in backends, by name (imported on first use).
BUILTIN_BACKENDS = ("cpu", "reference", "cuda")

_MODULES = {name: f"particles.backends.{name}" for name in BUILTIN_BACKENDS}
_registered: dict = {}

# what a backend provides: (attribute, how it is called, sample positional args, sample keyword args)
_CONTRACT = (
    ("run", "run(system, x, traj, plan)", 4, ()),
    ("drift", "drift(system, x, out, *, method, batch_size, seed, step, coupling)", 3,
     ("method", "batch_size", "seed", "step", "coupling")),
)


def _accepts(fn, nargs, keywords):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature to read: trust it
        return True
    try:
        sig.bind(*range(nargs), **dict.fromkeys(keywords))
    except TypeError:
        return False
    return True


def _missing(backend):
    missing = []
    for attr, call, nargs, keywords in _CONTRACT:
        fn = getattr(backend, attr, None)
        if not callable(fn):
            missing.append(f"{call} (no callable {attr!r})")
        elif not _accepts(fn, nargs, keywords):
            missing.append(f"{call} ({attr!r} does not accept these arguments)")
    return missing


def register_backend(name, backend, *, replace=False):
    """Make ``backend`` available as ``backend=name`` in :func:`particles.solve` and :func:`particles.drift`.

    Parameters
    ----------
    name : str
        Not one of :data:`BUILTIN_BACKENDS`.
    backend : object
        Provides ``run`` and ``drift`` as the module docstring states (and
        optionally ``require``).
    replace : bool
        Replace a backend registered under ``name`` before (otherwise that is
        a ``ValueError``).

    Raises
    ------
    TypeError
        ``backend`` lacks a function of the contract, or one of them does not
        accept its arguments (the message names each).
    ValueError
        ``name`` is empty, a built-in backend's, or already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a backend's name must be a non-empty string, got {name!r}")
    if name in BUILTIN_BACKENDS:
        raise ValueError(f"{name!r} is a built-in backend; register yours under another name")
    if name in _registered and not replace:
        raise ValueError(f"a backend named {name!r} is already registered (pass replace=True to replace it)")
    missing = _missing(backend)
    if missing:
        raise TypeError(f"backend {name!r} is incomplete: it must provide " + "; ".join(missing)
                        + " (the contract is in particles.backends)")
    _registered[name] = backend


def unregister_backend(name):
    """Remove a backend added with :func:`register_backend` (``KeyError`` if there is none)."""
    if name not in _registered:
        raise KeyError(f"no backend named {name!r} was registered")
    del _registered[name]


def available_backends():
    """The backend names :func:`get_backend` accepts: the built-in ones, then the registered ones."""
    return BUILTIN_BACKENDS + tuple(_registered)


def get_backend(name):
    """The backend named ``name``, checked usable here (its ``require()``, if it has one).

    Raises
    ------
    ValueError
        No backend has that name (the message lists those available).
    ImportError, RuntimeError
        From the backend's ``require()``: it cannot run here (e.g. ``"cuda"``
        without numba-cuda or a device), saying what to do.
    """
    if not isinstance(name, str) or name not in _MODULES and name not in _registered:
        raise ValueError(f"backend must be one of {', '.join(map(repr, available_backends()))}; got {name!r}")
    backend = importlib.import_module(_MODULES[name]) if name in _MODULES else _registered[name]
    require = getattr(backend, "require", None)
    if callable(require):
        require()
    return backend


def remainder_kwargs(backend, name, remainder):
    """The keyword arguments that carry ``remainder`` to ``backend.drift``: none for ``"spread"``.

    Parameters
    ----------
    backend : object
        A backend, as :func:`get_backend` returns it.
    name : str
        Its name (for the message).
    remainder : {"spread", "pad"}
        Already validated.

    Returns
    -------
    dict
        ``{}`` for ``"spread"`` (the contract's call, unchanged), else ``{"remainder": remainder}``.

    Raises
    ------
    TypeError
        A non-default ``remainder`` and a backend whose ``drift`` does not
        accept the keyword ``remainder`` (such a backend cuts only the
        default batches, and would ignore ``plan.remainder`` in ``run`` too).
    """
    if remainder == "spread":
        return {}
    keywords = _CONTRACT[1][3] + ("remainder",)
    if not _accepts(getattr(backend, "drift", None), 3, keywords):
        raise TypeError(f"remainder={remainder!r} needs a backend that cuts those batches, but the drift of backend "
                        f"{name!r} does not accept the keyword 'remainder' (the contract is in particles.backends); "
                        f"use backend='cpu', 'reference' or 'cuda', or remainder='spread'")
    return {"remainder": remainder}
