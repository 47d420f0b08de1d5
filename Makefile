# The two commands of ntksearch:
#   make quickstart   install into .venv and run the quickstart search (digits, MLP space, SQLite)
#   make test         install into .venv (with test extras) and run the linter and the test suite
# Both work on a fresh Debian machine with python3 (>= 3.11); `make test` as root also installs the
# Debian packages the suite needs (PostgreSQL server, Fashion-MNIST) when they are missing.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test lint system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,postgres]'
	touch $@

quickstart: $(VENV)/.installed
	$(BIN)/ntksearch run experiments/quickstart.yaml

system-deps:
	./scripts/system-deps.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check ntksearch tests benchmarks experiments

test: $(VENV)/.installed-test system-deps lint
	$(BIN)/python -m pytest -n 2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
