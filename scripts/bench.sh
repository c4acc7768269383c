#!/usr/bin/env bash
# `make bench`: every side-by-side benchmark of issue 6 in one run, on this host, and
# its tables written into BENCHMARKS.md (between the `bench:begin` / `bench:end`
# markers) under a description of the machine. Each step prints its own progress.
#
#   scripts/bench.sh            echo vs peers, memory at 100k, fan-out 10k and 50k,
#                               resume storm of 20k, compression against none
#   BENCH_BIG=1 scripts/bench.sh  also the biggest run: 1,000,000 connections (needs
#                               `tuning/apply --connections 1000000 --processes 130`)
#   BENCH_ROUNDS=N              echo rounds (default 7)
#   BENCH_OUT=FILE              write the section to FILE instead of BENCHMARKS.md
#   BENCH_SETTLE=S              seconds of quiet before each scale run (default 10)
#
# Needs a release build of the workspace (done here) and the tuning of tuning/check for
# 100,000 connections.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
out="${BENCH_OUT:-$root/BENCHMARKS.md}"
rounds="${BENCH_ROUNDS:-7}"
section="$(mktemp)"
trap 'rm -f "$section"' EXIT

step() { echo "[bench] $*" >&2; }

step "building (release) ..."
cargo build --release --workspace --bins >&2

{
  echo "## Latest \`make bench\` run"
  echo
  echo "Written by \`scripts/bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)')."
  echo
  echo "| machine | |"
  echo "|---|---|"
  echo "| CPU | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores |"
  echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
  echo "| kernel | $(uname -r) |"
  echo "| toolchain | $(rustc --version) |"
  echo "| open-file limit | $(ulimit -Hn) per process |"
  echo
} >"$section"

step "echo: edge vs tokio-tungstenite vs fastwebsockets, $rounds rounds ..."
{
  echo "### Echo against the Rust peers"
  echo
  echo "\`echo_load --rounds $rounds\`: the three servers take turns on core 0, the client on core 1; medians over the rounds. Closed-loop rows saturate both cores (the client's kernel work per message equals the server's); the paced rows offer a fixed rate and divide by the server process's CPU time (user + system, \`/proc/<pid>/stat\`): messages per server CPU-second. Floors: edge ≥ 1.1 × the faster peer at 100 × 20 B; ≥ 1.3 × fastwebsockets at 200 × 16 KiB."
  echo
  "$bin/echo_load" --seconds 3 --rounds "$rounds"
  echo
} >>"$section"

scale() {
  local title="$1" note="$2"
  shift 2
  # Let the host settle between runs: the last run's sockets leave TIME_WAIT entries
  # and freed slab behind, and a storm measured straight after a 50k fan-out pays
  # for them.
  sleep "${BENCH_SETTLE:-10}"
  step "$title ..."
  {
    echo "### $title"
    echo
    echo "$note"
    echo
    "$@" | sed -n '/^|/p'
    echo
  } >>"$section"
}

scale "Memory: 100,000 idle subscribed connections, 1,000 keys" \
  "\`SCALE_KEYS=1000 scripts/scale.sh memory 100000\`: 7 edge processes share the port (this host allows 20,000 open files per process), 7 generator processes. Floor: ≤ 512 B of edge user space per connection." \
  env SCALE_KEYS=1000 scripts/scale.sh memory 100000
scale "Memory: 100,000 idle subscribed connections, each its own key" \
  "\`scripts/scale.sh memory 100000\`: as above, with one group (and one store watch) per connection." \
  scripts/scale.sh memory 100000
scale "Fan-out: one key watched by 10,000 connections" \
  "\`SCALE_RATE=40 scripts/scale.sh fanout 10000\`: 40 writes/s of 64-byte values, 400,000 deliveries/s offered to one edge worker. Floor: ≥ 400,000 deliveries/s per edge core." \
  env SCALE_RATE=40 scripts/scale.sh fanout 10000
scale "Fan-out: one key watched by 50,000 connections" \
  "\`SCALE_RATE=8 scripts/scale.sh fanout 50000\`: 8 writes/s to 50,000 watchers over 4 edge processes (400,000 deliveries/s offered)." \
  env SCALE_RATE=8 SCALE_PROCS=4 scripts/scale.sh fanout 50000
scale "Resume storm: 20,000 clients" \
  "\`scripts/scale.sh resume 20000\`: 20,000 clients on 100 keys drop, 20 changes per key are written, and all come back at once with their tokens. Floor: all caught up in ≤ 2 s." \
  scripts/scale.sh resume 20000
scale "Compression (permessage-deflate) against none" \
  "\`scripts/bench-compression.sh\`: the edge with \`--compression true\`; subscribers that ask for compression against subscribers that do not, rounds alternating (fan-out of 1 KiB JSON sensor rows to 10,000 subscribers at 200,000 deliveries/s offered and at 400,000; idle subscribed connections), and \`echo_load --deflate\` (per server CPU-second at a fixed offered rate). Floors: fan-out ≥ 0.8 of the uncompressed deliveries per edge CPU-second; idle memory difference < 64 B per connection." \
  scripts/bench-compression.sh
if [ "${BENCH_BIG:-0}" = 1 ]; then
  scale "The biggest run: 1,000,000 subscribed connections" \
    "\`SCALE_KEYS=1000 scripts/scale.sh memory 1000000\`: 63 edge processes, 67 generator processes, all on loopback." \
    env SCALE_KEYS=1000 scripts/scale.sh memory 1000000
fi

if [ "$out" = "$root/BENCHMARKS.md" ]; then
  python3 - "$out" "$section" <<'EOF'
import sys
path, section = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
block = f"{begin}\n{section.rstrip()}\n{end}"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1]
else:
    text = text.rstrip() + "\n\n" + block + "\n"
open(path, "w").write(text)
EOF
  step "written into BENCHMARKS.md"
else
  cp "$section" "$out"
  step "written to $out"
fi
cat "$section"
