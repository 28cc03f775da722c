"""A tiny random-initialised Mistral (sliding window), forward and backward, through transformers with
attn_implementation "graph_attention", "sdpa" and "flex_attention" on the CPU: tokens/s and peak resident memory (FlexAttention forward only: it has no backward on the CPU).

Each (implementation, length) runs in its own process (so its peak resident memory is its own), under an
address-space limit (--memory-limit-gib) so an implementation that needs a dense [L, L] mask fails cleanly
instead of swapping the machine, and under a time limit (--time-limit).

    python Benchmarks/transformers/bench_mistral.py [--lengths 4096,16384,65536] [--steps 3] \
        [--implementations graph_attention,sdpa,flex_attention] [--output bench/results/transformers/table.txt]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
limit = int(sys.argv[4])
if limit > 0:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import torch, transformers
import graph_attention.transformers
implementation, length, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
window, backward = int(sys.argv[5]), sys.argv[6] == "1"
torch.manual_seed(0)
config = transformers.MistralConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, sliding_window=window,
                                    max_position_embeddings=length, use_cache=False)
model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=implementation).train()
ids = torch.randint(0, 256, (1, length))
times = []
for step in range(steps + 1):  # the first step warms up (and compiles, for flex_attention)
    start = time.perf_counter()
    with torch.set_grad_enabled(backward):
        loss = model(input_ids=ids, labels=ids).loss
    if backward:
        loss.backward()
        model.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - start)
best = min(times[1:]) if steps else times[0]
print(json.dumps({"implementation": implementation, "tokens": length, "backward": backward, "first_s": times[0], "best_s": best,
                  "median_s": sorted(times[1:])[len(times[1:]) // 2] if steps else times[0],
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "loss": loss.item()}))
"""


def run(implementation, length, steps, limit_bytes, window, time_limit, backward=True):
    start = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-c", CHILD, implementation, str(length), str(steps),
                                 str(limit_bytes), str(window), "1" if backward else "0"], capture_output=True, text=True, timeout=time_limit)
    except subprocess.TimeoutExpired:
        return {"implementation": implementation, "tokens": length, "error": f"over the {time_limit} s time limit"}
    lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
    if result.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (result.stderr.strip().splitlines() or ["exit status %d" % result.returncode])[-1]
    return {"implementation": implementation, "tokens": length, "error": tail[:160],
            "wall_s": time.perf_counter() - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="4096,16384,65536")
    parser.add_argument("--implementations", default="graph_attention,sdpa,flex_attention")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--memory-limit-gib", type=float, default=16.0)
    parser.add_argument("--time-limit", type=int, default=900)
    parser.add_argument("--forward-only", default="flex_attention",
                        help="implementations timed without the backward (FlexAttention has no CPU backward)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    limit = int(args.memory_limit_gib * 2**30)
    rows = []
    header = (f"tiny Mistral (hidden 64, 2 layers, 4 heads / 2 KV heads, sliding window {args.window}, vocab 256), "
              f"batch 1, forward + backward, fp32, best of {args.steps} steps after one warm-up;\n"
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, address-space limit "
              f"{args.memory_limit_gib:g} GiB per run; command: python {' '.join(sys.argv)}")
    print(header, flush=True)
    for length in [int(x) for x in args.lengths.split(",")]:
        for implementation in args.implementations.split(","):
            backward = implementation not in args.forward_only.split(",")
            row = run(implementation, length, args.steps, limit, args.window, args.time_limit, backward)
            row.setdefault("backward", backward)
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [header, "", "| tokens | implementation | pass | step (best) | tokens/s | peak memory | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        kind = "fwd+bwd" if r["backward"] else "fwd only"
        if "error" in r:
            lines.append(f"| {r['tokens']} | {r['implementation']} | {kind} | - | - | - | did not run: {r['error']} |")
        else:
            lines.append(f"| {r['tokens']} | {r['implementation']} | {kind} | {r['best_s']:.3f} s | "
                         f"{r['tokens'] / r['best_s']:.0f} | {r['peak_mib']:.0f} MiB | first step {r['first_s']:.1f} s |")
    table = "\n".join(lines)
    print(table)
    if args.output:
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(table + "\n")
        with open(os.path.splitext(args.output)[0] + ".jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
