r"""Random Batch Method studies: the consequences of T3-T6 measured on the particles engine.

Every study here is a :class:`validation.study.Study`: a parameter grid, a
number of replicate *blocks* per grid point, a measurement per cell and a
verdict rule. One cell is one parameter point times one block of ``R``
replicas integrated in a single :func:`particles.solve` call (the replica
axis of ``x0``), so per-cell overhead is small and an interrupted run
resumes block by block. Every prediction is read at verdict time from the
integrator's declaration (``particles.integrators.RBM1``, ``RBMR``) or from a
formula (``particles.integrators.batch_variance_factor``,
:func:`dyson_stationary_second_moment`, :func:`semicircle_cdf`); no verdict
types the predicted number itself.

Studies (THEORY labels)
-----------------------
``rbm_strong_order`` (T4)
    Strong error of RBM-1 against the full system vs tau at p = 2, 4, 8:
    slope = ``RBM1.strong_order``.
``rbm_batch_size`` (T3, T4)
    Strong error vs (p - 1) at tau << 1/(p-1), N >> p: slope =
    ``RBM1.batch_exponent``; the finite-N factor of T3 is shown alongside.
``rbm_particle_number`` (T4)
    Strong error at fixed (tau, p) vs N: slope 0 (``RBM1.n_uniform``).
``rbm_uniform_in_time`` (T4)
    Strong error vs the horizon T: no growth (``RBM1.time_uniform``).
``rbm_weak_order`` (T5)
    ``|E phi(X_RBM(T)) - E phi(X(T))|`` vs tau: slope = ``RBM1.weak_order``.
``rbmr_order`` (T6)
    RBM with replacement vs tau with and without noise: the error decays at
    least as fast as the declared W2 orders ``RBMR.w2_order_noisy`` and
    ``RBMR.w2_order_deterministic`` (upper bounds).
``batch_force_lemma`` (T3)
    Mean and second moment of the batch-force error at frozen positions,
    z-tests with Bonferroni correction and a negative control.
``dyson_semicircle`` (T1, T2; THEORY A1.2)
    Dyson Brownian motion, full and RBM-1: Kolmogorov distance of the
    stationary empirical measure to the semicircle vs N, and the stationary
    second-moment identity (continuous time and its exact Euler version).

The coupling (THEORY A3)
------------------------
A strong error compares RBM-1 with the full system run from the SAME initial
state with the SAME step h = tau and the SAME Brownian path: one ``seed`` per
cell and ``noise_dt`` = the finest tau of the study, so that every level and
both methods see one Brownian path per replica. Levels of one replica are
therefore dependent; slopes get a percentile bootstrap interval over the
replicas (:func:`validation.rates.fit_rate` with ``replicate_errors``). The
replicas of all blocks are independent (blocks have independent cell seeds,
replicas within a block independent streams and initial states), so the
bootstrap resamples individual replicas, pooled over blocks: that is the
finest valid resampling unit.

Sizes
-----
``quick`` sizes run in 0.2 to 10 s each (all eight studies in about 25 s on
one core when the Numba cache is warm; a cold cache adds the compilation of
the engine's loops, up to a minute); ``full`` sizes are at the scale of the
papers' experiments (N in the hundreds to a thousand, hundreds of replicas or
tens of thousands for the weak error, tau down to 2^-10): about 20 minutes on
one core in all. See the ``QUICK``, ``FULL`` and ``BLOCKS`` attributes.

Modules
-------
``strong`` (the four strong-error studies), ``weak`` (T5 and RBM-r),
``batch_force`` (T3), ``dyson`` (the Dyson gas), and ``_common`` (the test
system, initial states, coupled runs, the slope fit). The formulas the
verdicts compare against live in :mod:`attention_theory.bounds.ips`
(re-exported here: :func:`semicircle_cdf`,
:func:`dyson_stationary_second_moment`); the decisions go through
:mod:`validation.stats`.
"""

from attention_theory.bounds.ips import dyson_stationary_second_moment, semicircle_cdf

from .batch_force import BatchForceLemma
from .dyson import DysonSemicircle, kolmogorov_distance
from .strong import RBMBatchSize, RBMParticleNumber, RBMStrongOrder, RBMUniformInTime
from .weak import RBMROrder, RBMWeakOrder

__all__ = [
    "RBMStrongOrder", "RBMBatchSize", "RBMParticleNumber", "RBMUniformInTime", "RBMWeakOrder", "RBMROrder",
    "BatchForceLemma", "DysonSemicircle", "semicircle_cdf", "dyson_stationary_second_moment",
    "kolmogorov_distance",
]
