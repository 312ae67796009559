"""The matrix arguments of :func:`particles.systems.attention`: checked, and the number of heads read off them."""

from __future__ import annotations

import numpy as np

from particles._validate import check_int


def _check_matrix(name, m, d):
    """``m`` as float64 of shape (d, d) or (H, d, d), or None; ``d`` the size fixed so far (None: not yet)."""
    if m is None:
        return None
    a = np.asarray(m)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric matrix, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim not in (2, 3) or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must be a square (d, d) matrix, got shape {a.shape} (or a stack (H, d, d) of "
                         "one per head)")
    if d is not None and a.shape[-1] != d:
        raise ValueError(f"{name} has shape {a.shape}, but the other matrices are ({d}, {d}); Q, K, V, W must match")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must contain only finite values")
    return a


def attention_matrices(heads, **given):
    """(H, d, {name: array or None}) from the given Q, K, V, W, each None, (d, d) or (H, d, d)."""
    if heads is not None:
        heads = check_int("heads", heads, low=1)
    d = None
    mats = {}
    stacked = None  # (name, H) of the first (H, d, d) argument
    for name, m in given.items():
        a = _check_matrix(name, m, d)
        if a is not None:
            d = a.shape[-1]
            if a.ndim == 3:
                if heads is not None and a.shape[0] != heads:
                    raise ValueError(f"{name} has shape {a.shape}: {a.shape[0]} heads, but heads={heads}")
                if stacked is not None and a.shape[0] != stacked[1]:
                    raise ValueError(f"{name} has shape {a.shape}: {a.shape[0]} heads, but {stacked[0]} has "
                                     f"{stacked[1]}; every (H, d, d) stack must have the same H")
                stacked = stacked or (name, a.shape[0])
        mats[name] = a
    H = heads if heads is not None else (stacked[1] if stacked else 1)
    if H > 1 and d is None:
        raise ValueError(f"heads={H} needs at least one of Q, K, V, W (their shape fixes the dimension d)")
    return H, d, mats
