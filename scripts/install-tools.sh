#!/usr/bin/env bash
# Installs the non-Python tools the tests, the demo and the benchmarks run for
# real: Debian packages (when missing) and Go-built binaries into .venv/bin.
# Idempotent: quick when everything is there. Called by `make get`.
set -euo pipefail

VENV_BIN="${VENV_BIN:-.venv/bin}"
mkdir -p "$VENV_BIN"

# Debian packages: command -> package.
declare -A APT_PACKAGES=(
  [skopeo]=skopeo
  [curl]=curl
  [wrk]=wrk            # load generator for `make bench`
  [wasm-opt]=binaryen  # trims the Go add-header module (meshwasm.toolchain.go)
)
# `install-tools.sh --bench`: also what only the benchmarks compare against (tests never need it).
if [[ " $* " == *" --bench "* ]]; then
  APT_PACKAGES[nginx]=nginx  # bench/fetcher.py: static file serving baseline
fi

missing=()
for cmd in "${!APT_PACKAGES[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${APT_PACKAGES[$cmd]}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
    echo "install-tools: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  echo "install-tools: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The OCI registry the tests and `make docker-push` run (CNCF distribution), through the Go
# module proxy into the venv; Debian's older docker-registry when that fails.
REGISTRY_VERSION="v3.1.2"
if [[ ! -x "$VENV_BIN/registry" ]]; then
  echo "install-tools: go install distribution registry $REGISTRY_VERSION" >&2
  if ! GOBIN="$(cd "$VENV_BIN" && pwd)" go install "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"; then
    echo "install-tools: go install failed; falling back to Debian docker-registry" >&2
    if ! command -v docker-registry >/dev/null 2>&1; then
      APT_SUDO=""; [[ $(id -u) -ne 0 ]] && APT_SUDO=sudo
      $APT_SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $APT_SUDO apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
    fi
  fi
fi
