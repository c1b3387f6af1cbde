# The two commands README gives a new user: `make serve` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" for the CPU build of torch
PIP_ARGS ?=

.PHONY: setup serve test lint bench screenshots

# requirements-dev.lock is the runtime lock (requirements.lock, all the image gets) plus the dev tools.
$(BIN)/narrownet: requirements.lock requirements-dev.lock pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP_ARGS) -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

setup: $(BIN)/narrownet

serve: setup
	$(BIN)/narrownet serve --print-key

# One torch thread per process: the tests run uvicorn and celery worker processes beside pytest on small
# machines, and OpenMP's spinning threads slow everything 5-10x when cores are oversubscribed.
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

# ruff; mypy (--strict for core, api, worker, narrownet; see pyproject); import-linter's layer contracts.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy core api worker narrownet trainer
	$(BIN)/lint-imports

# The README's dashboard pictures, taken by the browser tests (needs /usr/bin/chromium).
screenshots: setup
	DASHBOARD_SCREENSHOTS=docs/img OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q tests/e2e/test_dashboard.py
