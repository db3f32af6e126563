# U-Partners: `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: help install run test unit integration fault services lint bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/upartners: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/upartners ## create .venv and install the product with its test tools

run: install ## run everything in one process on the embedded default (SQLite + embedded bus)
	$(BIN)/upartners run

services: ## start the local PostgreSQL and RabbitMQ if installed but stopped, wait until they answer
	@scripts/ensure-services

test: install services ## install everything and run the whole test suite
	$(BIN)/pytest

unit: install ## the unit tests only (no servers needed)
	$(BIN)/pytest tests/unit

integration: install services ## the integration tests only (real PostgreSQL and RabbitMQ)
	$(BIN)/pytest tests/integration

fault: install services ## the fault tests alone: broker, database and worker killed under load
	$(BIN)/pytest -m fault tests/fault

lint: install ## ruff lint and format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install services ## run the benchmarks (see README for the numbers)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/labeler_rules.py
	$(BIN)/python bench/labeler_pipeline.py
	$(BIN)/python bench/cases.py
	$(BIN)/python bench/pipeline.py

clean: ## remove the virtualenv and the embedded default's data
	rm -rf $(VENV) var
