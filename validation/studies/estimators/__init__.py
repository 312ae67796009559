r"""Studies of the attention estimators (THEORY Part B, labels T9-T18).

Seven studies, each registered under its name:

=========================  ===========  ================================================================
study                      labels       what is measured, against what
=========================  ===========  ================================================================
``rfa_bias_variance``      T15, T16     RFA bias and variance vs the number of features S, against the
                                        first-order SNIS prediction of :func:`attention_theory.bounds.
                                        rfa_bias_variance`
``ra_unbiased``            T12-T14, B3  randomized attention is unbiased (Bonferroni z-tests); the same
                                        rule rejects RFA at S = 2 (negative control, so it has power)
``lara_consistency``       T17, B4      self-normalised LARA: bias vs samples per proposal, RMSE vs the
                                        number of proposals; the deterministic plug-in reported apart
``ess_vs_proposal_mean``   T16          Monte Carlo weight second moment of N(mu, I) proposals vs the
                                        closed form T16, as mu moves from 0 to q_n + mean k
``rba_bias``               T18, B5      random batch attention bias vs the batch size p, with and
                                        without the token itself; exact enumeration vs Monte Carlo
``rba_operator``           T18, T3, B5  the partition-averaged RBA operator (Monte Carlo with standard
                                        errors) against exact enumeration; its bias vs p, N, the score
                                        scale, self on/off, and the two remainder conventions; the batch
                                        sum unbiased under both
``estimator_mse``          T15-T18,     every estimator's MSE against exact softmax vs its number of
                           B3, B4       samples at three score scales (T16 = 2, 8, 64): RA slope -1,
                                        RFA slope -1 where T16 is moderate, LARA decreasing, RBA exact
                                        at p = N; the rest reported
=========================  ===========  ================================================================

Inputs
------
All inputs are synthetic and drawn from fixed seeds (:func:`synthetic_qkv`).
Self-normalised importance sampling has heavy-tailed weights when
:math:`|q_n + k_m|` is large, and the first-order (1/S) regime of T15 is then
out of reach at practical S (DESIGN, "Pitfalls"). The queries and keys are
therefore rescaled so that the largest weight second moment over the queries,
:math:`\max_n E_{N(0,I)}[\bar w_n^2]` (T16 with mu = 0), equals a declared
value (``t16_max``, between 1.3 and 4 here, except ``estimator_mse`` which also shows 8 and 64 on
purpose, to exhibit the pre-asymptotic regime); each study says which.

Every prediction is computed by the library (:mod:`attention_theory.bounds`,
:data:`attention_theory.REGISTRY`), never typed in, and every decision by
:mod:`validation.stats`. One module per study (``validation.studies.estimators.<study name>``); the inputs
and the pooling of chunks they share are in ``_common``.
"""

from __future__ import annotations

from validation.studies.estimators._common import INPUT_SEED, PREDICTION_DRAWS, PREDICTION_SEED, synthetic_qkv
from validation.studies.estimators.ess_vs_proposal_mean import ESSVsProposalMeanStudy
from validation.studies.estimators.estimator_mse import (
    MSE_SAMPLE_MEANING,
    MSE_VARIANTS,
    EstimatorMSEStudy,
    mse_cost_per_query,
    rfa_mse_first_order,
)
from validation.studies.estimators.lara_consistency import LARAConsistencyStudy
from validation.studies.estimators.ra_unbiased import RAUnbiasedStudy
from validation.studies.estimators.rba_bias import RBABiasStudy
from validation.studies.estimators.rba_operator import RBAOperatorStudy
from validation.studies.estimators.rfa_bias_variance import RFABiasVarianceStudy

__all__ = [
    "synthetic_qkv",
    "RFABiasVarianceStudy",
    "RAUnbiasedStudy",
    "LARAConsistencyStudy",
    "ESSVsProposalMeanStudy",
    "RBABiasStudy",
    "RBAOperatorStudy",
    "EstimatorMSEStudy",
    "MSE_VARIANTS",
    "MSE_SAMPLE_MEANING",
    "mse_cost_per_query",
    "rfa_mse_first_order",
    "INPUT_SEED",
    "PREDICTION_SEED",
    "PREDICTION_DRAWS",
]
