"""Attention estimators and their theory (THEORY.md, Part B).

Exact softmax attention and its randomized approximations -- random feature
attention (RFA), randomized attention (RA), linear randomized attention
(LARA), random batch attention (RBA) -- with the pieces they are built from
(features, the target mixture p_n, the integrand f, self-normalised
importance sampling) and a registry of their declared properties.

Importing this package compiles nothing and does not import Numba: the RBA
kernel is compiled on first use (and cached on disk).

>>> import numpy as np, attention_theory as at
>>> rng = np.random.default_rng(0)
>>> q, k, v = rng.normal(size=(8, 4)) * 0.5, rng.normal(size=(8, 4)) * 0.5, rng.normal(size=(8, 2))
>>> exact = at.softmax_attention(q, k, v)
>>> np.allclose(at.random_batch_attention(q, k, v, batch_size=8, rng=1), exact)
True
>>> at.REGISTRY["lara"].unbiased, at.REGISTRY["randomized_attention"].unbiased
(False, True)
"""

from attention_theory.estimators import (
    MAX_SCORES,
    NonPositiveDenominatorWarning,
    draw_features,
    exact_batch_sum_target,
    integrand_f,
    lara,
    multi_head_attention,
    positive_features,
    random_batch_attention,
    random_batch_sum,
    randomized_attention,
    rfa,
    snis_attention,
    snis_weights,
    softmax_attention,
    target_mixture_logpdf,
    target_mixture_sample,
    trig_features,
)
from attention_theory.registry import REGISTRY, EstimatorInfo, property_table

__all__ = [
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
    "NonPositiveDenominatorWarning",
    "MAX_SCORES",
    "REGISTRY",
    "EstimatorInfo",
    "property_table",
]
