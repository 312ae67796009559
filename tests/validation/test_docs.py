"""The generated parts of the documentation: property table, verdict tables, gallery and API coverage.

These tests need neither Sphinx nor a docs build: they exercise
``docs/_ext/padocs_core.py``, the Sphinx-free half of the docs extension
(``docs/_ext/padocs.py`` turns its rows into tables). The build itself runs
with ``make docs`` (warnings are errors).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import _toy_studies
from validation.report import report
from validation.runner import run_study

_toy_studies.uninstall()  # registered on import (for worker processes); the tests install them one at a time

DOCS = Path(__file__).resolve().parents[2] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import padocs_core  # noqa: E402  (docs/_ext is not a package)

#: Modules documented elsewhere than in an autosummary list of docs/api/, with the reason.
NOT_IN_API = {
    "validation.__main__": "the command line, documented in docs/guide/cli.rst (help generated at build time)",
}
#: Packages whose submodules are documented by the package page (backends: one contract, see
#: particles.backends) or by the gallery (validation.figures: one module per figure).
INTERNAL_PACKAGES = ("particles.backends", "validation.figures")


def test_label_targets_link_theory_labels_only():
    assert padocs_core.label_targets("B4, T17 at w_c = mu_c") == [
        ("B4", "sec-b4"), (", ", None), ("T17", "eq-t17"), (" at w_c = mu_c", None)]
    assert padocs_core.label_targets("see Part D") == [("see ", None), ("Part D", "sec-part-d")]
    assert padocs_core.label_targets("TB1 T123 x") == [("TB1 T123 x", None)]  # not labels
    assert padocs_core.label_target("T4") == "eq-t4" and padocs_core.label_target("B2") == "sec-b2"


def test_estimator_rows_are_the_registry():
    from attention_theory.registry import REGISTRY, property_table

    header, rows, functions = padocs_core.estimator_rows()
    assert header == list(property_table()[0])
    assert [r[0] for r in rows] == list(REGISTRY)
    for row, fn_name, info in zip(rows, functions, REGISTRY.values(), strict=True):
        assert len(row) == len(header)
        assert row[2] == ("yes" if info.unbiased else "no") and row[3] == ("yes" if info.consistent else "no")
        assert row[7] == info.equation
        module, _, attr = fn_name.rpartition(".")
        assert getattr(importlib.import_module(module), attr) is info.function  # the API link resolves
    # every estimator row names at least one THEORY label that the theory pages link
    assert all(any(t for _, t in padocs_core.label_targets(r[7])) for r in rows)


@pytest.fixture
def toy_store(tmp_path):
    with _toy_studies.installed():
        path = tmp_path / "toy.sqlite"
        for name in ("toy_sum", "toy_verdict_fails"):
            assert run_study(name, mode="quick", store=path, executor="serial", progress=False).ok
        yield path


def test_verdict_rows_from_a_tiny_store(toy_store):
    rep = report(toy_store, ["toy_sum", "toy_verdict_fails", "toy_fail"], mode="quick")
    by_name = {s.study: s for s in rep.studies}

    rows = padocs_core.verdict_rows(by_name["toy_sum"])
    assert [r.verdict for r in rows] == ["PASS", "info"]
    assert rows[0].label == "X1" and rows[0].claim == "mean of x - a is zero" and rows[0].predicted == "0"
    assert re.fullmatch(r"\[-?[\d.e-]+, -?[\d.e-]+\]", rows[0].interval)
    assert rows[0].tolerance == "4" and rows[0].rule.startswith("|mean|")
    assert rows[1].interval == "-" and rows[1].tolerance == "-"

    (fail,) = padocs_core.verdict_rows(by_name["toy_verdict_fails"])
    assert (fail.verdict, fail.predicted, fail.measured, fail.interval, fail.tolerance) == \
        ("FAIL", "2", "1", "[0.9, 1.1]", "0.05")

    assert [r.verdict for r in padocs_core.verdict_rows(by_name["toy_sum"], labels={"X1"})] == ["PASS"]
    assert padocs_core.verdict_rows(by_name["toy_sum"], labels={"T4"}) == []
    assert by_name["toy_fail"].error and not padocs_core.verdict_rows(by_name["toy_fail"])  # not run: no rows


def test_load_report_reads_every_registered_study_or_says_why(toy_store, tmp_path):
    rep, msg = padocs_core.load_report(tmp_path / "missing.sqlite")
    assert rep is None and "No results store" in msg and "reproduce --quick" in msg
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a store")
    rep, msg = padocs_core.load_report(bad)
    assert rep is None and "Cannot read the results store" in msg
    with _toy_studies.installed():
        rep, msg = padocs_core.load_report(toy_store)
        from validation.study import REGISTRY

        assert msg == "" and {s.study for s in rep.studies} == set(REGISTRY)
        status = {s.study: s.status for s in rep.studies}
        assert status["toy_sum"] == "PASS" and status["toy_verdict_fails"] == "FAIL"
        assert status["rbm_strong_order"] == "ERROR"  # not in this store: an error line, not an exception


def test_every_figure_has_a_gallery_example():
    from validation.figures import FIGURES

    examples = padocs_core.gallery_examples(DOCS / "gallery")
    assert padocs_core.example_figure("plot_01_rbm_strong.py") == "rbm_strong"
    assert padocs_core.example_figure("README.rst") is None
    missing = sorted(set(FIGURES) - set(examples))
    assert not missing, f"figures without a gallery example in docs/gallery/: {missing}"
    for name, path in examples.items():
        text = path.read_text(encoding="utf-8")
        assert f'draw("{name}", ' in text and 'mode="quick"' in text, path.name


def test_every_builtin_study_is_cited_by_a_theory_page():
    import validation.studies  # noqa: F401
    from validation.study import REGISTRY

    cited = padocs_core.theory_studies(sorted((DOCS / "theory").glob("*.rst")))
    builtin = {n for n, s in REGISTRY.items() if type(s).__module__.startswith("validation.studies.")}
    assert cited <= set(REGISTRY), f"theory pages cite unknown studies: {sorted(cited - set(REGISTRY))}"
    assert not builtin - cited, f"studies without a verdict table in docs/theory/: {sorted(builtin - cited)}"


def _public_modules():
    for pkg_name in ("particles", "attention_theory", "validation"):
        pkg = importlib.import_module(pkg_name)
        yield pkg_name
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            parts = info.name.split(".")
            if any(p.startswith("_") for p in parts[1:]) and info.name not in NOT_IN_API:
                continue
            if any(info.name.startswith(p + ".") for p in INTERNAL_PACKAGES):
                continue
            yield info.name


def test_every_public_module_is_in_the_api_reference():
    listed = set()
    for page in (DOCS / "api").glob("*.rst"):
        text = page.read_text(encoding="utf-8")
        listed |= set(re.findall(r"^\s+([a-z_]+(?:\.[a-z_]+)+)\s*$", text, re.MULTILINE))  # autosummary entries
        listed |= set(re.findall(r"^\.\. automodule:: ([\w.]+)", text, re.MULTILINE))
    missing = sorted(m for m in _public_modules() if m not in listed and m not in NOT_IN_API)
    assert not missing, f"public modules missing from docs/api/*.rst: {missing}"


def test_directives_render_tables_in_a_tiny_sphinx_project(toy_store, tmp_path):
    """The Sphinx half (docs/_ext/padocs.py) on a two-directive page (skipped without the docs extra)."""
    pytest.importorskip("sphinx")
    from sphinx.cmd.build import build_main

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(DOCS / '_ext')!r})\nextensions = ['padocs']\n"
        f"validation_store = {str(toy_store)!r}\nvalidation_strict = False\nhtml_theme = 'basic'\n")
    (src / "index.rst").write_text(
        "Page\n====\n\n.. _eq-t7:\n\nA label :theory:`T7` and a study :study:`toy_sum`.\n\n"
        ".. verdicts:: toy_sum toy_verdict_fails\n\n.. estimator-table::\n")
    with _toy_studies.installed():
        import padocs

        padocs._CACHE.clear()
        status = build_main(["-q", "-W", "-b", "html", str(src), str(tmp_path / "out")])
        padocs._CACHE.clear()
    assert status == 0
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert page.count('class="pa-verdict pa-pass"') >= 2  # the toy_sum verdict and its study status
    assert 'class="pa-verdict pa-fail"' in page and "|y - 2| &lt;= tol" in page
    assert 'href="#eq-t7"' in page  # :theory: and the table's equation column link the label
    from attention_theory.registry import REGISTRY

    assert page.count("<tr") >= 3 + 1 + len(REGISTRY) + 1  # two verdict tables and the property table
    for name in REGISTRY:
        assert f">{name}<" in page


def python_blocks(page: Path) -> list[str]:
    """The ``.. code-block:: python`` blocks of a reST page, dedented, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() != ".. code-block:: python":
            i += 1
            continue
        i += 1
        while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith(":")):
            i += 1
        body = []
        while i < len(lines) and (lines[i].startswith("   ") or not lines[i].strip()):
            body.append(lines[i])
            i += 1
        blocks.append(textwrap.dedent("\n".join(body)))
    return blocks


def test_python_blocks_are_extracted():
    blocks = python_blocks(DOCS / "tutorials" / "simulate.rst")
    assert len(blocks) >= 5 and blocks[0].startswith("import numpy as np")
    assert all(compile(b, "block", "exec") for b in blocks)  # every block is valid Python


@pytest.mark.slow
@pytest.mark.parametrize("page", ["simulate", "convergence_study", "own_estimator"])
def test_tutorial_code_runs(page, tmp_path):
    """The Python code of a tutorial runs as written (in a fresh process; its own test_* functions are called)."""
    code = "\n\n".join(python_blocks(DOCS / "tutorials" / f"{page}.rst"))
    runner = ("import sys\nns = {'__name__': '__main__'}\nexec(compile(sys.stdin.read(), 'tutorial', 'exec'), ns)\n"
              "for name, fn in list(ns.items()):\n    if name.startswith('test_') and callable(fn):\n        fn()\n")
    (tmp_path / "my_studies.py").write_text(python_blocks(DOCS / "tutorials" / "convergence_study.rst")[1])
    proc = subprocess.run([sys.executable, "-c", runner], input=code, capture_output=True, text=True, cwd=tmp_path,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_offline_check_flags_network_and_missing_loads(tmp_path):
    import check_offline

    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "here.js").write_text("")
    (tmp_path / "sub").mkdir()
    good = tmp_path / "sub" / "good.html"
    good.write_text('<html><head><script src="../_static/here.js?v=1"></script>'
                    '<link rel="stylesheet" href="../_static/here.js"><img src="data:image/png;base64,AA=="></head>'
                    '<body><a href="https://example.org">a link is not a load</a></body></html>')
    assert check_offline.check(tmp_path) == []
    bad = tmp_path / "bad.html"
    bad.write_text('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>'
                   '<link rel="preload" href="//fonts.example/x.woff"><script src="_static/absent.js"></script>')
    found = check_offline.check(tmp_path)
    assert len(found) == 3
    assert "cdn.jsdelivr.net" in found[0] and "from the network" in found[0]
    assert "fonts.example" in found[1] and "absent.js" in found[2] and "not in the build" in found[2]
    assert check_offline.main([str(tmp_path)]) == 1
    bad.unlink()
    assert check_offline.main([str(tmp_path)]) == 0
    assert check_offline.check(tmp_path / "sub" / "nowhere") == [
        f"no HTML pages under {tmp_path / 'sub' / 'nowhere'} (run make docs first)"]


def test_docs_serve_mathjax_themselves():
    conf = (DOCS / "conf.py").read_text()
    assert '"sphinx-mathjax-offline"' in conf  # sets mathjax_path to the copy in _static/mathjax
    make = (DOCS.parent / "Makefile").read_text()
    assert "docs/_ext/check_offline.py docs/_build/html" in make  # the real build is checked by make docs


def test_plain_sphinx_build_without_a_store_says_what_to_run(tmp_path):
    pytest.importorskip("sphinx")
    env = {**os.environ, "PA_DOCS_STORE": str(tmp_path / "absent" / "results.sqlite")}
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", str(DOCS), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no results store at" in lines[0] and "make docs" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
