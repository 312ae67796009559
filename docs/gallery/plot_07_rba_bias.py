r"""
Random batch attention is biased
================================

The bias of random batch attention :theory:`T18` against the batch size, with
and without the token itself in its batch; the ratio of the two biases by
exact enumeration; and RBM-1 as an integrator of the attention dynamics: the
error of USA decays like :math:`\tau^{1/2}`, while SA stops at a floor set by
the batch-softmax bias (:ref:`sec-sa-usa-rbm`).

Figure ``rba_bias`` of :mod:`validation.figures`, drawn from the studies
:study:`rba_bias`, :study:`sa_floor_vs_usa`.
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

for study in FIGURES["rba_bias"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("rba_bias", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
