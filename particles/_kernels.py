"""Scalar interaction kernels and drifts of the built-in systems.

Every function here is plain Python in the subset Numba compiles (explicit
loops, ``math`` functions), written once and compiled by the CPU backend
(and later the CUDA backend). Signatures follow the engine contract:

- ``kernel(x, y, params, out)`` writes K(x, y) into ``out`` (length d);
- ``drift(x, params, out)`` writes b(x) into ``out``.

``params`` is a flat float64 array laid out as :mod:`particles._layout`
defines (for the built-in kernel-family systems the model code comes first,
so that one cached compiled loop serves them all). The ``*_np`` functions
are the independent vectorised NumPy forms used by the reference backend.
"""

from __future__ import annotations

import math

import numpy as np

from particles._layout import DYSON_EPS, MODEL, MODEL_DYSON, MODEL_TANH, TANH_L, TANH_R  # noqa: F401  (re-exported)

# exp(y) = 2^k e^r with k = round(y / ln 2), |r| <= ln(2)/2; ln 2 split in a
# high part with trailing zero bits (k * _LN2_HI is exact) and a low part.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
# (e^r - 1) / r = sum_k r^k / (k + 1)!, truncated after r^13 (error < 3e-19 on |r| <= 0.35)
_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13 = (
    1.0 / math.factorial(k + 1) for k in range(14))


def fast_tanh(z):
    """tanh(z) to 2 ulp in plain arithmetic (no libm call, no branch).

    tanh|z| = t / (t + 2) with t = expm1(2|z|), expm1 evaluated as
    2^k (e^r - 1) + (2^k - 1) with a polynomial for (e^r - 1) / r. Being
    branch-free and call-free, it vectorises: the compiled loops apply it to
    several pairs at once (4x-10x faster than libm's tanh, which does not
    vectorise), and the vector and scalar forms give identical bits. |z| is
    clamped at 20 (tanh(20) rounds to 1); the result is exactly odd.
    """
    a = abs(z)
    a = a if a < 20.0 else 20.0
    y = a + a
    k = np.int64(y * _LOG2E + 0.5)
    fk = np.float64(k)
    r = (y - fk * _LN2_HI) - fk * _LN2_LO
    # Estrin's scheme: short dependency chains for the scalar (unvectorised) uses
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    q01 = _E0 + _E1 * r
    q23 = _E2 + _E3 * r
    q45 = _E4 + _E5 * r
    q67 = _E6 + _E7 * r
    q89 = _E8 + _E9 * r
    q1011 = _E10 + _E11 * r
    q1213 = _E12 + _E13 * r
    q03 = q01 + q23 * r2
    q47 = q45 + q67 * r2
    q811 = q89 + q1011 * r2
    q = (q03 + q47 * r4) + (q811 + q1213 * r4) * r8
    p2 = np.float64(np.int64(1) << k)
    t = p2 * (r * q) + (p2 - 1.0)
    v = t / (t + 2.0)
    return -v if z < 0.0 else v


def tanh_pair(z, lam):
    """One component of the confined-tanh kernel, -lam tanh(z), z = x_c - y_c."""
    return -lam * fast_tanh(z)


def dyson_pair(z, eps):
    """One component of the (regularised) Dyson kernel, z / (z^2 + eps^2)."""
    return z / (z * z + eps * eps)


def tanh_pair_const(params):
    return params[TANH_L]


def dyson_pair_const(params):
    return params[DYSON_EPS]


def tanh_drift1(xc, params_r):
    """One component of the confined-tanh drift, -r x_c."""
    return -params_r * xc


def dyson_drift1(xc, unused):
    return -xc


def tanh_drift_const(params):
    return params[TANH_R]


def dyson_drift_const(params):
    return 0.0


def builtin_kernel(x, y, params, out):
    if params[MODEL] == MODEL_TANH:
        lam = params[TANH_L]
        for c in range(x.shape[0]):
            out[c] = tanh_pair(x[c] - y[c], lam)
    else:  # Dyson: 1/(x - y), optionally regularised by eps
        eps = params[DYSON_EPS]
        for c in range(x.shape[0]):
            out[c] = dyson_pair(x[c] - y[c], eps)


def builtin_drift(x, params, out):
    if params[MODEL] == MODEL_TANH:
        r = params[TANH_R]
        for c in range(x.shape[0]):
            out[c] = tanh_drift1(x[c], r)
    else:
        for c in range(x.shape[0]):
            out[c] = dyson_drift1(x[c], 0.0)


def zero_drift(x, params, out):
    for c in range(x.shape[0]):
        out[c] = 0.0


# --- vectorised NumPy forms for the reference backend ------------------------
def tanh_kernel_np(x, y, params):
    return -params[TANH_L] * np.tanh(x - y)


def tanh_drift_np(x, params):
    return -params[TANH_R] * x


def dyson_kernel_np(x, y, params):
    z = x - y
    with np.errstate(divide="ignore", invalid="ignore"):
        return z / (z * z + params[DYSON_EPS] ** 2)


def dyson_drift_np(x, params):
    return -x
