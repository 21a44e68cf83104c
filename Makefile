# GridWatch: the two commands.
#   make demo   set up (a virtualenv in .venv) and run the embedded demo on sample_data/
#   make test   set up, make sure Mosquitto / Redis / PostgreSQL answer, run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= vision,report,postgres,kafka,dev

.PHONY: setup demo test services lint bench wheel-check

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

demo: setup
	$(BIN)/gridwatch demo $(DEMO_ARGS)

services:
	bash scripts/services.sh

test: setup services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# the built wheel in a fresh venv (base install only) behaves like the checkout
wheel-check: setup
	bash scripts/check_wheel.sh $(BIN)/python

bench: setup
	$(BIN)/python benchmarks/replay_bench.py
