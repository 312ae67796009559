r"""
Random feature attention as importance sampling
===============================================

The bias and the variance of random feature attention against the number of
features :math:`S`, with the first-order predictions of :theory:`T15`; and the
effective sample size of a Gaussian proposal :math:`N(\mu, I)` as its mean
moves from 0 (the proposal of RFA) towards the target, Monte Carlo against the
closed form :theory:`T16` (:ref:`sec-b2`).

Figure ``rfa_snis`` of :mod:`validation.figures`, drawn from the studies
:study:`rfa_bias_variance`, :study:`ess_vs_proposal_mean`.
"""

import os
from pathlib import Path

from validation.figures import FIGURES, draw
from validation.runner import run_study

STORE = Path(os.environ.get("PA_DOCS_STORE", "results.sqlite"))  # the results store (created if missing)
OUT = Path(os.environ.get("PA_DOCS_FIGURES", "figures"))  # where the PNG, PDF and JSON files go

# %%
# Compute the studies the figure reads, in quick mode. Only the cells missing
# from the store are computed (on local processes); a study that is already
# stored costs nothing.

for study in FIGURES["rfa_snis"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("rfa_snis", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
