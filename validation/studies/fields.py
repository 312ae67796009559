"""What the studies of :mod:`validation.studies.dynamics` store, declared outside their classes.

Every other study declares its result fields in its class (``Study.result_fields``); the attention-dynamics
studies are declared here, keyed by (study name, version), so that the table follows the module's own
history: a study whose version changes has no declaration here until one is written for the new version
(:func:`validation.study.declared_fields` then returns None and the test suite says so). Move an entry into
its class when convenient; the class attribute takes precedence.

Field names and shapes follow ``Study.result_fields``: nested dicts as dotted paths, a ``{...}`` segment for
keys that vary with the parameters, shapes written with parameter names (K: saved times).
"""

from __future__ import annotations

__all__ = ["RESULT_FIELDS"]

RESULT_FIELDS: dict[tuple[str, int], dict[str, tuple[str, str]]] = {
    ("equiangular_ode", 2): {
        "{dt}.t": ("(K,)", "saved times of the run with RK4 step dt (one entry per step size of the study)"),
        "{dt}.gmin": ("(K,)", "smallest off-diagonal inner product <x_i, x_j> at each saved time"),
        "{dt}.gmax": ("(K,)", "largest off-diagonal inner product"),
        "{dt}.gmean": ("(K,)", "mean off-diagonal inner product"),
        "ode.t": ("(K,)", "times of the reference (those of the finest run)"),
        "ode.gamma": ("(K,)", "the inner product gamma(t) of the one-dimensional equiangular ODE (T18)"),
    },
    ("energy_monotone", 3): {
        "{scheme}.violations": ("()", "steps where the energy decreased by more than the relative tolerance "
                                      "(scheme: rk4; also euler and ambient_euler, dt = 0.1, for SA)"),
        "{scheme}.steps": ("()", "steps checked"),
        "{scheme}.min_relative_increment": ("()", "smallest (E_(k+1) - E_k) / E_k over steps and initialisations"),
        "{scheme}.gain_min": ("()", "smallest E(T) / E(0) over the initialisations"),
        "{scheme}.dt": ("()", "step size"),
        "{scheme}.curve.t": ("(points,)", "times of the stored energy curve"),
        "{scheme}.curve.energy": ("(R, points)", "energy E_beta per initialisation at those times"),
    },
    ("one_cluster", 1): {
        "min_inner_product_T": ("(R,)", "per initialisation: smallest inner product <x_i, x_j> at time T"),
        "clustered": ("(R,)", "per initialisation: all inner products >= 1 - threshold at time T"),
        "first_time": ("(R,)", "per initialisation: first saved time at which it is clustered (null: never)"),
    },
    ("sa_floor_vs_usa", 1): {
        "{p}": ("(R,)", "per initialisation: mean over tokens of |RBM-1 - full|^2 at T, batch size p "
                        "(one entry per p in ps)"),
    },
    ("phase_diagram", 2): {
        "t": ("(K,)", "saved times (every step k of the ambient Euler run, t = k dt; the authors' checkpoints are "
                      "steps of it: validation.studies.dynamics.authors_checkpoints)"),
        "pair12": ("(K,)", "initialisations in which tokens 1 and 2 are within the clustering threshold "
                           "(<x_1, x_2> > 1 - eps, strict)"),
        "pairs": ("(K,)", "fraction of (initialisation, token pair) within the threshold"),
        "one_cluster": ("(K,)", "initialisations with every pair within the threshold (one cluster)"),
        "pair12_drops": ("()", "initialisations in which the pair (1, 2) left the threshold after reaching it"),
        "pair_drops": ("()", "(initialisation, pair) that left the threshold after reaching it"),
        "first_one_cluster_time": ("(R,)", "per initialisation: first time with one cluster (null: not reached)"),
        "dim_integrated": ("()", "dimension of the span the dynamics was integrated in"),
    },
    ("circle_clusters", 2): {
        "t": ("(K,)", "saved times"),
        "count_hist": ("(K, ragged)", "per saved time: how many initialisations have 1, 2, ... clusters "
                                      "(trailing zeros dropped)"),
        "delta": ("()", "angular distance below which two tokens count as one cluster"),
        "snapshot.t": ("(S,)", "times of the snapshots of the fixed initialisation drawn in the figure"),
        "snapshot.theta": ("(S, n)", "angles of its tokens at those times"),
        "snapshot.count": ("(S,)", "its number of clusters at those times"),
    },
}
