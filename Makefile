# meshwasm: the seed's targets (get, build, test, clean, docker-build, docker-push)
# plus the main job (demo). Targets that need set-up run `get` themselves.

SHELL        := /bin/bash
PYTHON       ?= python3
VENV         := .venv
BIN          := $(VENV)/bin
MESHWASM     := $(BIN)/meshwasm
STAMP        := $(VENV)/.installed
GO_STAMP     := $(VENV)/.go-modules
TOOLS_STAMP  := $(VENV)/.tools
PLUGIN_DIR   := plugins/add-header
WASM         := build/add-header.wasm
GO_SOURCES   := $(wildcard $(PLUGIN_DIR)/*.go) $(PLUGIN_DIR)/go.mod $(PLUGIN_DIR)/go.sum
PYTEST_ARGS  ?=

.PHONY: get build test test-go test-py lint clean

get: $(STAMP) $(GO_STAMP) $(TOOLS_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

$(GO_STAMP): $(PLUGIN_DIR)/go.mod $(PLUGIN_DIR)/go.sum
	cd $(PLUGIN_DIR) && go mod download
	@touch $@

$(TOOLS_STAMP): scripts/install-tools.sh $(STAMP)
	VENV_BIN=$(BIN) scripts/install-tools.sh
	@touch $@

build: $(WASM)

$(WASM): $(STAMP) $(GO_STAMP) $(GO_SOURCES)
	$(MESHWASM) build $(PLUGIN_DIR) -o $(WASM)

test: test-go test-py

# The contract runs natively and on the compiled module (proxytest on wazero).
test-go: $(WASM)
	cd $(PLUGIN_DIR) && ADD_HEADER_WASM=$(CURDIR)/$(WASM) go test -count=1 ./...

test-py: get $(WASM)
	MESHWASM_ADD_HEADER_WASM=$(CURDIR)/$(WASM) $(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
