r"""
Metastable clusters on the circle
=================================

On the circle (:math:`d = 2`), snapshots of :math:`n = 32` tokens moving by SA
for several :math:`\beta`, and the number of clusters against time: large
:math:`\beta` produces long-lived states with several clusters (about 2 at
:math:`\beta = 4`, 3 at :math:`\beta = 9`) before the final collapse
(:doc:`../theory/dynamics`). The tokens move by the step of the authors'
scripts (ambient Euler :math:`x \leftarrow (x + h a)/|x + h a|`,
:math:`h = 0.1`, as in their ``sphere.py``); the ``phase_discretisation``
study compares the counts at :math:`t = 30` with RK4.

Figure ``circle_clusters`` of :mod:`validation.figures`, drawn from the studies
:study:`circle_clusters`.
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

for study in FIGURES["circle_clusters"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("circle_clusters", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
