r"""
The attention estimators compared
=================================

Mean squared error against exact softmax attention for RFA (positive,
orthogonal and trigonometric features), LARA (sampled and the deterministic
plug-in), randomized attention and random batch attention, against the number
of samples and against the cost per query, at three score scales (the largest
weight second moment :theory:`T16` is 2, 8 and 64). Heavier-tailed weights
delay the :math:`1/S` regime of the importance samplers.

Figure ``estimator_mse`` of :mod:`validation.figures`, drawn from the studies
:study:`estimator_mse`.
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

for study in FIGURES["estimator_mse"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("estimator_mse", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
