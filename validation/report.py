"""Verdicts of the stored studies, as a table for people and as JSON for programs.

:func:`report` reads the records of each study from a
:class:`~validation.store.ResultStore` (nothing is recomputed), asks the
study for its verdicts (:meth:`validation.study.Study.verdicts`) and collects
them in a :class:`Report`: ``report.text()`` is the human-readable table
(claim, THEORY label, predicted value, measured value with its interval,
tolerance, PASS/FAIL/info), ``report.json()`` the same as JSON.

Which cells: the records of the study's current version whose (parameters,
replicate) belong to the grid of the mode, in the study's cell order. Without
an explicit mode, "full" when all its cells are stored, else "quick" when all
its cells are stored, else the mode with the larger stored fraction (the
study is then INCOMPLETE: its verdicts use the stored cells only and the
report is not OK). A study whose verdicts raise gets an error line, not a
traceback, and makes the report not OK.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import textwrap
from dataclasses import dataclass, field

from validation.catalog import get_study, load_builtin_studies
from validation.store import ResultStore, _jsonable, package_version, select_records
from validation.study import MODES, REGISTRY, Verdict

__all__ = ["report", "Report", "StudyReport", "verdict_word", "select_records"]

_CLAIM_WIDTH = 56
_PREDICTED_WIDTH = 24


def verdict_word(v: Verdict) -> str:
    """"PASS", "FAIL" or "info" (a line without a verdict)."""
    return "info" if v.passed is None else ("PASS" if v.passed else "FAIL")


@dataclass
class StudyReport:
    """The verdicts of one study (or why there are none)."""

    study: str
    version: int
    title: str = ""
    labels: tuple[str, ...] = ()
    mode: str | None = None
    stored: int = 0
    expected: int = 0
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None
    note: str | None = None

    @property
    def complete(self) -> bool:
        return self.expected > 0 and self.stored == self.expected

    @property
    def failed(self) -> int:
        return sum(v.passed is False for v in self.verdicts)

    @property
    def status(self) -> str:
        """ERROR, INCOMPLETE, FAIL, PASS (at least one verdict passed and none failed) or info."""
        if self.error:
            return "ERROR"
        if not self.complete:
            return "INCOMPLETE"
        if self.failed:
            return "FAIL"
        return "PASS" if any(v.passed for v in self.verdicts) else "info"

    @property
    def ok(self) -> bool:
        return self.status in ("PASS", "info")


@dataclass
class Report:
    """Verdicts of several studies read from one store; ``ok`` when nothing failed, errored or is missing."""

    store: str
    studies: list[StudyReport]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.studies)

    def counts(self) -> dict:
        words = [verdict_word(v) for s in self.studies for v in s.verdicts]
        return {"verdicts": len(words), "PASS": words.count("PASS"), "FAIL": words.count("FAIL"),
                "info": words.count("info"), "errors": sum(s.error is not None for s in self.studies),
                "incomplete": sum(s.error is None and not s.complete for s in self.studies)}

    def summary_line(self) -> str:
        c = self.counts()
        n = len(self.studies)
        line = (f"{n} {'study' if n == 1 else 'studies'}, {c['verdicts']} verdicts: {c['PASS']} PASS, "
                f"{c['FAIL']} FAIL, {c['info']} info")
        if c["errors"]:
            line += f"; {c['errors']} with errors"
        if c["incomplete"]:
            line += f"; {c['incomplete']} incomplete"
        return line + (" -> OK" if self.ok else " -> NOT OK")

    def text(self) -> str:
        """The human-readable report."""
        lines = [f"Results store: {self.store}", ""]
        for s in self.studies:
            lines.extend(_study_text(s))
            lines.append("")
        lines.extend(f"note: {n}" for n in self.notes)
        if self.notes:
            lines.append("")
        lines.append(self.summary_line())
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        return _clean({
            "store": self.store,
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "package_version": package_version(),
            "ok": self.ok,
            "summary": self.counts(),
            "studies": [{
                "study": s.study, "version": s.version, "title": s.title, "labels": list(s.labels),
                "mode": s.mode, "cells": {"stored": s.stored, "expected": s.expected}, "status": s.status,
                "error": s.error, "note": s.note,
                "verdicts": [{**dataclasses.asdict(v), "verdict": verdict_word(v)} for v in s.verdicts],
            } for s in self.studies],
            "notes": list(self.notes),
        })

    def json(self, indent: int | None = 2) -> str:
        """The report as JSON (standard JSON: NaN and infinities become null)."""
        return json.dumps(self.as_dict(), indent=indent, allow_nan=False)

    def __str__(self) -> str:
        return self.text()


def _clean(obj):
    """JSON-ready copy: NumPy values to Python, tuples to lists, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_clean(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    try:
        return _clean(_jsonable(obj))
    except TypeError:
        return str(obj)


def _num(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x == 0 or 1e-3 <= abs(x) < 1e5:
            return f"{x:.4g}"
        return f"{x:.3e}"
    if isinstance(x, (list, tuple)):
        return "(" + ", ".join(_num(v) for v in x) + ")"
    item = getattr(x, "item", None)
    if item is not None and getattr(x, "ndim", 0) == 0:
        return _num(item())
    return str(x)


def _measured(v: Verdict) -> str:
    text = _num(v.measured)
    if v.interval is not None:
        try:
            lo, hi = v.interval
            text += f" [{_num(lo)}, {_num(hi)}]"
        except (TypeError, ValueError):
            text += f" {v.interval}"
    return text


def _study_text(s: StudyReport) -> list[str]:
    head = f"{s.study} v{s.version}"
    if s.title:
        head += f" - {s.title}"
    if s.mode:
        head += f" ({s.mode}, {s.stored}/{s.expected} cells)"
    lines = [head]
    if s.note:
        lines.append(f"  note: {s.note}")
    if s.error:
        lines.append(f"  ERROR: {s.error}")
        return lines
    if not s.complete:
        lines.append(f"  INCOMPLETE: {s.stored} of {s.expected} cells stored; the verdicts below use the stored "
                     "cells only (rerun the study to complete it)")
    if not s.verdicts:
        lines.append("  (no verdicts)")
        return lines
    header = ["verdict", "label", "claim", "predicted", "measured [interval]", "tolerance"]
    rows = []
    for v in s.verdicts:
        claim = textwrap.wrap(v.claim, _CLAIM_WIDTH) or [""]
        predicted = textwrap.wrap(_num(v.predicted), _PREDICTED_WIDTH) or [""]
        rows.append(([verdict_word(v)], [v.label or "-"], claim, predicted, [_measured(v)],
                     [_num(v.tolerance)], v.rule))
    widths = [max(len(header[i]), *(len(line) for r in rows for line in r[i])) for i in range(len(header))]
    lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in rows:
        cols = r[:6]
        for k in range(max(len(c) for c in cols)):
            parts = [(c[k] if k < len(c) else "").ljust(w) for c, w in zip(cols, widths)]
            lines.append("  " + "  ".join(parts).rstrip())
        if r[6]:
            indent = " " * (2 + widths[0] + 2)
            lines.extend(textwrap.wrap(f"rule: {r[6]}", 100, initial_indent=indent, subsequent_indent=indent + "  "))
    return lines


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _study_report(store: ResultStore, study, mode: str | None) -> StudyReport:
    rep = StudyReport(study.name, study.version, study.title, tuple(study.labels))
    try:
        rep.mode, chosen, rep.expected, stray = select_records(store, study, mode)
    except Exception as exc:
        rep.error = f"cannot list the cells of the study: {_one_line(exc)}"
        return rep
    if stray:
        rep.note = (f"{stray} stored cells of v{study.version} belong to neither grid (ignored: was the study "
                    "changed without a version bump?)")
    rep.stored = len(chosen)
    if not chosen:
        others = store.studies()
        n_stored = store.count(study.name, study.version)
        hint = f"python -m validation run {study.name}" + (" --quick" if rep.mode == "quick" else "")
        where = "" if not n_stored else f" ({n_stored} cells of other modes)"
        rep.error = f"no stored cells for mode {rep.mode}{where}; run: {hint}"
        if not n_stored and any(n == study.name for n, _ in others):
            versions = sorted(v for n, v in others if n == study.name)
            rep.error += f" (the store has versions {versions}, the current version is {study.version})"
        return rep
    try:
        verdicts = study.verdicts(chosen, rep.mode)
        verdicts = list(verdicts)
        bad = [v for v in verdicts if not isinstance(v, Verdict)]
        if bad:
            raise TypeError(f"verdicts() returned {type(bad[0]).__name__} objects, not Verdict")
    except Exception as exc:
        rep.error = f"verdicts failed: {_one_line(exc)}"
        return rep
    rep.verdicts = verdicts
    return rep


def report(store: ResultStore | str | os.PathLike, study_names: list[str] | None = None,
           mode: str | None = None) -> Report:
    """Verdicts of the studies in ``store``.

    Parameters
    ----------
    store : ResultStore or path
        A path must name an existing store (it is not created).
    study_names : list of str, optional
        Studies to report (default: every registered study with stored results).
        An unknown name raises KeyError (listing the known ones).
    mode : {"quick", "full"}, optional
        Judge the cells of this mode; default: see the module docstring.
    """
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    own = not isinstance(store, ResultStore)
    if own:
        store = ResultStore(store, create=False)
    try:
        notes = []
        stored = store.studies()
        if study_names is None:
            load_builtin_studies()
            names = []
            for name, version in stored:
                study = REGISTRY.get(name)
                if study is None:
                    notes.append(f"the store holds {name} v{version}, which is not a registered study; skipped")
                elif study.version != version:
                    notes.append(f"the store holds {name} v{version}; the current version is {study.version}; "
                                 "skipped")
                elif name not in names:
                    names.append(name)
        else:
            names = list(dict.fromkeys(study_names))
        # a study registered by the caller (--import) needs no import of the built-in families (seconds)
        studies = [get_study(n) for n in names]
        return Report(str(store.path), [_study_report(store, s, mode) for s in studies], notes)
    finally:
        if own:
            store.close()
