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
)

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
