"""Sphinx extension of the particle-attention docs: verdict tables, the study catalog, the estimator table.

Directives
----------
``.. verdicts:: STUDY [STUDY ...]``
    The latest verdicts of the named studies, read from the results store
    (``validation_store`` in conf.py, filled by ``make docs`` with
    ``python -m validation reproduce --quick``): one table per study with
    the verdict, the THEORY label, the claim and its rule, the prediction, the
    measurement and its confidence interval, under a heading that links to
    the study's entry in the catalog and to its API page. Option
    ``:labels: T4 T5`` keeps the verdicts whose label contains one of the
    given labels. Nothing is recomputed: a missing store or study is said so
    on the page (and is a build warning when ``validation_strict`` is set).
``.. study-catalog::``
    One section per registered study (:data:`validation.study.REGISTRY`):
    THEORY labels, version, cells per mode, the class docstring (as plain
    text), API link, verdicts.
``.. estimator-table::``
    The estimator property table, generated from
    :func:`attention_theory.registry.property_table` (never copied by hand).
``.. cli-help:: [COMMAND]``
    The output of ``python -m validation [COMMAND] --help``.

Roles
-----
``:theory:`T4``` links to equation (T4) of the theory pages (target
``eq-t4``); ``B2`` and other section labels link to ``sec-b2``, ``Part D`` to
``sec-part-d``. ``:study:`rbm_strong_order``` links to the study's catalog
entry and shows its status (PASS, FAIL, info, INCOMPLETE, ERROR).

Gallery
-------
:func:`padocs_core.png_scraper` and :func:`padocs_core.png_reset` (given to
sphinx-gallery by name in conf.py) show the PNG files an example writes;
:func:`gallery_ignore_pattern` skips the examples of figures that are not
registered, and :func:`check_gallery` warns about registered figures without
an example.

What needs no Sphinx lives in :mod:`padocs_core` (tested in ``tests/validation/test_docs.py``).
"""

from __future__ import annotations

import inspect
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from padocs_core import (
    VerdictRow,
    cli_help,
    estimator_rows,
    gallery_examples,
    label_target,
    label_targets,
    load_report,
    result_field_rows,
    study_api_name,
    verdict_rows,
)
from sphinx import addnodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

__all__ = ["setup", "gallery_ignore_pattern", "check_gallery"]


# ---------------------------------------------------------------------------------------------------------------
# nodes
# ---------------------------------------------------------------------------------------------------------------
def _ref(target: str, text: str, *, domain: str = "std", reftype: str = "ref", literal: bool = False):
    node = addnodes.pending_xref("", refdomain=domain, reftype=reftype, reftarget=target, refexplicit=True,
                                 refwarn=False)
    node += nodes.literal(text, text) if literal else nodes.inline(text, text)
    return node


def _linked(text: str) -> list[nodes.Node]:
    """Text with every THEORY label turned into a link."""
    return [nodes.Text(t) if target is None else _ref(target, t) for t, target in label_targets(text)]


def _label_link(label: str) -> nodes.Node:
    return _ref(label_target(label), f"({label})" if label.startswith("T") else label)


def _para(*children) -> nodes.paragraph:
    p = nodes.paragraph()
    for c in children:
        p += c if isinstance(c, nodes.Node) else nodes.Text(str(c))
    return p


def _status_node(word: str) -> nodes.Node:
    return nodes.inline(word, word, classes=["pa-verdict", "pa-" + word.lower().replace(" ", "-")])


def _table(header: list[str], rows: list[list], widths: list[int], classes=()) -> nodes.table:
    table = nodes.table(classes=["pa-table", *classes])
    group = nodes.tgroup(cols=len(header))
    table += group
    for w in widths:
        group += nodes.colspec(colwidth=w)
    head = nodes.thead()
    group += head
    hrow = nodes.row()
    for h in header:
        hrow += nodes.entry("", _para(h))
    head += hrow
    body = nodes.tbody()
    group += body
    for r in rows:
        row = nodes.row()
        for cell in r:
            entry = nodes.entry()
            entry += _para(*cell) if isinstance(cell, list) else _para(cell)
            row += entry
        body += row
    return table


def _missing(text: str) -> nodes.Node:
    box = nodes.warning()
    box += _para(text)
    return box


# ---------------------------------------------------------------------------------------------------------------
# THEORY labels
# ---------------------------------------------------------------------------------------------------------------
def theory_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``:theory:`T4``` -> a link "(T4)" to the equation; several labels may be separated by commas."""
    out: list[nodes.Node] = []
    for i, label in enumerate(p.strip() for p in text.split(",") if p.strip()):
        if i:
            out.append(nodes.Text(", "))
        out.append(_label_link(label))
    return out, []


# ---------------------------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------------------------
_CACHE: dict = {}


def _report(env):
    """The report of the configured store (computed once per build process), or None and a message."""
    key = (str(env.config.validation_store), env.config.validation_mode)
    if key not in _CACHE:
        rep, msg = load_report(*key)
        _CACHE[key] = (rep, msg)
        strict = env.config.validation_strict
        if rep is None:
            (logger.warning if strict else logger.info)("padocs: %s", msg, type="padocs", subtype="store")
        else:
            logger.info("padocs: verdicts from %s (%s mode): %s", key[0], key[1], rep.summary_line())
            for s in rep.studies:
                if s.status in ("ERROR", "INCOMPLETE"):
                    (logger.warning if strict else logger.info)(
                        "padocs: study %s is %s in %s: %s", s.study, s.status, key[0],
                        s.error or f"{s.stored} of {s.expected} cells stored", type="padocs", subtype="study")
    return _CACHE[key]


def _study_reports(env) -> dict:
    rep, _ = _report(env)
    return {} if rep is None else {s.study: s for s in rep.studies}


def _verdict_table(rows: list[VerdictRow]) -> nodes.table:
    body = []
    for r in rows:
        claim = _linked(r.claim)
        if r.rule:
            claim += [nodes.Text(" "), nodes.inline("", f"Rule: {r.rule}", classes=["pa-rule"])]
        body.append([[_status_node(r.verdict)], _linked(r.label), claim, r.predicted, r.measured, r.interval,
                     r.tolerance])
    return _table(["verdict", "label", "claim", "predicted", "measured", "interval", "tol."], body,
                  [6, 6, 44, 12, 10, 14, 6], classes=["pa-verdicts"])


def _study_heading(study, srep) -> nodes.paragraph:
    word = srep.status if srep is not None else "not computed"
    p = _para(_ref(f"study-{study.name}", study.name, literal=True), ": ", study.title, " [")
    p += _status_node(word)
    if srep is not None and srep.mode:
        p += nodes.Text(f", {srep.mode} mode, {srep.stored}/{srep.expected} cells")
    p += nodes.Text("; API: ")
    p += _ref(study_api_name(study), type(study).__name__, domain="py", reftype="class", literal=True)
    p += nodes.Text("]")
    return p


def _study_block(env, study, labels=None) -> list[nodes.Node]:
    store = Path(env.config.validation_store)
    for path in (store, store.with_name(store.name + "-wal")):  # re-read this page when the store changes
        if path.exists():
            env.note_dependency(str(path))
    rep, msg = _report(env)
    srep = _study_reports(env).get(study.name)
    out: list[nodes.Node] = [_study_heading(study, srep)]
    if rep is None:
        out.append(_missing(msg))
    elif srep is None:
        out.append(_missing(f"Study {study.name} is not in the report."))
    elif srep.error:
        out.append(_missing(f"No verdicts: {srep.error}"))
    else:
        if not srep.complete:
            out.append(_missing(f"INCOMPLETE: {srep.stored} of {srep.expected} cells stored; the verdicts below "
                                "use the stored cells only."))
        rows = verdict_rows(srep, labels)
        if rows:
            out.append(_verdict_table(rows))
        else:
            out.append(_para(f"(no verdict of this study carries the label {', '.join(sorted(labels or ()))})"))
    return out


def _registry():
    import validation.studies  # noqa: F401  (registers the built-in studies)
    from validation.study import REGISTRY

    return REGISTRY


class VerdictsDirective(SphinxDirective):
    """``.. verdicts:: STUDY ...`` with option ``:labels:``."""

    required_arguments = 1
    optional_arguments = 20
    has_content = False
    option_spec = {"labels": directives.unchanged}

    def run(self):
        registry = _registry()
        labels = set(self.options.get("labels", "").replace(",", " ").split()) or None
        container = nodes.container(classes=["pa-verdict-block"])
        for name in self.arguments:
            if name not in registry:
                logger.warning("padocs: unknown study %r in a verdicts directive", name, location=self.get_location(),
                               type="padocs", subtype="unknown")
                container += _missing(f"Unknown study {name!r}.")
                continue
            for node in _study_block(self.env, registry[name], labels):
                container += node
        return [container]


class StudyCatalogDirective(SphinxDirective):
    """``.. study-catalog::``: one section per registered study, grouped by module, with a target ``study-NAME``."""

    has_content = False

    def run(self):
        registry = _registry()
        std = self.env.get_domain("std")
        out = []
        for name in sorted(registry, key=lambda n: (type(registry[n]).__module__, n)):
            study = registry[name]
            target = f"study-{name}"
            section = nodes.section(ids=[target], names=[target])
            section += nodes.title(name, name)
            info = _para("Checks ")
            for i, label in enumerate(study.labels):
                if i:
                    info += nodes.Text(", ")
                info += _label_link(label)
            cells = {m: len(study.cells(m)) for m in ("quick", "full")}
            info += nodes.Text(f". Version {study.version}; {cells['quick']} cells in quick mode, {cells['full']} "
                               "in full mode. Run it with ")
            info += nodes.literal(text=f"python -m validation run {name} --quick")
            info += nodes.Text(".")
            section += info
            doc = inspect.getdoc(type(study))
            if doc:  # shown as written (plain text): the study modules' docstrings are not all reST
                section += nodes.literal_block(doc, doc, language="none", classes=["pa-study-doc"])
            section += _fields_block(study)
            for node in _study_block(self.env, study):
                section += node
            std.note_hyperlink_target(target, self.env.docname, target, name)
            out.append(section)
        return out


def _fields_block(study) -> nodes.Node:
    """The table of what one cell stores (declared by the study; the test suite checks it against its cells)."""
    rows = result_field_rows(study)
    if rows is None:  # said on the page; tests/validation/test_result_fields.py is where a missing declaration fails
        logger.info("padocs: study %s v%s declares no result fields (Study.result_fields)", study.name,
                    study.version, type="padocs", subtype="fields")
        return _missing(f"Study {study.name} (version {study.version}) does not declare what its cells store "
                        "yet.")
    box = nodes.container(classes=["pa-fields"])
    intro = _para("Each cell stores (one row of ")
    intro += nodes.literal(text=f"python -m validation export {study.name}")
    intro += nodes.Text("; nested names are dotted, a name in braces stands for one entry per value; shapes "
                        "use the parameter names):")
    box += intro
    box += _table(["field", "shape", "meaning"], [[[nodes.literal(text=f)], shape, meaning] for f, shape, meaning
                                                   in rows], [18, 14, 60], classes=["pa-fields-table"])
    return box


def study_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``:study:`NAME``` -> a link to the catalog entry, followed by the study's status."""
    env = inliner.document.settings.env
    study_name = text.strip()
    srep = _study_reports(env).get(study_name)
    word = srep.status if srep is not None else "not computed"
    return [_ref(f"study-{study_name}", study_name, literal=True), nodes.Text(" ("), _status_node(word),
            nodes.Text(")")], []


# ---------------------------------------------------------------------------------------------------------------
# Estimator property table
# ---------------------------------------------------------------------------------------------------------------
class EstimatorTableDirective(SphinxDirective):
    """``.. estimator-table::``: the registry as a table (name linked to the function, labels to the theory)."""

    has_content = False

    def run(self):
        from attention_theory.registry import REGISTRY

        header, rows, functions = estimator_rows()
        body = []
        for r, fn, info in zip(rows, functions, REGISTRY.values(), strict=True):
            name = [_ref(fn, r[0], domain="py", reftype="func", literal=True)]
            if info.options:
                name.append(nodes.Text(" (" + ", ".join(f"{k}={v!r}" for k, v in info.options) + ")"))
            body.append([name] + [_linked(c) if i == 7 else c for i, c in enumerate(r[1:], start=1)])
        return [_table(header, body, [12, 20, 6, 6, 10, 12, 12, 8, 30], classes=["pa-estimators"])]


# ---------------------------------------------------------------------------------------------------------------
# Command-line help
# ---------------------------------------------------------------------------------------------------------------
class CLIHelpDirective(SphinxDirective):
    """``.. cli-help:: [COMMAND]``: the help text of the command line, generated at build time."""

    optional_arguments = 1
    has_content = False

    def run(self):
        try:
            text = cli_help(*self.arguments)
        except Exception as exc:
            logger.warning("padocs: %s", exc, location=self.get_location(), type="padocs", subtype="cli")
            return [_missing(str(exc))]
        return [nodes.literal_block(text, text, language="text")]


# ---------------------------------------------------------------------------------------------------------------
# Gallery
# ---------------------------------------------------------------------------------------------------------------
def gallery_ignore_pattern(gallery_dir) -> str:
    """Regex for sphinx-gallery's ``ignore_pattern``: ``__init__.py`` and the examples of unregistered figures.

    An example ``plot_NN_NAME.py`` draws figure NAME of :data:`validation.figures.FIGURES`; the example of a
    figure that is not registered (not written yet, or removed) is skipped with a note instead of failing.
    """
    import re

    from validation.figures import FIGURES

    missing = {name: p for name, p in gallery_examples(gallery_dir).items() if name not in FIGURES}
    if missing:
        logger.info("padocs: gallery examples skipped (figure not registered): %s", ", ".join(sorted(missing)))
    alternatives = [r"__init__\.py"] + [re.escape(p.name) for p in missing.values()]
    return "(" + "|".join(alternatives) + ")$"


def check_gallery(app):
    """``builder-inited``: warn about registered figures without an example in ``validation_gallery``."""
    if not app.config.validation_gallery:
        return
    from validation.figures import FIGURES

    have = gallery_examples(Path(app.srcdir) / app.config.validation_gallery)
    for name in FIGURES:
        if name not in have:
            logger.warning("padocs: figure %r has no gallery example (add docs/gallery/plot_NN_%s.py)", name, name,
                           type="padocs", subtype="gallery")


# ---------------------------------------------------------------------------------------------------------------
def setup(app):
    app.add_config_value("validation_store", "results.sqlite", "env")
    app.add_config_value("validation_mode", "quick", "env")
    app.add_config_value("validation_strict", False, "env")
    app.add_config_value("validation_gallery", "", "env")  # gallery sources, relative to the source dir
    app.add_directive("verdicts", VerdictsDirective)
    app.add_directive("study-catalog", StudyCatalogDirective)
    app.add_directive("estimator-table", EstimatorTableDirective)
    app.add_directive("cli-help", CLIHelpDirective)
    app.add_role("theory", theory_role)
    app.add_role("study", study_role)
    app.connect("builder-inited", check_gallery)
    return {"version": "1", "parallel_read_safe": False, "parallel_write_safe": True, "env_version": 1}
