"""What each study stores, as declared (``Study.result_fields`` or :mod:`validation.studies.fields`), is what its
quick-mode cells return: every returned (flattened) key belongs to a declared field, every declared field is
returned by some quick cell. The docs' table of each study is generated from the declaration, so it cannot go
stale while this passes.

The quick records are those of the session fixture (computed once, shared with the study and figure tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import validation.studies  # noqa: F401  (registers the built-in studies)
from validation.study import REGISTRY, Study, declared_fields, field_pattern, flatten_result, get_study

DOCS = Path(__file__).resolve().parents[2] / "docs"

#: Studies being changed on another branch (new version, new fields): a mismatch is an expected failure until
#: their declarations in validation/studies/fields.py are completed for the new version.
PENDING: dict[str, str] = {}

BUILT_IN = sorted(REGISTRY)


def _check(study, records):
    declared = declared_fields(study)
    assert declared, (f"{study.name} v{study.version} declares no result fields (Study.result_fields, or "
                      "validation.studies.fields.RESULT_FIELDS for the dynamics studies)")
    for field, spec in declared.items():
        assert isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(x, str) and x for x in spec), field
        assert spec[0].startswith("(") and spec[0].endswith(")"), (field, spec[0])
    used, unknown = set(), set()
    for r in records:
        for path in flatten_result(r.result, sep=None):  # paths: some keys contain dots (BLAS library names)
            pattern = field_pattern(path, declared)
            (unknown.add(".".join(path)) if pattern is None else used.add(pattern))
    assert not unknown, f"{study.name}: fields returned but not declared: {sorted(unknown)}"
    missing = sorted(set(declared) - used)
    assert not missing, f"{study.name}: declared but no quick cell returns them: {missing}"


@pytest.mark.parametrize("name", BUILT_IN)
def test_declared_fields_are_exactly_what_the_quick_cells_return(name, quick_records):
    study = get_study(name)
    try:
        _check(study, quick_records(name))
    except AssertionError as exc:
        if name in PENDING:
            pytest.xfail(f"{name} ({PENDING[name]}): declaration to be completed at merge: {exc}")
        raise


class _Toy(Study):
    name = "fields_toy"
    result_fields = {"n": ("()", "count"), "curve.{level}": ("(3,)", "one curve per level")}

    def grid(self, mode):
        return [{"a": 1}]

    def measure(self, params, seed):
        return {"n": 3, "curve": {"1": [0, 1, 2], "2": [0, 2, 4]}}


def test_the_check_fails_on_a_stale_declaration():
    """Negative controls: a returned key that is not declared, a declared field that nothing returns."""
    from validation.study import Record

    toy = _Toy()
    good = [Record({"a": 1}, 0, 1, toy.measure({"a": 1}, 1))]
    _check(toy, good)
    extra = [Record({"a": 1}, 0, 1, {**toy.measure({"a": 1}, 1), "new": 1.0})]
    with pytest.raises(AssertionError, match=r"returned but not declared: \['new'\]"):
        _check(toy, extra)
    missing = [Record({"a": 1}, 0, 1, {"n": 3})]
    with pytest.raises(AssertionError, match=r"declared but no quick cell returns them: \['curve.\{level\}'\]"):
        _check(toy, missing)


def test_flatten_and_match():
    assert flatten_result({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": {}}) == {"a.b.c": 1, "a.d": [1, 2], "e": {}}
    assert field_pattern("x.y", ["x.{k}", "x.y"]) == "x.y"
    assert field_pattern("x.z", ["x.{k}", "x.y"]) == "x.{k}"
    assert field_pattern("x.z.w", ["x.{k}"]) is None and field_pattern("q", ["x.{k}"]) is None
    assert field_pattern(("threads", "blas", "libopenblas.so"), ["threads.blas.{library}"]) == "threads.blas.{library}"
    assert flatten_result({"b": {"lib.so": 1}}, sep=None) == {("b", "lib.so"): 1}


def test_the_docs_table_is_the_declaration():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import padocs_core
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    rows = padocs_core.result_field_rows(get_study("rbm_strong_order"))
    assert rows == [("sq_errors.{p}", "(R, len(taus))", get_study("rbm_strong_order").result_fields[
        "sq_errors.{p}"][1])]
    assert padocs_core.result_field_rows(_Toy())[0] == ("n", "()", "count")

    class Undeclared(Study):
        name = "undeclared_toy"

    assert padocs_core.result_field_rows(Undeclared()) is None
