#!/usr/bin/env python3
"""Prints criterion results as a markdown table: median time and throughput per benchmark.

Usage: scripts/bench-table.py [CRITERION_DIR]   (default: $CARGO_TARGET_DIR/criterion or target/criterion)
"""
import json
import os
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else
            Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "criterion")
rows = []
for bench in sorted(root.rglob("new/benchmark.json")):
    meta = json.loads(bench.read_text())
    est = json.loads((bench.parent / "estimates.json").read_text())
    ns = est["median"]["point_estimate"]
    tp = meta.get("throughput") or {}
    if "Bytes" in tp:
        rate = f"{tp['Bytes'] / ns:.2f} GB/s"
    elif "Elements" in tp:
        per_s = tp["Elements"] / ns * 1e9
        rate = f"{per_s / 1e6:.2f} M/s" if per_s >= 1e6 else f"{per_s / 1e3:.1f} k/s"
    else:
        rate = ""
    if ns >= 1e6:
        t = f"{ns / 1e6:.2f} ms"
    elif ns >= 1e3:
        t = f"{ns / 1e3:.2f} µs"
    else:
        t = f"{ns:.1f} ns"
    rows.append((meta["full_id"], t, rate))
if not rows:
    sys.exit(f"no criterion results under {root}")
print("| benchmark | median time / iter | throughput |")
print("|---|---:|---:|")
for r in rows:
    print(f"| `{r[0]}` | {r[1]} | {r[2]} |")
