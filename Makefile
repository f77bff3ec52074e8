# The two commands a new user needs: `make demo` and `make test`.
# Everything is installed into .venv from requirements.lock (the versions that were tested). Without byte-compiling
# every installed module up front: Python compiles what is imported, once, which is a fraction of it.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_HOME ?= $(CURDIR)/.flywheel/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_LOGGING_LEVEL ?= WARNING
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/.flywheel/mlflow.db
export FLYWHEEL_HOME ?= $(CURDIR)/.flywheel

.PHONY: venv test lint typecheck pytest demo bench lock clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-compile -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: venv
	$(BIN)/mypy

# Under tools/leftovers.py: the run fails if a process it started (a server, a worker) is still running after it.
# In PYTEST_WORKERS processes (pytest-xdist), each with a Prefect server of its own; a test module stays in one
# process (its fixtures are started once), the slowest modules first (tests/conftest.py). Most of the suite's
# time is spent waiting on servers, so more processes than cores pay off. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 3
pytest: venv
	$(BIN)/python -m tools.leftovers -- $(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The linters first (seconds); then mypy beside pytest, which spends much of its time waiting on servers.
test: lint
	@$(MAKE) --no-print-directory -j2 --output-sync=line typecheck pytest

demo: venv
	$(BIN)/python -m tools.leftovers -- $(BIN)/flywheel demo

bench: venv
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# Re-resolve the pinned versions (run by hand after changing dependencies in pyproject.toml).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .flywheel .mypy_cache .ruff_cache .pytest_cache
