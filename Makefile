# The two commands of the README:   make run   (platform + demo)    make test   (the whole suite)
SHELL := /bin/bash
PY := .venv/airflow/bin/python
CF := .venv/airflow/bin/cryptoflow

.PHONY: setup run up down status lint format test test-quick bench lock

setup:            ## install system packages (if missing) and both virtualenvs
	@bash scripts/bootstrap.sh

run: setup        ## start PostgreSQL, Airflow and Superset on loopback, and the demo (main job)
	@$(CF) up --demo

up: setup         ## the services only, no demo
	@$(CF) up

down:             ## stop every local service
	@$(CF) down

status:
	@$(CF) status

LINTED := dags plugins include spark_jobs models tests scripts

lint: setup       ## ruff format --check, ruff (with Airflow's AIR rules) and mypy; configured in pyproject.toml
	@$(PY) -m ruff format --check $(LINTED)
	@$(PY) -m ruff check $(LINTED)
	@$(PY) -m mypy

format: setup     ## rewrite the code in the project's format (what `make lint` checks)
	@$(PY) -m ruff format $(LINTED)

test: lint        ## lint, then the full suite, services started for real (what CI runs)
	@$(PY) -m pytest -q $(PYTEST_ARGS)

test-quick:       ## the pure-Python subset, in seconds
	@$(PY) -m pytest -q -m quick $(PYTEST_ARGS)

bench: setup      ## benchmarks -> bench-results/bench.json and bench.md
	@$(CF) bench --output bench-results

lock:             ## recompile the pins after editing requirements*.in
	.venv/tools/bin/uv pip compile -q --python-version 3.11 requirements.in -o requirements.txt
	.venv/tools/bin/uv pip compile -q --python-version 3.11 requirements-superset.in -o requirements-superset.txt
