# copyhunt: `make demo` and `make test` work on a fresh clone; both build .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DATE ?= $(shell date -u +%F)
export COPYHUNT_HOME := $(CURDIR)

.PHONY: install install-dev demo test test-fast demo-web airflow clean-data help

help:
	@echo "make install   build .venv from requirements.txt (idempotent)"
	@echo "make install-dev  add the test tools (requirements-dev.txt)"
	@echo "make demo      run the whole daily pipeline on the local demo web (RUN_DATE=$(RUN_DATE))"
	@echo "make test      run the test suite"
	@echo "make demo-web  serve the demo web on 127.0.0.1:8899 until Ctrl-C"
	@echo "make airflow   run Airflow (standalone) on this project's DAGs, with the demo web, until Ctrl-C"

DEV_STAMP := $(VENV)/.installed-dev

install: $(STAMP)

# The runtime set (what `make demo` and the production image need); the test tools on top.
# Each is rebuilt only when its pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(DEV_STAMP)

demo: install
	$(BIN)/copyhunt demo --run-date $(RUN_DATE)

demo-web: install
	$(BIN)/copyhunt demo-web

airflow: install
	$(BIN)/copyhunt airflow

test: install-dev
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --durations=15

test-fast: install-dev
	$(BIN)/python -m pytest -q -m "not slow"

clean-data:
	rm -rf data/
