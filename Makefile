# Two commands on a fresh machine (Python >= 3.11, make, a C compiler):
#   make demo   -- the main job (every study in quick mode: report and figures under ./out)
#   make test   -- the test suite (lint + layering contract, fast tier, docs build with warnings as errors)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: demo test test-all lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m validation reproduce --quick --out out

lint: $(STAMP)
	$(BIN)/ruff check particles attention_theory validation tests benchmarks
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -m "not slow and not cuda" -q
	$(MAKE) docs

test-all: lint
	$(BIN)/python -m pytest -m "not cuda" -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_particles.py

# The documentation (docs/_build/html): every study in quick mode into docs/_build/validation (resumable;
# exit status 1 = a verdict failed or a study is incomplete: the pages show it, and with PA_DOCS_STRICT=1 a
# missing, errored or incomplete study is a Sphinx warning), then Sphinx with warnings as errors, then a check that
# no page loads anything from the network (MathJax is served from the build).
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/python -m validation reproduce --quick --out docs/_build/validation --no-progress || [ $$? -eq 1 ]
	PA_DOCS_STRICT=1 $(BIN)/sphinx-build -E -W --keep-going -b html docs docs/_build/html
	$(BIN)/python docs/_ext/check_offline.py docs/_build/html

clean:
	rm -rf $(VENV) .numba_cache out .pytest_cache .hypothesis
	rm -rf docs/_build docs/auto_gallery docs/api/generated docs/sg_execution_times.rst
