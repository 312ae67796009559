r"""
The batch-force lemma
=====================

At frozen positions, the Monte Carlo mean of :math:`\frac1N\sum_i|\chi_i|^2`
over many RBM-1 partitions against the formula of the lemma :theory:`T3`,
:math:`(\frac{1}{p-1} - \frac{1}{N-1})\Lambda_i`, and against the textbook factor
:math:`1/(p-1)` without the finite-population correction (a negative
control); the relative deviation; and the mean-zero check, for the correct
batch weight :math:`1/(|C|-1)` and for the wrong weight :math:`1/|C|`, against
the Bonferroni threshold of the verdict.

Figure ``batch_force`` of :mod:`validation.figures`, drawn from the studies
:study:`batch_force_lemma`.
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

for study in FIGURES["batch_force"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("batch_force", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
