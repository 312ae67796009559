"""Argument checks shared by the numeric bounds (plain NumPy): every error names the argument at fault."""

from __future__ import annotations

import numbers

import numpy as np


def _array(name, a, ndims, shape_text=None):
    """``a`` as a finite float64 array whose number of dimensions is in ``ndims``."""
    try:
        arr = np.asarray(a)
    except ValueError as e:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular array: {e}") from e
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        want = shape_text or " or ".join(f"{n}-d" for n in ndims)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values")
    return arr


def _positive_int(name, value, low=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _qkv(q, k, v, *, same_tokens=False):
    q = _array("q", q, ndims=(2,))
    k = _array("k", k, ndims=(2,))
    v_arr = _array("v", v, ndims=(1, 2))
    if q.shape[0] < 1 or q.shape[1] < 1:
        raise ValueError(f"q must have shape (N, d) with N, d >= 1, got {q.shape}")
    if k.shape[0] < 1:
        raise ValueError(f"k must have shape (M, d) with M >= 1, got {k.shape}")
    if k.shape[1] != q.shape[1]:
        raise ValueError(f"k must have the dimension d = {q.shape[1]} of q (axis 1), got shape {k.shape}")
    if v_arr.shape[0] != k.shape[0]:
        raise ValueError(f"v must have one row per key (M = {k.shape[0]}), got shape {v_arr.shape}")
    if same_tokens and k.shape[0] != q.shape[0]:
        raise ValueError(f"k must have one row per token (N = {q.shape[0]}), got shape {k.shape}")
    vector_valued = v_arr.ndim == 2
    return q, k, (v_arr if vector_valued else v_arr[:, None]), vector_valued
