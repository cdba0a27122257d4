# The two commands of README.md: `make demo` and `make test`. Each sets itself up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: demo test lint docs bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# runs/demo is the demo's own folder: each `make demo` starts afresh there (--force)
demo: $(BIN)/.installed
	$(BIN)/reidkit demo --force

test: $(BIN)/.installed
	-@bash scripts/install_chromium.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 -q tests

lint: $(BIN)/.installed
	$(BIN)/ruff check .

docs: $(BIN)/.installed
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .ruff_cache
