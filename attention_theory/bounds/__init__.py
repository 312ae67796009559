r"""Numeric statements of THEORY.md's formulas: plain NumPy, no sympy, no simulation of a study.

The theory layer that studies call and tests check against
:mod:`attention_theory.symbolic` (which derives the same formulas):

- :mod:`attention_theory.bounds.estimators`: T9-T18, the random-feature,
  importance-sampling and random-batch attention estimators;
- :mod:`attention_theory.bounds.ips`: T3 (the RBM-1 batch factor and the
  Lambda_i it multiplies) and the Dyson gas;
- :mod:`attention_theory.bounds.dynamics`: Part C, the self-attention dynamics
  on the sphere (equiangular time, energies, cluster counts).

Every public function of the submodules is importable from here.
"""

from attention_theory.bounds.estimators import (
    RBA_EXACT_MAX_TOKENS,
    RFABiasVariance,
    RFAFirstOrder,
    batch_variance_factor,
    effective_sample_size,
    estimator_cost_per_query,
    ra_variance_bound,
    rba_exact_bias,
    rfa_bias_variance,
    rfa_first_order,
    rff_positive_variance,
    rff_trig_variance,
    weight_second_moment,
)

__all__ = [
    "RBA_EXACT_MAX_TOKENS",
    "RFABiasVariance",
    "batch_variance_factor",
    "effective_sample_size",
    "rba_exact_bias",
    "rfa_bias_variance",
    "rff_positive_variance",
    "rff_trig_variance",
    "weight_second_moment",
    # the estimator studies' predictions
    "RFAFirstOrder",
    "estimator_cost_per_query",
    "ra_variance_bound",
    "rfa_first_order",
]
