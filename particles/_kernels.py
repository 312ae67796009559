"""Scalar interaction kernels and drifts of the built-in systems.

Every function here is plain Python in the subset Numba compiles (explicit
loops, ``math`` functions), written once and compiled by the CPU backend
(and later the CUDA backend). Signatures follow the engine contract:

- ``kernel(x, y, params, out)`` writes K(x, y) into ``out`` (length d);
- ``drift(x, params, out)`` writes b(x) into ``out``.

``params`` is a flat float64 array. For the built-in kernel-family systems
``params[0]`` is a model code, so that one cached compiled loop serves them
all. The ``*_np`` functions are the independent vectorised NumPy forms used
by the reference backend.
"""

from __future__ import annotations

import math

import numpy as np

MODEL_TANH = 0.0
MODEL_DYSON = 1.0


def fast_tanh(z):
    """tanh through exp/expm1 (a few ulp; libm's tanh is 2-3x slower here)."""
    a = abs(z)
    if a < 0.5:
        t = math.expm1(2.0 * a)
        r = t / (t + 2.0)
    elif a < 20.0:
        r = 1.0 - 2.0 / (math.exp(2.0 * a) + 1.0)
    else:
        r = 1.0
    return -r if z < 0.0 else r


def builtin_kernel(x, y, params, out):
    if params[0] == MODEL_TANH:
        lam = params[2]
        for c in range(x.shape[0]):
            out[c] = -lam * fast_tanh(x[c] - y[c])
    else:  # Dyson: 1/(x - y), optionally regularised by eps
        eps = params[1]
        for c in range(x.shape[0]):
            z = x[c] - y[c]
            out[c] = z / (z * z + eps * eps)


def builtin_drift(x, params, out):
    if params[0] == MODEL_TANH:
        r = params[1]
        for c in range(x.shape[0]):
            out[c] = -r * x[c]
    else:
        for c in range(x.shape[0]):
            out[c] = -x[c]


def zero_drift(x, params, out):
    for c in range(x.shape[0]):
        out[c] = 0.0


# --- vectorised NumPy forms for the reference backend ------------------------
def tanh_kernel_np(x, y, params):
    return -params[2] * np.tanh(x - y)


def tanh_drift_np(x, params):
    return -params[1] * x


def dyson_kernel_np(x, y, params):
    z = x - y
    with np.errstate(divide="ignore", invalid="ignore"):
        return z / (z * z + params[1] ** 2)


def dyson_drift_np(x, params):
    return -x
