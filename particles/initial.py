"""Initial states."""

from __future__ import annotations

import numpy as np

from particles._validate import as_generator, check_int

__all__ = ["uniform_sphere", "equiangular", "gaussian"]


def _rng(rng):
    # None allowed: an initial state from fresh entropy
    return as_generator(rng, allow_none=True)


def uniform_sphere(n, d, rng=None, replicas=None):
    """n i.i.d. uniform points on S^{d-1}; shape (n, d) or (replicas, n, d).

    ``rng``: None, an int seed, a SeedSequence or a Generator (the ``rng``
    contract of ``particles._validate``).
    """
    n = check_int("n", n, low=1)
    d = check_int("d", d, low=1)
    shape = (n, d) if replicas is None else (check_int("replicas", replicas, low=1), n, d)
    z = _rng(rng).standard_normal(shape)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def equiangular(n, d):
    """n orthonormal points (pairwise inner products 0); needs d >= n."""
    n = check_int("n", n, low=1)
    d = check_int("d", d, low=1)
    if d < n:
        raise ValueError(f"equiangular initialisation with inner products 0 needs d >= n; got n={n}, d={d}")
    return np.eye(n, d)


def gaussian(n, d, rng=None, scale=1.0, replicas=None):
    """n i.i.d. N(0, scale^2 I) points; ``rng`` as in :func:`uniform_sphere`."""
    n = check_int("n", n, low=1)
    d = check_int("d", d, low=1)
    shape = (n, d) if replicas is None else (check_int("replicas", replicas, low=1), n, d)
    return scale * _rng(rng).standard_normal(shape)
