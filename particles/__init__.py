"""Interacting particle systems, integrated exactly and with Random Batch Methods.

Importing this package compiles nothing; the Numba loops are compiled on
first use (and cached on disk for the built-in systems).

>>> import numpy as np, particles
>>> system = particles.systems.confined_tanh()
>>> x0 = np.random.default_rng(0).standard_normal((64, 2))
>>> tr = particles.solve(system, x0, t_end=0.1, dt=0.01, method="rbm1", batch_size=2, seed=1)
>>> tr.x.shape
(11, 64, 2)
"""

from particles import batching, initial, integrators, systems
from particles.batching import Partition, partition
from particles.integrators import FULL, METHODS, RBM1, RBMR
from particles.solve import Trajectory, drift, solve

__version__ = "0.1.0"

__all__ = ["solve", "drift", "Trajectory", "systems", "integrators", "initial", "batching", "partition",
           "Partition", "METHODS", "FULL", "RBM1", "RBMR", "__version__"]
