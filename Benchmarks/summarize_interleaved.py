#!/usr/bin/env python3
"""Medians per mask and binary from interleave_binaries.sh's forward.jsonl and backward.txt (a Markdown table)."""
import json, statistics, sys
from collections import defaultdict

out = sys.argv[1]
forward = defaultdict(list)
fastest = defaultdict(list)
scores = defaultdict(set)
for line in open(f"{out}/forward.jsonl"):
    _, which, text = line.split(" ", 2)
    record = json.loads(text)
    forward[(record["mask"], which)].append(record["seconds_median"])
    fastest[(record["mask"], which)].append(record["seconds_min"])
    scores[record["mask"]].add((which, record["scores_per_edge"], record["edges"]))
backward = defaultdict(list)
for line in open(f"{out}/backward.txt"):
    fields = line.split()
    which, name = fields[1], " ".join(fields[2:4]) if fields[3] == "bwd" else fields[2]
    median = float(fields[8] if fields[3] == "bwd" else fields[7])
    backward[(f"bench {name} (65536, d 64)", which)].append(median)
print("| mask | old: median of the rounds' medians (s) | new (s) | new / old | old: fastest call (s) | new: fastest call (s) | old rounds (s) | new rounds (s) | scores/edge old = new |")
print("|---|---|---|---|---|---|---|---|---|")
for table, label in ((forward, "time"), (backward, "bench")):
    for mask in dict.fromkeys(m for m, _ in table):
        old, new = table[(mask, "old")], table[(mask, "new")]
        o, n = statistics.median(old), statistics.median(new)
        same = ""
        if label == "time":
            olds = {s for w, s, e in scores[mask] if w == "old"}; news = {s for w, s, e in scores[mask] if w == "new"}
            same = f"{next(iter(olds)):.6f} = {next(iter(news)):.6f}" if olds == news and len(olds) == 1 else f"DIFFER {olds} {news}"
        fo = f"{min(fastest[(mask, 'old')]):.4f}" if label == "time" else "-"
        fn = f"{min(fastest[(mask, 'new')]):.4f}" if label == "time" else "-"
        print(f"| {mask} | {o:.4f} | {n:.4f} | {n / o:.3f} | {fo} | {fn} | {', '.join(f'{x:.4f}' for x in old)} | "
              f"{', '.join(f'{x:.4f}' for x in new)} | {same} |")
