"""What every figure shares: reading study records, the style, saving with provenance."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from validation.provenance import provenance
from validation.study import Record, Study, Verdict, canonical, get_study

__all__ = ["FigureError", "StudyData", "load_inputs", "save_figure", "new_figure", "STYLE", "DPI",
           "verdict_of", "ci_errorbars", "loglog_reference", "slope_label"]

#: Resolution of the PNG files (the PDF is vector).
DPI = 150

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


def save_figure(spec, plot, inputs: dict[str, StudyData], out_dir: Path) -> list[Path]:
    """Call ``plot(inputs)`` under the shared style; write PNG, PDF and the JSON data file; return the paths."""
    import matplotlib

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FigureError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from None
    stem = out_dir / spec.name
    with matplotlib.rc_context(_style()):
        fig, data = plot(inputs)
        paths = []
        for ext in ("png", "pdf"):
            path = stem.with_suffix("." + ext)
            fig.savefig(path, metadata={"Title": spec.title} if ext == "pdf" else None)
            paths.append(path)
    incomplete = [n for n, d in inputs.items() if not d.complete]
    sidecar = {
        "figure": spec.name,
        "title": spec.title,
        "files": [p.name for p in paths],
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
