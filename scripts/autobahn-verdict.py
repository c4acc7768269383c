#!/usr/bin/env python3
"""Turns an Autobahn TestSuite report (index.json) into pass/fail.

Usage: autobahn-verdict.py INDEX_JSON EXPECTED_CASES

Prints a table of behaviours and close behaviours, and exits 1 if the report holds
another number of cases than EXPECTED_CASES (wstest crashed, the server died, cases were
skipped), or if any case's behaviour or close behaviour is not OK, NON-STRICT or
INFORMATIONAL (an UNIMPLEMENTED compression case fails too: the edge runs them with
permessage-deflate on). wstest itself exits 0 whatever the cases did.
"""
import json, sys, collections
idx = json.load(open(sys.argv[1]))
expected = int(sys.argv[2])
if len(idx) != 1:
    sys.exit(f"autobahn: expected one agent in the report, found {len(idx)}")
results = next(iter(idx.values()))
counts = collections.Counter()
closes = collections.Counter()
bad = []
def passes(b, major):
    return b in ("OK", "NON-STRICT", "INFORMATIONAL")
for case, r in sorted(results.items(), key=lambda kv: [int(x) for x in kv[0].split('.')]):
    b, c = r["behavior"], r.get("behaviorClose")
    counts[b] += 1
    closes[c] += 1
    major = case.split('.')[0]
    if not passes(b, major) or not passes(c, major):
        bad.append((case, b, c))
print("| behaviour | cases | close behaviour | cases |")
print("|---|---:|---|---:|")
rows = max(len(counts), len(closes))
cs, ks = sorted(counts.items()), sorted(closes.items(), key=lambda kv: str(kv[0]))
for i in range(rows):
    a = cs[i] if i < len(cs) else ("", "")
    k = ks[i] if i < len(ks) else ("", "")
    print(f"| {a[0]} | {a[1]} | {k[0]} | {k[1]} |")
total = sum(counts.values())
print(f"| **total** | {total} | | {sum(closes.values())} |")
failed = False
if total != expected:
    print(f"\nautobahn: {total} cases ran, the set has {expected}")
    failed = True
if bad:
    print("\nfailed cases:")
    for case, b, c in bad:
        print(f"  {case}: {b} (close: {c})")
    failed = True
if failed:
    sys.exit(1)
print(f"\nautobahn: all {total} cases pass, close behaviour included")
