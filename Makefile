# `make demo` runs the main job (the layer sweep on the embedded demo data); `make test` runs the tests.
# Both create .venv and install the project first when needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint format demo benchmark clean

install: $(VENV)/.installed

# torch and torchvision first, pinned: that pair is the one this project is tested with, and installing them
# on their own keeps pip from resolving another (multi-GB) build for a dependency's looser range.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python studies/layer_sweep.py

benchmark: install
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
