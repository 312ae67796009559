# Two commands on a fresh machine (Python >= 3.11, make, a C compiler):
#   make demo   -- the main job (every study in quick mode: report and figures under ./out)
#   make test   -- the test suite (fast tier + layering contract + lint)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: demo test test-all lint bench clean

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

test-all: lint
	$(BIN)/python -m pytest -m "not cuda" -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_particles.py

clean:
	rm -rf $(VENV) .numba_cache out .pytest_cache .hypothesis
