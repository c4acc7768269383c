#!/usr/bin/env bash
# Scale runs on this host (issue 6): a store, several edge processes sharing one port
# (SO_REUSEPORT, each one worker, so no process passes the 20,000 open-file limit),
# and the load generator in several processes. Prints each run's table.
#
#   scripts/scale.sh memory [CONNS]      idle subscribed connections, memory per connection
#   scripts/scale.sh fanout [SUBS]       one key watched by SUBS connections
#   scripts/scale.sh resume [CLIENTS]    a resume storm
#   scripts/scale.sh presence [MEMBERS]  one channel joined by MEMBERS connections
#
# Needs a release build (`cargo build --release --workspace`). EDGE_BIN runs another
# edge binary (an older build, for a before/after ratio) with the same store and load
# generator; STORE_BIN another store binary; SCALE_WORKERS workers per edge process
# (default 1). SCALE_AUTH=1 runs the edges with auth required (HS256) and gives every
# connection its own token, sent as its first message. SCALE_BROADCAST=1 makes
# `fanout` a broadcast: the writer publishes to `@all`, which every connection gets
# without subscribing. SCALE_EDGE_ARGS adds flags to every edge (e.g. "--compression
# true"), SCALE_LG_ARGS to the load generator (e.g. "--deflate --value-json
# --value-size 1024": subscribers that ask for compression, 1 KiB JSON values).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
edge_bin="${EDGE_BIN:-$bin/edge}"
scenario="${1:-memory}"
n="${2:-}"
port="${SCALE_PORT:-8080}"
per_edge=16000
dir="$(mktemp -d)"
pids=()
cleanup() {
  # Edges first (they drain), the store last, so that no edge logs its link dropping.
  for ((i = 1; i < ${#pids[@]}; i++)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for ((i = 1; i < ${#pids[@]}; i++)); do wait "${pids[i]}" 2>/dev/null || true; done
  [ "${#pids[@]}" -gt 0 ] && kill -TERM "${pids[0]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

case "$scenario" in
  memory) n="${n:-100000}" ;;
  fanout) n="${n:-10000}" ;;
  resume) n="${n:-20000}" ;;
  presence) n="${n:-100000}" ;;
  *) echo "unknown scenario $scenario (memory, fanout, resume, presence)" >&2; exit 2 ;;
esac
edges=$(( (n + per_edge - 1) / per_edge ))

echo "[scale] $scenario: $n connections, $edges edge process(es) on port $port, store data in $dir" >&2
RUST_LOG=warn "${STORE_BIN:-$bin/store}" --data-dir "$dir/store" --listen 127.0.0.1:7400 --admin 127.0.0.1:7401 &
pids+=($!)
sleep 1
edge_pids=()
auth_edge=()
auth_lg=()
if [ "${SCALE_AUTH:-0}" = 1 ]; then
  head -c 48 /dev/urandom | base64 > "$dir/hs256.secret"
  auth_edge=(--auth required --auth-secret-file "$dir/hs256.secret")
  auth_lg=(--auth-secret-file "$dir/hs256.secret")
fi
fanout_edge=()
# Generator processes: at least 2, and at most 15,000 sockets each (the open-file limit
# is 20,000 per process).
fanout_procs=$(( (n + 14999) / 15000 ))
[ "$fanout_procs" -lt 2 ] && fanout_procs=2
# The writer sends a put and a probe per write: from 500 writes/s it would be over the
# default 1,000 messages/s per connection (refused, then closed with 1008).
[ "$scenario" = fanout ] && fanout_edge=(--messages-per-sec 0)
for _ in $(seq "$edges"); do
  # shellcheck disable=SC2086
  RUST_LOG=warn "$edge_bin" --listen "127.0.0.1:$port" --workers "${SCALE_WORKERS:-1}" --pin false --max-connections 19000 ${auth_edge[@]+"${auth_edge[@]}"} ${fanout_edge[@]+"${fanout_edge[@]}"} ${SCALE_EDGE_ARGS:-} &
  pids+=($!); edge_pids+=($!)
done
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
sleep 1
ep=$(IFS=,; echo "${edge_pids[*]}")
# shellcheck disable=SC2206
lg=("$bin/loadgen" --target "127.0.0.1:$port" --edge-pid "$ep" --concurrency "${SCALE_CONCURRENCY:-256}" ${auth_lg[@]+"${auth_lg[@]}"} ${SCALE_LG_ARGS:-})
case "$scenario" in
  memory) "${lg[@]}" connect --subscribe --conns "$n" --keys "${SCALE_KEYS:-$n}" --hold 5 ;;
  fanout) "${lg[@]}" fanout --conns "$n" --keys 1 --rate "${SCALE_RATE:-40}" --seconds "${SCALE_SECONDS:-10}" --procs "${SCALE_PROCS:-$fanout_procs}" ${SCALE_BROADCAST:+--broadcast} ;;
  resume) "${lg[@]}" resume --conns "$n" --keys "${SCALE_KEYS:-100}" --missed "${SCALE_MISSED:-20}" ;;
  presence) "${lg[@]}" connect --conns "$n" --hold 1 --presence "bench/{1}" --store-pid "${pids[0]}" ;;
esac
if [ "$scenario" = fanout ]; then
  # The edge's change batches (one edge process answers: with several, a sample).
  curl -sf "http://127.0.0.1:$port/metrics" | awk '
    /^ringline_edge_change_sends_total/ { s += $2 }
    /^ringline_edge_change_frames_total/ { f += $2 }
    /^ringline_edge_rounds_send_limited_total/ { d += $2 }
    /^ringline_edge_rate_limited_total/ { r += $2 }
    END {
      print "\n| one edge process'"'"'s /metrics | value |\n|---|---:|"
      printf "| sends carrying changes | %d |\n| change frames | %d |\n", s, f
      printf "| **change frames per send** (mean batch) | **%.2f** |\n", (s ? f / s : 0)
      printf "| rounds that reached the send limit | %d |\n", d
      printf "| messages refused as rate_limited | %d |\n", r
    }'
fi
if [ "$scenario" = resume ]; then
  # Resumes that rode on another's join (one edge process answers: with several, a sample).
  curl -sf "http://127.0.0.1:$port/metrics" | awk '
    /^ringline_edge_resume_joins_shared_total/ { j += $2 }
    END {
      print "\n| one edge process'"'"'s /metrics | value |\n|---|---:|"
      printf "| resumes that rode on another'"'"'s join (one key each: a join per resume) | %d |\n", j
    }'
fi
