r"""Numeric statements of THEORY.md's formulas: plain NumPy, no sympy, no simulation of a study.

The theory layer that studies call and tests check against
:mod:`attention_theory.symbolic` (which derives the same formulas):

- :mod:`attention_theory.bounds.estimators`: T9-T17, the random-feature and
  importance-sampling estimators, and the cost of every estimator;
- :mod:`attention_theory.bounds.rba`: T18, the random batch attention
  operator E_partition[RBA] (exact enumeration, Monte Carlo with intervals)
  and its exact bias;
- :mod:`attention_theory.bounds.ips`: T3 (the RBM-1 batch factor and the
  Lambda_i it multiplies) and the Dyson gas;
- :mod:`attention_theory.bounds.dynamics`: Part C, the self-attention dynamics
  on the sphere (equiangular time, energies, cluster counts);
- :mod:`attention_theory.bounds.noisy`: the Bessel-function predictions for
  noisy USA dynamics on the sphere (beta*, K#; Mun and Rosenzweig);
- :mod:`attention_theory.bounds.observables`: order parameters of tokens on
  the sphere (the empirical mean, the degree-l harmonic powers).

Every public function of the submodules is importable from here.
"""

from attention_theory.bounds.dynamics import (
    attention_energy,
    attention_energy_max,
    averaged_pair_force,
    circle_cluster_count,
    collapse_rate,
    equiangular_time,
    gamma_reference,
    pair_averaging_floor,
    sa_force,
)
from attention_theory.bounds.estimators import (
    RFABiasVariance,
    RFAFirstOrder,
    batch_variance_factor,
    effective_sample_size,
    estimator_cost_per_query,
    ra_variance_bound,
    rfa_bias_variance,
    rfa_first_order,
    rff_positive_variance,
    rff_trig_variance,
    weight_second_moment,
)
from attention_theory.bounds.ips import (
    batch_lambdas,
    dyson_stationary_second_moment,
    finite_n_batch_slope,
    kernel_lambdas,
    semicircle_cdf,
    semicircle_density,
)
from attention_theory.bounds.noisy import (
    noisy_coupling_threshold,
    noisy_critical_beta,
    noisy_kappa_threshold,
    noisy_sigma_threshold,
)
from attention_theory.bounds.observables import harmonic_power, order_parameter
from attention_theory.bounds.rba import (
    RBA_EXACT_MAX_TOKENS,
    RBA_OPERATOR_MAX_TOKENS,
    RBAOperatorEstimate,
    rba_exact_bias,
    rba_operator,
    rba_operator_exact,
)

__all__ = [
    "RBA_EXACT_MAX_TOKENS",
    "RFABiasVariance",
    "batch_variance_factor",
    "effective_sample_size",
    "rba_exact_bias",
    # T18: the RBA operator (rba)
    "RBA_OPERATOR_MAX_TOKENS",
    "RBAOperatorEstimate",
    "rba_operator",
    "rba_operator_exact",
    "rfa_bias_variance",
    "rff_positive_variance",
    "rff_trig_variance",
    "weight_second_moment",
    # the estimator studies' predictions
    "RFAFirstOrder",
    "estimator_cost_per_query",
    "ra_variance_bound",
    "rfa_first_order",
    # T3, the Dyson gas (ips) and Part C (dynamics)
    "batch_lambdas",
    "kernel_lambdas",
    "finite_n_batch_slope",
    "semicircle_density",
    "semicircle_cdf",
    "dyson_stationary_second_moment",
    "gamma_reference",
    "equiangular_time",
    "collapse_rate",
    "attention_energy",
    "attention_energy_max",
    "sa_force",
    "averaged_pair_force",
    "pair_averaging_floor",
    "circle_cluster_count",
    # noisy USA dynamics on the sphere (noisy)
    "noisy_critical_beta",
    "noisy_coupling_threshold",
    "noisy_kappa_threshold",
    "noisy_sigma_threshold",
    # order parameters on the sphere (observables)
    "order_parameter",
    "harmonic_power",
]
