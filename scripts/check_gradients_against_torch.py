#!/usr/bin/env python3
"""Compare `graph-attention grad` with PyTorch autograd through a dense mask, and time SDPA's backward.

    python scripts/check_gradients_against_torch.py --binary .build/release/graph-attention [--time-tokens 16384]

Checks: for several masks, layouts (GQA, d_v != d_k, batch) and empty rows, fresh random Q, K, V, dO are
written as .npy; the mask's edges come from `graph-attention inspect --edges-out` (so random graphs match);
torch computes O = softmax(scale QK^T masked) V in float64 with autograd, and dQ, dK, dV of sum(O * dO)
(fully masked rows give 0). Prints the largest relative error per case (normalised by the largest |gradient|
of the tensor) and `N passed, M failed`; exits 1 on a failure. Where torch is not importable it says so and
exits 0 (nothing to compare). With --time-tokens L it also times window:256 at L tokens, d = 64: our backward
(from `grad --json`) against torch's SDPA backward with a boolean [L, L] mask.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

try:
    import torch
except ImportError:
    print("skipped: torch is not importable in this Python", file=sys.stderr)
    sys.exit(0)


def run(binary, *args):
    result = subprocess.run([binary, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed: {result.stderr.strip()}")
    return result.stdout


def dense_mask(binary, spec, lq, lk, folder):
    path = os.path.join(folder, "edges.npy")
    args = ["inspect", "--mask", spec, "--tokens", str(lq), "--edges-out", path]
    if lk != lq:
        args += ["--key-tokens", str(lk)]
    run(binary, *args)
    edges = np.load(path)
    mask = np.zeros((lq, lk), dtype=bool)
    if len(edges):
        mask[edges[:, 0], edges[:, 1]] = True
    return mask


def torch_gradients(q, k, v, do, mask, scale):
    q, k, v, do = (torch.tensor(x, dtype=torch.float64) for x in (q, k, v, do))
    for t in (q, k, v):
        t.requires_grad_(True)
    group = q.shape[-3] // k.shape[-3]
    kk, vv = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    m = torch.tensor(mask)
    s = (q @ kk.transpose(-1, -2)) * scale
    s = s.masked_fill(~m, float("-inf"))
    p = torch.softmax(s, dim=-1)
    p = torch.where(m.any(dim=-1, keepdim=True), p, torch.zeros_like(p))   # fully masked rows: 0
    o = p @ vv
    (o * do).sum().backward()
    return q.grad.numpy(), k.grad.numpy(), v.grad.numpy()


def check(binary, folder, spec, q_shape, k_shape, v_shape, seed):
    rng = np.random.default_rng(seed)
    q = rng.uniform(-1, 1, q_shape).astype(np.float32)
    k = rng.uniform(-1, 1, k_shape).astype(np.float32)
    v = rng.uniform(-1, 1, v_shape).astype(np.float32)
    do = rng.uniform(-1, 1, q_shape[:-1] + (v_shape[-1],)).astype(np.float32)
    for name, x in (("q", q), ("k", k), ("v", v), ("do", do)):
        np.save(os.path.join(folder, name + ".npy"), x)
    out = os.path.join(folder, "grads")
    os.makedirs(out, exist_ok=True)
    run(binary, "grad", "--query", os.path.join(folder, "q.npy"), "--key", os.path.join(folder, "k.npy"),
        "--value", os.path.join(folder, "v.npy"), "--grad-output", os.path.join(folder, "do.npy"),
        "--mask", spec, "--output-directory", out)
    mask = dense_mask(binary, spec, q_shape[-2], k_shape[-2], folder)
    expected = torch_gradients(q, k, v, do, mask, 1 / np.sqrt(q_shape[-1]))
    worst = 0.0
    for name, e in zip(("dq", "dk", "dv"), expected):
        got = np.load(os.path.join(out, name + ".npy"))
        if got.shape != e.shape or got.dtype != np.float32 or not np.all(np.isfinite(got)):
            return float("inf")
        worst = max(worst, float(np.max(np.abs(got - e)) / max(np.max(np.abs(e)), 1e-30)))
    return worst


def time_backward(binary, folder, tokens):
    rng = np.random.default_rng(1)
    shape = (1, tokens, 64)
    q, k, v, do = (rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(4))
    for name, x in (("q", q), ("k", k), ("v", v), ("do", do)):
        np.save(os.path.join(folder, name + ".npy"), x)
    out = os.path.join(folder, "grads")
    os.makedirs(out, exist_ok=True)
    ours = min(json.loads(run(binary, "grad", "--query", os.path.join(folder, "q.npy"), "--key", os.path.join(folder, "k.npy"),
                              "--value", os.path.join(folder, "v.npy"), "--grad-output", os.path.join(folder, "do.npy"),
                              "--mask", "window:256", "--output-directory", out, "--json"))["seconds"] for _ in range(3))
    i = torch.arange(tokens)
    mask = (i[:, None] - i[None, :]).abs() <= 256
    tq, tk, tv = (torch.tensor(x).requires_grad_(True) for x in (q, k, v))
    tdo = torch.tensor(do)
    times = []
    for _ in range(3):
        o = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask)
        start = time.perf_counter()
        o.backward(tdo)
        times.append(time.perf_counter() - start)
        for t in (tq, tk, tv):
            t.grad = None
    theirs = min(times)
    print(f"window:256, {tokens} tokens, d=64, {torch.get_num_threads()} threads: ours {ours:.3f} s, "
          f"torch SDPA backward (bool mask) {theirs:.3f} s, ratio {theirs / ours:.1f}x")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=".build/release/graph-attention")
    parser.add_argument("--time-tokens", type=int, default=0)
    args = parser.parse_args()
    cases = [
        ("window:5+global:0", (2, 70, 16), (2, 70, 16), (2, 70, 16)),
        ("causal", (3, 40, 8), (3, 40, 8), (3, 40, 8)),
        ("window:3:causal+random:0.1:5", (4, 50, 8), (2, 50, 8), (2, 50, 12)),       # GQA, d_v != d_k
        ("dilated:4:1+blocked:16:1", (2, 2, 64, 8), (2, 1, 64, 8), (2, 1, 64, 8)),   # batch, MQA
        ("blocked:8:3", (1, 33, 4), (1, 33, 4), (1, 33, 4)),                          # empty rows
        ("random:0.2:9", (2, 20, 8), (2, 45, 8), (2, 45, 5)),                         # cross-attention
        ("full", (1, 130, 32), (1, 130, 32), (1, 130, 32)),
    ]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as folder:
        for seed, (spec, qs, ks, vs) in enumerate(cases):
            worst = check(args.binary, folder, spec, qs, ks, vs, seed)
            ok = worst <= 1e-5
            passed, failed = passed + ok, failed + (not ok)
            print(f"{'ok  ' if ok else 'FAIL'} {spec:32s} q{list(qs)} k{list(ks)} v{list(vs)}: max relative error {worst:.2e}")
        print(f"{passed} passed, {failed} failed")
        if args.time_tokens:
            time_backward(args.binary, folder, args.time_tokens)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
