r"""
Strong error of RBM-1
=====================

The strong error of RBM-1 against the full system run with the same initial
data and the same Brownian path (:ref:`sec-a3`), in four panels: against the
reshuffle interval :math:`\tau` for :math:`p = 2, 4, 8` with the reference
slope :math:`1/2`; against the batch size, with :math:`(p-1)^{-1/2}`; against
the number of particles :math:`N`; against the horizon :math:`T`. The
strong-error theorem :theory:`T4` predicts order :math:`1/2` in :math:`\tau`,
the :math:`(p-1)^{-1/2}` dependence and no growth with :math:`N` or
:math:`T`. Bars are 95% intervals over replicas; fitted lines and slope
intervals are the studies' verdicts.

Figure ``rbm_strong`` of :mod:`validation.figures`, drawn from the studies
:study:`rbm_strong_order`, :study:`rbm_batch_size`, :study:`rbm_particle_number`, :study:`rbm_uniform_in_time`.
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

for study in FIGURES["rbm_strong"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("rbm_strong", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
