r"""Studies of self-attention dynamics (THEORY Part C, T19/T20) and of random batches as their integrator (B5).

Six studies, each registered under its name:

======================  ==========  ========================================================================
study                   labels      what is measured, against what
======================  ==========  ========================================================================
``equiangular_ode``     T19, T20    equiangular tokens stay equiangular; their inner product follows the
                                    scalar ODE gamma(t) of Part C (solved by ``scipy.integrate.solve_ivp``);
                                    RK4 order of the deviation; near-collapse rates 2 (SA) and 2 e^beta (USA)
``energy_monotone``     T19, T20    E_beta(X) = (1/(2 beta n^2)) sum_ij exp(beta <x_i, x_j>) never decreases
``one_cluster``         T19, T20    d >= 3: every random initialisation ends in one cluster by time T
``sa_floor_vs_usa``     B5, T4      RBM-1 as an integrator of USA converges like tau^(1/2); of SA it stops at
                                    a floor, the distance to the partition-averaged dynamics
``phase_diagram``       T19         P(<x_1(t), x_2(t)> >= 1 - 1e-3) over (t, beta) for n = 32 and d = 2 ..
                                    1024 (the phase diagram of Geshkovski et al.), with the equiangular curve
``circle_clusters``     T19         d = 2: the metastable number of clusters on the circle (about 2 at beta
                                    = 4, 3 at beta = 9), snapshots and counts vs time
======================  ==========  ========================================================================

All runs use the ``particles`` engine (``scheme="rk4"`` unless said
otherwise), Q = K = V = I, tokens on the unit sphere, no noise, and the
replica axis (x0 of shape (R, n, d)) for several initialisations in one call.
The two studies of the paper's figures (``phase_diagram``, ``circle_clusters``)
run the step of the authors' public scripts instead: ambient explicit Euler,
``scheme="ambient_euler"``, ``x <- (x + h a(x)) / |x + h a(x)|`` with the
unprojected attention output a (self included) and h = 0.1. That is what
``phase-diagrams.py`` (its ``--use_softmax`` mode, the paper's phase diagram)
and ``sphere.py`` of ``borjanG/2023-transformers-rotf`` do (read at commit
538ba83); ``tests/validation/test_authors_procedure.py`` restates the whole
phase-diagram procedure of that script in NumPy (step, float time
accumulation, checkpoints, strict ``> 0.999``, ordered pairs) and checks that
the ``phase_diagram`` study, read at the script's checkpoints
(:func:`authors_checkpoints`), gives the same numbers on the same initial
tokens. The projected step (``scheme="euler"``) is a different first-order
discretisation of the same ODE; how far each is from the ODE at h = 0.1 is
measured by the ``phase_discretisation`` study
(:mod:`validation.studies.discretisation`).

Modules: ``ode`` (``equiangular_ode``, ``energy_monotone``), ``clusters``
(``one_cluster``, ``sa_floor_vs_usa``), ``phase_diagram``,
``circle_clusters``, and ``_common`` (modes, chunked runs, span coordinates,
the authors' checkpoints and step names). The Part C formulas
(:func:`gamma_reference`, :func:`equiangular_time`, :func:`attention_energy`,
:func:`averaged_pair_force`, :func:`circle_cluster_count`) live in
:mod:`attention_theory.bounds.dynamics` and are re-exported here.
"""

from attention_theory.bounds.dynamics import (
    attention_energy,
    averaged_pair_force,
    circle_cluster_count,
    equiangular_time,
    gamma_reference,
)

from ._common import STEP_WORDS, authors_checkpoints, span_coordinates, step_words
from .circle_clusters import CircleClustersStudy
from .clusters import OneClusterStudy, SAFloorVsUSAStudy
from .ode import EnergyMonotoneStudy, EquiangularODEStudy
from .phase_diagram import PhaseDiagramStudy

__all__ = [
    "gamma_reference",
    "attention_energy",
    "averaged_pair_force",
    "EquiangularODEStudy",
    "EnergyMonotoneStudy",
    "OneClusterStudy",
    "SAFloorVsUSAStudy",
    "equiangular_time",
    "span_coordinates",
    "circle_cluster_count",
    "authors_checkpoints",
    "step_words",
    "STEP_WORDS",
    "PhaseDiagramStudy",
    "CircleClustersStudy",
]
