#!/usr/bin/env python3
"""graph-attention on a GPU against the float64 reference and the CPU engine (part of scripts/gpu_check.sh).

UNVERIFIED on a GPU: written without one. `--device cpu` runs the same cases on the CPU engine, which is
how the script itself was exercised (it checks the script, not the GPU).

1. `verify --device cuda` for every graph kind, the reference paper's failure cases (a degree that is an
   exact multiple of a chunk, dilated windows longer than a chunk, COO graphs with empty trailing rows,
   empty rows with NaN), unions (Longformer, BigBird), fp32 (tolerance 1e-5) and fp16/bf16 storage
   (1e-2), with the tensor cores on and off, at d = 32, 64, 128 and an odd d, in one call and composed
   part by part through the carried state (`verify --compose`).
2. `run --device cuda` against `run --device cpu` for batches, grouped-query heads (H_q = 8, H_kv = 2)
   and d_v != d_k, fp32 and bf16 (inputs rounded to bf16 first, so both engines see the same values).

Prints 'N passed, M failed' and writes correctness.txt to --out; exits 1 on any failure.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np


def bf16_round(x):
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--out", default=".")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    tokens = 1024 if args.quick else 4096
    work = tempfile.mkdtemp(prefix="gpu-check-")
    rng = np.random.default_rng(7)

    # Explicit graphs: a CSR with empty rows and degrees up to 80, a COO whose last 100 rows are empty.
    degrees = rng.integers(0, 81, size=tokens)
    degrees[rng.random(tokens) < 0.1] = 0
    indptr = np.concatenate([[0], np.cumsum(degrees)]).astype(np.int64)
    indices = np.concatenate([rng.choice(tokens, size=d, replace=False) for d in degrees]).astype(np.int64)
    np.save(os.path.join(work, "indptr.npy"), indptr)
    np.save(os.path.join(work, "indices.npy"), indices)
    coo_rows = rng.integers(0, tokens - 100, size=20 * tokens).astype(np.int64)
    coo_cols = rng.integers(0, tokens, size=20 * tokens).astype(np.int64)
    np.save(os.path.join(work, "rows.npy"), coo_rows)
    np.save(os.path.join(work, "cols.npy"), coo_cols)
    csr = f"csr:{work}/indptr.npy:{work}/indices.npy"
    coo = f"coo:{work}/rows.npy:{work}/cols.npy"
    last = tokens - 1

    masks = [
        "full", "causal", "window:256", "window:100:causal", "window:16", "window:31", "window:0",
        "dilated:64:3", "dilated:100:1", "dilated:40:0", "blocked:128:0", "blocked:92:0", "blocked:256:1",
        f"global:0,17,{last}", "random:0.01:7", "random:1:3", csr, coo,
        f"window:128+global:0,1,{last}",                         # Longformer
        f"window:64+global:0,{last}+random:0.002:42",            # BigBird
        "dilated:8:1+window:4", "blocked:64:0+causal", f"causal+{csr}",
    ]
    if args.quick:
        masks = ["causal", "window:31", "dilated:100:1", "blocked:92:0", csr, coo, f"window:64+global:0,{last}+random:0.002:42"]
    if not args.quick and tokens > 2048:
        masks[0] = "full"  # the reference costs O(L) per sampled row, fine at 4096

    cases = []  # (label, argv)
    base = ["verify", "--tokens", str(tokens), "--heads", "4", "--sample", "96", "--device", args.device]
    for mask in masks:
        cases.append((f"{mask} fp32", base + ["--mask", mask, "--dim", "64"]))
        if cuda:
            for storage in ["bf16", "fp16"]:
                for tensor in ["--tensor-cores", "--no-tensor-cores"]:
                    cases.append((f"{mask} {storage} {tensor}",
                                  base + ["--mask", mask, "--dim", "64", "--storage", storage, tensor, "--tolerance", "1e-2"]))
    for mask in ["blocked:6:2", csr, coo, "blocked:16:2+window:1"]:
        cases.append((f"{mask} fp32 nan", base + ["--mask", mask, "--dim", "64", "--empty-rows", "nan"]))
        if cuda:
            cases.append((f"{mask} bf16 nan", base + ["--mask", mask, "--dim", "64", "--empty-rows", "nan",
                                                      "--storage", "bf16", "--tolerance", "1e-2"]))
    for dim in [32, 128, 48, 1, 200]:
        cases.append((f"window:40+global:3 d={dim} fp32", base + ["--mask", "window:40+global:3", "--dim", str(dim)]))
        if cuda:
            cases.append((f"window:40+global:3 d={dim} bf16", base + ["--mask", "window:40+global:3", "--dim", str(dim),
                                                                      "--storage", "bf16", "--tolerance", "1e-2"]))
    cases.append(("window:64 scale 0.3", base + ["--mask", "window:64", "--dim", "64", "--scale", "0.3"]))
    # Composition through the carried state (m, l, acc), each part skipping the edges of those before.
    for mask in [f"global:0,{last}+window:64+random:0.002:42", f"window:128+global:0,1,{last}", f"random:0.01:3+causal+{csr}",
                 "blocked:6:2+window:3"]:
        cases.append((f"{mask} composed fp32", base + ["--mask", mask, "--dim", "64", "--compose", "--empty-rows", "nan"]))
        if cuda:
            cases.append((f"{mask} composed bf16", base + ["--mask", mask, "--dim", "64", "--compose", "--empty-rows", "nan",
                                                          "--storage", "bf16", "--tolerance", "1e-2"]))

    passed, failed, report = 0, 0, []
    for label, argv in cases:
        result = subprocess.run([args.binary] + argv, capture_output=True, text=True)
        ok = result.returncode == 0
        line = (result.stdout.strip() or result.stderr.strip()).splitlines()
        text = f"{'ok  ' if ok else 'FAIL'} {label}: {line[-1] if line else '(no output)'}"
        print(text, flush=True)
        report.append(text)
        passed += ok
        failed += not ok

    # Batches, grouped-query heads and d_v != d_k: the GPU against the CPU engine on the same .npy inputs.
    L = 512 if args.quick else 2048
    for label, dv, storage in [("B=2 Hq=8 Hkv=2 dk=64 dv=32 fp32", 32, "fp32"), ("B=2 Hq=8 Hkv=2 d=64 bf16", 64, "bf16")]:
        q = rng.uniform(-1, 1, size=(2, 8, L, 64)).astype(np.float32)
        k = rng.uniform(-1, 1, size=(2, 2, L, 64)).astype(np.float32)
        v = rng.uniform(-1, 1, size=(2, 2, L, dv)).astype(np.float32)
        if storage == "bf16":
            q, k, v = bf16_round(q), bf16_round(k), bf16_round(v)
        for name, x in [("q", q), ("k", k), ("v", v)]:
            np.save(os.path.join(work, f"{name}.npy"), x)
        for mask in ["causal", f"window:64+global:0,5+random:0.001:3"]:
            outputs = {}
            for device in ["cpu", args.device]:
                extra = ["--storage", storage] if device == "cuda" else []
                out = os.path.join(work, f"o-{device}.npy")
                result = subprocess.run([args.binary, "run", "--query", f"{work}/q.npy", "--key", f"{work}/k.npy",
                                         "--value", f"{work}/v.npy", "--mask", mask, "--output", out,
                                         "--device", device] + extra, capture_output=True, text=True)
                outputs[device] = np.load(out) if result.returncode == 0 else result.stderr.strip()
            gpu = outputs[args.device]
            if isinstance(gpu, str) or isinstance(outputs["cpu"], str):
                ok, detail = False, f"run failed: {gpu if isinstance(gpu, str) else outputs['cpu']}"
            else:
                error = float(np.max(np.abs(gpu - outputs["cpu"])))  # values are in [-1, 1): absolute = relative
                tolerance = 2e-5 if storage == "fp32" else 1e-2
                ok, detail = error <= tolerance, f"max |gpu - cpu| {error:.3e} (tolerance {tolerance})"
            text = f"{'ok  ' if ok else 'FAIL'} run {label} {mask}: {detail}"
            print(text, flush=True)
            report.append(text)
            passed += ok
            failed += not ok

    summary = f"{passed} passed, {failed} failed"
    print(summary)
    with open(os.path.join(args.out, "correctness.txt"), "w") as f:
        f.write("\n".join(report + [summary]) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
