# Two commands on a fresh machine: `make repro` (the pipeline) and `make test` (the tests).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.lock-stamp
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup repro test test-fast lint format metrics-diff pr-diff retrain example clean-venv

BASE ?= main

# (Re)create the virtualenv when it is missing or the lock file changed.
$(STAMP): requirements.lock pyproject.toml
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv==0.13.9
	@test -x $(BIN)/python || uv venv --quiet --python $(PYTHON) $(VENV)
	uv pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes requirements.lock
	uv pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

# `panelcast check` first: our strict loader refuses a params.yaml or contract that DVC's
# YAML parser would choke on (an alias bomb) before DVC reads it.
repro: $(STAMP)
	panelcast check
	dvc repro

# Tests in parallel processes (pytest-xdist): one per core, at most TEST_WORKERS; the
# grouping and order are in pyproject.toml and tests/conftest.py. PYTEST_ARGS: extra options.
TEST_WORKERS ?= 4
PYTEST_PARALLEL := -n auto --maxprocesses $(TEST_WORKERS) --durations 25
PYTEST_ARGS ?=

test: $(STAMP)
	pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: $(STAMP)
	pytest $(PYTEST_PARALLEL) -m "not slow and not s3" $(PYTEST_ARGS)

lint: $(STAMP)
	ruff check . && ruff format --check .

format: $(STAMP)
	ruff format . && ruff check --fix .

# Metrics and params of the workspace against BASE (default main), as Markdown for a pull request.
pr-diff: $(STAMP)
	scripts/pr_diff.sh $(BASE)

metrics-diff: pr-diff

# Act on the drift verdict: retrain as a DVC experiment, promote it only if the gate passes.
retrain: $(STAMP)
	python scripts/retrain.py

# The pipeline on another table: examples/NAME (its params.yaml and contract.yaml only) in a
# scratch copy, build/examples/NAME (removed first). `make example` lists the examples.
NAME ?=
example: $(STAMP)
	@if [ -n "$(NAME)" ]; then rm -rf build/examples/$(NAME); fi
	panelcast example $(NAME)

clean-venv:
	rm -rf $(VENV)
