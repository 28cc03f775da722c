"""What today's models add, timed: packed documents, softcap, ALiBi and sinks, beside FlexAttention.

    python Benchmarks/model_features.py [--tokens 16384,32768] [--dim 64] [--heads 1] [--repeats 5]
        [--document-tokens 1048576] [--documents 2000] [--threads N] [--no-flex]

Both sides run forward only, fp32, [1, H, L, d] inputs from torch.manual_seed(0), on the same threads; the
median of --repeats runs after one warm-up (FlexAttention's first call compiles; block-mask building and
compilation are not timed). Rows:

  * engine: graph_attention.attention (this package: the Swift engine through its C ABI) with the mask and the
    score modifier; plain: the same mask without modifiers, for the modifier's cost;
  * flex: torch.compile(flex_attention) with a compiled create_block_mask of the equivalent mask_mod and
    score_mod (softcap: C * tanh(s / C); ALiBi: s - slope_h * |q - kv|; sinks: flex has none, and its CPU path
    cannot return the log-sum-exp under compile, so a sink is one extra key of zero value that every query
    attends to, with the sink logit as its score).
  * documents&causal at each --tokens length, documents of the mean length below, beside flex's document mask_mod;
  * documents&causal over --document-tokens tokens in --documents equal documents (engine only: FlexAttention
    would build a block mask of (L / 128)^2 blocks), against window:W:causal with the same number of edges.

One JSON object per row on stdout; a table on stderr.
"""
import argparse
import os
import json
import math
import statistics
import sys
import time

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # no compile workers beside the timings

import torch  # noqa: E402

import graph_attention  # noqa: E402


def timed(fn, repeats):
    fn()  # warm-up (FlexAttention compiles here)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), runs


def causal_window_edges(length, window):
    w = min(window, length - 1)
    return length * (w + 1) - w * (w + 1) // 2


def document_edges(offsets):
    return sum((b - a) * (b - a + 1) // 2 for a, b in zip(offsets, offsets[1:]))


def flex_runner(q, k, v, window, modifier, heads, sinks, slopes, softcap, offsets=None):
    """FlexAttention with the mask and modifier; sinks as one extra key (zero value) whose score is the sink
    logit, the usual way to express them in flex (its CPU path cannot return the log-sum-exp under compile).
    With `offsets`, the mask is causal attention within the documents those offsets delimit."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.reset()  # each row compiles its own kernel; a shared cache would hit the recompile limit
    L = q.shape[-2]
    with_sinks = modifier in ("sinks", "all")
    with_score_mod = modifier in ("softcap", "alibi", "all") or with_sinks
    if with_sinks:
        k = torch.cat([k, torch.zeros_like(k[:, :, :1])], dim=2)
        v = torch.cat([v, torch.zeros_like(v[:, :, :1])], dim=2)

    document = None
    if offsets is not None:
        document = torch.zeros(L, dtype=torch.int32)
        for i, (a, b) in enumerate(zip(offsets, offsets[1:])):
            document[a:b] = i

    def mask_mod(b, h, q_idx, kv_idx):
        if document is not None:
            inside = (document[q_idx] == document[kv_idx]) & (kv_idx <= q_idx)
        else:
            inside = (q_idx - kv_idx <= window) & (kv_idx - q_idx <= window)
        return (inside | (kv_idx == L)) if with_sinks else inside

    block_mask = torch.compile(create_block_mask)(mask_mod, None, None, L, k.shape[2], "cpu")
    slope_tensor = torch.tensor(slopes)
    sink_tensor = torch.tensor(sinks)

    def score_mod(score, b, h, q_idx, kv_idx):
        if modifier in ("softcap", "all"):
            score = softcap * torch.tanh(score / softcap)
        if modifier in ("alibi", "all"):
            score = score - slope_tensor[h] * (q_idx - kv_idx).abs()
        if with_sinks:
            score = torch.where(kv_idx == L, sink_tensor[h], score)
        return score

    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda: compiled(q, k, v, block_mask=block_mask, score_mod=score_mod if with_score_mod else None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", default="16384,32768")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--document-tokens", type=int, default=1 << 20)
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-flex", action="store_true")
    a = parser.parse_args()
    threads = a.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    softcap, heads = 50.0, a.heads
    slopes = [2 ** (-8 * (h + 1) / heads) for h in range(heads)]
    sinks = [0.5 + 0.25 * h for h in range(heads)]
    modifiers = {"plain": {}, "softcap": {"softcap": softcap}, "alibi": {"alibi": torch.tensor(slopes)},
                 "sinks": {"sinks": torch.tensor(sinks)},
                 "all": {"softcap": softcap, "alibi": torch.tensor(slopes), "sinks": torch.tensor(sinks)}}
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    # The engine's rows first: FlexAttention's compilation leaves worker processes that disturb timings.
    inputs = {}
    for length in [int(t) for t in a.tokens.split(",")]:
        torch.manual_seed(0)
        inputs[length] = tuple(torch.randn(1, heads, length, a.dim) for _ in range(3))
        q, k, v = inputs[length]
        mask = f"window:{a.window}"
        edges = (length * (2 * a.window + 1) - a.window * (a.window + 1)) * heads
        plain_seconds = None
        for name, kwargs in modifiers.items():
            seconds, runs = timed(lambda: graph_attention.attention(q, k, v, mask=mask, threads=threads, **kwargs), a.repeats)
            if name == "plain":
                plain_seconds = seconds
            emit({"side": "engine", "mask": mask, "modifier": name, "tokens": length, "dim": a.dim, "heads": heads,
                  "seconds": seconds, "runs": runs, "gflops": 4 * edges * a.dim / seconds / 1e9,
                  "over_plain": seconds / plain_seconds})
        # Packed causal documents of the 1M-token row's mean length.
        count = max(1, round(length * a.documents / a.document_tokens))
        offsets = [round(length * i / count) for i in range(count + 1)]
        spec = "documents:" + ",".join(str(o) for o in offsets) + "&causal"
        seconds, runs = timed(lambda: graph_attention.attention(q, k, v, mask=spec, threads=threads), a.repeats)
        emit({"side": "engine", "mask": "documents&causal", "documents": count, "offsets": offsets, "modifier": "plain",
              "tokens": length, "dim": a.dim, "heads": heads, "seconds": seconds, "runs": runs,
              "gflops": 4 * document_edges(offsets) * heads * a.dim / seconds / 1e9})

    # Packed documents against a causal window of the same edges.
    length, count = a.document_tokens, a.documents
    offsets = [round(length * i / count) for i in range(count + 1)]
    doc_edges = document_edges(offsets)
    window = 0
    while causal_window_edges(length, window + 1) <= doc_edges:
        window += 1
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, heads, length, a.dim) for _ in range(3))
    documents = "documents:" + ",".join(str(o) for o in offsets) + "&causal"
    for label, mask, edges in [("documents&causal", documents, doc_edges),
                               (f"window:{window}:causal", f"window:{window}:causal", causal_window_edges(length, window))]:
        seconds, runs = timed(lambda: graph_attention.attention(q, k, v, mask=mask, threads=threads), a.repeats)
        emit({"side": "engine", "mask": label, "documents": count if label.startswith("documents") else None,
              "modifier": "plain", "tokens": length, "dim": a.dim, "heads": heads, "edges_per_head": edges,
              "seconds": seconds, "runs": runs, "gflops": 4 * edges * heads * a.dim / seconds / 1e9})

    if not a.no_flex:
        for row in [r for r in rows if r["side"] == "engine" and r["tokens"] in inputs]:
            q, k, v = inputs[row["tokens"]]
            offsets = row.get("offsets")
            run = flex_runner(q, k, v, a.window, row["modifier"], heads, sinks, slopes, softcap, offsets)
            flex_seconds, flex_runs = timed(run, a.repeats)
            spec = "documents:" + ",".join(str(o) for o in offsets) + "&causal" if offsets else row["mask"]
            ours = graph_attention.attention(q, k, v, mask=spec, **modifiers[row["modifier"]])
            emit(dict(row, side="flex", seconds=flex_seconds, runs=flex_runs, gflops=row["gflops"] * row["seconds"] / flex_seconds,
                      engine_speedup=flex_seconds / row["seconds"],
                      max_abs_difference_from_engine=float((run() - ours).abs().max())))

    print(f"{'side':<7} {'mask':<24} {'modifier':<8} {'tokens':>8} {'seconds':>9} {'GFLOP/s':>8} {'x plain':>8} {'engine x':>8}",
          file=sys.stderr)
    for r in rows:
        over = f"{r['over_plain']:8.3f}" if "over_plain" in r and r["side"] == "engine" else f"{'-':>8}"
        speedup = f"{r['engine_speedup']:8.2f}" if "engine_speedup" in r else f"{'-':>8}"
        print(f"{r['side']:<7} {r['mask']:<24} {r['modifier']:<8} {r['tokens']:>8} {r['seconds']:9.4f} {r['gflops']:8.1f} {over} {speedup}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
