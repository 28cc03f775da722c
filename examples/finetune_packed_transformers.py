"""Trains a small random-initialised Hugging Face Mistral on packed documents at 65,536 tokens a step, on the CPU,
with `attn_implementation="graph_attention"`.

Each step packs random-length documents into one row of 65,536 tokens, as `DataCollatorWithFlattening` does:
positions restart at every document, the first label of each document is ignored. transformers' mask function
for graph_attention turns the restarting positions into `documents:...&window:W:causal`, so no token attends
across a document or beyond the sliding window, and nothing of size L x L is built. Inside a document, tokens
repeat with period PERIOD (a random pattern, fresh per document), so the model can only lower its loss by
attending PERIOD tokens back; the loss falls from log(VOCAB) towards the share of unpredictable tokens.

Eager attention at this length would hold an fp32 score matrix of 4 heads x 65,536^2 (64 GiB) per layer, and
SDPA with a packed-document mask a dense [65,536 x 65,536] mask (4 GiB as bool): neither fits this machine.

    python examples/finetune_packed_transformers.py [--tokens 65536] [--steps 40] [--window 256]
"""
import argparse
import math
import resource
import time

import torch
import transformers

import graph_attention.transformers  # noqa: F401  (registers attn_implementation="graph_attention")

VOCAB = 16
PERIOD = 24


def packed_batch(tokens, generator, shortest=512, longest=4096):
    """One row of packed documents: input ids, restarting position ids and labels (-100 at document starts)."""
    ids, positions, labels = [], [], []
    left = tokens
    while left > 0:
        n = min(left, int(torch.randint(shortest, longest + 1, (1,), generator=generator)))
        pattern = torch.randint(0, VOCAB, (PERIOD,), generator=generator)
        doc = pattern.repeat(math.ceil(n / PERIOD))[:n]
        ids.append(doc)
        positions.append(torch.arange(n))
        label = doc.clone()
        label[0] = -100  # the model shifts labels: this one would be predicted from the previous document
        labels.append(label)
        left -= n
    return torch.cat(ids)[None], torch.cat(positions)[None], torch.cat(labels)[None]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    config = transformers.MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, sliding_window=args.window,
                                        max_position_embeddings=args.tokens, attention_dropout=0.0, use_cache=False,
                                        pad_token_id=None, bos_token_id=None, eos_token_id=None)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="graph_attention").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    parameters = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(args.seed + 1)
    print(f"packed documents: {args.tokens} tokens a step, Mistral with a {args.window}-token sliding window, "
          f"{parameters} parameters, {torch.get_num_threads()} threads")
    print(f"step 0: loss should start near log({VOCAB}) = {math.log(VOCAB):.3f}; a document's first {PERIOD} tokens "
          "cannot be predicted")
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        ids, positions, labels = packed_batch(args.tokens, generator)
        loss = model(input_ids=ids, position_ids=positions, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step == 1 or step % 5 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():.4f}  {time.perf_counter() - start:7.1f} s", flush=True)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.steps} steps in {elapsed:.1f} s ({args.steps * args.tokens / elapsed:.0f} tokens/s), "
          f"peak resident memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
