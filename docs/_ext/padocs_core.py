"""The parts of the docs extension that need neither Sphinx nor docutils (tested in ``tests/validation/test_docs.py``).

:mod:`padocs` (the Sphinx extension) renders what these functions compute:
the reference targets of THEORY labels, the rows of a verdict table, the rows
of the estimator property table, the command-line help, and the gallery's PNG
scraper with the mapping between gallery examples and figures.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LABEL_RE", "label_target", "label_targets", "VerdictRow", "verdict_rows", "load_report",
           "study_api_name", "estimator_rows", "cli_help", "png_reset", "png_scraper", "example_figure",
           "gallery_examples", "theory_studies", "result_field_rows"]

#: A THEORY label inside a text: T1..T20, B1..B5, "Part A".."Part D".
LABEL_RE = re.compile(r"\b([TB]\d{1,2})\b|\b(Part [A-D])\b")


# ---------------------------------------------------------------------------------------------------------------
# THEORY labels
# ---------------------------------------------------------------------------------------------------------------
def label_target(label: str) -> str:
    """Reference target of a THEORY label: ``T4`` -> ``eq-t4``, ``B2`` -> ``sec-b2``, ``Part D`` -> ``sec-part-d``."""
    label = label.strip()
    if re.fullmatch(r"T\d{1,2}", label):
        return "eq-" + label.lower()
    return "sec-" + label.lower().replace(" ", "-")


def label_targets(text: str) -> list[tuple[str, str | None]]:
    """Split ``text`` into pieces ``(text, target)``; target is None for plain text.

    >>> label_targets("B1, T8-T11")
    [('B1', 'sec-b1'), (', ', None), ('T8', 'eq-t8'), ('-', None), ('T11', 'eq-t11')]
    """
    out: list[tuple[str, str | None]] = []
    pos = 0
    for m in LABEL_RE.finditer(text):
        if m.start() > pos:
            out.append((text[pos:m.start()], None))
        out.append((m.group(0), label_target(m.group(0))))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], None))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerdictRow:
    """One line of a verdict table, as strings."""

    verdict: str  # PASS, FAIL, info
    label: str
    claim: str
    predicted: str
    measured: str
    interval: str
    tolerance: str
    rule: str


def _fmt(x) -> str:
    from validation.report import _num  # the report's own number format: the pages and the CLI agree

    return _num(x)


def _interval(v) -> str:
    if v.interval is None:
        return "-"
    try:
        lo, hi = v.interval
    except (TypeError, ValueError):
        return str(v.interval)
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


def _labels_of(text: str | None) -> set[str]:
    return {t.strip() for t in (text or "").split(",") if t.strip()}


def verdict_rows(study_report, labels=None) -> list[VerdictRow]:
    """The rows of one study's verdict table, from a :class:`validation.report.StudyReport`.

    ``labels``: keep the verdicts whose (comma-separated) label contains one of
    these labels; all verdicts when None or empty.
    """
    from validation.report import verdict_word

    wanted = set(labels or ())
    rows = []
    for v in study_report.verdicts:
        if wanted and not (_labels_of(v.label) & wanted):
            continue
        rows.append(VerdictRow(verdict_word(v), v.label or "-", v.claim, _fmt(v.predicted), _fmt(v.measured),
                               _interval(v), _fmt(v.tolerance), v.rule or ""))
    return rows


def load_report(store_path, mode: str = "quick"):
    """``(report, message)``: the verdicts of every registered study in the store at ``store_path``.

    ``report`` is a :class:`validation.report.Report` over all registered
    studies (a study without stored cells gets an error line, not an
    exception), or None with a message saying why (no store, unreadable store).
    Nothing is computed.
    """
    import validation.studies  # noqa: F401  (registers the built-in studies)
    from validation.report import report
    from validation.study import REGISTRY

    path = Path(store_path)
    if not path.exists():
        return None, (f"No results store at {path}: the verdicts are computed by 'make docs' (or by "
                      f"'python -m validation reproduce --quick --out {path.parent}').")
    try:
        return report(path, sorted(REGISTRY), mode=mode), ""
    except Exception as exc:  # an unreadable store must not crash the build
        return None, f"Cannot read the results store {path}: {type(exc).__name__}: {' '.join(str(exc).split())}"


def study_api_name(study) -> str:
    """Dotted name of a study's class (the target of its API page)."""
    cls = type(study)
    return f"{cls.__module__}.{cls.__qualname__}"


def result_field_rows(study) -> list[tuple[str, str, str]] | None:
    """The rows (field, shape, meaning) of the table of what one cell of ``study`` stores, in declaration order,
    from :func:`validation.study.declared_fields`; None when the study declares nothing."""
    from validation.study import declared_fields

    fields = declared_fields(study)
    if not fields:
        return None
    return [(name, shape, meaning) for name, (shape, meaning) in fields.items()]


# ---------------------------------------------------------------------------------------------------------------
# Estimator property table
# ---------------------------------------------------------------------------------------------------------------
def estimator_rows():
    """``(header, rows, functions)`` of the property table, from :func:`attention_theory.registry.property_table`.

    ``functions[i]`` is the dotted name of the function of row i (the target of its API link).
    """
    from attention_theory.registry import REGISTRY, property_table

    table = property_table()
    header, rows = list(table[0]), [list(r) for r in table[1:]]
    functions = [f"{e.function.__module__}.{e.function.__qualname__}" for e in REGISTRY.values()]
    if len(functions) != len(rows):  # property_table() and REGISTRY disagree: a bug worth a loud failure
        raise RuntimeError(f"property_table() has {len(rows)} rows but REGISTRY has {len(functions)} entries")
    return header, rows, functions


# ---------------------------------------------------------------------------------------------------------------
# Command-line help
# ---------------------------------------------------------------------------------------------------------------
def cli_help(*args: str) -> str:
    """``python -m validation ARGS --help`` as text (a subprocess: the public interface, never stale)."""
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "-m", "validation", *args, "--help"], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m validation {' '.join(args)} --help exited with {proc.returncode}: "
                           f"{proc.stderr.strip()}")
    return proc.stdout.rstrip()


# ---------------------------------------------------------------------------------------------------------------
# sphinx-gallery: the PNG files an example writes, and which figure an example draws
# ---------------------------------------------------------------------------------------------------------------
_SNAPSHOT: dict[str, tuple[int, int]] = {}


def _figures_dir() -> Path:
    return Path(os.environ.get("PA_DOCS_FIGURES", "figures"))


def _pngs() -> dict[str, tuple[int, int]]:
    root = _figures_dir()
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*.png")):
        st = p.stat()
        out[str(p)] = (st.st_mtime_ns, st.st_size)
    return out


def png_reset(gallery_conf, fname, when=None):
    """sphinx-gallery ``reset_modules`` hook: remember the PNG files present before an example runs."""
    _SNAPSHOT.clear()
    _SNAPSHOT.update(_pngs())


def png_scraper(block, block_vars, gallery_conf, **kwargs):
    """sphinx-gallery image scraper: the PNG files written (or rewritten) in ``$PA_DOCS_FIGURES`` by this block.

    The figures of :mod:`validation.figures` are drawn on matplotlib's Agg canvas outside pyplot, so the
    matplotlib scraper does not see them; their PNG files (written by :func:`validation.figures.draw` at the
    figure's own resolution) are copied as they are.
    """
    from sphinx_gallery.scrapers import figure_rst

    now = _pngs()
    new = [p for p, sig in now.items() if _SNAPSHOT.get(p) != sig]
    _SNAPSHOT.clear()
    _SNAPSHOT.update(now)
    image_names = []
    iterator = block_vars["image_path_iterator"]
    for src in new:
        dest = next(iterator)
        shutil.copyfile(src, dest)
        image_names.append(dest)
    return figure_rst(image_names, gallery_conf["src_dir"])


_EXAMPLE_RE = re.compile(r"plot_(?:\d+_)?(?P<figure>\w+)\.py")


def example_figure(path) -> str | None:
    """The figure an example draws: ``plot_01_rbm_strong.py`` -> ``rbm_strong`` (None for other files)."""
    m = _EXAMPLE_RE.fullmatch(Path(path).name)
    return m.group("figure") if m else None


def gallery_examples(gallery_dir) -> dict[str, Path]:
    """Figure name -> example file, for the ``plot_*.py`` files of ``gallery_dir``."""
    out = {}
    for p in sorted(Path(gallery_dir).glob("plot_*.py")):
        name = example_figure(p)
        if name:
            out[name] = p
    return out


_VERDICTS_RE = re.compile(r"^\.\. verdicts::(.*)$", re.MULTILINE)


def theory_studies(pages) -> set[str]:
    """The study names cited by ``.. verdicts::`` directives in the given ``.rst`` files."""
    names: set[str] = set()
    for page in pages:
        for m in _VERDICTS_RE.finditer(Path(page).read_text(encoding="utf-8")):
            names.update(m.group(1).split())
    return names
