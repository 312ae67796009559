"""Plumbing shared by the RBM studies: the test system, initial states, coupled runs and the slope fit."""

from __future__ import annotations

import numpy as np

import particles
from particles import systems
from validation.rates import fit_rate, preasymptotic_flag

#: Seed of every bootstrap in a verdict (verdicts are reproducible from the stored records).
BOOT_SEED = 0
#: Bootstrap resamples of the slope intervals.
N_BOOT = 2000
#: Nominal coverage of every interval.
CONFIDENCE = 0.95


def _tanh(params):
    return systems.confined_tanh(r=params["r"], L=params["L"], sigma=params["sigma"])


def _x0(seed, replicas, n, d, scale=1.0):
    """I.i.d. N(0, scale^2) initial states, shape (R, N, d), from the cell seed (a stream apart from the noise)."""
    gen = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    return scale * gen.standard_normal((replicas, n, d))


def _final(system, x0, *, method, tau, t_end, seed, noise_dt, batch_size=None):
    tr = particles.solve(system, x0, t_end=t_end, dt=tau, method=method, batch_size=batch_size, seed=seed,
                         noise_dt=noise_dt, save_every=10**9)
    return tr.x[-1]


def _msq(a, b):
    """Per replica: mean over particles and coordinates of (a - b)^2; a, b of shape (R, N, d)."""
    return np.mean((a - b) ** 2, axis=(1, 2))


def _rows(recs, key):
    """Stack the per-replica rows ``result[key]`` of a list of records: shape (total replicas, n_levels)."""
    arrays = [np.asarray(r.result[key], dtype=np.float64) for r in recs]
    return np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=0)


def _fit(levels, sq):
    return fit_rate(levels, None, replicate_errors=sq, confidence=CONFIDENCE, n_boot=N_BOOT, rng=BOOT_SEED)


def _windows(levels, rms, order, tol=0.2):
    if order is None or len(levels) < 3:
        return []
    return [w._asdict() for w in preasymptotic_flag(levels, rms, order, tol)]


def _pow2(levels):
    return [float(2.0 ** -k) for k in levels]
