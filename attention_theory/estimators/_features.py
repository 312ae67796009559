"""Random features (B1, T8-T10) and random feature attention (RFA)."""

from __future__ import annotations

import warnings

import numpy as np

from attention_theory._validate import (
    as_generator,
    as_matrix,
    check_bool,
    check_choice,
    check_int,
    check_qkv,
)
from attention_theory.estimators._softmax import NonPositiveDenominatorWarning, _as_points, _half_sq_norms


def positive_features(x, w, *, log=False):
    r"""Positive random features :math:`\xi(x, w_s) = \exp(w_s\cdot x - |x|^2/2)` (B1, T8).

    :math:`E_{w\sim N(0,I)}[\xi(x,w)\xi(y,w)] = e^{x\cdot y}` (T8) with variance
    :math:`e^{2x\cdot y}(e^{|x+y|^2} - 1)` (T9). No :math:`1/\sqrt{S}` factor is
    applied: :math:`\frac1S\sum_s \xi(x,w_s)\xi(y,w_s)` estimates :math:`e^{x\cdot y}`.

    Parameters
    ----------
    x : array_like, shape (n, d) or (d,)
    w : array_like, shape (S, d)
        Feature directions, normally drawn from N(0, I) (see :func:`draw_features`).
    log : bool
        Return :math:`\log\xi` (always finite) instead of :math:`\xi` (which
        over- or underflows when :math:`|w\cdot x - |x|^2/2| > 709`).

    Returns
    -------
    ndarray, shape (n, S) or (S,)
    """
    w = as_matrix("w", w)
    x2, one = _as_points("x", x)
    if x2.shape[1] != w.shape[1]:
        raise ValueError(f"x and w must have the same dimension d, got x with d={x2.shape[1]}, w with d={w.shape[1]}")
    log = check_bool("log", log)
    lf = x2 @ w.T - _half_sq_norms(x2)[:, None]
    out = lf if log else np.exp(lf)
    return out[0] if one else out


def trig_features(x, w):
    r"""Trigonometric random features :math:`\phi(x, w_s) = e^{|x|^2/2}[\cos w_s\cdot x, \sin w_s\cdot x]` (T10).

    :math:`\phi(x,w)\cdot\phi(y,w) = e^{(|x|^2+|y|^2)/2}\cos(w\cdot(x-y))` is unbiased
    for :math:`e^{x\cdot y}` under w ~ N(0, I), but it is not positive. Not in log
    space by nature: the prefactor overflows for :math:`|x|^2/2 > 709`.

    Parameters
    ----------
    x : array_like, shape (n, d) or (d,)
    w : array_like, shape (S, d)

    Returns
    -------
    ndarray, shape (n, 2S) or (2S,)
        Columns ``[cos(w_1.x), ..., cos(w_S.x), sin(w_1.x), ..., sin(w_S.x)]`` times
        :math:`e^{|x|^2/2}`, without a :math:`1/\sqrt{S}` factor.
    """
    w = as_matrix("w", w)
    x2, one = _as_points("x", x)
    if x2.shape[1] != w.shape[1]:
        raise ValueError(f"x and w must have the same dimension d, got x with d={x2.shape[1]}, w with d={w.shape[1]}")
    p = x2 @ w.T
    out = np.exp(_half_sq_norms(x2))[:, None] * np.concatenate([np.cos(p), np.sin(p)], axis=1)
    return out[0] if one else out


def _draw_features(gen, num_features, dim, orthogonal):
    if not orthogonal:
        return gen.standard_normal((num_features, dim))
    nblocks = -(-num_features // dim)
    blocks = []
    for _ in range(nblocks):
        qm, rm = np.linalg.qr(gen.standard_normal((dim, dim)))
        qm = qm * np.where(np.diag(rm) < 0, -1.0, 1.0)  # Haar-distributed orthogonal matrix
        blocks.append(qm.T)
    directions = np.concatenate(blocks, axis=0)[:num_features]
    norms = np.sqrt(gen.chisquare(dim, size=num_features))
    return directions * norms[:, None]


def draw_features(num_features, dim, *, rng, orthogonal=False):
    r"""Draw S feature vectors :math:`w_s`, each marginally N(0, I_d).

    Parameters
    ----------
    num_features : int
        S >= 1.
    dim : int
        d >= 1.
    rng : int or numpy.random.Generator
    orthogonal : bool
        False: i.i.d. ``rng.standard_normal((S, d))``. True: orthogonal random
        features as in Performer (Choromanski et al. 2021): blocks of d exactly
        orthogonal, Haar-distributed directions (QR of a Gaussian matrix with the
        signs of diag(R) fixed), the last block truncated when d does not divide
        S, each direction scaled by an independent chi(d)-distributed norm. Each
        :math:`w_s` is still N(0, I) marginally, so every estimator built on them
        keeps its expectation per feature; features of one block are dependent.

    Returns
    -------
    ndarray, shape (S, d)
    """
    s = check_int("num_features", num_features, low=1)
    d = check_int("dim", dim, low=1)
    orthogonal = check_bool("orthogonal", orthogonal)
    return _draw_features(as_generator(rng), s, d, orthogonal)


def _rfa_positive(q, k, v, w):
    lk = k @ w.T
    lk -= _half_sq_norms(k)[:, None]  # log xi(k_m, w_s), (M, S)
    c = lk.max(axis=0)  # per-feature scale
    lk -= c[None, :]
    np.exp(lk, out=lk)
    a = lk.T @ v  # (S, dv): sum_m xi(k_m, w_s) v_m / e^{c_s}
    b = lk.sum(axis=0)  # (S,) >= 1
    lq = q @ w.T
    lq += c[None, :]  # log xi(q_n, w_s) + c_s, without the per-query constant -|q_n|^2/2 (cancels)
    lq -= lq.max(axis=1, keepdims=True)
    np.exp(lq, out=lq)
    return (lq @ a) / (lq @ b)[:, None]


def _rfa_trig(q, k, v, w):
    pk = k @ w.T  # (M, S)
    hk = _half_sq_norms(k)
    scale = np.exp(hk - hk.max())  # e^{|k_m|^2/2} up to a global constant, <= 1
    ck = np.cos(pk) * scale[:, None]
    sk = np.sin(pk) * scale[:, None]
    pq = q @ w.T  # the factor e^{|q_n|^2/2} cancels per query
    cq, sq = np.cos(pq), np.sin(pq)
    num = cq @ (ck.T @ v) + sq @ (sk.T @ v)
    den = cq @ ck.sum(axis=0) + sq @ sk.sum(axis=0)
    bad = int(np.count_nonzero(den <= 0.0))
    if bad:
        warnings.warn(
            f"rfa(kind='trig'): the estimated normaliser is <= 0 for {bad} of {den.size} queries; "
            "their outputs are the raw (meaningless) ratio, possibly inf or NaN",
            NonPositiveDenominatorWarning,
            stacklevel=3,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den[:, None]


def rfa(q, k, v, *, num_features, rng, kind="positive", orthogonal=False):
    r"""Random feature attention (B1) with S = ``num_features`` Gaussian features.

    .. math:: \mathrm{RFA}_n = \frac{\sum_s \xi(q_n,w_s)\sum_m \xi(k_m,w_s) v_m}
                                    {\sum_s \xi(q_n,w_s)\sum_m \xi(k_m,w_s)}, \qquad w_s \sim N(0, I).

    ``kind="positive"``: :math:`\xi(x,w) = e^{w\cdot x - |x|^2/2}` (Performer's
    FAVOR+), computed in log space: per feature the key sums are scaled by
    :math:`e^{-\max_m \log\xi(k_m,w_s)}`, per query the feature weights by their
    maximum; these constants cancel in the ratio. RFA is then exactly the
    self-normalised importance-sampling estimate of (T14) with proposal N(0, I)
    (Zheng et al. 2022), hence biased (a ratio) and consistent as S grows, its
    outputs convex combinations of the values.

    ``kind="trig"``: :math:`\phi(x,w) = e^{|x|^2/2}[\cos w\cdot x, \sin w\cdot x]`
    (T10; Rahimi-Recht features as in Peng et al. 2021 / Performer). The
    query factor cancels; the key factor is scaled by its maximum over keys.
    **The denominator is an unbiased but not positive estimate of** :math:`Z_n`:
    it can be <= 0, and then the output is meaningless. The raw ratio is
    returned (inf/NaN for a zero denominator, values outside the convex hull
    of v for a negative one) and a :class:`NonPositiveDenominatorWarning` says
    for how many queries it happened.

    Parameters
    ----------
    q, k, v : array_like, shapes (N, d), (M, d), (M, dv)
    num_features : int
        S >= 1.
    rng : int or numpy.random.Generator
        The features are ``draw_features(S, d, rng=rng, orthogonal=orthogonal)``.
    kind : {"positive", "trig"}
    orthogonal : bool
        Orthogonal random features (see :func:`draw_features`).

    Returns
    -------
    ndarray of float64, shape (N, dv)

    Notes
    -----
    Time O(S (N + M)(d + dv)), memory O(S (N + M + dv)). Bias and variance (T15);
    weight second moment (T16) with mu = 0.
    """
    q, k, v = check_qkv(q, k, v)
    s = check_int("num_features", num_features, low=1)
    kind = check_choice("kind", kind, ("positive", "trig"))
    orthogonal = check_bool("orthogonal", orthogonal)
    w = _draw_features(as_generator(rng), s, q.shape[1], orthogonal)
    if kind == "positive":
        return _rfa_positive(q, k, v, w)
    return _rfa_trig(q, k, v, w)
