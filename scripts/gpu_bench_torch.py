#!/usr/bin/env python3
"""Times graph-attention on a GPU against PyTorch (part of scripts/gpu_check.sh).

UNVERIFIED: written without a GPU; its first run is on the GPU machine. Without torch or CUDA it times
only graph-attention (or nothing) and says so.

Masks: window, blocked, Longformer (window + global tokens) and BigBird (window + global + random), over
L tokens, B = 1, H heads, d = 64. For each, the median over --iters timed calls after --warmup of:

  ours-bf16, ours-fp32   `graph-attention time --device cuda` kernel time (launch to completion, no copies)
  sdpa-flash             torch SDPA, flash backend, dense (no mask): the dense upper bound
  sdpa-flash-causal      the same with is_causal=True
  sdpa-mask              SDPA with the materialised boolean L x L mask (only where it fits, L <= 32768)
  flex                   FlexAttention (torch.compile) with a block mask built from the same mask_mod

The paper's protocol is 10 warm-up and 15 timed calls (mean); both mean and median are recorded.
Before timing, the output of ours (bf16) is compared with FlexAttention's on the same inputs and mask at
the smallest L, a check of the semantics against an independent implementation (tolerance 2e-2).
Writes bench.json and bench.md (with GPU, driver, CUDA and torch versions) to --out.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as error:
        return subprocess.CompletedProcess(cmd, 127, "", str(error))


def gpu_description():
    info = {}
    result = sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if result.returncode == 0:
        name, driver, memory = [x.strip() for x in result.stdout.strip().splitlines()[0].split(",")]
        info.update(gpu=name, driver=driver, memory=memory)
    return info


def masks_for(length, globals_count=16):
    tokens = ",".join(str(t) for t in sorted(set([0] + [int(i * length / globals_count) for i in range(1, globals_count)])))
    return {
        "window:256": "window:256",
        "blocked:256": "blocked:256:0",
        "longformer": f"window:256+global:{tokens}",
        "bigbird": f"window:128+global:{tokens}+random:0.001:42",
    }


def ours(binary, spec, length, heads, dim, storage, warmup, iters):
    result = sh([binary, "time", "--device", "cuda", "--storage", storage, "--mask", spec, "--tokens", str(length),
                 "--heads", str(heads), "--dim", str(dim), "--warmup", str(warmup), "--repeat", str(iters), "--json"])
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-400:]}
    fields = json.loads(result.stdout.strip().splitlines()[-1])
    return {"median_ms": fields["kernel_seconds_median"] * 1e3, "min_ms": fields["kernel_seconds_min"] * 1e3,
            "call_median_ms": fields["seconds_median"] * 1e3, "edges_per_head": fields["edges"],
            "gflops": fields["gflops"], "build": fields.get("build", "")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--out", default=".")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--lengths", default="8192,32768,131072")
    parser.add_argument("--quick", action="store_true", help="one small length, few iterations")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.warmup, args.iters = "8192", 2, 3
    lengths = [int(x) for x in args.lengths.split(",")]

    results = {"meta": gpu_description(), "protocol": {"warmup": args.warmup, "iters": args.iters, "batch": 1,
                                                       "heads": args.heads, "dim": args.dim}, "rows": []}
    try:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
        have_torch = torch.cuda.is_available()
        results["meta"].update(torch=torch.__version__, cuda=torch.version.cuda)
    except Exception as error:  # noqa: BLE001 - report any import problem and go on with ours only
        have_torch = False
        results["meta"]["torch"] = f"unavailable: {error}"
    flex = None
    if have_torch:
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            flex = torch.compile(flex_attention)
        except Exception as error:  # noqa: BLE001
            results["meta"]["flex"] = f"unavailable: {error}"

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(args.iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        times.sort()
        return {"median_ms": times[len(times) // 2], "mean_ms": sum(times) / len(times), "min_ms": times[0]}

    def mask_mod_for(name, spec, length, device):
        """The same mask as a FlexAttention mask_mod (and the global/random tables it reads)."""
        parts = spec.split("+")
        window = int(parts[0].split(":")[1])
        is_global = torch.zeros(length, dtype=torch.bool, device=device)
        random_bits = None
        for part in parts[1:]:
            if part.startswith("global:"):
                is_global[torch.tensor([int(t) for t in part[7:].split(",")], device=device)] = True
            if part.startswith("random:"):
                # The random edges exactly as graph-attention generates them.
                with tempfile.TemporaryDirectory() as tmp:
                    edges_file = os.path.join(tmp, "edges.npy")
                    out = sh([args.binary, "inspect", "--mask", part, "--tokens", str(length), "--edges-out", edges_file])
                    if out.returncode != 0:
                        raise RuntimeError(out.stderr)
                    import numpy as np
                    edges = torch.from_numpy(np.load(edges_file)).to(device)
                random_bits = torch.zeros(length, length, dtype=torch.bool, device=device)
                random_bits[edges[:, 0], edges[:, 1]] = True
        if name.startswith("blocked"):
            def mask_mod(b, h, q, kv):
                return (q // window) == (kv // window)
            return mask_mod

        def mask_mod(b, h, q, kv):
            allowed = (q - kv).abs() <= window
            allowed = allowed | is_global[q] | is_global[kv]
            if random_bits is not None:
                allowed = allowed | random_bits[q, kv]
            return allowed
        return mask_mod

    for length in lengths:
        for name, spec in masks_for(length).items():
            row = {"mask": name, "spec": spec, "tokens": length}
            row["ours-bf16"] = ours(args.binary, spec, length, args.heads, args.dim, "bf16", min(args.warmup, 3), args.iters)
            row["ours-fp32"] = ours(args.binary, spec, length, args.heads, args.dim, "fp32", min(args.warmup, 3), args.iters)
            if have_torch:
                device = "cuda"
                q, k, v = (torch.randn(1, args.heads, length, args.dim, device=device, dtype=torch.bfloat16) for _ in range(3))
                try:
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        row["sdpa-flash"] = timed(lambda: F.scaled_dot_product_attention(q, k, v))
                        row["sdpa-flash-causal"] = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
                except Exception as error:  # noqa: BLE001
                    row["sdpa-flash"] = {"error": str(error)[:300]}
                mask_mod = None
                try:
                    mask_mod = mask_mod_for(name, spec, length, device)
                except Exception as error:  # noqa: BLE001
                    row["flex"] = {"error": f"mask: {str(error)[:300]}"}
                if mask_mod is not None and length <= 32768:
                    try:
                        qi = torch.arange(length, device=device)
                        dense = mask_mod(0, 0, qi[:, None], qi[None, :])
                        row["sdpa-mask"] = timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense))
                        del dense
                    except Exception as error:  # noqa: BLE001
                        row["sdpa-mask"] = {"error": str(error)[:300]}
                if mask_mod is not None and flex is not None:
                    try:
                        block_mask = create_block_mask(mask_mod, 1, 1, length, length, device=device)
                        row["flex"] = timed(lambda: flex(q, k, v, block_mask=block_mask))
                        row["flex"]["block_density"] = float(getattr(block_mask, "sparsity", lambda: float("nan"))())
                        if length == lengths[0]:
                            row["check-vs-flex"] = compare_with_flex(args.binary, spec, q, k, v, flex(q, k, v, block_mask=block_mask))
                    except Exception as error:  # noqa: BLE001
                        row["flex"] = {"error": str(error)[:300]}
                torch.cuda.empty_cache()
            print(json.dumps(row), flush=True)
            results["rows"].append(row)

    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(markdown(results))
    print(markdown(results))
    failed = [r for r in results["rows"] if isinstance(r.get("check-vs-flex"), dict) and not r["check-vs-flex"].get("ok")]
    sys.exit(1 if failed else 0)


def compare_with_flex(binary, spec, q, k, v, flex_output):
    """graph-attention (bf16, tensor cores) against FlexAttention's output on the same inputs and mask."""
    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        for name, x in [("q", q), ("k", k), ("v", v)]:
            np.save(os.path.join(tmp, f"{name}.npy"), x[0].float().cpu().numpy())  # [H, L, d], exact bf16 values
        out = os.path.join(tmp, "o.npy")
        result = sh([binary, "run", "--query", f"{tmp}/q.npy", "--key", f"{tmp}/k.npy", "--value", f"{tmp}/v.npy",
                     "--mask", spec, "--output", out, "--device", "cuda", "--storage", "bf16"])
        if result.returncode != 0:
            return {"ok": False, "error": result.stderr.strip()[-300:]}
        ours_output = np.load(out)
    reference = flex_output[0].float().cpu().numpy()
    scale = float(np.max(np.abs(v.float().cpu().numpy())))
    error = float(np.max(np.abs(ours_output - reference))) / scale
    return {"ok": error <= 2e-2, "max_abs_error_over_max_v": error}


def markdown(results):
    meta = results["meta"]
    lines = [f"# graph-attention vs PyTorch on {meta.get('gpu', '?')} (driver {meta.get('driver', '?')}, "
             f"torch {meta.get('torch', '?')}, CUDA {meta.get('cuda', '?')})", "",
             "UNVERIFIED harness (first runs on a GPU). Median milliseconds per call, bf16 unless noted, "
             f"B=1, H={results['protocol']['heads']}, d={results['protocol']['dim']}, "
             f"{results['protocol']['warmup']} warm-up + {results['protocol']['iters']} timed calls.", "",
             "| mask | L | ours bf16 | ours fp32 | SDPA flash | SDPA flash causal | SDPA + mask | Flex | ours vs Flex |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(entry):
        if not isinstance(entry, dict):
            return "-"
        if "error" in entry:
            return "error"
        return f"{entry['median_ms']:.3f}"
    for row in results["rows"]:
        check = row.get("check-vs-flex")
        check_text = "-" if not check else (f"{check.get('max_abs_error_over_max_v', float('nan')):.1e}"
                                            + (" ok" if check.get("ok") else " FAIL"))
        lines.append(f"| {row['mask']} | {row['tokens']} | {cell(row.get('ours-bf16'))} | {cell(row.get('ours-fp32'))} | "
                     f"{cell(row.get('sdpa-flash'))} | {cell(row.get('sdpa-flash-causal'))} | {cell(row.get('sdpa-mask'))} | "
                     f"{cell(row.get('flex'))} | {check_text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
