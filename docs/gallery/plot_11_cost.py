r"""
Cost against the number of tokens or particles
==============================================

Wall time and peak memory against :math:`N` for exact softmax attention and
the linear-cost estimators (RBA, LARA, RFA), and for one step of the full
system and of RBM-1. These are measurements of the machine that built these
pages (in quick mode, on reduced sizes): the fitted time exponents are
informational, the memory exponents are checked.

Figure ``cost`` of :mod:`validation.figures`, drawn from the studies
:study:`cost_scaling`.
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

for study in FIGURES["cost"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("cost", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
