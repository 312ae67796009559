"""Inputs shared by several test modules: user kernels and points on the sphere (no test module imports
another; they import this)."""

from __future__ import annotations

import math

import numpy as np


def _kern_sin(x, y, p, out):
    for c in range(x.shape[0]):
        out[c] = -p[0] * math.sin(x[c] - y[c]) + p[1] * (y[c] - x[c])


def _drift_cubic(x, p, out):
    for c in range(x.shape[0]):
        out[c] = -x[c] * x[c] * x[c]


def sphere_points(n, d, seed):
    z = np.random.default_rng(seed).standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)
