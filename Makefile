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
ZIG_PLUGIN_DIR := plugins/add-header-zig
# build/add-header.wasm is the implementation `make build` ships: zig (runtime-free,
# same contract, see plugins/add-header-zig) or go (the seed's reference).
PLUGIN_IMPL  ?= zig
ifeq ($(filter $(PLUGIN_IMPL),go zig),)
$(error PLUGIN_IMPL must be go or zig, not '$(PLUGIN_IMPL)')
endif
WASM         := build/add-header.wasm
GO_WASM      := build/add-header-go.wasm
ZIG_WASM     := build/add-header-zig.wasm
GO_SOURCES   := $(wildcard $(PLUGIN_DIR)/*.go) $(PLUGIN_DIR)/go.mod $(PLUGIN_DIR)/go.sum
ZIG_SOURCES  := $(wildcard $(ZIG_PLUGIN_DIR)/src/*.zig) $(ZIG_PLUGIN_DIR)/build.zig
PYTEST_ARGS  ?=

.PHONY: get get-oracle get-cosign get-cluster build test test-go test-py test-cluster lint clean bench \
	bench-fetcher bench-fetcher-hostile bench-gateway demo crds corpus corpus-deps

get: $(STAMP) $(GO_STAMP) $(TOOLS_STAMP) get-oracle get-cosign corpus-deps

# Istio's own code as a library (oracle/istio, pinned in its go.mod): the fidelity tests' oracle.
# A cold build compiles much of Istio (about 5.5 minutes on 2 cores); Go's build cache makes the
# warm one seconds.
ISTIO_ORACLE := build/istio-oracle
ORACLE_SOURCES := oracle/istio/go.mod oracle/istio/go.sum $(wildcard oracle/istio/*.go)
get-oracle: $(ISTIO_ORACLE)
$(ISTIO_ORACLE): $(ORACLE_SOURCES)
	@mkdir -p build
	cd oracle/istio && go build -trimpath -o $(CURDIR)/$@.tmp . && mv $(CURDIR)/$@.tmp $(CURDIR)/$@

# The plugin corpus (tests/fixtures/corpus, docs/host-corpus.md): AssemblyScript from npm, pinned
# in its package-lock.json, and Rust's wasm32-wasip1 target.
CORPUS_AS_DIR    := tests/fixtures/corpus/assemblyscript
CORPUS_NPM_STAMP := $(CORPUS_AS_DIR)/node_modules/.meshwasm-npm-ci
corpus-deps: $(CORPUS_NPM_STAMP)
	@if command -v rustup >/dev/null; then \
		rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1; fi
$(CORPUS_NPM_STAMP): $(CORPUS_AS_DIR)/package.json $(CORPUS_AS_DIR)/package-lock.json
	cd $(CORPUS_AS_DIR) && npm ci --no-audit --no-fund
	@touch $@

# Every corpus module into build/corpus/, rebuilt only when its sources or toolchain change. The
# first zig builds on a machine compile wasi-libc and libc++ into Zig's cache (minutes, once).
corpus: $(STAMP) corpus-deps
	$(BIN)/python tests/fixtures/corpus/build.py

# The real engine (`meshwasm cluster up`, `meshwasm up --engine istio`, tests/cluster): istiod and
# pilot-agent from oracle/istio's pin, kube-apiserver, kubectl and etcd from engine/kubernetes
# (k8s.io/kubernetes v1.36.1), into build/cluster. Cold: minutes each; warm: seconds.
CLUSTER_DIR := build/cluster
CLUSTER_ISTIO := $(CLUSTER_DIR)/istio/.built
CLUSTER_KUBE := $(CLUSTER_DIR)/bin/.kubernetes-built
get-cluster: $(CLUSTER_ISTIO) $(CLUSTER_KUBE)
$(CLUSTER_ISTIO): oracle/istio/go.mod oracle/istio/go.sum scripts/get-cluster.sh
	CLUSTER_DIR=$(CLUSTER_DIR) scripts/get-cluster.sh istio
	@touch $@
$(CLUSTER_KUBE): engine/kubernetes/go.mod engine/kubernetes/go.sum scripts/get-cluster.sh
	CLUSTER_DIR=$(CLUSTER_DIR) scripts/get-cluster.sh kubernetes
	@touch $@

# The real cosign CLI (sigstore's Go module, built from source) for the signing interop tests:
# meshwasm's signatures must verify with it and its signatures with meshwasm. A cold build
# compiles cosign and its ~200 dependency modules: 7 min of CPU (24.5 min wall on this shared,
# heavily loaded 2-core machine; a warm rebuild 8 s). The stamp names the version,
# so a warm `make get-cosign` does nothing and changing COSIGN_VERSION rebuilds.
COSIGN_VERSION := v2.6.5
COSIGN         := $(BIN)/cosign
COSIGN_STAMP   := $(VENV)/.cosign-$(COSIGN_VERSION)
get-cosign: $(COSIGN_STAMP)
$(COSIGN_STAMP):
	@test -d $(BIN) || $(PYTHON) -m venv $(VENV)
	@echo "building cosign $(COSIGN_VERSION) from source (several minutes cold)"
	GOBIN=$(CURDIR)/$(BIN) go install -trimpath github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN_VERSION)
	@touch $@

# Istio's CRDs, vendored in src/meshwasm/manifests/crds from the module oracle/istio/go.mod pins.
crds:
	python3 scripts/refresh_istio_crds.py

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

# Re-copied on every `make build` so switching PLUGIN_IMPL always takes effect.
.PHONY: $(WASM)
$(WASM): build/add-header-$(PLUGIN_IMPL).wasm
	cp $< $@.tmp && mv $@.tmp $@

$(GO_WASM): $(STAMP) $(GO_STAMP) $(GO_SOURCES)
	$(MESHWASM) build $(PLUGIN_DIR) -o $(GO_WASM)

$(ZIG_WASM): $(STAMP) $(ZIG_SOURCES)
	$(MESHWASM) build $(ZIG_PLUGIN_DIR) -o $(ZIG_WASM)

# The main job: the seed's demo, locally, with real parts (DEMO_ONESHOT=1 exits after the request).
demo: get $(WASM)
	MESHWASM=$(MESHWASM) WASM=$(WASM) scripts/demo.sh

test: test-go test-py

# The contract runs natively and on the compiled module (proxytest on wazero).
test-go: $(GO_WASM)
	cd $(PLUGIN_DIR) && ADD_HEADER_WASM=$(CURDIR)/$(GO_WASM) go test -count=1 ./...

# The Python tests run over both implementations (tests/conftest.py).
test-py: get corpus $(GO_WASM) $(ZIG_WASM) $(WASM)
	MESHWASM_ADD_HEADER_GO_WASM=$(CURDIR)/$(GO_WASM) MESHWASM_ADD_HEADER_ZIG_WASM=$(CURDIR)/$(ZIG_WASM) \
		MESHWASM_ADD_HEADER_WASM=$(CURDIR)/$(WASM) $(BIN)/pytest --ignore=tests/cluster $(PYTEST_ARGS)

# The same tree through real etcd, kube-apiserver, istiod, pilot-agent and Envoy (one cluster per run).
test-cluster: get get-cluster $(ZIG_WASM)
	MESHWASM_ENGINE_DIR=$(CURDIR)/$(CLUSTER_DIR) MESHWASM_REQUIRE_ENGINE=1 \
		MESHWASM_ADD_HEADER_ZIG_WASM=$(CURDIR)/$(ZIG_WASM) $(BIN)/pytest tests/cluster $(PYTEST_ARGS)

# The first Go build (the foundation commit's source, go build -trimpath, nothing else): the
# baseline the trimmed one is compared with (3,457,013 bytes, sha256 637050bb...).
GO_FIRST_COMMIT := 32661fd
GO_FIRST_WASM   := build/add-header-go-first.wasm
$(GO_FIRST_WASM): $(GO_STAMP)
	rm -rf build/go-first-src && mkdir -p build/go-first-src
	git archive $(GO_FIRST_COMMIT) $(PLUGIN_DIR) | tar -x -C build/go-first-src
	cd build/go-first-src/$(PLUGIN_DIR) && GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 \
		go build -buildmode=c-shared -trimpath -o $(CURDIR)/$@.tmp . && mv $(CURDIR)/$@.tmp $(CURDIR)/$@
	rm -rf build/go-first-src

# Envoy CPU per request: no filter, native filters, the wasm floors, the add-headers (about 4 minutes).
bench: get $(GO_WASM) $(ZIG_WASM) $(GO_FIRST_WASM)
	$(BIN)/python bench/dataplane.py --go-wasm $(GO_WASM) --zig-wasm $(ZIG_WASM) \
		--extra go-first=$(GO_FIRST_WASM) --rounds 7 --seconds 3 --out bench/results

# `meshwasm up`: cold and warm start to the first 200, live-edit latency, failed requests during edits.
bench-gateway: get $(GO_WASM) $(ZIG_WASM)
	$(BIN)/python bench/gateway_up.py --wasm go=$(GO_WASM) --wasm zig=$(ZIG_WASM)

# The wasmfetcher beside nginx (cache hits) and skopeo (cold pulls); nginx is a bench-only install.
bench-fetcher: get
	VENV_BIN=$(BIN) scripts/install-tools.sh --bench
	$(BIN)/python bench/fetcher.py

# The wasmfetcher under a hostile registry beside main: peak RSS of eight 250 MiB pulls, and how
# long a good pull waits behind eight dripping ones (BASELINE=<git revision>).
BASELINE ?= main
bench-fetcher-hostile: get
	$(BIN)/python bench/fetcher_hostile.py --baseline $(BASELINE)

# The seed's image targets, without a Docker engine: an OCI image layout from the module,
# pushed through the OCI distribution API. A local registry for IMAGE's default:
# `$(MESHWASM) image registry --port 5000` (in another terminal).
# The reference tsb/wasm-extension.yaml names (the registry `make demo` and `meshwasm up --registry` start).
IMAGE         ?= 127.0.0.1:5000/meshwasm/add-header:latest
IMAGE_VARIANT ?= compat
IMAGE_LAYOUT  := build/oci/add-header
PUSH_ARGS     ?=

.PHONY: docker-build docker-push
docker-build: $(WASM)
	$(MESHWASM) image build $(WASM) -t $(IMAGE) --variant $(IMAGE_VARIANT) -o $(IMAGE_LAYOUT)

docker-push: docker-build
	$(MESHWASM) image push $(IMAGE_LAYOUT) $(IMAGE) $(PUSH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
