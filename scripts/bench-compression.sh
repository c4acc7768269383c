#!/usr/bin/env bash
# What permessage-deflate costs (issue 19), each figure a ratio measured in one run,
# rounds alternating between the compressed and the uncompressed case:
#
#   1. fan-out: one key watched by 10,000 connections, 1 KiB JSON values (sensor rows),
#      the edge with --compression true, subscribers that ask for compression or not;
#      at a fixed offered rate (COMP_RATE writes/s, default 20: 200,000 deliveries/s,
#      below saturation) and at 40/s (the edge's core saturated). Deliveries per edge
#      CPU-second and bytes on the wire per delivery.
#   2. idle memory: COMP_CONNS (default 50,000) idle subscribed connections with and
#      without compression agreed: edge user space per connection.
#   3. echo: echo_load --deflate (the edge echoing compressed JSON beside the edge
#      echoing it uncompressed), per server CPU-second at a fixed offered rate.
#
#   scripts/bench-compression.sh          all three, COMP_ROUNDS rounds (default 2)
#
# Prints each run's table as it goes, then a summary table (medians, ratios). Needs a
# release build of the workspace.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
rounds="${COMP_ROUNDS:-2}"
rate="${COMP_RATE:-20}"
conns="${COMP_CONNS:-50000}"
log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT
step() { echo "[compression] $*" >&2; }

# The figure in the row whose label contains $2, from table file $1 (digits only).
figure() { grep -F "$2" "$1" | head -1 | awk -F'|' '{print $(NF-1)}' | tr -dc '0-9.'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }

declare -A per_cpu bytes mem
for r in $(seq "$rounds"); do
  for at in "$rate" 40; do
    for mode in plain deflate; do
      lg="--value-json --value-size 1024"
      [ "$mode" = deflate ] && lg="--deflate $lg"
      step "round $r/$rounds: fan-out 10,000 x $at/s, $mode ..."
      f="$log/fanout-$at-$mode-$r"
      SCALE_RATE="$at" SCALE_SECONDS=5 SCALE_EDGE_ARGS="--compression true" SCALE_LG_ARGS="$lg" \
        bash scripts/scale.sh fanout 10000 2>/dev/null | tee "$f" >&2
      per_cpu[$at-$mode]+="$(figure "$f" 'deliveries per edge CPU-second') "
      bytes[$at-$mode]+="$(figure "$f" 'bytes on the wire per delivery') "
    done
  done
  for mode in plain deflate; do
    lg=""
    [ "$mode" = deflate ] && lg="--deflate"
    step "round $r/$rounds: memory, $conns idle subscribed connections, $mode ..."
    f="$log/memory-$mode-$r"
    SCALE_EDGE_ARGS="--compression true" SCALE_LG_ARGS="$lg" \
      bash scripts/scale.sh memory "$conns" 2>/dev/null | tee "$f" >&2
    mem[$mode]+="$(figure "$f" 'edge user space per connection') "
  done
done
step "echo: edge compressed vs edge uncompressed, $rounds rounds ..."
"$bin/echo_load" --deflate --only offered --seconds 4 --rounds "$rounds" \
  --offered 20000 --offered-large 4000 2>/dev/null | tee "$log/echo" >&2

m() { median $1; }
echo
echo "| permessage-deflate, medians of $rounds rounds | compressed | uncompressed | ratio |"
echo "|---|---:|---:|---:|"
for at in "$rate" 40; do
  c="$(m "${per_cpu[$at-deflate]}")"; u="$(m "${per_cpu[$at-plain]}")"
  echo "| fan-out 10,000 x $at/s, 1 KiB JSON: deliveries per edge CPU-second | $c | $u | **$(ratio "$c" "$u")** |"
  c="$(m "${bytes[$at-deflate]}")"; u="$(m "${bytes[$at-plain]}")"
  echo "| fan-out 10,000 x $at/s: bytes on the wire per delivery | $c | $u | $(ratio "$c" "$u") |"
done
c="$(m "${mem[deflate]}")"; u="$(m "${mem[plain]}")"
echo "| $conns idle subscribed connections: edge user space per connection (B) | $c | $u | difference $(awk -v a="$c" -v b="$u" 'BEGIN {print a - b}') B |"
while IFS= read -r line; do
  label="$(echo "$line" | awk -F'|' '{print $2}' | sed 's/^ *//; s/ *$//')"
  c="$(echo "$line" | awk -F'|' '{print $4}' | tr -dc '0-9')"
  u="$(echo "$line" | awk -F'|' '{print $5}' | tr -dc '0-9')"
  echo "| echo $label | $c | $u | **$(ratio "$c" "$u")** |"
done < <(grep -F '**median**' "$log/echo")
