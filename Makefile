# make run    serve the API on http://127.0.0.1:8000 (embedded SQLite unless DATABASE_URL is set)
# make test   every test layer: unit, integration (SQLite + PostgreSQL), e2e (newman)
# make lint   ruff + mypy
# make bench  wrk benchmark on PostgreSQL + Redis; see .venv/bin/python bench/run.py --help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
E2E := tests/e2e

.PHONY: run migrate test test-unit test-integration test-e2e test-security lint format bench clean help

help:
	@sed -n 's/^# //p' Makefile

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

$(VENV)/.bench: requirements.txt requirements-bench.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $@ $(VENV)/.runtime

$(E2E)/node_modules/.installed: $(E2E)/package.json $(E2E)/package-lock.json
	cd $(E2E) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

migrate: $(VENV)/.runtime
	$(BIN)/flask --app service db upgrade

run: migrate
	exec $(BIN)/gunicorn -c gunicorn.conf.py

test: $(VENV)/.dev $(E2E)/node_modules/.installed
	mkdir -p var
	$(BIN)/pytest tests

test-unit: $(VENV)/.dev
	$(BIN)/pytest tests/unit

test-integration: $(VENV)/.dev
	mkdir -p var
	$(BIN)/pytest tests/integration

test-e2e: $(VENV)/.dev $(E2E)/node_modules/.installed
	mkdir -p var
	$(BIN)/pytest tests/e2e

test-security: $(VENV)/.dev
	mkdir -p var
	$(BIN)/pytest tests/security

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check service config tests bench gunicorn.conf.py
	$(BIN)/mypy

format: $(VENV)/.dev
	$(BIN)/ruff format service config tests bench gunicorn.conf.py
	$(BIN)/ruff check --fix .

bench: $(VENV)/.bench
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var $(E2E)/node_modules .pytest_cache .mypy_cache .ruff_cache
