# bvbench: `make demo` and `make test` are the two commands a fresh machine needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint nightly clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes; a second `make install` does nothing.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/bvbench run quickstart --out results-demo
	$(BIN)/bvbench table quickstart --results results-demo

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check bvbench tests benchmarks

clean:
	rm -rf $(VENV) results-demo .pytest_cache
