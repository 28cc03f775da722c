"""The Python package's cost over the engine: per-call overhead on a tiny problem, and a 64K-token run
against the CLI's `time` (same shape, mask, dtype and options; release builds).

    python Benchmarks/python_call.py --cli .build/release/graph-attention [--repeat 10]

Overhead = (graph_attention.attention) - (one raw ctypes ga_attention_forward call with prepared arguments);
the raw call is the engine's time plus ctypes' own argument conversion (a few microseconds).
"""
import argparse
import ctypes
import json
import subprocess
import time

import numpy as np
import torch

import graph_attention
from graph_attention import _library
from graph_attention.graph import cached_graph


def best(fn, repeat, inner=1):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return min(times), sorted(times)[len(times) // 2]


def overhead(repeat):
    shape, mask = (16, 16), "window:2"
    q, k, v = (np.random.default_rng(n).standard_normal(shape, dtype=np.float32) for n in range(3))
    out = np.empty(shape, np.float32)
    graph = cached_graph(mask)
    s = _library.shape_array(shape)
    args = (q.ctypes.data, s, 0, k.ctypes.data, s, 0, v.ctypes.data, s, 0, 2, out.ctypes.data, 0, None,
            graph._handle, float("nan"), 0, 1, 1, None)
    raw = best(lambda: _library.lib.ga_attention_forward(*args), repeat, 2000)
    numpy_call = best(lambda: graph_attention.attention(q, k, v, mask=mask, threads=1), repeat, 2000)
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    torch_call = best(lambda: graph_attention.attention(tq, tk, tv, mask=mask, threads=1), repeat, 2000)
    tq.requires_grad_()
    torch_grad = best(lambda: graph_attention.attention(tq, tk, tv, mask=mask, threads=1), repeat, 2000)
    us = 1e6
    print(f"tiny call [16, 16] window:2, 1 thread (min over {repeat} x 2000 calls):")
    print(f"  raw ctypes ga_attention_forward     {raw[0] * us:7.1f} us  (engine + ctypes)")
    print(f"  attention(numpy)                     {numpy_call[0] * us:7.1f} us  overhead {(numpy_call[0] - raw[0]) * us:6.1f} us")
    print(f"  attention(torch, no grad)            {torch_call[0] * us:7.1f} us  overhead {(torch_call[0] - raw[0]) * us:6.1f} us")
    print(f"  attention(torch, requires_grad)      {torch_grad[0] * us:7.1f} us  overhead {(torch_grad[0] - raw[0]) * us:6.1f} us")


def large(cli, repeat, tokens=65536, dim=64, mask="window:256"):
    q, k, v = (torch.randn(1, 1, tokens, dim, generator=torch.Generator().manual_seed(n)) for n in range(3))
    for _ in range(2):
        graph_attention.attention(q, k, v, mask=mask)
    python_min, python_median = best(lambda: graph_attention.attention(q, k, v, mask=mask), repeat)
    report = json.loads(subprocess.run(
        [cli, "time", "--mask", mask, "--tokens", str(tokens), "--dim", str(dim), "--repeat", str(repeat), "--json"],
        check=True, capture_output=True, text=True).stdout)
    cli_min, cli_median = report["seconds_min"], report["seconds_median"]
    print(f"{tokens} tokens, {mask}, d = {dim}, fp32, every processor ({repeat} timed calls):")
    print(f"  graph_attention.attention (torch)    min {python_min:.4f} s  median {python_median:.4f} s")
    print(f"  graph-attention time (CLI)           min {cli_min:.4f} s  median {cli_median:.4f} s")
    print(f"  Python / CLI                         min {python_min / cli_min:.3f}  median {python_median / cli_median:.3f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cli", required=True)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    overhead(args.repeat)
    large(args.cli, args.repeat)


if __name__ == "__main__":
    main()
