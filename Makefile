# Two commands on a fresh machine: `make repro` (the pipeline) and `make test` (the tests).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.lock-stamp
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup repro test test-fast lint format metrics-diff pr-diff retrain example clean-venv \
	cycle browser plots-template plots-diff

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

# Headless Chromium for the browser tests (tests/integration/test_browser.py): Debian's
# package, installed when $(CHROMIUM) is missing (as root, which CI is; otherwise it says how,
# and those tests fail saying so). Checked on every run: a browser installed by hand is not
# on a new machine, so no stamp file could be trusted here.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "browser: $(CHROMIUM) missing, installing Debian's chromium"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends chromium; \
	else \
		echo "browser: $(CHROMIUM) is missing and this is not root: install it with" >&2; \
		echo "browser:   sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium" >&2; \
		echo "browser: (the browser tests fail until then)" >&2; \
	fi

# `dvc plots show/diff` without network: build/plots/template.html inlines Vega, Vega-Lite and
# Vega-Embed (pinned in package.json / package-lock.json, from npm) in place of DVC's CDN
# scripts (docs/plots_offline.md). REVS: the revisions to compare (none: workspace vs HEAD).
PLOTS_TEMPLATE := build/plots/template.html
NODE_STAMP := node_modules/.panelcast-stamp
REVS ?=

$(NODE_STAMP): package.json package-lock.json .npmrc
	npm ci --ignore-scripts --no-audit --no-fund
	@touch $(NODE_STAMP)

$(PLOTS_TEMPLATE): $(NODE_STAMP) scripts/plots_template.py | $(STAMP)
	python scripts/plots_template.py --node-modules node_modules --out $(PLOTS_TEMPLATE)

plots-template: $(PLOTS_TEMPLATE)

plots-diff: $(STAMP) $(PLOTS_TEMPLATE)
	rm -rf build/plots/diff
	dvc plots diff --html-template $(PLOTS_TEMPLATE) -o build/plots/diff $(REVS)
	@echo "plots-diff: open build/plots/diff/index.html (no network needed)"

# Tests in parallel processes (pytest-xdist): one per core, at most TEST_WORKERS; the
# grouping and order are in pyproject.toml and tests/conftest.py. PYTEST_ARGS: extra options.
TEST_WORKERS ?= 4
PYTEST_PARALLEL := -n auto --maxprocesses $(TEST_WORKERS) --durations 25
PYTEST_ARGS ?=

test: $(STAMP) browser $(PLOTS_TEMPLATE)
	pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: $(STAMP) browser $(PLOTS_TEMPLATE)
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

# One production cycle (`panelcast cycle`).
cycle: $(STAMP)
	panelcast cycle

# The pipeline on another table: examples/NAME (its params.yaml and contract.yaml only) in a
# scratch copy, build/examples/NAME (removed first). `make example` lists the examples.
NAME ?=
example: $(STAMP)
	@if [ -n "$(NAME)" ]; then rm -rf build/examples/$(NAME); fi
	panelcast example $(NAME)

clean-venv:
	rm -rf $(VENV)
