r"""
Energy and equiangular tokens
=============================

The energy :math:`E_\beta` along SA :theory:`T19` and USA :theory:`T20`,
non-decreasing for every initialisation; and :math:`1 - \gamma(t)` for
equiangular tokens, the simulated inner products against the scalar ODE of
:doc:`../theory/dynamics`, on a log scale that shows the near-collapse rates
:math:`e^{-2t}` (SA) and :math:`e^{-2e^\beta t}` (USA).

Figure ``attention_dynamics`` of :mod:`validation.figures`, drawn from the studies
:study:`energy_monotone`, :study:`equiangular_ode`.
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

for study in FIGURES["attention_dynamics"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("attention_dynamics", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
