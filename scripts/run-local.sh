#!/usr/bin/env bash
# `make run`: a local store (embedded default cluster map, data in data/store-1) and
# an edge in front of it. Ctrl-C (or SIGTERM) stops both cleanly.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
cd "$root"
"$bin/store" --data-dir data/store-1 &
store=$!
"$bin/edge" &
edge=$!
stop() { kill -TERM "$edge" "$store" 2>/dev/null || true; wait "$edge" "$store" 2>/dev/null || true; }
trap stop INT TERM EXIT
sleep 1
cat <<MSG

  Ringline is running:
    store  127.0.0.1:7400 (edge links), metrics http://127.0.0.1:7401/metrics, data in data/store-1
    edge   http://127.0.0.1:8080/  (a page to subscribe, write and watch changes live)
           http://127.0.0.1:8080/healthz, http://127.0.0.1:8080/metrics
           client protocol: ws://127.0.0.1:8080/ws  (subprotocol ringline.v1.json or
           ringline.v1.fb; e.g. send {"op":"sub","id":1,"key":"k"} then
           {"op":"put","id":2,"key":"k","value":{"hello":"world"}})
           WebSocket echo: ws://127.0.0.1:8080/echo
  Ctrl-C stops both.

MSG
wait -n "$edge" "$store" || true
