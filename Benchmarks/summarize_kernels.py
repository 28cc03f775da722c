#!/usr/bin/env python3
"""Markdown table of `graph-attention bench --backward` results of several kernels, side by side.

    python3 Benchmarks/summarize_kernels.py DIR/avx512/results.json DIR/avx2/results.json
    python3 Benchmarks/summarize_kernels.py --peers DIR/peers/results.json     (a `bench --peers` run)

For each (mask, tokens, d): per results file (one kernel), the forward's seconds and share of the FMA peak measured
in that run, and the backward's time over the forward's; scores per edge of the forward. Reads only what `bench`
wrote: no number is typed in.
"""
import json
import sys


def rows_of(path):
    report = json.load(open(path))
    forward, backward = {}, {}
    for row in report["rows"]:
        key = (row["mask"].removesuffix(" bwd"), row["tokens"], row["dim"])
        (backward if row["mask"].endswith(" bwd") else forward)[key] = row
    return report, forward, backward


def main(paths):
    reports = [rows_of(p) for p in paths]
    names = [r[0]["kernel"] for r in reports]
    header = ["mask", "tokens", "d"] + [f"{n} fwd s (% peak)" for n in names] + [f"{n} bwd/fwd" for n in names] + ["scores/edge"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    keys = list(reports[0][1].keys())
    for key in keys:
        cells = [key[0], f"{key[1]:,}", str(key[2])]
        for _, forward, _ in reports:
            row = forward.get(key)
            cells.append(f"{row['medianSeconds']:.4f} ({row['percentOfPeak']:.1f}%)" if row and row.get("medianSeconds") else "skipped")
        for _, forward, backward in reports:
            f, b = forward.get(key), backward.get(key)
            cells.append(f"{b['medianSeconds'] / f['medianSeconds']:.2f}" if f and b and f.get("medianSeconds") and b.get("medianSeconds") else "-")
        row = reports[0][1].get(key)
        cells.append(f"{row['scoresPerEdge']:.3f}" if row and row.get("scoresPerEdge") else "-")
        print("| " + " | ".join(cells) + " |")
    for (report, _, _), path in zip(reports, paths):
        print(f"\n{path}: kernel {report['kernel']}, {report['machine']}, FMA peak {report['peakFlops'] / 1e9:.1f} GFLOP/s "
              f"({report['peakInstructionSet']}), {report['threads']} threads")


def peers(path):
    """PyTorch's median time over ours per row of a `bench --peers` run."""
    report = json.load(open(path))
    names = [p["peer"] for p in report["rows"][0]["peers"]]
    print("| mask | tokens | ours (s) | " + " | ".join(names) + " |")
    print("|" + "---|" * (3 + len(names)))
    for row in report["rows"]:
        times = {p["peer"]: p.get("median_seconds") for p in row["peers"]}
        cells = [row["mask"], f"{row['tokens']:,}", f"{row['medianSeconds']:.4f}"]
        cells += [f"{times[n]:.4f} s ({times[n] / row['medianSeconds']:.2f}x)" if times.get(n) else "-" for n in names]
        print("| " + " | ".join(cells) + " |")
    print(f"\n{path}: kernel {report['kernel']}, {report['machine']}, FMA peak {report['peakFlops'] / 1e9:.1f} GFLOP/s; "
          "sdpa_dense is SDPA without a mask (is_causal for causal)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peers"]:
        peers(sys.argv[2])
    else:
        main(sys.argv[1:])
