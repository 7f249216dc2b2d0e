# The README's two commands: `make run` (install and serve) and `make test` (install and test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: run test test-fast lint bench-sts bench-eval clean

# torch first and pinned, so nothing later lets pip pick another (CUDA) build.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[models]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[models,eval,test]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/embedserve serve

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench-sts: $(VENV)/.installed-test
	$(BIN)/python bench/sts.py --json bench/results/sts.json

# Full SciFact through the server into an embedded PostgreSQL + pgvector (tens of minutes on 2 cores).
bench-eval: $(VENV)/.installed-test
	$(BIN)/python bench/eval.py --json bench/results/eval_scifact.json

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
