"""Compute backends sharing one contract.

``run(system, x, traj, plan)`` advances ``x`` (R, N, d) in place and fills
the caller-allocated ``traj`` (K, R, N, d); ``drift(system, x, out, ...)``
writes the drift at frozen positions into ``out``. Randomness comes only
from the counter-based streams of :mod:`particles._rng`.
"""
