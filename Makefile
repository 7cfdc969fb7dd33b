# Foresight: `make run` runs the nightly DAG once on the embedded default,
# `make test` runs every test, `make ui` starts the Airflow and MLflow UIs
# (scripts/ui.sh: the api-server first, the scheduler once it answers).

PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.foresight-installed
RUN_DATE ?= $(shell date -u +%Y-%m-%d)
RUN_CONF ?= {}
# The last half hour (UTC), where the scaling plan's next window starts.
PLAN_DATE ?= $(shell printf '%s:%02d:00' "$$(date -u +%Y-%m-%dT%H)" "$$(( $$(date -u +%-M) / 30 * 30 ))")
AIRFLOW_PORT ?= 8080
MLFLOW_PORT ?= 5000
# The address both UIs of `make ui` listen on: this machine only by default; UI_HOST=0.0.0.0
# for every interface (then the MLflow links name this host, not localhost).
UI_HOST ?= 127.0.0.1
UI_URL_HOST := $(if $(filter 127.0.0.1 localhost,$(UI_HOST)),localhost,$(if $(filter 0.0.0.0 ::,$(UI_HOST)),$(shell hostname -f 2> /dev/null || hostname),$(UI_HOST)))

export AIRFLOW_HOME := $(CURDIR)/var/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__EXECUTOR := LocalExecutor
# SQLite under load (foresight_dags/sqlite.py; the tests set the same): wait up to a minute
# for another process's write lock, and take it when a savepoint opens a transaction, rather
# than fail with "database is locked".
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS ?= foresight_dags.sqlite.CONNECT_ARGS
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC ?= foresight_dags.sqlite.ASYNC_CONNECT_ARGS
export AIRFLOW__API__PORT := $(AIRFLOW_PORT)
export AIRFLOW__API__HOST := $(UI_HOST)
export FORESIGHT_UI_HOST := $(UI_HOST)
export FORESIGHT_UI_URL_HOST := $(UI_URL_HOST)
# Every URL from its one port setting: the workers reach the execution API on the api-server's
# port, and the Foresight plugin links to the MLflow UI that `make ui` starts.
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL := http://localhost:$(AIRFLOW_PORT)/execution/
export FORESIGHT_MLFLOW_UI_URL ?= http://$(UI_URL_HOST):$(MLFLOW_PORT)
export FORESIGHT_HOME := $(CURDIR)
export PATH := $(BIN):$(PATH)

.PHONY: run plan test docs ui stack stack-down stack-status setup airflow-db lint clean bench-env bench

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

airflow-db: $(STAMP)
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)

run: airflow-db
	$(BIN)/airflow dags test foresight_nightly $(RUN_DATE) -c '$(RUN_CONF)'
	@echo
	$(BIN)/python -m foresight_lib.pipeline summary
	@echo
	@echo "Airflow logs and database: $(AIRFLOW_HOME)   (make ui: Airflow on http://localhost:$(AIRFLOW_PORT))"

plan: airflow-db
	$(BIN)/airflow dags test foresight_scaling_plan $(PLAN_DATE) -c '$(RUN_CONF)'
	@echo
	$(BIN)/python -m foresight_lib.scaling_plan summary

test: $(STAMP) docs
	.ci/install-packages.sh
	$(BIN)/pytest -q

# The documentation site (mkdocs.yml, docs/) in its own venv, built strictly: a broken link,
# a page missing from the nav or a bad anchor fails the build (and so `make test`).
DOCS_STAMP := .venv-docs/.foresight-installed

$(DOCS_STAMP): requirements-docs.txt
	@test -x .venv-docs/bin/python || $(PYTHON) -m venv .venv-docs
	.venv-docs/bin/pip install -q -r requirements-docs.txt
	@touch $@

docs: $(DOCS_STAMP)
	.venv-docs/bin/mkdocs build --strict -d $(CURDIR)/site

ui: airflow-db
	@echo "Airflow:  http://$(UI_URL_HOST):$(AIRFLOW_PORT)  user 'admin', password in"
	@echo "          $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated (written on first start, mode 0600)"
	@echo "MLflow:   http://$(UI_URL_HOST):$(MLFLOW_PORT)"
	MLFLOW_PORT=$(MLFLOW_PORT) scripts/ui.sh

# The scale-out stack of docker-compose.yaml as native processes (scripts/stack.py): Postgres,
# Redis, an S3 endpoint, the MLflow server and Airflow with the CeleryExecutor and two workers.
# State and logs in var/stack; STACK_ARGS passes options (e.g. --workers 3 --airflow-port 8090).
stack: $(STAMP)
	.ci/install-packages.sh
	$(BIN)/python scripts/stack.py up $(STACK_ARGS)

stack-down:
	$(BIN)/python scripts/stack.py down $(STACK_ARGS)

stack-status:
	$(BIN)/python scripts/stack.py status $(STACK_ARGS)

# Peer libraries for the benchmarks live in their own venv, never in the product's.
BENCH_STAMP := .venv-bench/.foresight-installed

bench-env: $(BENCH_STAMP)

$(BENCH_STAMP): requirements-bench.txt
	@test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q -r requirements-bench.txt
	@touch $@

bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python benchmarks/forecast_benchmark.py --dataset nab_cpu
	$(BIN)/python benchmarks/forecast_benchmark.py --dataset bitbrains
	$(BIN)/python benchmarks/rightsizing_replay.py
	$(BIN)/python benchmarks/rightsizing_memory_bound.py

lint: $(STAMP)
	$(BIN)/ruff check foresight_lib foresight_dags dags plugins tests benchmarks

clean:
	rm -rf var
