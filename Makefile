# The README's two commands: `make run` (install and serve) and `make test` (install and test);
# `make docs` serves the documentation site on 127.0.0.1.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# The browser tests (tests/browser) drive Debian's Chromium through Playwright.
export CHROMIUM ?= /usr/bin/chromium
# The shared embedding cache's tests (tests/*/test_cache_redis.py) start Debian's redis-server.
export EMBEDSERVE_REDIS_SERVER ?= /usr/bin/redis-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
# MkDocs 1.x prints a banner about its successor on every build
export NO_MKDOCS_2_WARNING ?= 1

.PHONY: run test test-fast container-prereqs lint docs reference-venv bench bench-sts bench-eval bench-quality screenshot clean

# torch first and pinned, so nothing later lets pip pick another (CUDA) build.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[models]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[models,eval,test,ray,docs]"
	touch $@

# Playwright's own browser download needs the network: use the distribution's Chromium, installed
# when missing. `apt-get update` runs only when the install fails without it (no package lists yet).
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "no $(CHROMIUM) and no apt-get: install Chromium and set CHROMIUM=<path>" >&2; exit 1; }
	$(APT_INSTALL) chromium || { $(SUDO) apt-get update -q && $(APT_INSTALL) chromium; }

$(EMBEDSERVE_REDIS_SERVER):
	@command -v apt-get >/dev/null || { echo "no $(EMBEDSERVE_REDIS_SERVER) and no apt-get: install redis-server and set EMBEDSERVE_REDIS_SERVER=<path>" >&2; exit 1; }
	$(APT_INSTALL) redis-server || { $(SUDO) apt-get update -q && $(APT_INSTALL) redis-server; }

# The reference libraries the multi-vector tests check against (pylate, FlagEmbedding) pin
# sentence-transformers 5.3 and transformers <= 5.3: a venv of their own, torch pinned first and
# again with the rest; pylate without its dependencies (fast-plaid, its index, pins torch 2.11).
REFERENCE_VENV ?= .venv-reference
export EMBEDSERVE_REFERENCE_PYTHON ?= $(abspath $(REFERENCE_VENV))/bin/python
$(REFERENCE_VENV)/.installed:
	$(PYTHON) -m venv $(REFERENCE_VENV)
	$(REFERENCE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(REFERENCE_VENV)/bin/pip install --quiet "torch==$(TORCH_VERSION)"
	$(REFERENCE_VENV)/bin/pip install --quiet "torch==$(TORCH_VERSION)" "sentence-transformers==5.3.0" \
		"transformers==5.3.0" scipy datasets pandas accelerate "ujson==5.12.0" "FlagEmbedding==1.4.2"
	$(REFERENCE_VENV)/bin/pip install --quiet --no-deps "pylate==1.6.0"
	touch $@

reference-venv: $(REFERENCE_VENV)/.installed

# The image test (tests/container) builds the Dockerfile with podman: podman from apt and a local
# debian:bookworm-slim made with debootstrap, when missing (no image registry is needed).
container-prereqs:
	.ci/container-prereqs.sh

run: $(VENV)/.installed
	$(BIN)/embedserve serve

test: $(VENV)/.installed-test $(REFERENCE_VENV)/.installed $(CHROMIUM) $(EMBEDSERVE_REDIS_SERVER) container-prereqs
	$(BIN)/ruff check src tests bench docs/hooks
	$(BIN)/ruff format --check src tests bench docs/hooks
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --site-dir build/site  # not --quiet: it hides the warnings --strict counts
	$(BIN)/python -m pytest

test-fast: $(VENV)/.installed-test $(REFERENCE_VENV)/.installed $(CHROMIUM) $(EMBEDSERVE_REDIS_SERVER)
	$(BIN)/python -m pytest -m "not slow"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench docs/hooks
	$(BIN)/ruff format --check src tests bench docs/hooks
	$(BIN)/mypy

# The documentation site on http://127.0.0.1:8000, rebuilt as docs/, mkdocs.yml or the code change.
docs: $(VENV)/.installed-test
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(BIN)/pip install --quiet -e ".[models,test,bench,ray,docs]"
	touch $@

# Infinity, the peer the batching benchmark compares with, in a venv of its own (torch pinned first).
INFINITY_VENV := bench/.venv-infinity
$(INFINITY_VENV)/.installed:
	$(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFINITY_VENV)/bin/pip install --quiet "torch==$(TORCH_VERSION)"
	$(INFINITY_VENV)/bin/pip install --quiet "infinity-emb[server,torch,optimum,einops,logging]==0.0.78"
	touch $@

# Dynamic batching: the in-process ceiling, embedserve and Infinity under the same loads (bench/batching.py).
bench: $(VENV)/.installed-bench $(INFINITY_VENV)/.installed
	$(BIN)/python bench/batching.py

bench-sts: $(VENV)/.installed-test
	$(BIN)/python bench/sts.py --json bench/results/sts.json

# Every engine (torch, onnx, onnx-int8, openvino, openvino-int8) against torch through the API: STS and SciFact.
bench-quality: $(VENV)/.installed-test
	$(BIN)/python bench/quality.py --json bench/results/quality.json

# The README's (and docs/playground.md's) picture of the playground, taken by the browser test of the sparse panel.
screenshot: $(VENV)/.installed-test $(CHROMIUM)
	$(BIN)/python -m pytest -q tests/browser -k sparse_two_texts
	cp test-output/playground/sparse-two-texts.png docs/playground.png

# Full SciFact through the server into an embedded PostgreSQL + pgvector (tens of minutes on 2 cores).
bench-eval: $(VENV)/.installed-test
	$(BIN)/python bench/eval.py --json bench/results/eval_scifact.json

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis test-output
