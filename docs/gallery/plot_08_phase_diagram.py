r"""
Phase diagram of self-attention dynamics
========================================

The probability that two tokens have merged,
:math:`P(\langle x_1(t), x_2(t)\rangle \ge 1 - 10^{-3})`, over time and
inverse temperature :math:`\beta` for :math:`n = 32` tokens moving by SA
:theory:`T19`, one panel per dimension :math:`d`, with the time at which the
equiangular solution :math:`\gamma_\beta(t)` reaches :math:`1 - 10^{-3}`
overlaid (:doc:`../theory/dynamics`). The tokens move by the step of the
authors' ``phase-diagrams.py`` (ambient Euler
:math:`x \leftarrow (x + h a)/|x + h a|`, :math:`h = 0.1`; checked against a
restatement of that script in ``tests/validation/test_authors_procedure.py``). Circles
mark the converged transition time :math:`t_{50}` of the ODE (RK4) and
crosses the :math:`h = 0.1` one, on the same initialisations, at the cells of
the ``phase_discretisation`` study: the distance between them is the
discretisation error of the diagram. Quick mode uses few initialisations and
a coarse grid.

Figure ``phase_diagram`` of :mod:`validation.figures`, drawn from the studies
:study:`phase_diagram` and :study:`phase_discretisation`.
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

for study in FIGURES["phase_diagram"].studies:
    print(run_study(study, mode="quick", store=STORE, progress=False))

# %%
# Draw the figure from the stored results.

paths = draw("phase_diagram", STORE, OUT, mode="quick")
print(*(p.name for p in paths))
