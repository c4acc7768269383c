#!/usr/bin/env bash
# Installs the real WebSocket clients the interop tests drive, once, inside the
# repository (these folders are git-ignored):
#   .venv-interop/      Python 3 venv with `websockets` and `openapi-spec-validator`
#   .interop-node/      node_modules with `ws` (needs node + npm: Debian nodejs, npm)
#   clients/js/node_modules/  the TypeScript client's pinned typescript, esbuild, ws and
#                             flatbuffers (npm ci)
# and Debian's `chromium` for the headless-browser test and `haproxy` for the cluster
# tests and `make cluster`, and `nginx` to test the shipped nginx config.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -x "$root/.venv-interop/bin/python" ]] || ! "$root/.venv-interop/bin/python" -c "import websockets, openapi_spec_validator" 2>/dev/null; then
  echo "interop: installing Python websockets and openapi-spec-validator into .venv-interop/ ..." >&2
  python3 -m venv "$root/.venv-interop"
  "$root/.venv-interop/bin/pip" install -q "websockets==15.0.1" "openapi-spec-validator==0.7.1"
fi
apt_install() {
  if [[ $(id -u) -eq 0 ]]; then apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq "$@" >/dev/null; fi
}
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "interop: installing chromium (Debian) ..." >&2
  apt_install chromium
fi
if ! command -v haproxy >/dev/null 2>&1; then
  echo "interop: installing haproxy (Debian) ..." >&2
  apt_install haproxy
fi
if ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
  echo "interop: installing nginx (Debian) ..." >&2
  apt_install nginx
fi
if [[ ! -d "$root/.interop-node/node_modules/ws" ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "interop: installing node and npm (Debian) ..." >&2
    apt_install nodejs npm
  fi
  echo "interop: installing Node ws into .interop-node/ ..." >&2
  mkdir -p "$root/.interop-node"
  (cd "$root/.interop-node" && npm install --silent --no-audit --no-fund ws@8.18.3 >/dev/null)
fi
# The TypeScript client's toolchain (the pinned `typescript`, and `ws` for its tests in
# Node < 22), from its lock file.
if [[ ! -x "$root/clients/js/node_modules/typescript/bin/tsc" || ! -e "$root/clients/js/node_modules/esbuild/bin/esbuild" || ! -e "$root/clients/js/node_modules/flatbuffers/package.json" ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "interop: installing node and npm (Debian) ..." >&2
    apt_install nodejs npm
  fi
  echo "interop: installing clients/js's dependencies (npm ci) ..." >&2
  (cd "$root/clients/js" && npm ci --silent --no-audit --no-fund >/dev/null)
fi
