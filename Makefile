# bvbench: `make demo` and `make test` are the two commands a fresh machine needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint nightly clean

install: $(STAMP)

# `make install TORCH=cpu`: PyTorch's CPU-only wheels from $(TORCH_INDEX) (a CPU runner needs no CUDA build, which
# is several GB); the default takes PyPI's build. The torch and torchvision pins come from pyproject.toml. Where
# that index cannot be reached, pip's configured indexes serve the same pins (a warning says so). Switching an
# existing venv: `make clean install TORCH=cpu`.
TORCH ?=
TORCH_INDEX ?= https://download.pytorch.org/whl/$(TORCH)
TORCH_PINS := $(shell grep -oE '"torch(vision)?==[^"]+"' pyproject.toml)
TORCH_PINS_TEXT := $(subst ",,$(TORCH_PINS))

# Re-installs (and so rebuilds the C kernels of bvbench/engine/csrc) only when pyproject.toml, setup.py or a
# kernel source changes; a second `make install` does nothing.
CSRC := $(wildcard bvbench/engine/csrc/*.c bvbench/engine/csrc/*.h)
$(STAMP): pyproject.toml setup.py $(CSRC)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
ifneq ($(TORCH),)
	$(BIN)/pip install --quiet --retries 2 --index-url $(TORCH_INDEX) $(TORCH_PINS) \
	  || echo "make install: $(TORCH_INDEX) did not serve $(TORCH_PINS_TEXT); the default PyTorch build is installed"
endif
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/bvbench run quickstart --out results-demo
	$(BIN)/bvbench table quickstart --results results-demo

# The suite runs on every core (pytest-xdist, one torch thread per worker); `make test TEST_JOBS=0` runs it serially.
TEST_JOBS ?= auto
test: install
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist worksteal --durations=25

# The nightly reproduction: the cpu profile of every recipe (CIFAR-10 from $$BVBENCH_DATA where a recipe's own
# data is missing), then tables, plots and results/README.md. Finished runs are reused; a second call resumes.
NIGHTLY_HOURS ?= 3
nightly: install
	$(BIN)/python -m bvbench.nightly --out results --budget-hours $(NIGHTLY_HOURS)

lint: install
	$(BIN)/ruff check bvbench tests benchmarks

clean:
	rm -rf $(VENV) results-demo .pytest_cache build bvbench/engine/_bvkernels*.so
