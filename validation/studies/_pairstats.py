"""Clustered-pair statistics of saved token states, in one pass per state (compiled with Numba).

The phase diagram asks, at every saved time and for every token set, which
pairs (i < j) have <x_i, x_j> >= threshold. Forming the Gram matrices with
NumPy and thresholding them costs as much as the dynamics (n^2 d per state,
and boolean arrays of m x R x n(n-1)/2 per chunk of saves). Here each
indicator is kept up to date incrementally: with delta_i = |x_i' - x_i| the
displacement of token i between two saved states,

    |<x_i', x_j'> - <x_i, x_j>| <= delta_i |x_j'| + |x_i| delta_j,

so a pair whose last computed inner product was farther from the threshold
than the displacements accumulated since cannot have crossed it, and its
inner product is recomputed only when that margin is used up (less a safety
of 1e-10, far above the rounding of a dot product). The indicators are
therefore those of a direct computation at every state, up to inner
products within rounding of the threshold; at small beta and late times,
where tokens barely move, most pairs are skipped. :func:`pair_statistics_numpy`
is the direct computation in NumPy, the oracle of the tests.
"""

from __future__ import annotations

import types

import numpy as np

SAFETY = 1e-10  # margin kept from the threshold before an inner product is trusted not to have crossed it

_compiled = None


def _kernel(x, thr, strict, prev, has_prev, margin, ok, ever, dropped, count, first_pair, all_pairs):
    m, R, n, d = x.shape
    for r in prange(R):  # noqa: F821 -- numba.prange, bound when compiled
        delta = np.empty(n)
        nu = np.empty(n)
        nu_prev = np.empty(n)
        for k in range(m):
            xr = x[k, r]
            pr = prev[r]
            fresh = not has_prev[r]
            for i in range(n):
                a2 = 0.0
                b2 = 0.0
                c2 = 0.0
                for a in range(d):
                    dv = xr[i, a] - pr[i, a]
                    a2 += dv * dv
                    b2 += xr[i, a] * xr[i, a]
                    c2 += pr[i, a] * pr[i, a]
                delta[i] = np.sqrt(a2)
                nu[i] = np.sqrt(b2)
                nu_prev[i] = np.sqrt(c2)
            c = 0
            q = 0
            for i in range(n):
                for j in range(i + 1, n):
                    mg = margin[r, q] - (delta[i] * nu[j] + nu_prev[i] * delta[j])
                    if fresh or mg <= SAFETY:
                        s = 0.0
                        for a in range(d):
                            s += xr[i, a] * xr[j, a]
                        o = s > thr if strict else s >= thr
                        ok[r, q] = o
                        mg = abs(s - thr)
                    else:
                        o = ok[r, q]
                    margin[r, q] = mg
                    if o:
                        c += 1
                        ever[r, q] = True
                    elif ever[r, q]:
                        dropped[r, q] = True
                    if q == 0:
                        first_pair[k, r] = o
                    q += 1
            count[k, r] = c
            all_pairs[k, r] = c == q
            for i in range(n):
                for a in range(d):
                    pr[i, a] = xr[i, a]
            has_prev[r] = True


def _compile():
    global _compiled
    if _compiled is None:
        import numba

        ns = dict(globals())
        ns["prange"] = numba.prange
        fn = types.FunctionType(_kernel.__code__, ns, "_pairstats_kernel")
        _compiled = numba.njit(parallel=True, cache=True, error_model="numpy")(fn)
    return _compiled


class PairTracker:
    """Clustered-pair indicators of R sets of n tokens, fed saved states in time order.

    Parameters
    ----------
    R, n, d : int
        Token sets, tokens per set, dimension.
    threshold : float
        A pair (i < j) is clustered when <x_i, x_j> >= threshold, or
        ``> threshold`` if ``strict``.
    strict : bool

    Attributes
    ----------
    ever, dropped : ndarray of bool, shape (R, n(n-1)/2)
        Per pair (i < j, row-major order): clustered at some state fed so far;
        unclustered at a state after being clustered.
    """

    def __init__(self, R, n, d, threshold, strict=False):
        self.R, self.n, self.d = int(R), int(n), int(d)
        self.threshold = float(threshold)
        self.strict = bool(strict)
        P = self.n * (self.n - 1) // 2
        self.prev = np.zeros((self.R, self.n, self.d))
        self.has_prev = np.zeros(self.R, dtype=np.bool_)
        self.margin = np.zeros((self.R, P))
        self.ok = np.zeros((self.R, P), dtype=np.bool_)
        self.ever = np.zeros((self.R, P), dtype=np.bool_)
        self.dropped = np.zeros((self.R, P), dtype=np.bool_)

    def update(self, x):
        """Feed states x of shape (m, R, n, d); per state and set: (clustered pairs, pair (0, 1), all pairs).

        Returns ``count`` (int64) and ``first_pair``, ``all_pairs`` (bool), each of shape (m, R).
        """
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 4 or x.shape[1:] != (self.R, self.n, self.d):
            raise ValueError(f"x must have shape (saves, R, n, d) = (m, {self.R}, {self.n}, {self.d}), got {x.shape}")
        m = x.shape[0]
        count = np.empty((m, self.R), dtype=np.int64)
        first = np.empty((m, self.R), dtype=np.bool_)
        allp = np.empty((m, self.R), dtype=np.bool_)
        _compile()(x, self.threshold, self.strict, self.prev, self.has_prev, self.margin, self.ok, self.ever,
                   self.dropped, count, first, allp)
        return count, first, allp


def pair_statistics_numpy(x, threshold, ever, dropped, strict=False):
    """The direct computation (Gram matrices by matmul) of :meth:`PairTracker.update`: the oracle of the tests.

    ``ever`` and ``dropped`` (bool, shape (R, n(n-1)/2)) are updated in place.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[2]
    iu, ju = np.triu_indices(n, 1)
    g = np.matmul(x, np.swapaxes(x, -1, -2))[..., iu, ju]
    ok = g > threshold if strict else g >= threshold  # (m, R, P)
    before = np.logical_or.accumulate(np.concatenate([ever[None], ok]), axis=0)[:-1]
    dropped |= (before & ~ok).any(axis=0)
    ever |= ok.any(axis=0)
    return ok.sum(axis=-1), ok[..., 0].copy(), ok.all(axis=-1)
