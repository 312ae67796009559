"""A toy figure reading the toy study ``toy_sum`` (tests of the figures framework and the ``figure`` command).

``python -m validation figure toy_hist --import tests._toy_figures`` registers it (importing this module
also registers the toy studies).
"""

from __future__ import annotations

import numpy as np

from tests import _toy_studies  # noqa: F401  (registers toy_sum)
from validation import figures
from validation.figures._base import new_figure

NAME = "toy_hist"
TITLE = "Toy: the stored x per parameter a"
STUDIES = ("toy_sum",)


def plot(data):
    d = data["toy_sum"]
    a = np.array([r.params["a"] for r in d.records])
    x = np.array([r.result["x"] for r in d.records])
    fig, ax = new_figure(width=4.0, height=3.0)
    ax.plot(a, x, "o")
    ax.set_xlabel("$a$")
    ax.set_ylabel("$x$")
    return fig, {"a": a, "x": x, "verdict": d.verdicts()[0].measured}


figures.register(__name__)
