# Conduit API. `make help` lists every target; docs/development.md and docs/operations.md say more.
# make run and make test do all set-up on a fresh machine (Python 3.11+, and npm for make test).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
E2E := tests/e2e
OPENAPI_LINT := tools/openapi-lint

.PHONY: run migrate test test-unit test-integration test-e2e test-security test-bench lint format bench wrk clean help

help: ## list every target with what it does
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z][a-zA-Z0-9_-]*:[^=]*## / {printf "  make %-16s %s\n", $$1, $$2}' $(firstword $(MAKEFILE_LIST))

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt requirements-bench.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime $(VENV)/.bench

$(VENV)/.bench: requirements.txt requirements-bench.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $@ $(VENV)/.runtime

$(E2E)/node_modules/.installed: $(E2E)/package.json $(E2E)/package-lock.json
	cd $(E2E) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(OPENAPI_LINT)/node_modules/.installed: $(OPENAPI_LINT)/package.json $(OPENAPI_LINT)/package-lock.json
	cd $(OPENAPI_LINT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

migrate: $(VENV)/.runtime ## apply pending database migrations (make run does it first)
	$(BIN)/flask --app service db upgrade

# Where `make run` listens: gunicorn.conf.py's rule (BIND wins, else HOST:PORT).
RUN_ADDR = $(or $(BIND),$(or $(HOST),127.0.0.1):$(or $(PORT),8000))
run: migrate ## serve the API on http://127.0.0.1:8000/api (SQLite + in-process cache unless DATABASE_URL/REDIS_URL)
	@echo "Conduit API: http://$(RUN_ADDR)/api  docs: http://$(RUN_ADDR)/api/docs  OpenAPI: http://$(RUN_ADDR)/api/openapi.json"
	exec $(BIN)/gunicorn -c gunicorn.conf.py

test: $(VENV)/.dev $(E2E)/node_modules/.installed haproxy pgbouncer fault-servers wrk ## every test layer: unit, integration, e2e, security, bench, cluster, faults; installs what it needs
	mkdir -p var
	$(BIN)/pytest tests

test-unit: $(VENV)/.dev ## unit tests: no database, no Redis, no subprocess
	$(BIN)/pytest tests/unit

test-integration: $(VENV)/.dev ## API tests on SQLite, PostgreSQL and PostgreSQL + Redis
	mkdir -p var
	$(BIN)/pytest tests/integration

test-e2e: $(VENV)/.dev $(E2E)/node_modules/.installed ## the RealWorld Postman collection (newman) against a live gunicorn
	mkdir -p var
	$(BIN)/pytest tests/e2e

test-security: $(VENV)/.dev ## fuzzing from /api/openapi.json and the security suite
	mkdir -p var
	$(BIN)/pytest tests/security

test-bench: $(VENV)/.dev wrk ## the benchmark's own tests: its Redis clean-up, one short real sweep of make tune
	mkdir -p var
	$(BIN)/pytest tests/bench

lint: $(VENV)/.dev lint-openapi ## ruff + mypy + OpenAPI lint (Redocly CLI) + dependency audit
	$(BIN)/ruff check .
	$(BIN)/ruff format --check service config tests bench tools ops gunicorn.conf.py
	$(BIN)/mypy
	$(BIN)/python tools/audit.py $(AUDIT_FILES)

# make lint-openapi  lint the OpenAPI document as /api/openapi.json serves it (Redocly CLI, pinned in
#                    tools/openapi-lint; rules and the reasons for any rule turned off in its redocly.yaml)
.PHONY: lint-openapi
lint-openapi: $(VENV)/.dev $(OPENAPI_LINT)/node_modules/.installed ## lint the OpenAPI document as /api/openapi.json serves it (Redocly CLI, tools/openapi-lint)
	mkdir -p var
	$(BIN)/python tools/openapi_dump.py var/openapi.json
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
	  $(OPENAPI_LINT)/node_modules/.bin/redocly lint var/openapi.json --config $(OPENAPI_LINT)/redocly.yaml

.PHONY: audit
AUDIT_FILES ?= requirements.txt requirements-dev.txt
audit: $(VENV)/.dev ## known vulnerabilities in the pinned requirements (pip-audit; also run by make lint)
	$(BIN)/python tools/audit.py $(AUDIT_FILES)

format: $(VENV)/.dev ## ruff format and ruff check --fix
	$(BIN)/ruff format service config tests bench tools ops gunicorn.conf.py
	$(BIN)/ruff check --fix .

bench: $(VENV)/.bench wrk ## wrk benchmark on PostgreSQL + Redis (about 8 min); see docs/benchmarks.md
	$(BIN)/python bench/run.py

wrk: ## install wrk with apt-get when missing
	@command -v wrk >/dev/null || { \
	  echo "wrk is missing: installing it with apt-get"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }

# make tune   sweep workers x worker_connections with the benchmark, recommend a setting (about 3 min);
#             options: make tune TUNE_ARGS='--replicas 3', or env TUNE_*; see .venv/bin/python -m bench.tune --help
.PHONY: tune
tune: $(VENV)/.bench wrk ## sweep workers x worker_connections and recommend a setting (about 3 min); TUNE_ARGS='--replicas 3'
	$(BIN)/python -m bench.tune $(TUNE_ARGS)

# make capacity  a capacity plan (docs/capacity.md) from a benchmark run: cores, replicas, connections, database
#                and Redis load at 10k/100k/1M req/s; CAPACITY_ARGS='--run bench/results/latest.json --mix 80/20'
.PHONY: capacity
capacity: $(VENV)/.runtime ## capacity plan in docs/capacity.md from a benchmark run (default: the newest in bench/recorded/); CAPACITY_ARGS for more
	$(BIN)/python -m bench.capacity $(CAPACITY_ARGS)

# make cluster          REPLICAS (3) replicas x WORKERS (2) on PostgreSQL + Redis behind HAProxy on :8080, the
#                       replicas connecting through PgBouncer (transaction pooling) on :6432
#                       (DATABASE_URL, REDIS_URL; more options: CLUSTER_ARGS='--no-pgbouncer', see
#                       .venv/bin/python -m ops.cluster start --help); prints where everything is
# make cluster STANDBY=1 the same plus a throwaway streaming standby of the primary on :5433 (data in
#                       var/cluster/standby/), which the replicas read from through PgBouncer; the primary
#                       must allow replication connections (docs/operations.md, "The whole topology")
.PHONY: cluster cluster-stop rolling-restart test-cluster haproxy pgbouncer
REPLICAS ?= 3
WORKERS ?= 2
STANDBY ?=
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
haproxy: ## install HAProxy with apt-get when missing
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { \
	  echo "HAProxy is missing: installing it with apt-get"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y haproxy; }

pgbouncer: ## install PgBouncer with apt-get when missing (make cluster runs it between the replicas and PostgreSQL)
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { \
	  echo "PgBouncer is missing: installing it with apt-get"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y pgbouncer; }

cluster: haproxy pgbouncer $(VENV)/.runtime ## REPLICAS (3) x WORKERS (2) on PostgreSQL (through PgBouncer on :6432) + Redis behind HAProxy on :8080; STANDBY=1 adds a streaming standby on :5433; CLUSTER_ARGS for more
	$(BIN)/python -m ops.cluster start --replicas $(REPLICAS) --workers $(WORKERS) $(if $(filter 1 yes true,$(STANDBY)),--standby) $(CLUSTER_ARGS)

cluster-stop: $(VENV)/.runtime ## stop exactly what make cluster started (pids in var/cluster/); removes the standby's data
	$(BIN)/python -m ops.cluster stop

rolling-restart: $(VENV)/.runtime ## restart the replicas one at a time: drain in HAProxy, stop, start, wait UP, ready
	$(BIN)/python -m ops.cluster rolling-restart

test-cluster: $(VENV)/.dev haproxy pgbouncer fault-servers ## the failover tests: replicas + HAProxy under load, SIGKILL and rolling restart; 8 x 2 workers through PgBouncer
	mkdir -p var
	$(BIN)/pytest tests/cluster

# make test-faults  the fault tests (about a minute): throwaway PostgreSQL and Redis of their own,
#                   restarted, crashed, killed and frozen under load; figures in var/faults/*.json
.PHONY: test-faults fault-servers
fault-servers: ## install the PostgreSQL and Redis server binaries with apt-get when missing
	@{ ls /usr/lib/postgresql/*/bin/initdb || test -x "$$PG_BIN/initdb"; } >/dev/null 2>&1 && command -v redis-server >/dev/null || { \
	  echo "PostgreSQL or Redis server binaries are missing: installing them with apt-get"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y postgresql redis-server; }

test-faults: $(VENV)/.dev pgbouncer fault-servers ## the fault tests (about a minute): throwaway PostgreSQL and Redis restarted, crashed, frozen
	mkdir -p var
	$(BIN)/pytest -m faults tests/faults

clean: ## remove .venv, var/, node_modules and tool caches
	rm -rf $(VENV) var $(E2E)/node_modules $(OPENAPI_LINT)/node_modules .pytest_cache .mypy_cache .ruff_cache
