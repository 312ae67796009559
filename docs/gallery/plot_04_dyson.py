r"""
Dyson Brownian motion and the semicircle
========================================

Histograms of Dyson Brownian motion (:math:`\beta = 2`), full system and
RBM-1 with :math:`p = 2`, from the Gaussian initial law to the stationary
regime, against the semicircle density :math:`\sqrt{2 - x^2}/\pi`
(:ref:`sec-a1`); the Kolmogorov distance to the semicircle against :math:`N`;
and the negative control, RBM-1 with a coarse step, whose stationary law is
visibly too wide.

Figure ``dyson`` of :mod:`validation.figures`, drawn from the studies
:study:`dyson_semicircle`.
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

for study in FIGURES["dyson"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("dyson", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
