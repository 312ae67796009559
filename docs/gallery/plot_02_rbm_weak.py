r"""
Weak error of RBM-1
===================

:math:`|\E\varphi(\tilde X_T) - \E\varphi(X_T)|` against :math:`\tau` for two
test functions, with the reference slope 1 of the weak-error theorem
:theory:`T5`, and the strong error of the same runs for comparison: the law is
approximated at order one although single paths are approximated at order one
half.

Figure ``rbm_weak`` of :mod:`validation.figures`, drawn from the studies
:study:`rbm_weak_order`.
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

for study in FIGURES["rbm_weak"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("rbm_weak", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
