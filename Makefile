# copyhunt: `make demo` and `make test` work on a fresh clone; both build .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DATE ?= $(shell date -u +%F)
export COPYHUNT_HOME := $(CURDIR)

.PHONY: install demo test test-fast demo-web airflow clean-data help

help:
	@echo "make install   build .venv from requirements.txt (idempotent)"
	@echo "make demo      run the whole daily pipeline on the local demo web (RUN_DATE=$(RUN_DATE))"
	@echo "make test      run the test suite"
	@echo "make demo-web  serve the demo web on 127.0.0.1:8899 until Ctrl-C"
	@echo "make airflow   run Airflow (standalone) on this project's DAGs, with the demo web, until Ctrl-C"

install: $(STAMP)

# Rebuilt only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

demo: install
	$(BIN)/copyhunt demo --run-date $(RUN_DATE)

demo-web: install
	$(BIN)/copyhunt demo-web

airflow: install
	$(BIN)/copyhunt airflow

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean-data:
	rm -rf data/
