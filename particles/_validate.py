"""Argument checks shared by the public functions of ``particles`` and ``attention_theory``.

Every error names the argument and the constraint it broke, so that a user
reading one line knows what to change.

The ``rng`` contract
--------------------
A function with an ``rng`` argument (NumPy randomness: initial states,
random features, sampled estimators) normalises it with
:func:`as_generator`:

- a ``numpy.random.Generator`` is used as is (its draws advance it);
- an int (or NumPy integer) ``0 <= rng < 2**64`` seeds a new
  ``numpy.random.default_rng(rng)``;
- a ``numpy.random.SeedSequence`` seeds a new ``default_rng(rng)``;
- ``None`` only where the function says so (``allow_none=True``): fresh
  entropy from the OS, a different result at every call.

Anything else is refused: a bool, a float, a string, a legacy
``RandomState``, a ``BitGenerator``, a sequence of ints, or ``None`` where it
is not allowed raise ``TypeError("rng must be a non-negative int seed, a
numpy.random.SeedSequence or a numpy.random.Generator, got <type>")``
(naming ``None`` too where it is allowed); an int outside ``[0, 2**64)``
raises ``ValueError("rng, as an int seed, must satisfy 0 <= rng < 2**64,
got <value>")``. The same input always gives the same generator state.

The engine's own randomness does not come from NumPy generators: its
``seed`` (:func:`check_seed`, the same range) keys the counter-based streams
of ``particles._rng``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def check_finite_scalar(name, value, *, low=None, high=None, low_inclusive=True, high_inclusive=True):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {v!r}")
    if high is not None and (v > high or (v == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {op} {high}, got {v!r}")
    return v


def check_int(name, value, *, low=None, high=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_seed(seed):
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (numbers.Integral, np.integer)):
        raise TypeError(f"seed must be a non-negative integer, got {type(seed).__name__}")
    s = int(seed)
    if not 0 <= s < 2**64:
        raise ValueError(f"seed must satisfy 0 <= seed < 2**64, got {s}")
    return s


def as_generator(rng, *, name="rng", allow_none=False):
    """A ``numpy.random.Generator`` from ``rng``, following the ``rng`` contract of this module's docstring."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    if rng is None and allow_none:
        return np.random.default_rng()
    return np.random.default_rng(check_rng_seed(rng, name=name, allow_none=allow_none))


def check_rng_seed(rng, *, name="rng", allow_none=False):
    """``rng`` as an int seed in ``[0, 2**64)``, with the messages of the ``rng`` contract."""
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (numbers.Integral, np.integer)):
        accepted = "None, " if allow_none else ""
        raise TypeError(f"{name} must be {accepted}a non-negative int seed, a numpy.random.SeedSequence or a "
                        f"numpy.random.Generator, got {type(rng).__name__}")
    s = int(rng)
    if not 0 <= s < 2**64:
        raise ValueError(f"{name}, as an int seed, must satisfy 0 <= {name} < 2**64, got {s}")
    return s


def check_state(name, x, *, system=None, min_particles=2):
    """Validate a state of shape (N, d) or (R, N, d); return float64 (R, N, d), ensemble flag."""
    try:
        a = np.asarray(x)
    except ValueError as e:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular array of shape (N, d) or (R, N, d): {e}") from e
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers (integers are cast to float64), got dtype {a.dtype}")
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (N, d) or (R, N, d) with a leading ensemble axis, "
                         f"got shape {a.shape}")
    ensemble = a.ndim == 3
    a3 = a if ensemble else a[None]
    r, n, d = a3.shape
    if r < 1 or d < 1:
        raise ValueError(f"{name} must have at least one replica and one dimension, got shape {a.shape}")
    if n < min_particles:
        raise ValueError(f"{name} must hold at least {min_particles} particles (axis N), got shape {a.shape}")
    a3 = np.ascontiguousarray(a3, dtype=np.float64)
    if not np.all(np.isfinite(a3)):
        raise ValueError(f"{name} must contain only finite values")
    if system is not None:
        if system.dim is not None and d != system.dim:
            raise ValueError(f"{name} has dimension d={d}, but system {system.name!r} requires d={system.dim}")
        if system.sphere:
            norms = np.linalg.norm(a3, axis=-1)
            if np.any(np.abs(norms - 1.0) > 1e-8):
                raise ValueError(
                    f"{name} must lie on the unit sphere for system {system.name!r} (|x_i| = 1 within 1e-8); "
                    "normalise it or build the system with sphere=False"
                )
    return a3, ensemble
