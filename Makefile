# Two commands for a fresh machine with Python 3.11:  make lab  |  make test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup lab test test-fast html lint format bench full-size constraints clean
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 20

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install qwenlite with everything the notebooks and tests use

lab: setup  ## open JupyterLab on the notebooks
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

test: setup  ## all tests and all notebooks (pytest + nbmake), offline: what CI runs
	$(BIN)/python -m pytest tests notebooks --nbmake --nbmake-timeout=900 -q

test-fast: setup  ## the fast tier while you work: no notebooks, nothing marked slow
	$(BIN)/python -m pytest tests -m "not slow" -q

html: setup  ## execute every notebook and write build/html: index.html, one page and one reveal.js deck per notebook, offline
	$(BIN)/python lecture/export.py build/html

lint: setup  ## ruff (lint and format check) and mypy (types of the model package)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

format: setup  ## ruff: format and fix
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: setup  ## speed of qwenlite vs transformers on the full-size 3B vision tower
	$(BIN)/python benchmarks/bench_vision.py

DTYPE ?= bfloat16
full-size: setup  ## dress rehearsal: seeded 3B in the hub's layout (7.5 GB in build/), every notebook on it (DTYPE=bfloat16|float32)
	$(BIN)/python benchmarks/full_size.py build && $(BIN)/python benchmarks/full_size.py run --dtype $(DTYPE)

constraints: setup  ## after a deliberate upgrade: write the tested set to constraints.txt (keep its header)
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.tmp && mv constraints.tmp constraints.txt

clean:  ## remove .venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
