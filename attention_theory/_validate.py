"""Argument checks for the attention estimators.

Every error names the offending argument and the constraint it broke. Arrays
are returned as C-contiguous float64 copies (or views when already so):
all estimators compute in float64 and return float64, whatever the input
precision (float16/float32/integer inputs are upcast; complex, boolean and
object arrays are rejected with a TypeError).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from particles._validate import as_generator as _as_generator
from particles._validate import (
    check_choice,  # noqa: F401  (re-exported for the estimators)
    check_rng_seed,
)

__all__ = [
    "as_matrix",
    "check_qkv",
    "check_qkv_heads",
    "check_int",
    "check_real",
    "check_bool",
    "check_choice",
    "as_generator",
    "seed_from",
]


def as_matrix(name, x, *, ndim=2, min_rows=1, cols=None, allow_neg_inf=False):
    """``x`` as a finite float64 C-contiguous array with ``ndim`` axes."""
    if isinstance(x, np.random.Generator):
        raise TypeError(f"{name} must be an array, got a numpy Generator (arguments in the wrong order?)")
    try:
        a = np.asarray(x)
    except ValueError as e:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular array: {e}") from e
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers (int or float), got dtype {a.dtype}")
    if a.ndim != ndim:
        shape = {1: "(n,)", 2: "(n, d)"}.get(ndim, f"{ndim} axes")
        raise ValueError(f"{name} must have shape {shape}, got an array with shape {a.shape}")
    if ndim >= 1 and a.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} row(s), got shape {a.shape}")
    if ndim == 2 and a.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {a.shape}")
    if cols is not None and a.shape[-1] != cols[1]:
        raise ValueError(f"{name} has {a.shape[-1]} columns but {cols[0]} requires {cols[1]} (got shape {a.shape})")
    a = np.ascontiguousarray(a, dtype=np.float64)
    if allow_neg_inf:
        bad = np.isnan(a) | (a == np.inf)
        if np.any(bad):
            raise ValueError(f"{name} must not contain NaN or +inf (-inf, a zero weight, is allowed)")
    elif not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must contain only finite values")
    return a


def check_qkv(q, k, v, *, self_attention=False):
    """Validate queries (N, d), keys (M, d), values (M, dv); return float64 copies."""
    q = as_matrix("q", q)
    k = as_matrix("k", k)
    v = as_matrix("v", v)
    if k.shape[1] != q.shape[1]:
        raise ValueError(
            f"k must have the same dimension d as q: q has shape {q.shape} (d={q.shape[1]}), "
            f"k has shape {k.shape} (d={k.shape[1]})"
        )
    if v.shape[0] != k.shape[0]:
        raise ValueError(
            f"v must have one row per key: k has shape {k.shape} (M={k.shape[0]}), v has shape {v.shape}"
        )
    if self_attention and k.shape[0] != q.shape[0]:
        raise ValueError(
            "k must have as many rows as q (N == M): random batch attention partitions tokens, "
            f"each token being a query and a key; got q with shape {q.shape} and k with shape {k.shape}"
        )
    return q, k, v


def check_int(name, value, *, low=None, high=None, high_doc=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high_doc or high}, got {v}")
    return v


def check_real(name, value, *, low=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return v


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return bool(value)


def as_generator(rng):
    """A numpy Generator from ``rng``: the engine's ``rng`` contract (``particles._validate``), None refused."""
    return _as_generator(rng)


def seed_from(rng):
    """An integer seed: ``rng`` itself when an int, else ``rng.integers(2**63)`` from a Generator (advances it).

    A SeedSequence seeds a Generator first, which then draws the seed.
    """
    if isinstance(rng, (np.random.Generator, np.random.SeedSequence)):
        return int(_as_generator(rng).integers(2**63))
    return check_rng_seed(rng)


def _ndim(a):
    """The number of axes of ``a``, or 2 where it is not an array at all (the 2-D checks then say why)."""
    if isinstance(a, np.random.Generator):
        return 2
    try:
        return np.ndim(a)
    except ValueError:  # ragged nested sequences
        return 2


def check_qkv_heads(q, k, v, *, self_attention=False):
    """Validate q, k, v given for one head (2-D) or for H heads (3-D, head axis first).

    Returns ``(q, k, v, multi)``: float64 arrays of shape (H, N, d), (H, M, d), (H, M, dv) (2-D inputs as
    H = 1, a view of the 2-D arrays :func:`check_qkv` returns) and ``multi``, whether the inputs had a head axis.
    """
    ndims = {name: _ndim(a) for name, a in (("q", q), ("k", k), ("v", v))}
    if sum(nd == 3 for nd in ndims.values()) < 2:  # one head: the 2-D checks and their messages
        q, k, v = check_qkv(q, k, v, self_attention=self_attention)
        return q[None], k[None], v[None], False
    for name, nd in ndims.items():
        if nd != 3:
            raise ValueError(
                f"{name} must have shape (H, ., .) like the other two (H heads, head axis first; or all three "
                f"2-D for one head), got an array with {nd} axes"
            )
    q = as_matrix("q", q, ndim=3, min_rows=0)
    k = as_matrix("k", k, ndim=3, min_rows=0)
    v = as_matrix("v", v, ndim=3, min_rows=0)
    heads = q.shape[0]
    if heads < 1 or k.shape[0] != heads or v.shape[0] != heads:
        raise ValueError(
            f"q, k, v must have the same number of heads H >= 1 (axis 0), got shapes {q.shape}, {k.shape}, {v.shape}"
        )
    for name, a in (("q", q), ("k", k), ("v", v)):
        if a.shape[1] < 1 or a.shape[2] < 1:
            raise ValueError(f"{name} must have at least one row and one column per head, got shape {a.shape}")
    check_qkv(q[0], k[0], v[0], self_attention=self_attention)  # the per-head shape rules and their messages
    return q, k, v, True
