r"""Attention estimators: exact softmax, random features, randomized attention, LARA, random batches.

Notation follows THEORY.md, Part B. Queries ``q`` have shape (N, d), keys
``k`` shape (M, d), values ``v`` shape (M, dv); every estimator returns an
array of shape (N, dv). The 1/sqrt(d) temperature is folded into ``q`` and
``k``. Exact attention is

.. math:: \mathrm{Attn}_n = \sum_m \pi_{nm} v_m, \qquad
          \pi_{nm} = e^{q_n\cdot k_m} / Z_n, \qquad Z_n = \sum_m e^{q_n\cdot k_m}.  \tag{T7}

The randomized estimators all rest on one identity (Zheng, Wang and Kong,
ICML 2022): with the query-specific target mixture
:math:`p_n(w) = \sum_m \pi_{nm} N(w; q_n + k_m, I)` (T12) and the
query-independent integrand :math:`f(w) = \sum_m \mathrm{softmax}_m(w\cdot k_m -
|k_m|^2/2)\, v_m` (T13), softmax attention is an expectation,
:math:`\mathrm{Attn}_n = E_{w\sim p_n}[f(w)]` (T14). Then

- :func:`rfa` is self-normalised importance sampling (SNIS) of (T14) with the
  proposal N(0, I), written as linear attention with random features (B1);
- :func:`randomized_attention` samples :math:`p_n` exactly (B3, unbiased, quadratic);
- :func:`lara` is SNIS with a mixture of C Gaussian proposals and multiple
  importance sampling weights (T17, linear cost);
- :func:`random_batch_attention` runs exact softmax attention inside the random
  batches of the RBM-1 partition (T18); :func:`random_batch_sum` is its
  unnormalised, unbiased cousin (lemma T3);
- :func:`multi_head_attention` computes H heads from token embeddings (their
  own projections, exact or random batch attention in each) and the output map.

:func:`softmax_attention` and :func:`random_batch_attention` also take H heads
at once: q, k of shape (H, N, d) and v of shape (H, N, dv) give (H, N, dv).

Conventions shared by every function here
-----------------------------------------
- **Log space.** Scores and importance weights are handled as logarithms and
  exponentiated only after subtracting a maximum, so inputs with
  :math:`|q\cdot k|` up to about 1e3 (and beyond) never overflow. The
  exceptions say so: :func:`random_batch_sum`, :func:`exact_batch_sum_target`
  and :func:`trig_features` compute quantities that are themselves of size
  :math:`e^{q\cdot k}` and overflow when those do.
- **Precision.** Inputs are validated (shapes, finiteness, real dtype) and
  converted to float64; the result is always float64, also for float32 inputs.
- **Randomness.** ``rng`` is a non-negative int seed or a
  :class:`numpy.random.Generator` (used and advanced in place). ``None`` is
  rejected: every random result here is reproducible from its seed.
- **Cost.** Quadratic estimators process queries in chunks so that no more than
  ``max_scores`` scores are held at once.

Layout: the log-space kernels and exact softmax attention are in ``_softmax``,
the random features and RFA in ``_features``, the multi-head layer in ``_heads``, the target mixture, the
integrand and the importance-sampling estimators (SNIS, RA, LARA) in
``_sampling``, the random batch estimators in ``_batch``; this package is
their public face.
"""

from attention_theory.estimators._batch import exact_batch_sum_target, random_batch_attention, random_batch_sum
from attention_theory.estimators._features import draw_features, positive_features, rfa, trig_features
from attention_theory.estimators._heads import multi_head_attention
from attention_theory.estimators._sampling import (  # noqa: F401  (LARA_ALPHA_FLOOR: a documented constant)
    LARA_ALPHA_FLOOR,
    integrand_f,
    lara,
    randomized_attention,
    snis_attention,
    snis_weights,
    target_mixture_logpdf,
    target_mixture_sample,
)
from attention_theory.estimators._softmax import (  # noqa: F401  (the private kernels: the tests' oracles use them)
    _BACKENDS,
    MAX_SCORES,
    NonPositiveDenominatorWarning,
    _logsumexp,
    _softmax_rows,
    softmax_attention,
)

__all__ = [
    "NonPositiveDenominatorWarning",
    "softmax_attention",
    "rfa",
    "randomized_attention",
    "lara",
    "random_batch_attention",
    "random_batch_sum",
    "exact_batch_sum_target",
    "multi_head_attention",
    "positive_features",
    "trig_features",
    "draw_features",
    "target_mixture_sample",
    "target_mixture_logpdf",
    "integrand_f",
    "snis_weights",
    "snis_attention",
    "MAX_SCORES",
]

# The public name of each of these is the package's: the API reference, the estimator table of the docs and the
# reprs point at attention_theory.estimators.NAME, not at the private module that happens to define it.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, int):
        _obj.__module__ = __name__
del _name, _obj
