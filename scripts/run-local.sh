#!/usr/bin/env bash
# `make run`: a local store (embedded default cluster map, data in data/store-1) and
# an edge in front of it. Ctrl-C (or SIGTERM) stops both cleanly.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
cd "$root"
edge=""
store=""
# The edge first (its clients are closed with 1001), then the store it links to.
stop() {
  trap - INT TERM EXIT
  if [ -n "$edge" ]; then kill -TERM "$edge" 2>/dev/null || true; wait "$edge" 2>/dev/null || true; fi
  if [ -n "$store" ]; then kill -TERM "$store" 2>/dev/null || true; wait "$store" 2>/dev/null || true; fi
}
trap stop INT TERM EXIT
# In a session of its own: Ctrl-C (SIGINT to the terminal's process group) reaches
# the edge and this script, and the store is stopped only once the edge is gone.
# The cluster secret the store and the edge prove to each other on their links:
# made once, kept with the data (readable by this user only).
secret=data/cluster.secret
if [ ! -s "$secret" ]; then
  mkdir -p data
  (umask 077 && head -c 32 /dev/urandom | base64 > "$secret")
fi
setsid "$bin/store" --data-dir data/store-1 --cluster-secret-file "$secret" &
store=$!
# The store first, and ready (/health says ok once it serves links), so the edge's
# links come up at once instead of logging refused connections.
for _ in $(seq 1 100); do
  if curl -sf http://127.0.0.1:7401/health >/dev/null 2>&1; then break; fi
  if ! kill -0 "$store" 2>/dev/null; then echo "run-local: the store did not start" >&2; exit 1; fi
  sleep 0.1
done
"$bin/edge" --cluster-secret-file "$secret" &
edge=$!
sleep 0.5
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
