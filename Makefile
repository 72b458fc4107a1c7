# certbus — every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint typecheck bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	bash infra/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/python -m services.launcher

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e"

lint: install
	$(BIN)/ruff check shared services tests
	$(BIN)/ruff format --check shared services tests

typecheck: install
	$(BIN)/mypy shared services

bench: install
	$(BIN)/python -m tests.bench

docs: install
	$(BIN)/python -m services.asyncapi var/asyncapi

clean:
	rm -rf var bench-results
