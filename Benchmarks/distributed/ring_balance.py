"""Dense causal attention on gloo processes of this machine: per-rank work balance of contiguous against zigzag
placement, and the most other ranks' K/V rows a rank holds at once under the ring against the direct exchange.

    GRAPH_ATTENTION_LIBRARY=... PYTHONPATH=python python Benchmarks/distributed/ring_balance.py \
        [--output-directory bench/results/distributed] [--tokens 8192] [--worlds 2 3 4]

For each P and placement it runs `causal` forward + backward per schedule (ring, direct; one warm-up pass, then
the median of 3) with one engine thread per rank and records per rank: its causal edges (from its token ranges),
the pass's seconds, the seconds its engine calls took (forward + backward; the rest is waiting and messaging), the bytes it sent (`traffic()`, checked
against the plan) and `fetched_keys_peak` (`traffic()`, checked against the plan). On a machine with fewer cores
than ranks the processes slow each other down, most when all compute at once (balanced zigzag), so it also
times each rank's engine calls alone: every rank's calls (its local, fetched or ring-block views, forward and
backward, the same ones the distributed pass makes) run one rank after another in this process, median of 3.
The plan's counts (computed, no processes) extend the fetched-key peak and the edge balance to P = 8 and 64 at
2^20 tokens. Writes ring_balance.json.
"""
import argparse
import datetime
import json
import os
import socket
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import graph_attention.distributed as gad

HEADS, DIM = 4, 32
REPEATS = 3


def _timed(function, clock):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            clock[0] += time.perf_counter() - start
    return wrapper


def _worker(rank, world, port, tokens, directory):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300))
    clock = [0.0]
    gad._Engine.forward = _timed(gad._Engine.forward, clock)  # engine time only: compute, not waiting
    gad._Engine.backward = _timed(gad._Engine.backward, clock)
    g = [torch.Generator().manual_seed(i) for i in range(4)]
    q, k, v, do = (torch.randn(1, HEADS, tokens, DIM, generator=x) for x in g)
    results = {}
    for placement in ("contiguous", "zigzag"):
        for schedule in ("ring", "direct"):
            runs = []
            for _ in range(1 + REPEATS):  # the first pass warms the plan, the views and their transposes
                local = [gad.shard(x, rank, world, placement).clone().requires_grad_(True) for x in (q, k, v)]
                dist.barrier()
                clock[0] = 0.0
                start = time.perf_counter()
                out = gad.attention(*local, "causal", threads=1, placement=placement, schedule=schedule)
                out.backward(gad.shard(do, rank, world, placement))
                runs.append((time.perf_counter() - start, clock[0]))
            runs = sorted(runs[1:])
            results[placement, schedule] = {"engine_seconds": runs[len(runs) // 2][1],
                                            "pass_seconds": runs[len(runs) // 2][0], "traffic": gad.traffic()}
    torch.save(results, os.path.join(directory, f"{rank}.pt"))
    dist.destroy_process_group()


def run(world, tokens):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        mp.start_processes(_worker, args=(world, port, tokens, directory), nprocs=world, start_method="spawn")
        return [torch.load(os.path.join(directory, f"{r}.pt")) for r in range(world)]


def isolated_seconds(world, tokens, placement, schedule, repeats=3):
    """Per rank, the median seconds of its engine calls (forward + backward) run alone in this process."""
    torch.set_num_threads(1)
    g = [torch.Generator().manual_seed(i) for i in range(4)]
    q, k, v, do = (torch.randn(1, HEADS, tokens, DIM, generator=x) for x in g)
    engine = gad._Engine(DIM ** -0.5, 1, None, gad.ALIBI_NONE, None)
    sizes = gad.plan("causal", tokens, world, placement=placement).sizes
    seconds = []
    for rank in range(world):
        layer = gad._Layer(["causal"], sizes, rank, HEADS, False, placement, schedule)
        ql, kl, vl, dol = (gad.shard(x, rank, world, placement) for x in (q, k, v, do))
        work = [(layer.local, kl, vl)]
        for s, calls in layer.ring_calls.items():
            work.append((calls, gad.shard(k, s, world, placement), gad.shard(v, s, world, placement)))
        for first, count, calls in layer.remote:
            index = torch.cat([gad._indices(layer.plan.needs[rank][s]) for s in range(world) if s != rank])
            work.append((calls, k[:, :, index][:, :, first:first + count], v[:, :, index][:, :, first:first + count]))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            parts = [part for calls, kk, vv in work for part in calls.forward(engine, ql, kk, vv)]
            out, lse = gad._merge(parts)
            for calls, kk, vv in work:
                calls.backward(engine, ql, kk, vv, out, lse, dol)
            times.append(time.perf_counter() - start)
        seconds.append(sorted(times)[len(times) // 2])
    return seconds


def causal_edges(segments):
    """Edges of `causal` rows in the ranges: row g attends to g + 1 keys."""
    return sum((b * (b + 1) - a * (a + 1)) // 2 for a, b in segments)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-directory", default="bench/results/distributed")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    rows = []
    print(f"causal, L = {args.tokens}, H = {HEADS}, d = {DIM}, fp32, 1 engine thread per rank")
    print(f"{'P':>2} {'placement':<11}{'schedule':<8}{'edges max/mean':>15}{'alone s per rank':>28}"
          f"{'gloo engine s per rank':>32}{'pass s (max)':>13}"
          f"{'fetched keys peak (max)':>25}{'fwd B (max)':>13}")
    for world in args.worlds:
        results = run(world, args.tokens)
        for placement in ("contiguous", "zigzag"):
            for schedule in ("ring", "direct"):
                plan = gad.plan("causal", args.tokens, world, heads=HEADS, head_dim=DIM, placement=placement,
                                schedule=schedule)
                per_rank = [r[placement, schedule] for r in results]
                traffic = [p["traffic"] for p in per_rank]
                assert [t["forward"] for t in traffic] == plan.forward_bytes
                assert [t["backward"] for t in traffic] == plan.backward_bytes
                assert [t["fetched_keys_peak"] for t in traffic] == plan.fetched_keys_peak
                edges = [causal_edges(plan.segments[r]) for r in range(world)]
                seconds = [p["engine_seconds"] for p in per_rank]
                alone = isolated_seconds(world, args.tokens, placement, schedule)
                row = {"P": world, "placement": placement, "schedule": schedule, "edges_per_rank": edges,
                       "edges_max_over_mean": max(edges) / (sum(edges) / world),
                       "engine_seconds_alone_per_rank": alone, "engine_seconds_per_rank": seconds, "pass_seconds_per_rank": [p["pass_seconds"] for p in per_rank],
                       "fetched_keys_peak_per_rank": [t["fetched_keys_peak"] for t in traffic],
                       "forward_bytes_per_rank": [t["forward"] for t in traffic],
                       "backward_bytes_per_rank": [t["backward"] for t in traffic]}
                rows.append(row)
                print(f"{world:>2} {placement:<11}{schedule:<8}{row['edges_max_over_mean']:>15.3f}"
                      f"{' '.join(f'{x:.3f}' for x in alone):>28}{' '.join(f'{x:.3f}' for x in seconds):>32}{max(row['pass_seconds_per_rank']):>13.3f}{max(row['fetched_keys_peak_per_rank']):>25}"
                      f"{max(row['forward_bytes_per_rank']):>13}", flush=True)
    modelled = []
    print("\nthe plan's counts, causal, L = 2^20 (computed): edges max/mean, fetched keys peak ring / direct (max)")
    for world in (8, 64):
        for placement in ("contiguous", "zigzag"):
            ring, direct = (gad.plan("causal", 1 << 20, world, placement=placement, schedule=x) for x in ("ring", "direct"))
            edges = [causal_edges(ring.segments[r]) for r in range(world)]
            row = {"P": world, "tokens": 1 << 20, "placement": placement, "edges_max_over_mean": max(edges) / (sum(edges) / world),
                   "fetched_keys_peak_ring": max(ring.fetched_keys_peak),
                   "fetched_keys_peak_direct": max(direct.fetched_keys_peak),
                   "forward_bytes_ring_max": max(ring.forward_bytes), "forward_bytes_direct_max": max(direct.forward_bytes)}
            modelled.append(row)
            print(f"{world:>3} {placement:<11}{row['edges_max_over_mean']:>8.3f}{row['fetched_keys_peak_ring']:>10}"
                  f"{row['fetched_keys_peak_direct']:>10}", flush=True)
    os.makedirs(args.output_directory, exist_ok=True)
    with open(os.path.join(args.output_directory, "ring_balance.json"), "w") as f:
        json.dump({"mask": "causal", "tokens": args.tokens, "heads": HEADS, "dim": DIM, "dtype": "float32",
                   "threads_per_rank": 1, "load_average_after": os.getloadavg(), "rows": rows, "plan_counts": modelled}, f, indent=1)


if __name__ == "__main__":
    main()
