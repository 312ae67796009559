r"""Assertions and hypothesis strategies for checking *your own* estimators and integrators under pytest.

The library verifies its own methods against THEORY.md; this module hands the
same tools to users, in the form a test suite wants them: functions that
return quietly when the claim holds and raise :class:`AssertionError` with a
diagnostic message when it does not.

- :func:`assert_convergence_order`: a log-log fit of errors against levels
  (step sizes, batch sizes, sample sizes) by :func:`validation.rates.fit_rate`;
  passes when the slope's confidence interval, widened by ``tol``, contains
  the expected order (THEORY, Part D).
- :func:`assert_unbiased`: draws i.i.d. outputs of a randomized estimator from
  independent seeds and applies :func:`validation.stats.unbiasedness_test`.
- hypothesis strategies for inputs: :func:`particle_states`,
  :func:`qkv_triples`, :func:`batch_sizes`, :func:`step_sizes`. Hypothesis
  is a test dependency, imported only when a strategy is built.

Declared false-alarm rates
--------------------------
- :func:`assert_unbiased`: at most ``alpha`` (default 1e-3) per call,
  family-wise over the coordinates of one output (Holm or Bonferroni; exact
  for normal outputs with Hotelling; for other outputs up to the normal
  approximation of the mean, see :func:`validation.stats.unbiasedness_test`).
  The *power* is stated: the returned result (and its ``summary()``) gives
  the minimum detectable bias per coordinate at ``power`` (default 80%),
  ``(z_{1-alpha'/2} + z_power) * se`` with alpha' = alpha / K, so a pass says
  how large a bias would have been seen ("no bias detected: with n = 4000 a
  bias of at least 0.0115 would have been detected with 80% power at
  family-wise alpha 0.01"). Showing it on the estimator at hand is still
  good practice: run the same assertion on a deliberately biased variant and
  expect it to fail (``pytest.raises(AssertionError)``), as the examples below do.
- :func:`assert_convergence_order`: with independent replicates
  (``replicate_errors``) the bootstrap interval misses the true slope with
  probability about 1 - ``confidence`` (default 5%) *before* it is widened
  by ``tol``; widening makes a miss much rarer when the asymptotic regime is
  reached. With deterministic errors (ODE solvers) there is no probability
  involved: the regression interval measures how far the points are from a
  straight line, and ``tol`` absorbs pre-asymptotic curvature.

Seeds are explicit everywhere (``rng=0`` by default), so every verdict is
reproducible; the rates above say how often *another* seed would fail.

Examples
--------
A user's own estimator: the sample variance with denominator n - 1 is
unbiased, the one with denominator n is not.

>>> import numpy as np
>>> from validation.testing import assert_unbiased
>>> def my_estimator(rng):  # mean and variance of 10 Exp(1) draws: both are 1
...     x = rng.exponential(size=10)
...     return np.array([x.mean(), x.var(ddof=1)])
>>> res = assert_unbiased(my_estimator, [1.0, 1.0], n_samples=4000, rng=1)
>>> def biased(rng):
...     x = rng.exponential(size=10)
...     return np.array([x.mean(), x.var(ddof=0)])  # E = 0.9 for the variance
>>> assert_unbiased(biased, [1.0, 1.0], n_samples=4000, rng=1)  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
AssertionError: estimator looks biased: ...worst coordinate (1,): mean 0.90... vs target 1...z = -7.28...

A user's own integrator: explicit Euler for dX = -X dt is of order 1.

>>> from validation.testing import assert_convergence_order
>>> def euler_error(h):
...     x = 1.0
...     for _ in range(round(1.0 / h)):
...         x -= h * x
...     return abs(x - np.exp(-1.0))
>>> fit = assert_convergence_order(2.0 ** -np.arange(5, 11), euler_error, expected_order=1.0)
>>> round(fit.slope, 2)
1.0
>>> assert_convergence_order(2.0 ** -np.arange(5, 11), euler_error, expected_order=2.0)  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
AssertionError: convergence order not verified: fitted slope 1.003 ... does not contain the expected order 2...
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from validation.rates import fit_rate, preasymptotic_flag
from validation.stats import _plain, unbiasedness_test

__all__ = [
    "assert_convergence_order",
    "assert_unbiased",
    "draw_samples",
    "particle_states",
    "qkv_triples",
    "batch_sizes",
    "step_sizes",
    "MAX_TOL",
    "t16_bound",
]

#: Largest ``tol`` accepted by :func:`assert_convergence_order`: THEORY Part D
#: aims at 0.1 to 0.2 and warns against tolerances that accept any order.
MAX_TOL = 0.5


def t16_bound(max_norm):
    r"""Upper bound on the importance-weight second moment (T16) for inputs of :func:`qkv_triples`.

    With :math:`|q_n|, |k_m| \le r` and the proposal N(0, I) of RFA,
    :math:`(q_n + k_m)\cdot(q_n + k_{m'}) \le (2r)^2`, so (T16) is at most
    :math:`e^{4 r^2}` and the effective sample size of S features at least
    :math:`S e^{-4 r^2}`. For r = 0.5 (the default) the bound is e = 2.72.

    >>> round(t16_bound(0.5), 4)
    2.7183
    """
    return math.exp(4.0 * float(max_norm) ** 2)


# --------------------------------------------------------------------------- convergence order


def _fmt_list(a):
    return "[" + ", ".join(f"{float(v):.4g}" for v in np.asarray(a).ravel()) + "]"


def assert_convergence_order(levels, errors, expected_order, *, tol=0.1, replicate_errors=None, confidence=0.95,
                             n_boot=2000, rng=0, err_msg=""):
    r"""Assert that errors decay like ``level ** expected_order``.

    Fits ``log(error) = c + slope * log(level)`` with
    :func:`validation.rates.fit_rate` and passes when
    ``[ci_low - tol, ci_high + tol]`` contains ``expected_order``.

    Parameters
    ----------
    levels : array_like, shape (n_levels,)
        Step sizes (or batch sizes, sample sizes): positive, distinct,
        n_levels >= 3.
    errors : array_like, shape (n_levels,), callable, or None
        The errors at the levels (positive); or a callable ``error(level) ->
        float`` evaluated at each level, in order; or None when
        ``replicate_errors`` is given (the RMS per level is then used).
    expected_order : float
        The predicted slope, e.g. ``particles.RBM1.strong_order`` (0.5) for
        step sizes, ``particles.RBM1.batch_exponent`` (-0.5) for p - 1, or -1
        for a bias against the sample size.
    tol : float, default 0.1
        Documented tolerance added on both sides of the interval, in
        [0, ``MAX_TOL``] (THEORY, Part D: aim at 0.1 to 0.2).
    replicate_errors : array_like, shape (n_replicates, n_levels), optional
        Per-replicate *squared* errors (replicates independent, levels within
        a replicate may share random numbers). Gives the bootstrap interval,
        which is the honest one under common random numbers.
    confidence : float, default 0.95
        Nominal coverage of the slope's interval.
    n_boot : int, default 2000
        Bootstrap resamples (with ``replicate_errors``).
    rng : int or numpy.random.Generator, default 0
        Bootstrap seed.
    err_msg : str, optional
        Prepended to the failure message.

    Returns
    -------
    validation.rates.RateFit
        The fit, when the assertion passes.

    Raises
    ------
    AssertionError
        The widened interval does not contain ``expected_order``. The message
        shows the fitted slope, its interval, the widened interval, the
        expected order, the levels and errors, and the windows of levels whose
        local slope departs from the expected order by more than ``tol``.
    ValueError
        Invalid arguments (naming the argument), including
        ``expected_order=None`` (a method that declares no such order).

    Examples
    --------
    >>> import numpy as np
    >>> h = 2.0 ** -np.arange(3, 9)
    >>> round(assert_convergence_order(h, 0.7 * h**1.5, 1.5).slope, 12)
    1.5
    """
    if expected_order is None:
        raise ValueError("expected_order is None: the method declares no such order (e.g. particles.RBMR has no "
                         "strong_order); pass the number you expect")
    if isinstance(expected_order, bool) or not isinstance(expected_order, numbers.Real) \
            or not math.isfinite(expected_order):
        raise ValueError(f"expected_order must be a finite number, got {_plain(expected_order)!r}")
    expected_order = float(expected_order)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (0.0 <= tol <= MAX_TOL):
        raise ValueError(f"tol must be a number in [0, {MAX_TOL}] (THEORY Part D: aim at 0.1-0.2), got {_plain(tol)!r}")
    tol = float(tol)
    try:
        lv = np.asarray(levels, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError("levels must be a 1-d sequence of positive numbers") from exc
    if callable(errors):
        if replicate_errors is not None:
            raise ValueError("errors: pass either a callable error(level) or replicate_errors, not both")
        if lv.ndim != 1 or not np.all(np.isfinite(lv)) or not np.all(lv > 0):
            raise ValueError(f"levels must be a 1-d sequence of positive finite numbers, got {lv.tolist()}")
        vals = []
        for level in lv.tolist():
            e = errors(level)
            try:
                e = float(e)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"errors: the callable returned {e!r} at level {level!r}; it must return a "
                                 f"positive finite float") from exc
            if not (math.isfinite(e) and e > 0):
                raise ValueError(f"errors: the callable returned {e!r} at level {level!r}; it must return a "
                                 f"positive finite float (a log-log fit needs log(error))")
            vals.append(e)
        errors = np.array(vals)
    fit = fit_rate(lv, errors, replicate_errors=replicate_errors, confidence=confidence, n_boot=n_boot, rng=rng)
    if fit.contains(expected_order, tol):
        return fit
    if errors is None:
        errors = np.sqrt(np.asarray(replicate_errors, dtype=np.float64).mean(axis=0))
    lines = [
        f"convergence order not verified: fitted slope {fit.slope:.4g} with {100 * fit.confidence:g}% "
        f"{fit.method} interval [{fit.ci_low:.4g}, {fit.ci_high:.4g}], widened by tol={tol:g} to "
        f"[{fit.ci_low - tol:.4g}, {fit.ci_high + tol:.4g}], does not contain the expected order "
        f"{expected_order:g} (r^2 = {fit.r2:.4f})",
        f"levels: {_fmt_list(lv)}",
        f"errors: {_fmt_list(errors)}",
    ]
    flagged = preasymptotic_flag(lv, errors, expected_order, tol)
    if flagged:
        lines.append("local slopes (3 successive levels) off by more than tol: "
                     + ", ".join(f"[{w.level_min:.4g}, {w.level_max:.4g}]: {w.slope:.3g}" for w in flagged))
    msg = "\n".join(lines)
    raise AssertionError(f"{err_msg}\n{msg}" if err_msg else msg)


# --------------------------------------------------------------------------- unbiasedness


def _seed_sequence(rng):
    if isinstance(rng, np.random.SeedSequence):
        return rng
    if isinstance(rng, np.random.Generator):
        return np.random.SeedSequence(rng.integers(0, 2**63, size=4).tolist())
    if isinstance(rng, bool) or not isinstance(rng, numbers.Integral) or rng < 0:
        raise ValueError(f"rng must be a non-negative int seed, a numpy SeedSequence or a Generator, "
                         f"got {_plain(rng)!r}")
    return np.random.SeedSequence(int(rng))


def draw_samples(estimator, n_samples, *, rng=0, pass_as="generator"):
    """Call a randomized estimator ``n_samples`` times with independent randomness and stack the outputs.

    Parameters
    ----------
    estimator : callable
        ``estimator(r)`` returns one output (a number or an array of fixed
        shape); ``r`` is a fresh :class:`numpy.random.Generator` or an int
        seed (see ``pass_as``).
    n_samples : int
        Number of calls, >= 2.
    rng : int, numpy.random.SeedSequence or numpy.random.Generator, default 0
        Root of the independent streams: ``SeedSequence(rng).spawn(n_samples)``.
    pass_as : {"generator", "seed"}, default "generator"
        Pass each call a Generator, or an int seed in [0, 2**63) derived from
        its child SeedSequence.

    Returns
    -------
    ndarray of float64, shape (n_samples, ...)

    Examples
    --------
    >>> draw_samples(lambda g: g.standard_normal(3), 5, rng=0).shape
    (5, 3)
    """
    if not callable(estimator):
        raise TypeError(f"estimator must be callable, got {type(estimator).__name__}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {_plain(n_samples)!r}")
    if pass_as not in ("generator", "seed"):
        raise ValueError(f"pass_as must be 'generator' or 'seed', got {pass_as!r}")
    children = _seed_sequence(rng).spawn(int(n_samples))
    out = None
    for i, child in enumerate(children):
        arg = (np.random.default_rng(child) if pass_as == "generator"
               else int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
        y = np.asarray(estimator(arg))
        if y.dtype.kind not in "iuf":
            raise TypeError(f"estimator must return real numbers; call {i} returned dtype {y.dtype}")
        if out is None:
            out = np.empty((int(n_samples),) + y.shape)
        elif y.shape != out.shape[1:]:
            raise ValueError(f"estimator returned shape {y.shape} at call {i} but {out.shape[1:]} at call 0; every "
                             f"output must have the same shape")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"estimator returned non-finite values at call {i}")
        out[i] = y
    return out


def assert_unbiased(estimator, target, *, n_samples=None, alpha=1e-3, method="holm", rng=0, pass_as="generator",
                    atol=0.0, power=0.8, err_msg=""):
    r"""Assert that a randomized estimator averages to ``target``.

    Parameters
    ----------
    estimator : callable or array_like
        A callable ``estimator(r)`` returning one output (see
        :func:`draw_samples`), or already drawn i.i.d. samples of shape (n, ...).
    target : float or array_like
        The exact value, broadcastable to one output's shape.
    n_samples : int, optional
        Draws for a callable (default 1000); must be None for samples.
    alpha : float, default 1e-3
        Declared family-wise false-alarm rate.
    method : {"holm", "bonferroni", "hotelling"}, default "holm"
    rng : int, numpy.random.SeedSequence or numpy.random.Generator, default 0
        Root seed of the draws (ignored for samples).
    pass_as : {"generator", "seed"}, default "generator"
        What the callable receives.
    atol : float, default 0.0
        Tolerance for coordinates that do not vary (see
        :func:`validation.stats.unbiasedness_test`); give a few ulps when an
        output is deterministic up to rounding.
    power : float, default 0.8
        The power at which the minimum detectable bias is stated.
    err_msg : str, optional
        Prepended to the failure message.

    Returns
    -------
    validation.stats.UnbiasednessTest
        When the assertion passes. ``min_detectable_bias`` (per coordinate) is
        the smallest bias this call would have rejected with probability
        ``power``; ``summary()`` says so in words ("no bias detected: with n =
        ... a bias of at least ... would have been detected with 80% power at
        family-wise alpha ...").

    Raises
    ------
    AssertionError
        The test rejects; the message gives the worst coordinate's mean,
        target, z and p-values, and the global p-value.

    Examples
    --------
    >>> import numpy as np
    >>> def mc_mean_of_square(rng):  # E[Z^2] = 1 for Z ~ N(0, 1)
    ...     return np.mean(rng.standard_normal(16) ** 2)
    >>> res = assert_unbiased(mc_mean_of_square, 1.0, n_samples=2000, rng=3)
    >>> res.rejected
    False
    >>> print(res.power_statement())  # doctest: +ELLIPSIS
    with n = 2000 a bias of at least 0.0... would have been detected with 80% power at family-wise alpha 0.001
    """
    if callable(estimator) and not isinstance(estimator, np.ndarray):
        n = 1000 if n_samples is None else n_samples
        samples = draw_samples(estimator, n, rng=rng, pass_as=pass_as)
    else:
        if n_samples is not None:
            raise ValueError("n_samples applies to a callable estimator; samples were given (leave n_samples None)")
        samples = estimator
    res = unbiasedness_test(samples, target, alpha=alpha, method=method, atol=atol, power=power)
    if not res.rejected:
        return res
    msg = "estimator looks biased: " + res.summary()
    raise AssertionError(f"{err_msg}\n{msg}" if err_msg else msg)


# --------------------------------------------------------------------------- hypothesis strategies


def _int_strategy(name, value, default, low):
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy

    if value is None:
        return default
    if isinstance(value, SearchStrategy):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, a hypothesis strategy of such, or None; "
                         f"got {_plain(value)!r}")
    return st.just(int(value))


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {_plain(value)!r}")
    return float(value)


def _to_sphere(x):
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    tiny = norm[..., 0] < 1e-3
    y = x / np.where(norm > 0, norm, 1.0)
    y[tiny] = 0.0
    y[tiny, 0] = 1.0
    return y


def particle_states(n=None, d=None, replicas=None, *, on_sphere=False, max_abs=3.0):
    """Hypothesis strategy for particle states, as ``particles.solve`` takes them.

    Parameters
    ----------
    n, d : int or hypothesis strategy of int, optional
        Number of particles (default: 2 to 16) and dimension (default: 1 to 4).
    replicas : int or hypothesis strategy of int, optional
        With a value, states have a leading replica axis.
    on_sphere : bool, default False
        Normalize each particle to the unit sphere S^{d-1} (tokens of the
        attention dynamics); a particle drawn with norm below 1e-3 is put at
        the first basis vector (so shrinking gives all particles equal).
    max_abs : float, default 3.0
        Bound on the coordinates before normalization.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Of float64 arrays, shape (n, d) or (replicas, n, d).

    Examples
    --------
    >>> import numpy as np
    >>> from hypothesis import given, settings
    >>> @settings(max_examples=5, derandomize=True, database=None)
    ... @given(particle_states(n=4, d=3, on_sphere=True))
    ... def test_unit_norms(x):
    ...     assert x.shape == (4, 3)
    ...     np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0)
    >>> test_unit_norms()
    """
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    n_st = _int_strategy("n", n, st.integers(2, 16), 1)
    d_st = _int_strategy("d", d, st.integers(1, 4), 1)
    max_abs = _check_positive("max_abs", max_abs)
    if not isinstance(on_sphere, bool):
        raise ValueError(f"on_sphere must be True or False, got {_plain(on_sphere)!r}")
    elements = st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    if replicas is None:
        shapes = st.tuples(n_st, d_st)
    else:
        shapes = st.tuples(_int_strategy("replicas", replicas, None, 1), n_st, d_st)
    states = shapes.flatmap(lambda shape: hnp.arrays(np.float64, shape, elements=elements))
    return states.map(_to_sphere) if on_sphere else states


def _clip_rows(x, max_norm):
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, max_norm / np.where(norm > 0, norm, 1.0))


def qkv_triples(n=None, m=None, d=None, dv=None, *, max_norm=0.5, max_value=1.0):
    r"""Hypothesis strategy for attention inputs ``(q, k, v)`` in a moderate-weight regime.

    Parameters
    ----------
    n, m : int or hypothesis strategy of int, optional
        Number of queries (default 1 to 6) and of keys/values (default 1 to 6).
    d, dv : int or hypothesis strategy of int, optional
        Dimension of queries/keys (default 1 to 4) and of values (default 1 to 3).
    max_norm : float, default 0.5
        Every row of q and k has Euclidean norm <= ``max_norm`` (rows drawn
        longer are scaled back). Then the importance-weight second moment of
        RFA's proposal (T16) is at most ``exp(4 max_norm**2)`` (e = 2.72 by
        default, see :func:`t16_bound`), so self-normalised importance sampling
        (RFA, LARA) is in its 1/S regime at small S, and the softmax weights
        are within a factor ``exp(2 max_norm**2)`` of uniform. Larger norms
        give heavy-tailed weights (THEORY B2, DESIGN pitfalls).
    max_value : float, default 1.0
        Entries of v lie in [-max_value, max_value].

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Of tuples (q, k, v) of float64 arrays with shapes (n, d), (m, d), (m, dv).

    Examples
    --------
    >>> import numpy as np, attention_theory as at
    >>> from hypothesis import given, settings
    >>> @settings(max_examples=5, derandomize=True, database=None)
    ... @given(qkv_triples())
    ... def test_outputs_in_the_hull_of_values(qkv):
    ...     q, k, v = qkv
    ...     out = at.randomized_attention(q, k, v, rng=0)
    ...     assert np.all(out <= v.max(axis=0) + 1e-12) and np.all(out >= v.min(axis=0) - 1e-12)
    >>> test_outputs_in_the_hull_of_values()
    """
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    n_st = _int_strategy("n", n, st.integers(1, 6), 1)
    m_st = _int_strategy("m", m, st.integers(1, 6), 1)
    d_st = _int_strategy("d", d, st.integers(1, 4), 1)
    dv_st = _int_strategy("dv", dv, st.integers(1, 3), 1)
    max_norm = _check_positive("max_norm", max_norm)
    max_value = _check_positive("max_value", max_value)
    qk_el = st.floats(-max_norm, max_norm, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    v_el = st.floats(-max_value, max_value, allow_nan=False, allow_infinity=False, allow_subnormal=False)

    @st.composite
    def triples(draw):
        nn, mm, dd, ddv = draw(n_st), draw(m_st), draw(d_st), draw(dv_st)
        q = _clip_rows(draw(hnp.arrays(np.float64, (nn, dd), elements=qk_el)), max_norm)
        k = _clip_rows(draw(hnp.arrays(np.float64, (mm, dd), elements=qk_el)), max_norm)
        v = draw(hnp.arrays(np.float64, (mm, ddv), elements=v_el))
        return q, k, v

    return triples()


def batch_sizes(n):
    """Hypothesis strategy for RBM batch sizes p with 2 <= p <= n.

    Parameters
    ----------
    n : int
        Number of particles, >= 2.

    Returns
    -------
    hypothesis.strategies.SearchStrategy of int
    """
    from hypothesis import strategies as st

    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (a batch has at least 2 particles), got {_plain(n)!r}")
    return st.integers(2, int(n))


def step_sizes(t_end=1.0, *, min_steps=1, max_steps=1024):
    """Hypothesis strategy for dyadic step sizes ``t_end / 2**j`` that divide ``t_end`` exactly.

    Parameters
    ----------
    t_end : float, default 1.0
        Horizon; every step size is a whole fraction of it (as
        ``particles.solve`` requires).
    min_steps, max_steps : int, default 1 and 1024
        Range of the number of steps ``2**j``, 1 <= min_steps <= max_steps.

    Returns
    -------
    hypothesis.strategies.SearchStrategy of float
    """
    from hypothesis import strategies as st

    t_end = _check_positive("t_end", t_end)
    for name, v in (("min_steps", min_steps), ("max_steps", max_steps)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {_plain(v)!r}")
    lo = math.ceil(math.log2(min_steps))
    hi = math.floor(math.log2(max_steps))
    if lo > hi:
        raise ValueError(f"no power of two between min_steps={min_steps} and max_steps={max_steps}")
    return st.integers(lo, hi).map(lambda j: t_end / 2.0**j)
