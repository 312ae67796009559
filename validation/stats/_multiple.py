"""Family-wise adjustment of p-values (Holm, Bonferroni)."""

from __future__ import annotations

import numpy as np

from validation.stats._common import (
    _check_choice,
)

__all__ = ["adjust_pvalues"]


def adjust_pvalues(p, method="holm"):
    """Family-wise adjusted p-values (Holm step-down or Bonferroni).

    Parameters
    ----------
    p : array_like
        Raw p-values in [0, 1], any shape (flattened for the adjustment).
    method : {"holm", "bonferroni"}

    Returns
    -------
    ndarray, same shape as ``p``
        Bonferroni: ``min(1, K p)``. Holm: with the p-values sorted,
        ``p_adj[(i)] = max_{j <= i} min(1, (K - j) p[(j)])`` (0-based j), so
        ``p_adj <= alpha`` is Holm's rejection rule at family-wise level alpha.

    Examples
    --------
    >>> adjust_pvalues([0.01, 0.04, 0.03], "holm").round(6).tolist()
    [0.03, 0.06, 0.06]
    >>> adjust_pvalues([0.01, 0.04, 0.03], "bonferroni").round(6).tolist()
    [0.03, 0.12, 0.09]
    """
    method = _check_choice("method", method, ("holm", "bonferroni"))
    try:
        a = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError("p must be an array of p-values in [0, 1]") from exc
    if a.size == 0 or not np.all((a >= 0) & (a <= 1)):
        raise ValueError("p must be a non-empty array of p-values in [0, 1]")
    flat = a.ravel()
    k = flat.size
    if method == "bonferroni":
        return np.minimum(1.0, k * a)
    order = np.argsort(flat, kind="stable")
    stepped = np.minimum(1.0, (k - np.arange(k)) * flat[order])
    out = np.empty(k)
    out[order] = np.maximum.accumulate(stepped)
    return out.reshape(a.shape)
