"""Bytes per rank per layer of graph_attention.distributed against ring attention: measured on gloo processes of
this machine (P = 2..4), a model from the exchange plan's counts up to 1B tokens and 1024 ranks with the
compute-to-communication ratio, and weak-scaling time at P = 1, 2.

    GRAPH_ATTENTION_LIBRARY=... PYTHONPATH=python python Benchmarks/distributed/bytes_and_model.py \
        [--output-directory bench/results/distributed] [--skip-measured] [--skip-model]

Writes measured.json, model.csv, weak_scaling.json and prints a summary. Ring attention (and torch's context
parallel) sends every rank's K and V block to every other rank: (P-1) * L_r key rows per rank per layer; an
all-gather of K and V (Megatron, TE, Flex) moves the same bytes. Those figures are computed, not run.
"""
import argparse
import datetime
import json
import math
import os
import socket
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import graph_attention
import graph_attention.distributed as gad

MEASURED_TOKENS = 8192
HEADS, DIM = 4, 32


def measured_masks(tokens):
    cu = ",".join(str(x) for x in list(range(0, tokens, 1536)) + [tokens])
    return {
        "window": "window:256",
        "longformer": "window:256+global:0,1,2,3",
        "bigbird": f"window:192+global:0,1+random:{3 / tokens}:7",
        "documents": f"documents:{cu}&causal",
        "dense causal": "causal",
    }


def _worker(rank, world, port, masks, tokens, directory, timing):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300))
    g = [torch.Generator().manual_seed(i) for i in range(3)]
    q, k, v = (torch.randn(1, HEADS, tokens, DIM, generator=x) for x in g)
    shard = lambda x: torch.tensor_split(x, world, dim=-2)[rank].clone().requires_grad_(True)  # noqa: E731
    results = {}
    for name, mask in masks.items():
        ql, kl, vl = shard(q), shard(k), shard(v)
        times = []
        for _ in range(3 if timing else 1):
            dist.barrier()
            start = time.perf_counter()
            out = gad.attention(ql, kl, vl, mask, threads=1)
            out.sum().backward()
            times.append(time.perf_counter() - start)
        results[name] = {"traffic": gad.traffic(), "seconds": statistics.median(times)}
    torch.save(results, os.path.join(directory, f"{rank}.pt"))
    dist.destroy_process_group()


def run_processes(world, masks, tokens, timing=False):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        mp.start_processes(_worker, args=(world, port, masks, tokens, directory, timing), nprocs=world,
                           start_method="spawn")
        return [torch.load(os.path.join(directory, f"{r}.pt")) for r in range(world)]


def measured(output):
    rows = []
    masks = measured_masks(MEASURED_TOKENS)
    kv_row = HEADS * 2 * DIM * 4
    for world in (2, 3, 4):
        results = run_processes(world, masks, MEASURED_TOKENS)
        for name, mask in masks.items():
            plan = gad.plan(mask, MEASURED_TOKENS, world, heads=HEADS, head_dim=DIM)
            sent = [r[name]["traffic"]["forward"] for r in results]
            back = [r[name]["traffic"]["backward"] for r in results]
            ring = plan.ring_bytes
            rows.append({"mask": name, "spec": mask if len(mask) < 80 else mask[:77] + "...", "P": world,
                         "forward_bytes_per_rank": sent, "backward_bytes_per_rank": back,
                         "plan_forward_bytes": plan.forward_bytes, "plan_backward_bytes": plan.backward_bytes,
                         "ring_bytes_per_rank": ring,
                         "max_ratio_ring_over_graph": max(ring) / max(1, max(sent))})
            assert sent == plan.forward_bytes and back == plan.backward_bytes, (name, world, sent, plan.forward_bytes)
    with open(os.path.join(output, "measured.json"), "w") as f:
        json.dump({"tokens": MEASURED_TOKENS, "heads": HEADS, "dim": DIM, "dtype": "float32", "kv_row_bytes": kv_row,
                   "rows": rows}, f, indent=1)
    print(f"measured (L = {MEASURED_TOKENS}, H = {HEADS}, d = {DIM}, fp32; forward bytes per rank per layer, the most "
          "loaded rank):")
    print(f"{'mask':<14}{'P':>3}{'graph-aware':>14}{'ring':>14}{'ring/graph':>12}")
    for r in rows:
        print(f"{r['mask']:<14}{r['P']:>3}{max(r['forward_bytes_per_rank']):>14}{max(r['ring_bytes_per_rank']):>14}"
              f"{r['max_ratio_ring_over_graph']:>12.1f}")
    return rows


# The model: one layer of a GPU-sized configuration, bf16 K and V.
MODEL_HEADS, MODEL_KV_HEADS, MODEL_DIM, MODEL_BYTES = 32, 8, 128, 2
WINDOW, LONGFORMER_WINDOW, BIGBIRD_WINDOW, GLOBALS, RANDOM_PER_ROW, DOCUMENT = 4096, 512, 192, 16, 3, 6144


def model_masks(tokens, directory):
    globals_ = ",".join(str(i * (tokens // GLOBALS)) for i in range(GLOBALS))
    cu = np.arange(0, tokens + 1, DOCUMENT, dtype=np.int64)
    if cu[-1] != tokens:
        cu = np.append(cu, tokens)
    path = os.path.join(directory, f"cu{tokens}.npy")
    np.save(path, cu)
    return {
        "window": (f"window:{WINDOW}:causal", tokens * (WINDOW + 1)),
        "longformer": (f"window:{LONGFORMER_WINDOW}+global:{globals_}", tokens * (2 * LONGFORMER_WINDOW + 1 + 2 * GLOBALS)),
        "bigbird": (f"window:{BIGBIRD_WINDOW}+global:{globals_}",
                    tokens * (2 * BIGBIRD_WINDOW + 1 + 2 * GLOBALS + RANDOM_PER_ROW)),
        "documents": (f"documents:{path}&causal", tokens * (DOCUMENT + 1) / 2),
        "dense causal": ("causal", tokens * (tokens + 1) / 2),
    }


def model(output):
    lines = ["mask,tokens,P,graph_bytes_per_rank_max,ring_bytes_per_rank,ring_over_graph,flop_per_byte_graph,"
             "flop_per_byte_ring"]
    print(f"\nmodel (H = {MODEL_HEADS}, H_kv = {MODEL_KV_HEADS}, d = {MODEL_DIM}, bf16 K/V; forward bytes per rank per "
          "layer from the plan's counts; BigBird's random keys as their expectation):")
    print(f"{'mask':<14}{'L':>12}{'P':>6}{'graph-aware B':>16}{'ring B':>16}{'ring/graph':>12}{'FLOP/B graph':>14}"
          f"{'FLOP/B ring':>13}")
    kv_row = MODEL_KV_HEADS * 2 * MODEL_DIM * MODEL_BYTES
    with tempfile.TemporaryDirectory() as directory:
        for tokens in (1 << 20, 1 << 24, 1 << 30):
            masks = model_masks(tokens, directory)
            for world in (8, 64, 1024):
                for name, (mask, edges) in masks.items():
                    plan = gad.plan(mask, tokens, world, heads=MODEL_HEADS, kv_heads=MODEL_KV_HEADS, head_dim=MODEL_DIM,
                                    element_bytes=MODEL_BYTES)
                    sent = list(plan.forward_bytes)
                    if name == "bigbird":  # random keys: each of a rank's rows draws RANDOM_PER_ROW keys anywhere
                        rows_per_rank = tokens / world
                        p = RANDOM_PER_ROW / tokens
                        distinct = (tokens - rows_per_rank) * -math.expm1(rows_per_rank * math.log1p(-p))
                        sent = [s + distinct * kv_row for s in sent]
                    graph = max(1.0, max(sent))
                    ring = max(plan.ring_bytes)
                    # Forward FLOPs of the busiest rank's share (edges spread evenly; dense causal's last rank has
                    # about twice the mean): QK^T and PV, 2 FLOP per multiply-add.
                    flops = 4 * MODEL_HEADS * MODEL_DIM * edges / world
                    lines.append(f"{name},{tokens},{world},{graph:.0f},{ring},{ring / graph:.1f},{flops / graph:.0f},"
                                 f"{flops / ring:.1f}")
                    print(f"{name:<14}{tokens:>12}{world:>6}{graph:>16.3g}{ring:>16.3g}{ring / graph:>12.1f}"
                          f"{flops / graph:>14.0f}{flops / ring:>13.1f}", flush=True)
    with open(os.path.join(output, "model.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")


def weak_scaling(output):
    per_rank = 8192
    masks = {"window": "window:256", "longformer": "window:256+global:0,1,2,3"}
    result = {}
    for world in (1, 2):
        runs = run_processes(world, masks, per_rank * world, timing=True)
        for name in masks:
            result.setdefault(name, {})[world] = max(r[name]["seconds"] for r in runs)
    with open(os.path.join(output, "weak_scaling.json"), "w") as f:
        json.dump({"tokens_per_rank": per_rank, "heads": HEADS, "dim": DIM, "threads_per_rank": 1,
                   "seconds_forward_backward_slowest_rank": result}, f, indent=1)
    print(f"\nweak scaling ({per_rank} tokens per rank, 1 thread per rank, forward + backward, slowest rank, median of 3):")
    for name, times in result.items():
        print(f"  {name}: P=1 {times[1]:.3f} s, P=2 {times[2]:.3f} s (efficiency {times[1] / times[2]:.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-directory", default="bench/results/distributed")
    parser.add_argument("--skip-measured", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-weak", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.output_directory, exist_ok=True)
    if not args.skip_measured:
        measured(args.output_directory)
    if not args.skip_model:
        model(args.output_directory)
    if not args.skip_weak:
        weak_scaling(args.output_directory)


if __name__ == "__main__":
    main()
