"""Counter-based random numbers shared by every backend.

Every random number the engine uses is a pure function of integer
coordinates -- ``(seed, replica, stream, step, particle, draw)`` -- never
of a generator's internal state. That is what makes results identical for
any thread count, lets the full and the random-batch integrators share one
Brownian path (THEORY A3), and lets the CUDA backend reproduce the CPU
streams.

The hash is the SplitMix64 finaliser. A *key* is obtained by folding the
coordinates into the seed one after the other (:func:`combine`); the draws
under one key are SplitMix64's output sequence started from that key
(:func:`draw`). Normal variates use the 256-layer ziggurat of Marsaglia and
Tsang (2000) with the layer index and the abscissa taken from independent
bits of one 64-bit draw (Doornik 2005); rejected attempts move to the next
draw counter, so the result is still a pure function of the coordinates.

The scalar functions below are written once in plain Python with explicit
``uint64`` arithmetic; the CPU backend compiles them with ``numba.njit`` and
the NumPy reference backend uses the vectorised twins at the end of this
module. ``tests/particles/test_rng.py`` checks that the two agree bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

# Stream identifiers: independent families of random numbers.
STREAM_NOISE = 1  # Brownian increments, keyed by (fine step, particle)
STREAM_PERM = 2  # RBM-1 batch permutations, keyed by reshuffle index
STREAM_SUBSET = 3  # RBM-r random subsets, keyed by sub-step

_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio increment of SplitMix64
_GAMMA2 = np.uint64(0xD1B54A32D192ED03)  # second odd constant for key folding
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_S8 = np.uint64(8)
_S32 = np.uint64(32)
_ONE = np.uint64(1)
_MASK8 = np.uint64(255)
_TWO53_INV = 1.0 / 9007199254740992.0

# --- ziggurat tables (256 layers of equal area V under exp(-x^2/2)) --------
ZIG_R = 3.6541528853610088
_ZIG_N = 256


def _ziggurat_tables():
    def f(x):
        return math.exp(-0.5 * x * x)

    v = ZIG_R * f(ZIG_R) + math.sqrt(math.pi / 2.0) * math.erfc(ZIG_R / math.sqrt(2.0))
    x = np.empty(_ZIG_N + 1)
    x[0] = v / f(ZIG_R)
    x[1] = ZIG_R
    for i in range(1, _ZIG_N - 1):
        x[i + 1] = math.sqrt(-2.0 * math.log(v / x[i] + f(x[i])))
    x[_ZIG_N] = 0.0
    return x, np.exp(-0.5 * x * x)


ZIG_X, ZIG_F = _ziggurat_tables()


# --- scalar functions (compiled by the numba backends) ----------------------
def mix64(z):
    """SplitMix64 finaliser: a bijection of uint64 with full avalanche."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def combine(key, value):
    """Fold a non-negative integer coordinate into a key."""
    return mix64(key ^ mix64(np.uint64(value) * _GAMMA2 + _GAMMA))


def root_key(seed, replica, stream):
    """Key of one stream of one replica; seed is a uint64."""
    return combine(combine(mix64(np.uint64(seed) + _GAMMA), replica), stream)


def draw(key, counter):
    """The ``counter``-th 64-bit output of SplitMix64 started at ``key``."""
    return mix64(key + (np.uint64(counter) + _ONE) * _GAMMA)


def to_unit(h):
    """Uniform on [0, 1) with 53 random bits."""
    return np.float64(h >> _S11) * _TWO53_INV


def to_unit_open(h):
    """Uniform on (0, 1] with 53 random bits (safe inside a logarithm)."""
    return (np.float64(h >> _S11) + 1.0) * _TWO53_INV


def normal(key, index):
    """Standard normal number ``index`` under ``key`` (ziggurat, pure)."""
    attempt = 0
    while True:
        h = draw(key, (np.uint64(attempt) << _S32) | np.uint64(index))
        layer = np.int64(h & _MASK8)
        negative = ((h >> _S8) & _ONE) == _ONE
        x = to_unit(h) * ZIG_X[layer]
        if x < ZIG_X[layer + 1]:
            return -x if negative else x
        h2 = draw(key, (np.uint64(attempt) << _S32) | np.uint64(index) | (_ONE << np.uint64(62)))
        if layer == 0:
            h3 = draw(key, (np.uint64(attempt) << _S32) | np.uint64(index) | (_ONE << np.uint64(63)))
            xt = -math.log(to_unit_open(h2)) / ZIG_R
            yt = -math.log(to_unit_open(h3))
            if yt + yt > xt * xt:
                return -(ZIG_R + xt) if negative else ZIG_R + xt
        else:
            y = ZIG_F[layer] + to_unit(h2) * (ZIG_F[layer + 1] - ZIG_F[layer])
            if y < math.exp(-0.5 * x * x):
                return -x if negative else x
        attempt += 1


def normal_first(key, index):
    """The first ziggurat attempt of :func:`normal`, or NaN when it is rejected.

    Branch-free and call-free, so that a loop over many keys vectorises; the
    compiled loops then call :func:`normal` only where this returned NaN
    (about 1% of draws). Where it is not NaN it equals ``normal(key, index)``
    bit for bit (same draw, same arithmetic).
    """
    h = draw(key, index)
    layer = np.int64(h & _MASK8)
    x = to_unit(h) * ZIG_X[layer]
    v = -x if ((h >> _S8) & _ONE) == _ONE else x
    return v if x < ZIG_X[layer + 1] else np.nan


# --- vectorised twins for the NumPy reference backend -----------------------
def mix64_np(z):
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def combine_np(key, value):
    value = np.asarray(value).astype(np.uint64)
    with np.errstate(over="ignore"):
        return mix64_np(np.asarray(key, dtype=np.uint64) ^ mix64_np(value * _GAMMA2 + _GAMMA))


def root_key_np(seed, replica, stream):
    with np.errstate(over="ignore"):
        k = mix64_np(np.uint64(seed) + _GAMMA)
    return combine_np(combine_np(k, replica), stream)


def draw_np(key, counter):
    counter = np.asarray(counter).astype(np.uint64)
    with np.errstate(over="ignore"):
        return mix64_np(np.asarray(key, dtype=np.uint64) + (counter + _ONE) * _GAMMA)


def to_unit_np(h):
    return (np.asarray(h, dtype=np.uint64) >> _S11).astype(np.float64) * _TWO53_INV


def to_unit_open_np(h):
    return ((np.asarray(h, dtype=np.uint64) >> _S11).astype(np.float64) + 1.0) * _TWO53_INV


def normal_np(key, index):
    """Vectorised :func:`normal`: ``key`` and ``index`` broadcast together."""
    key, index = np.broadcast_arrays(np.asarray(key, dtype=np.uint64), np.asarray(index).astype(np.uint64))
    shape = key.shape
    key = key.ravel()
    index = index.ravel()
    out = np.empty(key.shape, dtype=np.float64)
    todo = np.arange(key.size)
    attempt = np.uint64(0)
    while todo.size:
        k = key[todo]
        base = (attempt << _S32) | index[todo]
        h = draw_np(k, base)
        layer = (h & _MASK8).astype(np.int64)
        sign = np.where(((h >> _S8) & _ONE) == _ONE, -1.0, 1.0)
        x = to_unit_np(h) * ZIG_X[layer]
        accept = x < ZIG_X[layer + 1]
        value = x.copy()
        h2 = draw_np(k, base | (_ONE << np.uint64(62)))
        tail = ~accept & (layer == 0)
        if tail.any():
            h3 = draw_np(k[tail], base[tail] | (_ONE << np.uint64(63)))
            xt = -np.log(to_unit_open_np(h2[tail])) / ZIG_R
            yt = -np.log(to_unit_open_np(h3))
            ok = yt + yt > xt * xt
            idx = np.flatnonzero(tail)
            accept[idx[ok]] = True
            value[idx[ok]] = ZIG_R + xt[ok]
        wedge = ~accept & (layer != 0)
        if wedge.any():
            lw = layer[wedge]
            y = ZIG_F[lw] + to_unit_np(h2[wedge]) * (ZIG_F[lw + 1] - ZIG_F[lw])
            ok = y < np.exp(-0.5 * x[wedge] ** 2)
            idx = np.flatnonzero(wedge)
            accept[idx[ok]] = True
        out[todo[accept]] = sign[accept] * value[accept]
        todo = todo[~accept]
        attempt += _ONE
    return out.reshape(shape)
