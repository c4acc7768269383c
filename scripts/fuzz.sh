#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds (default 60) on the stable toolchain
# (RUSTC_BOOTSTRAP=1), seeded from fuzz/seeds/<target>, and prints a table.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"; shift || true
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cd fuzz && cargo fuzz list)
logs=$(mktemp -d)
printf '[fuzz] building %s target(s)\n' "${#targets[@]}"
(cd fuzz && cargo fuzz build -O) >"$logs/build.log" 2>&1 || { cat "$logs/build.log"; exit 1; }
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  printf '[fuzz] %-12s %ss ...\n' "$t" "$secs"
  began=$(date +%s)
  if (cd fuzz && cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048) >"$logs/$t.log" 2>&1; then
    echo ok >"$logs/$t.status"
  else
    echo CRASH >"$logs/$t.status"; failed=1
    grep -E 'panicked|ERROR|SUMMARY|artifact' "$logs/$t.log" | head -20
  fi
  echo $(( $(date +%s) - began )) >"$logs/$t.secs"
done
printf '\n| target | result | seconds | runs | execs/s | corpus units added | peak RSS MB |\n|---|---|---|---|---|---|---|\n'
for t in "${targets[@]}"; do
  stat() { { grep -oE "stat::$1: *[0-9]+" "$logs/$t.log" || true; } | grep -oE "[0-9]+$" | tail -1 || true; }
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$(cat "$logs/$t.status")" "$(cat "$logs/$t.secs")" \
    "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "$(stat new_units_added)" "$(stat peak_rss_mb)"
done
echo "(logs: $logs)"
exit $failed
