"""One training step of a small transformer with sequence-sharded graph attention, checked against one process.

Each rank holds a contiguous shard of every sequence (torch.tensor_split's split). Embeddings, LayerNorm and the
MLP act per token, so they run on the shard alone; attention is graph_attention.distributed.attention, which
fetches only the keys the mask's rows need from the other ranks (the halo of a window, the global tokens) and
returns this rank's rows. Each rank's loss is its tokens' share of the global mean, so the parameters' gradients
summed over the ranks (all_reduce) are the single-process gradients; the step then updates identical replicas.
Rank 0 also runs the same step in one process on the whole sequence and prints the largest difference.

    torchrun --nproc-per-node 4 examples/distributed_train_step.py [--length 2048] [--mask window:64+global:0]
"""
import argparse
import time

import torch
import torch.distributed as dist

import graph_attention
import graph_attention.distributed as gad

VOCAB = 16
DELAY = 24


def rotary(x, first, base=10000.0):
    """Rotary embedding of [B, H, n, d] at global positions first..first+n-1."""
    n, dim = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.arange(first, first + n, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class Block(torch.nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width))

    def forward(self, x, first, mask, distributed):
        b, n, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, first), rotary(k, first)
        if distributed:
            a = gad.attention(q, k, v, mask, threads=1)          # this rank's rows, keys fetched as the plan says
        else:
            a = graph_attention.attention(q, k, v, mask=mask, threads=1)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, width))
        return x + self.mlp(self.norm2(x))


class Model(torch.nn.Module):
    def __init__(self, width=64, heads=4, layers=2):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.head = torch.nn.Linear(width, VOCAB)

    def forward(self, tokens, first, mask, distributed):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, first, mask, distributed)
        return self.head(x)


def batch(length, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (2, length), generator=g)
    targets = torch.roll(tokens, DELAY, dims=1)
    return tokens, targets


def step(model, tokens, targets, first, total, mask, distributed, lr=0.1):
    """One SGD step; the loss is this shard's share of the mean over all `total` targets."""
    logits = model(tokens, first, mask, distributed)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), reduction="sum") / total
    model.zero_grad()
    loss.backward()
    if distributed:
        for p in model.parameters():
            dist.all_reduce(p.grad)  # the shards' gradients sum to the whole sequence's
        dist.all_reduce(loss := loss.detach().clone())
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return float(loss.detach())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--mask", default="window:64+global:0")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = Model()
    tokens, targets = batch(args.length, seed=1)
    total = targets.numel()
    shard = torch.tensor_split(torch.arange(args.length), world)[rank]
    first, n = int(shard[0]) if len(shard) else 0, len(shard)
    start = time.perf_counter()
    loss = step(model, tokens[:, first:first + n], targets[:, first:first + n], first, total, args.mask, True)
    seconds = time.perf_counter() - start
    traffic = gad.traffic()
    print(f"rank {rank}: {n} tokens, step {seconds:.3f} s, last layer sent {traffic['forward']} B forward, "
          f"{traffic['backward']} B backward", flush=True)
    if rank == 0:
        torch.manual_seed(0)
        reference = Model()
        ref_loss = step(reference, tokens, targets, 0, total, args.mask, False)
        difference = max(float((p - r).detach().abs().max()) for p, r in zip(model.parameters(), reference.parameters()))
        plan = gad.plan(args.mask, args.length, world, batch=2, heads=4, head_dim=16)
        print(f"{world} processes: loss {loss:.6f}, one process: {ref_loss:.6f}; largest parameter difference after "
              f"the step {difference:.2e}")
        print(f"plan: {plan}; ring attention would send {plan.ring_bytes[0]} B per rank per layer, this mask "
              f"{max(plan.forward_bytes)} B at most")
        ok = abs(loss - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss)) and difference <= 1e-5
        print("matches one process" if ok else "DIFFERS from one process", flush=True)
        status = torch.tensor([0 if ok else 1])
    else:
        status = torch.tensor([0])
    dist.broadcast(status, 0)
    dist.destroy_process_group()
    raise SystemExit(int(status))


if __name__ == "__main__":
    main()
