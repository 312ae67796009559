"""What every figure shares: reading study records, the style, saving with provenance."""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from validation.catalog import get_study
from validation.provenance import provenance
from validation.study import Record, Study, Verdict, canonical

__all__ = ["FigureError", "StudyData", "load_inputs", "save_figure", "render", "fit_layout", "new_figure", "STYLE",
           "DPI", "FORMATS", "DEFAULT_FORMATS", "check_formats", "check_size", "check_dpi", "verdict_of",
           "ci_errorbars", "loglog_reference", "slope_label"]

#: Resolution of the PNG files (the PDF is vector).
DPI = 150
#: File formats a figure can be written in (matplotlib's Agg, PDF, SVG and PostScript back ends).
FORMATS = ("png", "pdf", "svg", "eps", "jpg", "tiff")
#: Formats written when none are asked for.
DEFAULT_FORMATS = ("png", "pdf")
#: Figure sizes accepted, inches (each side).
SIZE_RANGE = (1.0, 50.0)

#: One style for every figure (applied with ``matplotlib.rc_context`` while drawing and saving).
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.3,
    "lines.markersize": 4.5,
    "errorbar.capsize": 2,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays editable and searchable
    "ps.fonttype": 42,
    "axes.prop_cycle": None,  # set below (needs matplotlib's cycler)
}

#: Colour-blind-safe qualitative palette (Okabe and Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


class FigureError(RuntimeError):
    """A figure cannot be drawn (missing study results, unknown figure, a failed plot)."""


@dataclass
class StudyData:
    """The stored records of one study in one mode, as a figure reads them."""

    study: Study
    mode: str
    records: list[Record]
    expected: int
    _verdicts: list[Verdict] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.study.name

    @property
    def complete(self) -> bool:
        return len(self.records) == self.expected

    def verdicts(self) -> list[Verdict]:
        """The study's verdicts on these records (computed once), exactly as the report shows them."""
        if self._verdicts is None:
            self._verdicts = list(self.study.verdicts(self.records, self.mode))
        return self._verdicts

    def where(self, **params) -> list[Record]:
        """Records whose parameters contain ``params``."""
        return [r for r in self.records if all(r.params.get(k) == v for k, v in params.items())]

    def provenance(self) -> dict:
        params = list({canonical(r.params): r.params for r in self.records}.values())
        return {"version": self.study.version, "mode": self.mode, "cells_stored": len(self.records),
                "cells_expected": self.expected, "complete": self.complete, "parameters": params,
                "seeds": [[r.params, r.replicate, r.seed] for r in self.records]}


def load_inputs(store, studies, mode=None) -> dict[str, StudyData]:
    """Select the records of each study in ``studies`` from ``store`` (a ResultStore or a path)."""
    from validation.report import select_records
    from validation.store import ResultStore

    own = not isinstance(store, ResultStore)
    if own:
        store = ResultStore(store, create=False)
    try:
        out = {}
        for name in studies:
            study = get_study(name)
            chosen_mode, records, expected, _ = select_records(store, study, mode)
            if not records:
                hint = f"python -m validation run {name}" + (" --quick" if chosen_mode == "quick" else "")
                raise FigureError(f"no stored results of study {name} (v{study.version}, {chosen_mode} mode) in "
                                  f"{store.path}; compute them with: {hint} --store {store.path}")
            out[name] = StudyData(study, chosen_mode, records, expected)
        return out
    finally:
        if own:
            store.close()


def check_formats(formats) -> tuple[str, ...]:
    """A tuple of known formats from "png,pdf" or an iterable; ValueError naming the unknown ones."""
    if isinstance(formats, str):
        formats = formats.split(",")
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f and f.strip()))
    out = tuple("jpg" if f == "jpeg" else "tiff" if f == "tif" else f for f in out)
    bad = [f for f in out if f not in FORMATS]
    if not out or bad:
        raise ValueError(f"format must be a comma-separated list of {', '.join(FORMATS)}; got "
                         f"{', '.join(bad) if bad else 'nothing'}")
    return out


def check_size(size) -> tuple[float, float] | None:
    """(width, height) in inches from "W,H" or a pair, each in SIZE_RANGE; None stays None."""
    if size is None:
        return None
    try:
        parts = size.replace("x", ",").split(",") if isinstance(size, str) else list(size)
        w, h = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(f"size must be WIDTH,HEIGHT in inches, e.g. 4,3; got {size!r}") from None
    lo, hi = SIZE_RANGE
    if not (lo <= w <= hi and lo <= h <= hi):
        raise ValueError(f"size must be WIDTH,HEIGHT in inches, each in [{lo:g}, {hi:g}]; got {w:g},{h:g}")
    return w, h


def check_dpi(dpi) -> float | None:
    """A resolution in dots per inch in [20, 2400]; None stays None."""
    if dpi is None:
        return None
    try:
        value = float(dpi)
    except (TypeError, ValueError):
        raise ValueError(f"dpi must be a number of dots per inch; got {dpi!r}") from None
    if not (math.isfinite(value) and 20 <= value <= 2400):
        raise ValueError(f"dpi must be in [20, 2400]; got {dpi!r}")
    return value


def _style():
    from cycler import cycler

    return {**STYLE, "axes.prop_cycle": cycler(color=list(PALETTE))}


def new_figure(nrows=1, ncols=1, *, width=6.4, height=4.4, **subplot_kw):
    """A Figure on the Agg canvas (no GUI, no global pyplot state) with a grid of axes.

    Returns ``(fig, axes)`` where ``axes`` is a single Axes for a 1x1 grid and a
    2-D array otherwise (``squeeze=False`` semantics for grids).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, subplot_kw=subplot_kw or None)
    return fig, (axes[0, 0] if nrows == ncols == 1 else axes)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


# -- layout that survives resizing ------------------------------------------------------------------------------

_MATH_SPLIT = re.compile(r"(\$[^$]*\$)")


def _words(text: str) -> list[str]:
    """Words of a line, never splitting inside $...$ (mathtext)."""
    words, current = [], ""
    for piece in _MATH_SPLIT.split(text):
        if piece.startswith("$") and piece.endswith("$") and len(piece) > 1:
            current += piece
            continue
        parts = piece.split(" ")
        current += parts[0]
        for part in parts[1:]:
            if current:
                words.append(current)
            current = part
    if current:
        words.append(current)
    return words


def _extent(text, renderer, along: str) -> float:
    box = text.get_window_extent(renderer)
    return box.height if along == "height" else box.width


def _wrap_to(text, width_px: float, renderer, along: str = "width", originals: dict | None = None) -> bool:
    """Break the lines of a Text artist between words so that none is longer than ``width_px`` (measured along
    the canvas' ``along`` dimension: "height" for a vertical y label); True when its text changed.

    ``originals`` (artist id -> text as the figure module wrote it) makes every pass start again from the
    original lines, so that the lines stay balanced while the layout settles."""
    if not text.get_visible() or not text.get_text() or width_px <= 0:
        return False
    before = text.get_text()
    original = before if originals is None else originals.setdefault(id(text), before)
    text.set_text(original)
    if _extent(text, renderer, along) <= width_px:
        return original != before
    lines = []
    for line in original.split("\n"):
        current = ""
        for word in _words(line):
            trial = f"{current} {word}" if current else word
            text.set_text(trial)
            if current and _extent(text, renderer, along) > width_px:
                lines.append(current)
                current = word
            else:
                current = trial
        lines.append(current)
    text.set_text("\n".join(lines))
    return text.get_text() != before


def _titles(fig):
    out = []
    for sub in [fig, *fig.subfigs]:
        if getattr(sub, "_suptitle", None) is not None:
            out.append((sub._suptitle, None))
    for ax in fig.axes:
        for t in (ax.title, ax._left_title, ax._right_title):
            out.append((t, ax))
    return out


def fit_layout(fig, size=None, *, passes: int = 6) -> None:
    """Resize ``fig`` to ``size`` (inches) and make its text fit: titles and legend labels that would be wider
    than their room are re-broken between words (never inside $...$), a figure legend wider than the figure
    loses columns; constrained layout (every figure of :func:`new_figure` has it) then places everything.

    Called by :func:`render` for every figure (at its own size too), so a figure drawn at 4 x 3 inches keeps
    its titles and legends inside the canvas instead of clipping them.
    """
    import warnings

    w0, h0 = (float(v) for v in fig.get_size_inches())
    if size is not None:
        scale = min(1.0, max(MIN_FONT_SCALE, math.sqrt(min(size[0] / w0, size[1] / h0))))
        if scale < 1.0:
            _scale_fonts(fig, scale)
        fig.set_size_inches(*size, forward=False)
    collapsed = False
    originals: dict = {}
    for _ in range(passes):
        with warnings.catch_warnings(record=True) as caught:
            # a layout that cannot fit at an intermediate pass is retried after the text is re-broken
            warnings.simplefilter("always")
            fig.draw_without_rendering()
        was_collapsed, collapsed = collapsed, _collapsed(caught)
        if collapsed and was_collapsed:  # re-breaking the text did not help: too small
            break
        renderer = fig.canvas.get_renderer()
        changed = False
        for legend in [*fig.legends, *(a.get_legend() for a in fig.axes if a.get_legend() is not None)]:
            changed |= _fit_legend(legend, fig, renderer, originals)
        for text, ax in _titles(fig):
            room = fig.bbox.width - 2 * _pad_px(fig) if ax is None else _title_room(ax, text, fig)
            changed |= _wrap_to(text, room, renderer, originals=originals)
        for ax in fig.axes:
            width, height = _cell_room(ax, fig)
            changed |= _wrap_to(ax.xaxis.label, width, renderer, originals=originals)
            box_height = ax.get_position().height * fig.bbox.height  # a y label longer than the axes sticks out
            changed |= _wrap_to(ax.yaxis.label, max(box_height, 0.5 * height), renderer, along="height",
                                originals=originals)
        if not changed:
            break
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.draw_without_rendering()
        collapsed = _collapsed(caught)
    if collapsed:
        w, h = fig.get_size_inches()
        raise FigureError(f"{w:g} x {h:g} inches is too small for this figure's {len(fig.axes)} panels and their "
                          f"text (the layout collapses); give a larger --size (its own size is {w0:g},{h0:g})")


def _collapsed(caught) -> bool:
    """Whether constrained layout gave up (its warning), re-issuing every other warning caught while drawing."""
    import warnings

    found = False
    for w in caught:
        if "collapsed" in str(w.message) and "constrained_layout" in str(w.message):
            found = True
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return found


#: Fonts shrink with the figure (square root of the smaller side ratio to the native size), to this factor at most.
MIN_FONT_SCALE = 0.7


def _scale_fonts(fig, scale: float) -> None:
    from matplotlib.text import Text

    for t in {id(t): t for t in fig.findobj(Text)}.values():
        t.set_fontsize(t.get_fontsize() * scale)
    for ax in fig.axes:  # ticks made later take their size from tick_params, not from the existing labels
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            for which, ticks in (("major", axis.get_major_ticks()), ("minor", axis.get_minor_ticks())):
                if ticks:
                    ax.tick_params(axis=name, which=which, labelsize=ticks[0].label1.get_fontsize())


def _pad_px(fig) -> float:
    return 0.06 * fig.dpi  # a little margin inside the canvas edge


def _cell_room(ax, fig) -> tuple[float, float]:
    """Width and height (pixels) of the grid cell(s) of an axes: what its title, labels and legend may take.

    The grid, not the axes' current box: constrained layout shrinks an axes to make room for its decorations,
    and text fitted to the shrunken box would be broken into ever shorter lines."""
    w, h = fig.bbox.width - 2 * _pad_px(fig), fig.bbox.height - 2 * _pad_px(fig)
    spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
    if spec is None:
        box = ax.get_position()
        return box.width * fig.bbox.width, box.height * fig.bbox.height
    grid = spec.get_gridspec()
    return (w * (spec.colspan.stop - spec.colspan.start) / grid.ncols,
            h * (spec.rowspan.stop - spec.rowspan.start) / grid.nrows)


def _title_room(ax, text, fig) -> float:
    """Width an axes title may take inside its grid cell, from where the title is anchored: a centred title
    around the axes' centre, a left-aligned one from the axes' left edge to the cell's right edge."""
    width, _ = _cell_room(ax, fig)
    spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
    if spec is None:
        return width
    grid = spec.get_gridspec()
    pad, full = _pad_px(fig), fig.bbox.width - 2 * _pad_px(fig)
    cell_x0 = pad + full * spec.colspan.start / grid.ncols
    cell_x1 = pad + full * spec.colspan.stop / grid.ncols
    box = ax.get_position()
    if text is ax.title:  # centred on the axes, which need not be centred in its cell
        centre = 0.5 * (box.x0 + box.x1) * fig.bbox.width
        return max(2 * min(centre - cell_x0, cell_x1 - centre), 0.5 * width)
    if text is ax._left_title:
        return max(cell_x1 - box.x0 * fig.bbox.width, 0.5 * width)
    return max(box.x1 * fig.bbox.width - cell_x0, 0.5 * width)


def _legend_room(legend, fig) -> float:
    """Width a legend may take: the canvas for a figure legend, its axes' grid cell for an axes legend."""
    ax = legend.axes
    if ax is not None and ax.get_legend() is legend:
        return _cell_room(ax, fig)[0]
    return fig.bbox.width - 2 * _pad_px(fig)


def _fit_legend(legend, fig, renderer, originals=None) -> bool:
    room = _legend_room(legend, fig)
    width = legend.get_window_extent(renderer).width
    if width <= room:
        return False
    ncols = getattr(legend, "_ncols", 1)
    if ncols > 1:
        legend._ncols = max(1, ncols - 1)  # fewer columns first (no public setter)
        return True
    texts = legend.get_texts()
    if not texts:
        return False
    decoration = width - max(t.get_window_extent(renderer).width for t in texts)  # handles, padding
    changed = False
    for t in texts:
        changed |= _wrap_to(t, room - decoration, renderer, originals=originals)
    return changed


def render(spec, plot, inputs: dict[str, StudyData], *, size=None):
    """``plot(inputs)`` under the shared style, resized to ``size`` (inches) and fitted (:func:`fit_layout`).

    Returns what the figure module's ``plot`` returns: ``(Figure, data)``. The style is matplotlib's rc
    parameters during the call; save the figure inside :func:`save_figure`, or with your own ``savefig``.
    """
    import matplotlib

    size = check_size(size)
    with matplotlib.rc_context(_style()):
        fig, data = plot(inputs)
        fit_layout(fig, size)
    return fig, data


def save_figure(spec, plot, inputs: dict[str, StudyData], out_dir: Path, *, formats=DEFAULT_FORMATS, dpi=None,
                size=None) -> list[Path]:
    """Call ``plot(inputs)`` under the shared style; write the figure in each format and the JSON data file.

    ``formats``: file formats (:data:`FORMATS`; default PNG and PDF); ``dpi``: resolution of the raster
    formats (default :data:`DPI`); ``size``: (width, height) in inches (default: the figure's own). Returns
    the paths, the JSON file last.
    """
    import matplotlib

    formats, dpi, size = check_formats(formats), check_dpi(dpi), check_size(size)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FigureError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from None
    stem = out_dir / spec.name
    with matplotlib.rc_context(_style()):
        fig, data = render(spec, plot, inputs, size=size)
        paths = []
        for ext in formats:
            path = stem.with_suffix("." + ext)
            metadata = {"Title": spec.title} if ext in ("pdf", "svg") else None
            fig.savefig(path, metadata=metadata, dpi=dpi or DPI)
            paths.append(path)
    incomplete = [n for n, d in inputs.items() if not d.complete]
    width, height = (float(v) for v in fig.get_size_inches())
    sidecar = {
        "figure": spec.name,
        "title": spec.title,
        "files": [p.name for p in paths],
        "size_inches": [width, height],
        "dpi": dpi or DPI,
        "data": data,
        "provenance": provenance(studies={n: d.provenance() for n, d in inputs.items()},
                                 incomplete_studies=incomplete),
    }
    json_path = stem.with_suffix(".json")
    tmp = json_path.with_suffix(".json.tmp")
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(tmp.open("w", encoding="utf-8"))
        json.dump(_jsonable(sidecar), fh, indent=1, allow_nan=False)
        fh.write("\n")
    tmp.replace(json_path)
    return [*paths, json_path]


# -- small helpers the figure modules share ----------------------------------------------------------------------

def verdict_of(data: StudyData, *, label: str | None = None, contains: str | None = None) -> Verdict:
    """The first verdict of a study whose claim contains ``contains`` (and whose label is ``label``)."""
    for v in data.verdicts():
        if (label is None or v.label == label) and (contains is None or contains in v.claim):
            return v
    raise FigureError(f"study {data.name} has no verdict with label={label!r} and claim containing {contains!r}")


def ci_errorbars(values, low, high):
    """``yerr`` for ``Axes.errorbar`` from interval end points (clipped at zero)."""
    values, low, high = (np.asarray(a, dtype=float) for a in (values, low, high))
    return np.vstack([np.clip(values - low, 0.0, None), np.clip(high - values, 0.0, None)])


def loglog_reference(ax, x, y, slope, *, below=2.0, label=None, **kw):
    """Draw a reference line of ``slope`` through the geometric centre of (x, y), divided by ``below``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    x, y = x[ok], y[ok]
    anchor = math.exp(float(np.mean(np.log(y) - slope * np.log(x)))) / below
    xs = np.array([x.min(), x.max()])
    kw = {"color": "0.2", "ls": "--", "lw": 1.0, **kw}
    return ax.plot(xs, anchor * xs ** slope, label=label, **kw)[0]


def slope_label(v: Verdict, prefix: str = "slope") -> str:
    """``"slope 0.51 [0.48, 0.54]"`` from a verdict with an interval."""
    if v.interval is None:
        return f"{prefix} {v.measured:.3g}"
    return f"{prefix} {v.measured:.3g} [{v.interval[0]:.3g}, {v.interval[1]:.3g}]"
