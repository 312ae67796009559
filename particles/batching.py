"""Public access to the RBM-1 random partition.

The same partition that :func:`particles.solve` uses at reshuffle ``step``
with ``seed`` (replica ``replica``), for code that batches something else
than a particle system -- random batch attention in :mod:`attention_theory`
is the main user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from particles import _batches
from particles._validate import check_choice, check_int, check_seed

__all__ = ["Partition", "partition", "batch_bounds"]


@dataclass(frozen=True)
class Partition:
    """A random partition of ``range(n)`` into contiguous slices of a permutation.

    Attributes
    ----------
    perm : ndarray of int64, shape (n,)
        The permutation; batch b is ``perm[bounds[b]:bounds[b + 1]]``.
    bounds : ndarray of int64, shape (n_batches + 1,)
    remainder : {"spread", "pad"}
        The convention that cut the batches (see :func:`partition`).
    """

    perm: np.ndarray
    bounds: np.ndarray
    remainder: str = "spread"

    @property
    def n_batches(self) -> int:
        return self.bounds.size - 1

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.bounds)

    @property
    def lone(self) -> int:
        """The element alone in its batch (``"pad"`` with n mod p == 1), or -1 if there is none.

        A lone element has no batch-mates; the random batch methods of the
        library widen its batch to all n elements (exact interaction for it).
        """
        return int(self.perm[-1]) if self.sizes[-1] == 1 else -1

    def batches(self):
        """The batches, as a list of index arrays."""
        return [self.perm[a:b] for a, b in zip(self.bounds[:-1], self.bounds[1:])]

    def batch_of(self) -> np.ndarray:
        """For each element, the index of its batch (shape (n,))."""
        out = np.empty(self.perm.size, dtype=np.int64)
        out[self.perm] = np.repeat(np.arange(self.n_batches), self.sizes)
        return out


def check_remainder(remainder):
    """``remainder`` checked against ``particles._batches.REMAINDERS``."""
    return check_choice("remainder", remainder, _batches.REMAINDERS)


def batch_bounds(n, batch_size, remainder="spread"):
    """Start offsets of the batches of a permutation of ``n`` (length: number of batches + 1).

    ``remainder="spread"``: ``n // p`` batches whose sizes differ by at most
    one (p or p + 1 only while n mod p <= n // p). ``remainder="pad"``:
    ``ceil(n / p)`` batches of p, the last one short (n mod p elements).
    """
    n = check_int("n", n, low=2)
    p = check_int("batch_size", batch_size, low=2, high=n)
    return _batches.batch_bounds(n, p, check_remainder(remainder))


def partition(n, batch_size, *, seed=0, step=0, replica=0, backend="cpu", remainder="spread"):
    """The RBM-1 partition of reshuffle ``step`` (see :func:`particles.solve`).

    Parameters
    ----------
    n : int
        Number of elements, >= 2.
    batch_size : int
        p, with 2 <= p <= n.
    seed, step, replica : int
        Stream coordinates; identical to those :func:`particles.solve` uses.
    backend : {"cpu", "reference"}
    remainder : {"spread", "pad"}
        How the batches are cut when p does not divide n (THEORY A2):
        ``"spread"`` (default), ``n // p`` batches of sizes differing by at most
        one (e.g. n = 1000, p = 64: sizes 66 and 67); ``"pad"``, the pad-and-crop
        of random batch attention, ``ceil(n / p)`` batches of p, the last one
        holding n mod p elements. The permutation is the same in both.

    Returns
    -------
    Partition
    """
    n = check_int("n", n, low=2)
    p = check_int("batch_size", batch_size, low=2, high=n)
    seed = check_seed(seed)
    step = check_int("step", step, low=0)
    replica = check_int("replica", replica, low=0)
    backend = check_choice("backend", backend, ("cpu", "reference"))
    remainder = check_remainder(remainder)
    if backend == "cpu":
        from particles.backends import cpu

        perm = cpu.permutations(seed, step, n, replicas=replica + 1)[replica]
    else:
        from particles.backends import reference

        perm = reference.permutation(seed, replica, step, n)
    return Partition(perm=np.ascontiguousarray(perm), bounds=_batches.batch_bounds(n, p, remainder),
                     remainder=remainder)
