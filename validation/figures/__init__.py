"""Figures of the field, redrawn from stored study results.

One module per figure. Each declares ``NAME``, ``TITLE``, ``STUDIES`` (the
studies whose stored records it reads) and ``plot(data) -> (Figure, dict)``:
``data`` maps each study name to a :class:`~validation.figures._base.StudyData`
(the records of one mode, already selected from the store), the returned
dict is the plotted data, written next to the figure. Plotting code never
simulates: what a figure shows is what the store holds, and the study's own
verdicts (fitted slopes, intervals) are reused so that a figure and the report
can never disagree.

:func:`draw` writes ``NAME.png``, ``NAME.pdf`` (or the formats asked for,
at the size and resolution asked for) and ``NAME.json`` (the data plus
provenance: the studies' versions, modes, parameters and seeds, the package
versions and the git revision); :func:`plot` returns the matplotlib Figure
instead, for styling of your own; :func:`make_figures` draws every figure
whose studies were run (``python -m validation reproduce``);
``python -m validation figure NAME [--format png,pdf,svg] [--dpi N] [--size W,H]``
draws one. Layouts are matplotlib's constrained layout, and titles and
legends are re-broken to the width they get (:func:`validation.figures._base.fit_layout`),
so a figure resized to a paper's column keeps its text inside the canvas.

matplotlib is imported here only, and lazily: importing
:mod:`validation.figures` does not import it.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from validation.figures._base import (
    DEFAULT_FORMATS,
    FORMATS,
    FigureError,
    StudyData,
    load_inputs,
    render,
    save_figure,
)

__all__ = ["FIGURES", "FigureSpec", "FigureError", "StudyData", "figure_names", "get_figure", "draw", "plot",
           "make_figures", "register", "FORMATS", "DEFAULT_FORMATS"]

#: Figure modules in the order of THEORY.md (Parts A, B, C) and of ``reproduce``.
_MODULES = (
    "rbm_strong",
    "rbm_weak",
    "batch_force",
    "dyson",
    "rfa_snis",
    "estimator_mse",
    "rba_bias",
    "phase_diagram",
    "circle_clusters",
    "attention_dynamics",
    "cost",
)


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: its name, title, the studies it reads and its module."""

    name: str
    title: str
    studies: tuple[str, ...]
    module: str

    def load(self):
        return importlib.import_module(self.module)


def _spec(mod) -> FigureSpec:
    missing = [a for a in ("NAME", "TITLE", "STUDIES", "plot") if not hasattr(mod, a)]
    if missing:
        raise TypeError(f"figure module {mod.__name__} lacks {', '.join(missing)} (see validation.figures)")
    if isinstance(mod.STUDIES, str) or not all(isinstance(s, str) for s in mod.STUDIES):
        raise TypeError(f"figure module {mod.__name__}: STUDIES must be a tuple of study names")
    return FigureSpec(str(mod.NAME), str(mod.TITLE), tuple(mod.STUDIES), mod.__name__)


def _discover() -> dict[str, FigureSpec]:
    specs = {}
    for short in _MODULES:
        modname = f"{__name__}.{short}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as err:  # a figure not written yet
            if err.name != modname:
                raise
            continue
        spec = _spec(mod)
        specs[spec.name] = spec
    return specs


#: name -> :class:`FigureSpec`, in drawing order.
FIGURES: dict[str, FigureSpec] = _discover()


def register(module) -> FigureSpec:
    """Register a figure of your own: a module (or its import name) with ``NAME``, ``TITLE``, ``STUDIES``, ``plot``.

    A module passed to ``python -m validation --import MODULE`` can call
    ``validation.figures.register(__name__)`` to make ``figure NAME`` draw it.
    Registering a second module under a built-in or already registered
    name raises ValueError.
    """
    mod = importlib.import_module(module) if isinstance(module, str) else module
    spec = _spec(mod)
    if spec.name in FIGURES and FIGURES[spec.name].module != spec.module:
        raise ValueError(f"figure name {spec.name!r} is already registered by {FIGURES[spec.name].module}")
    FIGURES[spec.name] = spec
    return spec


def figure_names() -> list[str]:
    return list(FIGURES)


def get_figure(name: str) -> FigureSpec:
    """Look a figure up by name; an unknown name raises KeyError listing the known ones."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known figures: {', '.join(FIGURES) or '(none)'}")
    return FIGURES[name]


def draw(name: str, store, out_dir, *, mode: str | None = None, formats=DEFAULT_FORMATS, dpi=None,
         size=None) -> list[Path]:
    """Draw figure ``name`` from the records in ``store`` into ``out_dir``.

    Parameters
    ----------
    name : str
        A key of :data:`FIGURES`.
    store : ResultStore or path
        The results store (a path must name an existing store).
    out_dir : path
        Created if missing.
    mode : {"quick", "full"}, optional
        Which cells of each study to use; default: per study, as the report
        chooses (full when complete, else quick when complete, ...).
    formats : str or iterable of str, default ("png", "pdf")
        File formats, among :data:`FORMATS` ("png,pdf,svg" works too).
    dpi : float, optional
        Resolution of the raster formats (default 150).
    size : (float, float) or "W,H", optional
        Width and height in inches (default: the figure's own size).

    Returns
    -------
    list of pathlib.Path
        One file per format, then the JSON data file.

    Raises
    ------
    FigureError
        When a study the figure needs has no stored cells in the mode (the
        message says which command computes them).
    """
    spec = get_figure(name)
    inputs = load_inputs(store, spec.studies, mode)
    return save_figure(spec, spec.load().plot, inputs, Path(out_dir), formats=formats, dpi=dpi, size=size)


def plot(name: str, store, *, mode: str | None = None, size=None):
    """The matplotlib Figure of figure ``name``, drawn from ``store``, for styling and saving of your own.

    Parameters
    ----------
    name, store, mode
        As in :func:`draw`.
    size : (float, float) or "W,H", optional
        Width and height in inches; the layout is refitted (titles and legends re-broken to fit).

    Returns
    -------
    (matplotlib.figure.Figure, dict)
        The figure (on the Agg canvas, outside pyplot: ``fig.savefig(...)`` saves it; change it through
        ``fig.axes``) and the plotted data (what :func:`draw` writes to ``NAME.json``).

    Examples
    --------
    >>> fig, data = plot("rbm_strong", "results.sqlite", size=(3.4, 2.8))  # doctest: +SKIP
    >>> fig.axes[0].set_ylabel("strong error")                              # doctest: +SKIP
    >>> fig.savefig("rbm_strong.svg")                                       # doctest: +SKIP
    """
    spec = get_figure(name)
    inputs = load_inputs(store, spec.studies, mode)
    return render(spec, spec.load().plot, inputs, size=size)


def make_figures(store, out_dir, *, mode: str | None = None, studies=None, formats=DEFAULT_FORMATS, dpi=None,
                 size=None) -> list[Path]:
    """Draw every figure whose studies are all in ``studies`` (default: every figure).

    A figure that fails does not stop the others; the failures are printed
    on stderr and then raised together as one :class:`FigureError`.
    """
    chosen = [s for s in FIGURES.values() if studies is None or set(s.studies) <= set(studies)]
    paths, failures = [], []
    for spec in chosen:
        try:
            paths += draw(spec.name, store, out_dir, mode=mode, formats=formats, dpi=dpi, size=size)
        except Exception as exc:  # one broken figure must not cost the others
            msg = f"figure {spec.name}: {type(exc).__name__}: {' '.join(str(exc).split())}"
            print(msg, file=sys.stderr, flush=True)
            failures.append(msg)
    if failures:
        raise FigureError(f"{len(failures)} of {len(chosen)} figures failed (listed above); "
                          f"{sum(p.suffix == '.json' for p in paths)} drawn")
    return paths
