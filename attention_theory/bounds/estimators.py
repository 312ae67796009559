r"""T9-T18: numeric bounds and exact predictions for the attention estimators (plain NumPy).

Every function evaluates a formula of THEORY.md whose derivation lives in
:mod:`attention_theory.symbolic`; the tests check that the two agree on random
inputs. Nothing here imports sympy.

================================  =======  ===========================================================
function                          label    what it returns
================================  =======  ===========================================================
:func:`rff_positive_variance`     T9       per-sample variance of the positive random-feature product
:func:`rff_trig_variance`         T10      per-sample variance of the trigonometric feature product
:func:`weight_second_moment`      T16      E_{N(mu, I)}[(p_n/q)^2], in log space
:func:`effective_sample_size`     T16      S / E_q[(p_n/q)^2]
:func:`rfa_bias_variance`         T15      first-order bias and variance of RFA (Monte Carlo moments)
:func:`rfa_first_order`           T15      the 1/S coefficients of RFA's bias, variance and MSE
:func:`ra_variance_bound`         B3       range(v)^2 / 4, the variance bound of one RA draw
:func:`estimator_cost_per_query`  B1-B5    kernel evaluations per query of one estimator call
:func:`batch_variance_factor`     T3       E|chi_i|^2 / Lambda_i for the RBM-1 partition
================================  =======  ===========================================================

The random batch attention operator and its exact bias (T18) are in
:mod:`attention_theory.bounds.rba`; :func:`rba_exact_bias` is importable from
here too, where it used to live.

Conventions: queries ``q`` of shape (N, d), keys ``k`` of shape (M, d), values
``v`` of shape (M,) or (M, d_v); the 1/sqrt(d) scale is folded into q and k
(T7). Errors name the argument at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from attention_theory._validate import as_generator as _as_generator
from attention_theory.bounds._checks import _array, _positive_int, _qkv
from attention_theory.bounds.rba import RBA_EXACT_MAX_TOKENS, rba_exact_bias  # noqa: F401  (its former home)
from particles.integrators import batch_variance_factor

__all__ = [
    "RFABiasVariance",
    "RFAFirstOrder",
    "batch_variance_factor",
    "effective_sample_size",
    "estimator_cost_per_query",
    "ra_variance_bound",
    "rba_exact_bias",
    "rfa_bias_variance",
    "rfa_first_order",
    "rff_positive_variance",
    "rff_trig_variance",
    "weight_second_moment",
]

# Chunks keep temporary arrays near this many float64 elements.
_CHUNK_ELEMENTS = 1 << 22


# --- validation --------------------------------------------------------------------------------------------


def _vectors(name, a):
    """Points of shape (..., d), d >= 1."""
    arr = _array(name, a, ndims=range(1, 33), shape_text="an array of points of shape (..., d)")
    if arr.shape[-1] < 1:
        raise ValueError(f"{name} must have at least one coordinate (last axis), got shape {arr.shape}")
    return arr


def _pair(x, y, xname="x", yname="y"):
    x = _vectors(xname, x)
    y = _vectors(yname, y)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"{xname} and {yname} must have the same dimension d (last axis), got {x.shape} and {y.shape}")
    try:
        np.broadcast_shapes(x.shape, y.shape)
    except ValueError as e:
        raise ValueError(f"{xname} {x.shape} and {yname} {y.shape} do not broadcast") from e
    return x, y


def _logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis)


def _log_softmax(logits):
    """log softmax over the last axis."""
    return logits - _logsumexp(logits, axis=-1)[..., None]


def _dot(a, b):
    return np.einsum("...i,...i->...", a, b)


# --- T9, T10: random features -------------------------------------------------------------------------------


def rff_positive_variance(x, y, *, log=False):
    r"""Per-sample variance of the positive random-feature estimate of exp(x.y) (T9).

    .. math:: \operatorname{Var}_w[\xi(x,w)\xi(y,w)] = e^{2x\cdot y}\,(e^{|x+y|^2} - 1),
              \qquad \xi(x, w) = e^{w\cdot x - |x|^2/2},\ w \sim N(0, I).

    Parameters
    ----------
    x, y : array_like, shape (..., d)
        Broadcast against each other.
    log : bool
        Return the natural logarithm of the variance (finite where the variance
        itself would overflow; ``-inf`` where it is 0, i.e. x = -y).

    Returns
    -------
    ndarray, shape (...)
        The variance of one sample; S independent features divide it by S.
    """
    x, y = _pair(x, y)
    xy = _dot(x, y)
    s = _dot(x + y, x + y)
    with np.errstate(divide="ignore", over="ignore"):
        log_expm1 = np.where(s > 1.0, s + np.log1p(-np.exp(-s)), np.log(np.expm1(s)))
    out = 2.0 * xy + log_expm1
    if log:
        return out
    with np.errstate(over="ignore"):
        return np.exp(out)


def rff_trig_variance(x, y, *, log=False):
    r"""Per-sample variance of the trigonometric random-feature estimate of exp(x.y) (T10).

    With :math:`\phi(x,w) = e^{|x|^2/2}[\cos w\cdot x, \sin w\cdot x]`, the product
    :math:`\phi(x,w)\cdot\phi(y,w) = e^{(|x|^2+|y|^2)/2}\cos(w\cdot(x-y))` is unbiased
    for :math:`e^{x\cdot y}` with variance

    .. math:: \tfrac12\, e^{|x+y|^2} e^{-2x\cdot y} \left(1 - e^{-|x-y|^2}\right)^2.

    Parameters
    ----------
    x, y : array_like, shape (..., d)
    log : bool
        Return the logarithm (``-inf`` where x = y).

    Returns
    -------
    ndarray, shape (...)
    """
    x, y = _pair(x, y)
    u = _dot(x - y, x - y)
    with np.errstate(divide="ignore"):
        out = math.log(0.5) + _dot(x, x) + _dot(y, y) + 2.0 * np.log(-np.expm1(-u))
    if log:
        return out
    with np.errstate(over="ignore"):
        return np.exp(out)


# --- T16: weight second moment ------------------------------------------------------------------------------


def _second_moment_inputs(q_n, k, mu):
    q_arr = _array("q_n", q_n, ndims=(1, 2))
    single = q_arr.ndim == 1
    q2 = q_arr[None] if single else q_arr
    d = q2.shape[1]
    k = _array("k", k, ndims=(2,))
    if k.shape[1] != d or k.shape[0] < 1:
        raise ValueError(f"k must have shape (M, {d}) with M >= 1 (the dimension of q_n), got {k.shape}")
    mu_arr = _array("mu", mu, ndims=(1,) if single else (1, 2))
    if mu_arr.shape[-1] != d or (mu_arr.ndim == 2 and mu_arr.shape[0] != q2.shape[0]):
        allowed = f"({d},)" if single else f"({d},) or ({q2.shape[0]}, {d}) (one per query)"
        raise ValueError(f"mu must have shape {allowed}, got {mu_arr.shape}")
    mu2 = np.broadcast_to(mu_arr, q2.shape)
    return q2, k, mu2, single


def _log_weight_second_moment(q2, k, mu2):
    """log E_{N(mu,I)}[(p_n/q)^2] for each row of q2 (N, d), with mu2 (N, d)."""
    n, m = q2.shape[0], k.shape[0]
    log_pi = _log_softmax(q2 @ k.T)  # (N, M)
    c = q2 - mu2  # (q + k_m - mu).(q + k_m' - mu) = |c|^2 + c.k_m + c.k_m' + k_m.k_m'
    kk = k @ k.T
    lu = log_pi + c @ k.T  # (N, M)
    out = np.empty(n)
    chunk = max(1, _CHUNK_ELEMENTS // (m * m))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        t = lu[a:b, :, None] + lu[a:b, None, :] + kk[None]
        out[a:b] = _logsumexp(t.reshape(b - a, m * m), axis=1)
    return out + _dot(c, c)


def weight_second_moment(q_n, k, mu, *, log=False):
    r"""Second moment of the importance weight p_n/q under q = N(mu, I) (T16).

    .. math:: E_{N(\mu,I)}\left[(p_n/q)^2\right] = \sum_{m,m'} \pi_{nm}\pi_{nm'}
              \exp\left((q_n + k_m - \mu)\cdot(q_n + k_{m'} - \mu)\right)

    with :math:`p_n(w) = \sum_m \pi_{nm} N(w; q_n + k_m, I)` (T12). The sum is
    evaluated by log-sum-exp over (m, m'), so logits q.k of several hundred do
    not overflow; the value itself can (use ``log=True``). It is at least 1
    (the weights have mean 1); the effective sample size is S divided by it.

    Parameters
    ----------
    q_n : array_like, shape (d,) or (N, d)
        One query or several.
    k : array_like, shape (M, d)
    mu : array_like, shape (d,) or (N, d)
        Proposal mean, shared or one per query.
    log : bool
        Return the logarithm.

    Returns
    -------
    float or ndarray, shape (N,)
    """
    q2, k, mu2, single = _second_moment_inputs(q_n, k, mu)
    out = _log_weight_second_moment(q2, k, mu2)
    if not log:
        with np.errstate(over="ignore"):
            out = np.exp(out)
    return float(out[0]) if single else out


def effective_sample_size(q_n, k, mu, num_samples):
    r"""Effective sample size S / E_{N(mu,I)}[(p_n/q)^2] of importance sampling from N(mu, I) (T16).

    Parameters
    ----------
    q_n : array_like, shape (d,) or (N, d)
    k : array_like, shape (M, d)
    mu : array_like, shape (d,) or (N, d)
    num_samples : int
        S >= 1.

    Returns
    -------
    float or ndarray, shape (N,)
        Between 0 and S; S exactly when the proposal is the target.
    """
    s = _positive_int("num_samples", num_samples)
    log_m2 = weight_second_moment(q_n, k, mu, log=True)
    return s * np.exp(-log_m2) if not np.isscalar(log_m2) else float(s * math.exp(-log_m2))


# --- T15: RFA bias and variance -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RFABiasVariance:
    """First-order bias and variance of random feature attention (T15), per query and output coordinate.

    Attributes
    ----------
    bias, variance : ndarray, shape (N, d_v) (or (N,) for scalar values)
        -(1/S) E_q[wbar^2 (f - Attn)] and (1/S) E_q[wbar^2 (f - Attn)^2].
    bias_se, variance_se : ndarray, same shape
        Monte Carlo standard errors of ``bias`` and ``variance``.
    attention : ndarray, same shape
        Exact softmax attention (T7).
    weight_second_moment : ndarray, shape (N,)
        E_q[wbar^2] (T16 with mu = 0); the effective sample size is S divided by it.
    num_features : int
    n_mc : int
    """

    bias: np.ndarray
    variance: np.ndarray
    bias_se: np.ndarray
    variance_se: np.ndarray
    attention: np.ndarray
    weight_second_moment: np.ndarray
    num_features: int
    n_mc: int


def rfa_bias_variance(q, k, v, num_features, *, rng, n_mc=4096):
    r"""Predicted first-order bias and variance of RFA with S = ``num_features`` samples (T15).

    RFA with positive features and w_s ~ N(0, I) is self-normalised importance
    sampling of :math:`Attn_n = E_{p_n}[f]` (T14) with proposal q = N(0, I) and
    normalised weights :math:`\bar w = p_n/q`. To first order in 1/S,

    .. math:: \mathrm{bias} = -\tfrac1S E_q[\bar w^2 (f - Attn_n)],\qquad
              \mathrm{Var} = \tfrac1S E_q[\bar w^2 (f - Attn_n)^2]

    per output coordinate; the remainders are O(S^-2), so the prediction is
    good only where the weight second moment E_q[wbar^2] (T16, returned) is
    moderate compared with S.

    The expectations have no closed form; they are estimated by Monte Carlo
    from the target itself, using :math:`E_q[\bar w^2 g] = E_{p_n}[\bar w g]`:
    ``n_mc`` draws w ~ p_n per query (ancestral sampling from the Gaussian
    mixture T12: m ~ Categorical(pi_n), w = q_n + k_m + eps), with

    .. math:: \log \bar w(w) = \operatorname{logsumexp}_m\left(\log\pi_{nm}
              + w\cdot(q_n+k_m) - |q_n+k_m|^2/2\right).

    Sampling from p_n rather than from q puts the draws where wbar is large,
    and every moment of wbar under p_n is finite (Gaussian tails), so the
    standard errors (sample standard deviation / sqrt(n_mc), divided by S) are
    reliable.

    Parameters
    ----------
    q : array_like, shape (N, d)
    k : array_like, shape (M, d)
    v : array_like, shape (M,) or (M, d_v)
    num_features : int
        S >= 1, the number of random features.
    rng : numpy.random.Generator, SeedSequence or int
        Source of the Monte Carlo draws (no global state).
    n_mc : int
        Draws per query, >= 2.

    Returns
    -------
    RFABiasVariance
    """
    q, k, v2, vector_valued = _qkv(q, k, v)
    s = _positive_int("num_features", num_features)
    n_mc = _positive_int("n_mc", n_mc, low=2)
    gen = _as_generator(rng)
    n, d = q.shape
    m = k.shape[0]
    log_pi = _log_softmax(q @ k.T)  # (N, M)
    attn = np.exp(log_pi) @ v2  # (N, d_v)
    k_sq = 0.5 * _dot(k, k)
    g_mean = np.empty_like(attn)
    g_se = np.empty_like(attn)
    h_mean = np.empty_like(attn)
    h_se = np.empty_like(attn)
    chunk = max(1, _CHUNK_ELEMENTS // (n_mc * max(m, d, v2.shape[1])))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        cum = np.cumsum(np.exp(log_pi[a:b]), axis=1)
        cum[:, -1] = 1.0
        u = gen.random((b - a, n_mc))
        comp = np.minimum((u[:, :, None] > cum[:, None, :]).sum(axis=2), m - 1)  # (n_c, n_mc)
        centres = q[a:b, None, :] + k[None, :, :]  # (n_c, M, d)
        w = np.take_along_axis(centres, comp[:, :, None], axis=1) + gen.standard_normal((b - a, n_mc, d))
        log_wbar = _logsumexp(
            log_pi[a:b, None, :]
            + np.einsum("cnd,cmd->cnm", w, centres)
            - 0.5 * _dot(centres, centres)[:, None, :],
            axis=2,
        )  # (n_c, n_mc)
        f = np.exp(_log_softmax(w @ k.T - k_sq)) @ v2  # (n_c, n_mc, d_v)
        diff = f - attn[a:b, None, :]
        wbar = np.exp(log_wbar)[:, :, None]
        g = wbar * diff
        h = wbar * diff**2
        g_mean[a:b] = g.mean(axis=1)
        g_se[a:b] = g.std(axis=1, ddof=1) / math.sqrt(n_mc)
        h_mean[a:b] = h.mean(axis=1)
        h_se[a:b] = h.std(axis=1, ddof=1) / math.sqrt(n_mc)
    m2 = weight_second_moment(q, k, np.zeros(d))

    def shape(a):
        return a if vector_valued else a[:, 0]

    return RFABiasVariance(
        bias=shape(-g_mean / s),
        variance=shape(h_mean / s),
        bias_se=shape(g_se / s),
        variance_se=shape(h_se / s),
        attention=shape(attn),
        weight_second_moment=m2,
        num_features=s,
        n_mc=n_mc,
    )


@dataclass(frozen=True)
class RFAFirstOrder:
    """The 1/S coefficients of T15 for RFA with positive features, flattened over (query, output coordinate).

    ``bias`` and ``variance`` are S * bias and S * variance (T15 at S = 1), with
    their Monte Carlo standard errors; the properties reduce them to the scalars
    a measurement is compared with.

    Attributes
    ----------
    bias, bias_se, variance, variance_se : ndarray, shape (N * d_v,)
    weight_second_moment : ndarray, shape (N,)
        T16 at mu = 0 per query.
    """

    bias: np.ndarray
    bias_se: np.ndarray
    variance: np.ndarray
    variance_se: np.ndarray
    weight_second_moment: np.ndarray

    @property
    def direction(self):
        """Unit vector of the bias coefficient: the linear functional on which the bias is largest."""
        return self.bias / np.linalg.norm(self.bias)

    @property
    def projected_bias(self):
        """``|c_b|``: S times the bias projected on :attr:`direction`."""
        return float(self.bias @ self.direction)

    @property
    def projected_bias_se(self):
        """Standard error of :attr:`projected_bias`, bounded by the triangle inequality (the coordinates'
        Monte Carlo errors are correlated)."""
        return float(np.abs(self.direction) @ self.bias_se)

    @property
    def trace_variance(self):
        """S times the trace of the covariance of the output."""
        return float(self.variance.sum())

    @property
    def trace_variance_se(self):
        """Standard error of :attr:`trace_variance`, bounded by the triangle inequality."""
        return float(self.variance_se.sum())

    @property
    def mse(self):
        """S times the first-order MSE, mean over queries and coordinates: the squared bias is O(S^-2) and
        left out, like the O(S^-2) remainder of the variance."""
        return float(self.variance.mean())

    @property
    def mse_se(self):
        """Monte Carlo standard error of :attr:`mse` (independent draws per query)."""
        return float(math.sqrt(np.sum(self.variance_se**2)) / self.variance.size)


def rfa_first_order(q, k, v, *, rng, n_mc=4096):
    r"""The first-order (1/S) coefficients of RFA's bias, variance and MSE (T15).

    :func:`rfa_bias_variance` at S = 1, flattened; see :class:`RFAFirstOrder`
    for the scalars (projected bias, trace variance, MSE) derived from it.

    Parameters
    ----------
    q, k, v, rng, n_mc
        As for :func:`rfa_bias_variance`.

    Returns
    -------
    RFAFirstOrder
    """
    pr = rfa_bias_variance(q, k, v, 1, rng=rng, n_mc=n_mc)
    # the 2-d arrays are C-contiguous, so the reductions over the raveled views are those over the arrays
    return RFAFirstOrder(bias=np.ravel(pr.bias), bias_se=np.ravel(pr.bias_se), variance=np.ravel(pr.variance),
                         variance_se=np.ravel(pr.variance_se),
                         weight_second_moment=np.asarray(pr.weight_second_moment))


# --- B3: variance of one randomized-attention draw ------------------------------------------------------------


def ra_variance_bound(v):
    r"""Upper bound on the variance of one draw of randomized attention, per value coordinate (B3).

    One RA draw is :math:`v_m` with m drawn from the softmax weights, a random
    variable with values in :math:`[\min_m v_m, \max_m v_m]`; Popoviciu's
    inequality bounds its variance by range^2 / 4, whatever the query.

    Parameters
    ----------
    v : array_like, shape (M,) or (M, d_v)

    Returns
    -------
    ndarray, shape () or (d_v,)
    """
    v = _array("v", v, (1, 2), "(M,) or (M, d_v)")
    span = v.max(axis=0) - v.min(axis=0)
    return span**2 / 4.0


# --- cost of one estimator call ---------------------------------------------------------------------------------

#: The estimator families of :func:`estimator_cost_per_query`.
COST_FAMILIES = ("RFA", "LARA", "RA", "RBA")


def estimator_cost_per_query(family, size, n, m):
    """Kernel evaluations (exponentials of a d-dimensional dot product) per query of one estimator call.

    N queries, M keys; ``size`` is the family's size parameter: S features
    shared by all queries for RFA (S (N + M) / N), C proposals with one draw
    each for LARA (C (N + M + C) / N), R draws per query for RA (M (R + 1)),
    the batch size p for RBA (p). Exact softmax costs M.
    """
    if family == "RFA":
        return size * (n + m) / n
    if family == "LARA":
        return size * (n + m + size) / n
    if family == "RA":
        return m * (size + 1.0)
    if family == "RBA":
        return float(size)
    raise ValueError(f"family must be one of {', '.join(COST_FAMILIES)}, got {family!r}")
