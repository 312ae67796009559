"""Writing CUDA kernels on the engine's ``cuda`` backend: the host side, as a small public API.

The ``cuda`` backend (``particles.backends.cuda``) keeps its state on the
device and counts every copy. A library that computes something else on the
GPU with the engine's random numbers and partitions -- random batch
attention in :mod:`attention_theory` is the user this API is for -- needs
four things from it, given here:

- :func:`require`: ``numba.cuda``, checked usable (numba-cuda installed, and
  a GPU or the simulator), or an ``ImportError`` / ``RuntimeError`` saying
  what to install or set;
- :func:`kernels`: kernels compiled from plain Python functions, whose free
  names resolve in the engine's device namespace: ``cuda``; the
  counter-based RNG (``root_key``, ``combine``, ``draw``, ``to_unit``,
  ``normal``, ... of ``particles._rng``) and ``draw_subset``;
  ``softmax_step`` (:mod:`particles.device`); ``batch_span(pos, n, nbat)``,
  the ``(start, stop)`` of the batch holding position ``pos`` of an RBM-1
  permutation of n elements cut into ``nbat`` batches (``remainder="spread"``),
  ``pad_span(pos, n, p)``, the same under ``remainder="pad"`` (a lone
  position's batch widened to all n), ``member_span(pos, n, nbat, pad)``
  (the first when ``pad`` is 0, else the second with p = ``pad``); and the
  compile-time constants passed as keywords;
- :func:`to_device`, :func:`to_host`, :func:`empty`: the only copies between
  host and device, counted in ``particles.backends.cuda.TRANSFERS``;
  :func:`launch`, which starts a kernel on enough blocks for ``nthreads``
  threads and refuses host arrays (Numba would copy them both ways at every
  launch);
- :func:`permutation`: the RBM-1 permutation of a reshuffle built on the
  device, the same integers as :func:`particles.partition`.

Importing this module imports neither numba nor numba.cuda: each function
does, on first call.
"""

from __future__ import annotations

import numpy as np

__all__ = ["require", "kernels", "to_device", "to_host", "empty", "launch", "permutation"]


def _backend():
    from particles.backends import cuda

    return cuda


def require():
    """``numba.cuda``, checked usable (see ``particles.backends.cuda.require``)."""
    return _backend().require()


def kernels(functions, family, **constants):
    """CUDA kernels compiled from the plain functions ``functions``, as attributes named after them.

    ``family`` names the compiled code (it prefixes the kernels' qualified
    names); ``constants`` become compile-time globals of the kernels (e.g.
    the length of a ``cuda.local.array``): compile one set per value.
    """
    backend = _backend()
    return backend.compile_kernels(list(functions), backend.namespace(family, **constants), family)


def to_device(a):
    """A new device array holding a copy of the host array ``a`` (one counted transfer)."""
    return _backend().to_device(a)


def to_host(dev, out):
    """Copy the device array ``dev`` into the C-contiguous host array ``out`` and return ``out``."""
    return _backend().to_host(dev, out)


def empty(shape, dtype=np.float64):
    """An uninitialised device array (no transfer)."""
    return _backend().empty(shape, dtype)


def launch(kernel, nthreads, *args):
    """Launch ``kernel`` with at least ``nthreads`` threads (one per ``cuda.grid(1)`` index)."""
    _backend().launch(kernel, nthreads, *args)


def permutation(seed, step, n, replicas=1):
    """The RBM-1 permutations of reshuffle ``step``, an (replicas, n) int32 device array.

    Row r is ``particles.partition(n, p, seed=seed, step=step, replica=r).perm``
    (for any p: the partition cuts this permutation).
    """
    return _backend().device_permutation(seed, step, n, replicas)
