"""Sequence-parallel (context-parallel) graph attention on torch.distributed: each rank holds a shard of the
sequence and fetches only the keys its rows attend to, as the mask's exchange plan says, or, where a rank needs
most of the other ranks' keys (dense causal, full), receives them block by block around a ring.

    import torch.distributed as dist, graph_attention.distributed as gad
    dist.init_process_group("gloo")                       # torchrun --nproc-per-node P ...
    P, r = dist.get_world_size(), dist.get_rank()
    q, k, v = (gad.shard(x, r, P) for x in (Q, K, V))
    out = gad.attention(q, k, v, "window:256+global:0")   # this rank's rows of the global attention
    q, k, v = (gad.shard(x, r, P, placement="zigzag") for x in (Q, K, V))
    out = gad.attention(q, k, v, "causal", placement="zigzag")   # balanced causal work, ring schedule

How (docs/distributed.md): rank r computes its rows against its own keys while the halo (the keys `plan` lists)
is in flight, then against the fetched keys, and merges the partial softmax states with log-sum-exp. Under the
ring schedule the other ranks' K/V blocks arrive one per step instead, each computed while the next is in
flight. Global tokens as queries are computed by every rank against its own keys and merged by the owner, so no
rank ships all its keys. The backward runs the engine's backward on the same views: dQ locally, dK and dV
partial sums of fetched keys returned to their owners and added in rank order (or, under the ring, accumulated
along the ring and returned). No atomics: the same bits on every run at a given world size.
"""
import math
from typing import Optional

import torch
import torch.distributed as dist

from . import _exchange
from ._attention import alibi_code, backward_raw, check_softcap, forward_raw
from ._library import ALIBI_NONE, ALIBI_SLOPES, ALIBI_STANDARD, GraphAttentionError
from .graph import Graph, cached_graph

__all__ = ["attention", "plan", "shard", "unshard", "traffic", "ExchangePlan"]

ExchangePlan = _exchange.ExchangePlan

_FORWARD_TAG, _PARTIAL_TAG, _STATE_TAG, _GRADIENT_TAG = 11, 12, 13, 14
_RING_TAG, _ACCUMULATOR_TAG, _RETURN_TAG = 15, 16, 17


def plan(mask, tokens, world_size, shard_sizes=None, *, batch=1, heads=1, kv_heads=None, head_dim=64, value_dim=None,
         element_bytes=4, placement="contiguous", schedule="auto"):
    """The exchange plan of `mask` (a specification, a Graph, or one per query head) over `tokens` tokens on
    `world_size` ranks: contiguous shards of `shard_sizes`, or `torch.tensor_split`'s (the first
    `tokens % world_size` shards one token longer); or with `placement="zigzag"` chunks r and 2P-1-r of
    `torch.tensor_split(x, 2P)` on rank r.

    Returns an `ExchangePlan`: per pair of ranks the key runs `needs[r][s]` (start, count, stride) and their
    `key_counts[r][s]`, the `global_rows`, the `schedule` that `attention(..., schedule=schedule)` runs ("direct"
    or "ring"), and per rank the bytes sent per forward and backward pass under it for the given shape
    (`forward_bytes`, `backward_bytes`), the most other ranks' key rows held at once (`fetched_keys_peak`), and
    full ring attention's forward bytes (`ring_bytes`). Computed in closed form for structured masks (no pass
    over rows; O(P^2) runs), by enumeration for random and explicit ones. Pure: no process group needed, so
    other transports (MPI) can use it.
    """
    masks = _expand_per_head(mask, heads)
    return _exchange.make_plan(masks, tokens, world_size, shard_sizes, batch=batch, heads=heads, kv_heads=kv_heads,
                               head_dim=head_dim, value_dim=value_dim, element_bytes=element_bytes, placement=placement,
                               schedule=schedule)


def shard(x, rank, world_size, placement="contiguous", dim=-2):
    """Rank `rank`'s shard of the global tensor `x` along `dim` (the sequence) under `placement`.

    Contiguous: `torch.tensor_split(x, world_size, dim)[rank]` (a view). Zigzag: chunks `rank` and
    `2 * world_size - 1 - rank` of `torch.tensor_split(x, 2 * world_size, dim)`, concatenated (a copy). O(shard)."""
    _exchange.check_placement(placement)
    if not 0 <= rank < world_size:
        raise GraphAttentionError(f"shape: rank {rank} is outside 0..<{world_size}. Fix: pass this rank's index in "
                                  "the group (dist.get_rank(group)).", "shape")
    if placement == "contiguous":
        return torch.tensor_split(x, world_size, dim=dim)[rank]
    chunks = torch.tensor_split(x, 2 * world_size, dim=dim)
    return torch.cat([chunks[rank], chunks[2 * world_size - 1 - rank]], dim=dim)


def unshard(shards, placement="contiguous", dim=-2):
    """The global tensor from every rank's shard (a list in rank order, as `shard` makes them, e.g. gathered
    outputs), the inverse of `shard`. O(tokens)."""
    _exchange.check_placement(placement)
    shards = list(shards)
    if placement == "contiguous":
        return torch.cat(shards, dim=dim)
    world = len(shards)
    tokens = sum(t.shape[dim] for t in shards)
    sizes = [t.shape[dim] for t in shards]
    if sizes != _exchange.zigzag_sizes(tokens, world):
        raise GraphAttentionError(f"shape: the shards hold {sizes} tokens along dim {dim}, not zigzag placement's "
                                  f"{_exchange.zigzag_sizes(tokens, world)} for {tokens} tokens. Fix: pass every "
                                  "rank's shard in rank order, as shard(x, rank, world_size, placement='zigzag') "
                                  "makes them.", "shape")
    chunks = _exchange.split_sizes(tokens, 2 * world)
    first = [t.narrow(dim, 0, chunks[r]) for r, t in enumerate(shards)]
    second = [t.narrow(dim, chunks[r], t.shape[dim] - chunks[r]) for r, t in enumerate(shards)]
    return torch.cat(first + second[::-1], dim=dim)


_last_traffic = {"forward": 0, "backward": 0, "forward_messages": 0, "backward_messages": 0, "fetched_keys_peak": 0}


def traffic():
    """This rank's last distributed forward and backward pass: bytes sent ("forward", "backward"), point-to-point
    messages sent ("forward_messages", "backward_messages"), and the most other ranks' K/V rows the forward held
    at once ("fetched_keys_peak": the fetched keys under the direct exchange, the block computed plus the block
    in flight under the ring)."""
    return dict(_last_traffic)


def _spec_of(m):
    return m.spec if isinstance(m, Graph) else m


def _expand_per_head(mask, heads):
    """The masks as a list: one for every head, or one per head when a single mask varies per head."""
    if isinstance(mask, (list, tuple)):
        if len(mask) != heads:
            raise GraphAttentionError(f"mask: {len(mask)} masks were given for {heads} query head(s). Fix: give one "
                                      "mask per query head, or one mask for every head.", "mask")
        return list(mask)
    if not isinstance(mask, (str, Graph)):
        raise TypeError(f"mask must be a specification string, a Graph, or a list of them, got {type(mask).__name__}")
    if "per-head" in _spec_of(mask) and heads > 1:
        return [mask] * heads
    return [mask]


def _as4d(x, name):
    if not isinstance(x, torch.Tensor):
        raise GraphAttentionError(f"dtype: {name} is a {type(x).__name__}. Fix: pass torch tensors.", "dtype")
    if not 2 <= x.dim() <= 4:
        raise GraphAttentionError(f"shape: {name} has rank {x.dim()} (shape {list(x.shape)}). Fix: use [L, d], "
                                  "[H, L, d] or [B, H, L, d].", "shape")
    while x.dim() < 4:
        x = x.unsqueeze(0)
    return x


def _runs_of(rows):
    """Sorted unique indices as (start, count, 1) runs."""
    runs = []
    for g in rows:
        if runs and runs[-1][0] + runs[-1][1] == g:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, 1)
        else:
            runs.append((g, 1, 1))
    return runs


def _indices(runs):
    """The indices of `runs` as an int64 tensor."""
    if not runs:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat([torch.arange(start, start + count * stride, stride, dtype=torch.int64)
                      for start, count, stride in runs])


def _local(runs, segments):
    """The positions of the global indices of `runs` in a shard concatenating `segments` ((start, stop) ranges)."""
    index = _indices(runs)
    out = torch.empty_like(index)
    at = 0
    for a, b in segments:
        inside = (index >= a) & (index < b)
        out[inside] = index[inside] - a + at
        at += b - a
    return out


def _split_runs(runs):
    """Runs as contiguous pieces (strided runs key by key), for calls with ALiBi, which need one alignment."""
    out = []
    for start, count, stride in runs:
        if stride == 1 or count == 1:
            out.append([(start, count, 1)])
        else:
            out.extend([(start + t * stride, 1, 1)] for t in range(count))
    return out


def _spans(pieces):
    """(first, count) of each piece of runs among the pieces' indices concatenated."""
    spans, at = [], 0
    for piece in pieces:
        n = sum(run[1] for run in piece)
        spans.append((at, n))
        at += n
    return spans


class _Calls:
    """The engine calls of some rows against some keys (both sorted runs of global indices; the row and key
    tensors hold their tokens in run order): one view per (row piece, key piece) and head. Without ALiBi one
    piece each; with it, every contiguous run is a piece (a view with ALiBi needs one alignment)."""

    def __init__(self, graphs, tokens, row_runs, key_runs, excluded, alibi):
        row_pieces = _split_runs(row_runs) if alibi else [row_runs]
        key_pieces = _split_runs(key_runs) if alibi else [key_runs]
        self.rows, self.keys = _spans(row_pieces), _spans(key_pieces)
        self.views = [[[_exchange.view_graph(g, tokens, rows, keys, excluded) for g in graphs] for keys in key_pieces]
                      for rows in row_pieces]

    @staticmethod
    def _slice(x, first, count):
        return x if first == 0 and count == x.shape[2] else x[:, :, first:first + count]

    def forward(self, engine, q, k, v):
        """Partial states [(out, lse)] of every row, one per key piece, in piece order."""
        parts = []
        for j, (kf, kn) in enumerate(self.keys):
            kj, vj = self._slice(k, kf, kn), self._slice(v, kf, kn)
            if len(self.rows) == 1:
                parts.append(engine.forward(self.views[0][j], q, kj, vj))
                continue
            out = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=torch.float32)
            lse = torch.empty(q.shape[:-1], dtype=torch.float32)
            for i, (rf, rn) in enumerate(self.rows):
                out[:, :, rf:rf + rn], lse[:, :, rf:rf + rn] = engine.forward(self.views[i][j], q[:, :, rf:rf + rn], kj, vj)
            parts.append((out, lse))
        return parts

    def backward(self, engine, q, k, v, out, lse, dout):
        """(dQ of the rows, dK and dV of the keys), summed over the pieces in a fixed order."""
        dq, dk, dv = torch.zeros(q.shape), torch.zeros(k.shape), torch.zeros(v.shape)
        for i, (rf, rn) in enumerate(self.rows):
            rows = [self._slice(x, rf, rn) for x in (q, out, lse, dout)]
            for j, (kf, kn) in enumerate(self.keys):
                gq, gk, gv = engine.backward(self.views[i][j], rows[0], self._slice(k, kf, kn), self._slice(v, kf, kn),
                                             *rows[1:])
                self._slice(dq, rf, rn).add_(gq)
                self._slice(dk, kf, kn).add_(gk)
                self._slice(dv, kf, kn).add_(gv)
        return dq, dk, dv


class _Layer:
    """Everything one rank needs for one mask, placement and schedule: the plan, index tensors, engine calls
    (cached)."""

    def __init__(self, masks, sizes, rank, heads, alibi, placement, schedule):
        tokens = sum(sizes)
        world = len(sizes)
        graphs = [cached_graph(m) for m in masks]
        self.plan = p = _exchange.make_plan(graphs, tokens, world, sizes if placement == "contiguous" else None,
                                            placement=placement, schedule=schedule)
        self.rank, self.world, self.tokens, self.sizes = rank, world, tokens, sizes
        self.segments = p.segments[rank]
        self.size = sizes[rank]
        self.ring = p.schedule == "ring"
        own_runs = [(a, b - a, 1) for a, b in self.segments if b > a]
        # Global rows in sorted order; each rank's positions among them.
        self.global_rows = p.global_rows
        owners = [p.owner(g) for g in p.global_rows]
        self.own_global = [g for g, o in zip(p.global_rows, owners) if o == rank]
        self.own_global_local = _local(_runs_of(self.own_global), self.segments)
        self.global_index = [torch.tensor([i for i, o in enumerate(owners) if o == s], dtype=torch.int64)
                             for s in range(world)]
        self.global_counts = [len(index) for index in self.global_index]
        # The direct exchange: keys other ranks fetch from this one (local positions), keys fetched from each.
        direct = not self.ring
        self.send_index = [_local(p.needs[s][rank], self.segments) if direct else None for s in range(world)]
        self.send_counts = [p.key_counts[s][rank] if direct else 0 for s in range(world)]
        self.receive_counts = [p.key_counts[rank][s] if direct and s != rank else 0 for s in range(world)]
        self.remote_count = sum(self.receive_counts)
        self.local = _Calls(graphs, tokens, own_runs, own_runs, self.own_global, alibi) if self.size else None
        self.remote = []  # (first fetched key, count, calls) per rank fetched from, in rank order
        at = 0
        for s in range(world):
            if self.receive_counts[s]:
                if self.size:
                    self.remote.append((at, self.receive_counts[s],
                                        _Calls(graphs, tokens, own_runs, p.needs[rank][s], self.own_global, alibi)))
                at += self.receive_counts[s]
        self.global_calls = _Calls(graphs, tokens, _runs_of(self.global_rows), own_runs, (), alibi) \
            if self.size and self.global_rows else None
        # The ring: per step, the rank whose block arrives (or None) and whether this rank computes on it.
        self.incoming = [_exchange.ring_incoming(p.ring_hops, sizes, rank, t) if self.ring else None
                         for t in range(world + 1)]
        self.ring_calls = {}
        for s in self.incoming:
            if s is not None and self.size and p.key_counts[rank][s]:
                keys = [(a, b - a, 1) for a, b in p.segments[s] if b > a]
                self.ring_calls[s] = _Calls(graphs, tokens, own_runs, keys, self.own_global, alibi)

    def passes_on(self, step):
        """Under the ring, whether the block that arrived at `step` (this rank's own at step 0) goes on to the
        next rank at step + 1."""
        s = self.rank if step == 0 else self.incoming[step]
        return s is not None and self.sizes[s] > 0 and step + 1 <= self.plan.ring_hops[s]


_layers = {}


def _layer(masks, sizes, rank, heads, alibi, placement, schedule):
    key = (tuple(_spec_of(m) for m in masks), tuple(sizes), rank, heads, bool(alibi), placement, schedule)
    layer = _layers.get(key)
    if layer is None:
        if len(_layers) > 32:
            _layers.clear()
        layer = _layers[key] = _Layer(masks, sizes, rank, heads, alibi, placement, schedule)
    return layer


class _Engine:
    """Calls of the single-process engine on views: partial states (output, LSE) without sinks, and gradients."""

    def __init__(self, scale, threads, softcap, alibi, slopes):
        self.scale, self.threads, self.softcap = scale, threads, softcap
        self.alibi, self.slopes = alibi, slopes

    def _modifiers(self):
        if self.softcap is None and self.alibi == ALIBI_NONE:
            return None
        return (self.softcap, self.alibi, None if self.slopes is None else self.slopes.data_ptr(), None)

    def forward(self, views, q, k, v):
        out = torch.empty(q.shape[:-1] + v.shape[-1:], dtype=torch.float32)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        forward_raw(views, [t.data_ptr() for t in (q, k, v)], [tuple(t.shape) for t in (q, k, v)], "float32",
                    out.data_ptr(), lse.data_ptr(), self.scale, 0, self.threads, False, self._modifiers())
        return out, lse

    def backward(self, views, q, k, v, out, lse, dout):
        q, k, v, out, lse, dout = (t.contiguous() for t in (q, k, v, out, lse, dout))
        grads = [torch.empty(t.shape, dtype=torch.float32) for t in (q, k, v)]
        backward_raw(views, [t.data_ptr() for t in (q, k, v)], [tuple(t.shape) for t in (q, k, v)], "float32",
                     out.data_ptr(), lse.data_ptr(), dout.data_ptr(), [g.data_ptr() for g in grads], self.scale, 0,
                     self.threads, False, self._modifiers())
        return grads


def _merge(parts, sinks=None):
    """Merges partial states [(out [B,H,n,dv], lse [B,H,n])] over disjoint keys, in list order, in float64: the
    softmax over the union of the keys (and the sink logits [H], when given)."""
    lses = [lse.double() for _, lse in parts]
    if sinks is not None:
        lses.append(sinks.double().view(1, -1, 1).expand_as(lses[0]))
    stacked = torch.stack(lses)
    total = torch.logsumexp(stacked, dim=0)
    finite = torch.isfinite(total)
    out = torch.zeros(parts[0][0].shape, dtype=torch.float64)
    for (o, _), lse in zip(parts, lses):
        weight = torch.where(finite, torch.exp(lse - torch.where(finite, total, 0.0)), 0.0)
        out += weight.unsqueeze(-1) * o.double()
    return out.float(), total.float()


def _send(t, peer, group, tag, phase):
    """Posts `t` (fp32) to rank `peer` of `group` and counts its bytes; returns (request, tensor kept alive)."""
    t = t.contiguous()
    request = dist.isend(t, dst=_global_rank(group, peer), group=group, tag=tag)
    _last_traffic[phase] += t.numel() * t.element_size()
    _last_traffic[phase + "_messages"] += 1
    return request, t


def _receive(count, peer, group, tag):
    """Posts a receive of `count` fp32 elements from rank `peer`; returns (request, buffer)."""
    buffer = torch.empty(count, dtype=torch.float32)
    return dist.irecv(buffer, src=_global_rank(group, peer), group=group, tag=tag), buffer


def _wait(pending):
    """Waits for posted (request, tensor) pairs; returns the tensors."""
    for request, _ in pending:
        request.wait()
    return [t for _, t in pending]


class _Exchange:
    """One round of point-to-point messages (one per peer with something to say), posted at once."""

    def __init__(self, group, rank, world, tag, phase):
        self.group, self.rank, self.world, self.tag, self.phase = group, rank, world, tag, phase
        self.receives, self.sends = {}, []

    def post(self, sends, receive_sizes):
        """`sends[s]`: a flat fp32 tensor for rank s (or None); `receive_sizes[s]`: elements expected from s."""
        for s in range(self.world):
            if s != self.rank and receive_sizes[s]:
                self.receives[s] = _receive(receive_sizes[s], s, self.group, self.tag)
        for s in range(self.world):
            t = sends[s]
            if s != self.rank and t is not None and t.numel():
                self.sends.append(_send(t, s, self.group, self.tag, self.phase))

    def wait(self):
        _wait(self.sends)
        return {s: _wait([pair])[0] for s, pair in self.receives.items()}


class _RingForward:
    """The forward's K/V ring: at step t (1..P-1) rank r computes on the block of rank r-t while the block of
    r-t-1 is in flight; a block travels only as far as the plan's `ring_hops`. Compute failures are kept, and
    the messages go on, so no rank waits forever."""

    def __init__(self, layer, group, k, v):
        self.layer, self.group = layer, group
        self.b, self.hkv, self.dk, self.dv = k.shape[0], k.shape[1], k.shape[-1], v.shape[-1]
        self.own = torch.cat([k.reshape(-1), v.reshape(-1)])
        self.peak = 0

    def _post_receive(self, step):
        s = self.layer.incoming[step] if step < self.layer.world else None
        if s is None:
            return None
        n = self.layer.sizes[s] * self.b * self.hkv * (self.dk + self.dv)
        return _receive(n, (self.layer.rank - 1) % self.layer.world, self.group, _RING_TAG)

    def start(self):
        """Posts step 1: the receive of the first block and the send of this rank's own."""
        layer = self.layer
        self.pending = self._post_receive(1)
        self.sends = [_send(self.own, (layer.rank + 1) % layer.world, self.group, _RING_TAG, "forward")] \
            if layer.passes_on(0) else []

    def run(self, engine, q, parts, failure):
        """Steps 1..P-1, appending each computed block's partial states to `parts` in step order; returns the
        first failure (the one given, or one of this rank's engine calls)."""
        layer = self.layer
        b, hkv, dk, dv = self.b, self.hkv, self.dk, self.dv
        for t in range(1, layer.world):
            s = layer.incoming[t]
            current = _wait([self.pending])[0] if s is not None else None
            _wait(self.sends)  # the previous block's send: its buffer is free now
            self.sends = []
            self.pending = self._post_receive(t + 1)
            held = (layer.sizes[s] if s is not None else 0) + (layer.sizes[layer.incoming[t + 1]] if self.pending else 0)
            self.peak = max(self.peak, held)
            if current is None:
                continue
            if layer.passes_on(t):
                self.sends.append(_send(current, (layer.rank + 1) % layer.world, self.group, _RING_TAG, "forward"))
            calls = layer.ring_calls.get(s)
            if calls is not None and failure is None:
                n = layer.sizes[s]
                kk = current[:b * hkv * n * dk].view(b, hkv, n, dk)
                vv = current[b * hkv * n * dk:].view(b, hkv, n, dv)
                try:
                    parts.extend(calls.forward(engine, q, kk, vv))
                except Exception as error:  # noqa: BLE001 - reported to every rank by the caller
                    failure = error
        _wait(self.sends)
        return failure


def _ring_backward(layer, engine, group, q, k, v, out, lse, dout, dq, failure):
    """The backward's ring: blocks travel as in the forward (K/V sent on before the compute); each block's dK, dV
    accumulator follows it (sent after this rank adds its share: incoming sum first, then this rank's) and, at
    the block's last hop, returns to its owner. Adds this rank's dQ shares to `dq` in step order; returns
    (this rank's own block's returned accumulator [dK | dV flat] or None, the first failure)."""
    world, rank = layer.world, layer.rank
    b, hkv, dk, dv = k.shape[0], k.shape[1], k.shape[-1], v.shape[-1]
    after, before = (rank + 1) % world, (rank - 1) % world
    hops = layer.plan.ring_hops

    def size(s):
        return layer.sizes[s] * b * hkv * (dk + dv)

    def post(step):  # the block of `step` and, after the first hop, its accumulator
        s = layer.incoming[step] if step < world else None
        if s is None:
            return None
        return (_receive(size(s), before, group, _RING_TAG),
                _receive(size(s), before, group, _ACCUMULATOR_TAG) if step >= 2 else None)

    returned = _receive(size(rank), (rank + hops[rank]) % world, group, _RETURN_TAG) if hops[rank] else None
    pending = post(1)
    sends = [_send(torch.cat([k.reshape(-1), v.reshape(-1)]), after, group, _RING_TAG, "backward")] \
        if layer.passes_on(0) else []
    for t in range(1, world):
        s = layer.incoming[t]
        current = pending
        block = _wait([current[0]])[0] if s is not None else None
        _wait(sends)
        sends = []
        pending = post(t + 1)
        if block is None:
            continue
        if layer.passes_on(t):
            sends.append(_send(block, after, group, _RING_TAG, "backward"))
        n = layer.sizes[s]
        share = None
        calls = layer.ring_calls.get(s)
        if calls is not None and failure is None:
            kk = block[:b * hkv * n * dk].view(b, hkv, n, dk)
            vv = block[b * hkv * n * dk:].view(b, hkv, n, dv)
            try:
                gq, gk, gv = calls.backward(engine, q, kk, vv, out, lse, dout)
                dq += gq
                share = torch.cat([gk.reshape(-1), gv.reshape(-1)])
            except Exception as error:  # noqa: BLE001 - reported to every rank by the caller
                failure = error
        accumulator = _wait([current[1]])[0] if current[1] is not None else torch.zeros(size(s))
        if share is not None:
            accumulator = accumulator + share
        if layer.passes_on(t):
            sends.append(_send(accumulator, after, group, _ACCUMULATOR_TAG, "backward"))
        else:
            sends.append(_send(accumulator, s, group, _RETURN_TAG, "backward"))
    _wait(sends)
    return (_wait([returned])[0] if returned is not None else None), failure


def _global_rank(group, rank):
    return rank if group is None else dist.get_global_rank(group, rank)


def _agree(group, failure, world):
    """Every rank learns whether any rank failed; then all raise (`_raise_failures`)."""
    flag = torch.tensor([1 if failure is not None else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    if flag.item():
        _raise_failures(group, failure, world)


def _raise_failures(group, failure, world):
    """Raises on every rank (all must call it) an error naming the ranks that failed and their messages."""
    messages = [None] * world
    dist.all_gather_object(messages, None if failure is None else f"{type(failure).__name__}: {failure}", group=group)
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    text = "; ".join(f"rank {r}: {m}" for r, m in failed)
    raise GraphAttentionError(f"distributed: attention failed on rank(s) {[r for r, _ in failed]} ({text}). Fix: "
                              "correct that rank's inputs; every rank raises so none waits for the others.",
                              "distributed") from failure


class _DistributedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sinks, config):
        layer, engine, group = config["layer"], config["engine"], config["group"]
        rank, world = layer.rank, layer.world
        b, h, n, dk = q.shape
        hkv, dv = k.shape[1], v.shape[-1]
        g = len(layer.global_rows)
        _last_traffic.update(forward=0, forward_messages=0, fetched_keys_peak=0)
        # 1. Post the direct exchange (K/V halos unless the ring moves K/V; this rank's global rows' Q), and the
        #    ring's first step.
        own_q = q[:, :, layer.own_global_local, :] if layer.own_global else None
        sends = []
        for s in range(world):
            parts = []
            if layer.send_counts[s]:
                index = layer.send_index[s]
                parts += [k[:, :, index, :].reshape(-1), v[:, :, index, :].reshape(-1)]
            if own_q is not None and layer.sizes[s]:
                parts.append(own_q.reshape(-1))
            sends.append(torch.cat(parts) if parts else None)
        receive = [layer.receive_counts[s] * b * hkv * (dk + dv) + layer.global_counts[s] * b * h * dk * (layer.size > 0)
                   for s in range(world)]
        exchange = _Exchange(group, rank, world, _FORWARD_TAG, "forward")
        exchange.post(sends, receive)
        ring = _RingForward(layer, group, k, v) if layer.ring else None
        if ring is not None:
            ring.start()
        failure = None
        parts, global_partial = [], None
        try:
            # 2. Local edges while the exchange (or the ring's first block) is in flight.
            if layer.size:
                parts.extend(layer.local.forward(engine, q, k, v))
        except Exception as error:  # noqa: BLE001 - reported to every rank below
            failure = error
        if ring is not None:
            failure = ring.run(engine, q, parts, failure)
        received = exchange.wait()
        k_far = torch.empty(b, hkv, layer.remote_count, dk)
        v_far = torch.empty(b, hkv, layer.remote_count, dv)
        _last_traffic["fetched_keys_peak"] = ring.peak if ring is not None else layer.remote_count
        q_global = torch.empty(b, h, g, dk)
        at = 0
        for s in range(world):
            count = layer.receive_counts[s]
            index = layer.global_index[s]
            if s == rank:
                if own_q is not None:
                    q_global[:, :, index, :] = own_q
                continue
            buffer = received.get(s)
            if buffer is None:
                continue
            kn, vn = b * hkv * count * dk, b * hkv * count * dv
            if count:
                k_far[:, :, at:at + count, :] = buffer[:kn].view(b, hkv, count, dk)
                v_far[:, :, at:at + count, :] = buffer[kn:kn + vn].view(b, hkv, count, dv)
            if len(index) and layer.size:
                q_global[:, :, index, :] = buffer[kn + vn:].view(b, h, len(index), dk)
            at += count
        # 3. Fetched keys (in rank order), and every global row against this rank's keys.
        try:
            if failure is None and layer.size:
                for first, count, calls in layer.remote:
                    parts.extend(calls.forward(engine, q, k_far[:, :, first:first + count], v_far[:, :, first:first + count]))
                if g:
                    pieces = layer.global_calls.forward(engine, q_global, k, v)
                    global_partial = pieces[0] if len(pieces) == 1 else _merge(pieces)
        except Exception as error:  # noqa: BLE001
            failure = error
        _agree(group, failure, world)
        # 4. Partial states of global rows to their owners; merge.
        if g:
            sends = [None] * world
            for s in range(world):
                index = layer.global_index[s]
                if s != rank and len(index) and global_partial is not None:
                    sends[s] = torch.cat([global_partial[0][:, :, index, :].reshape(-1),
                                          global_partial[1][:, :, index].reshape(-1)])
            mine = len(layer.own_global)
            receive = [mine * b * h * (dv + 1) if layer.sizes[s] else 0 for s in range(world)]
            exchange = _Exchange(group, rank, world, _PARTIAL_TAG, "forward")
            exchange.post(sends, receive)
            received = exchange.wait()
        if layer.size:
            out, lse = _merge(parts, sinks)
        else:
            out, lse = torch.zeros(b, h, 0, dv), torch.zeros(b, h, 0)
        if g and layer.own_global:
            mine = len(layer.own_global)
            index = layer.global_index[rank]
            states = []
            for s in range(world):
                if s == rank:
                    states.append((global_partial[0][:, :, index, :], global_partial[1][:, :, index]))
                elif s in received:
                    buffer = received[s]
                    states.append((buffer[:b * h * mine * dv].view(b, h, mine, dv), buffer[b * h * mine * dv:].view(b, h, mine)))
            merged_out, merged_lse = _merge(states, sinks)
            out[:, :, layer.own_global_local, :] = merged_out
            lse[:, :, layer.own_global_local] = merged_lse
        ctx.config = config
        ctx.far = (k_far, v_far, q_global)
        ctx.save_for_backward(q, k, v, out, lse, sinks)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        config = ctx.config
        layer, engine, group = config["layer"], config["engine"], config["group"]
        rank, world = layer.rank, layer.world
        q, k, v, out, lse, sinks = ctx.saved_tensors
        k_far, v_far, q_global = ctx.far
        b, h, n, dk = q.shape
        hkv, dv = k.shape[1], v.shape[-1]
        g = len(layer.global_rows)
        dout = dout.float().contiguous()
        _last_traffic.update(backward=0, backward_messages=0)
        # 1. Global rows' O, LSE and dO to every rank that computed them.
        mine = len(layer.own_global)
        exchange = None
        if g:
            state = None
            if mine:
                index = layer.own_global_local
                state = torch.cat([out[:, :, index, :].reshape(-1), lse[:, :, index].reshape(-1),
                                   dout[:, :, index, :].reshape(-1)])
            sends = [state if layer.sizes[s] else None for s in range(world)]
            receive = [layer.global_counts[s] * b * h * (2 * dv + 1) * (layer.size > 0) for s in range(world)]
            exchange = _Exchange(group, rank, world, _STATE_TAG, "backward")
            exchange.post(sends, receive)
        failure = None
        dq = torch.zeros(b, h, n, dk)
        dk_local = torch.zeros(b, hkv, n, dk)
        dv_local = torch.zeros(b, hkv, n, dv)
        dk_far = torch.zeros(b, hkv, layer.remote_count, dk)
        dv_far = torch.zeros(b, hkv, layer.remote_count, dv)
        dq_global = None
        returned = None
        try:
            if layer.size:
                gq, gk, gv = layer.local.backward(engine, q, k, v, out, lse, dout)
                dq += gq
                dk_local += gk
                dv_local += gv
                for first, count, calls in layer.remote:
                    gq, gk, gv = calls.backward(engine, q, k_far[:, :, first:first + count],
                                                v_far[:, :, first:first + count], out, lse, dout)
                    dq += gq
                    dk_far[:, :, first:first + count] = gk
                    dv_far[:, :, first:first + count] = gv
        except Exception as error:  # noqa: BLE001
            failure = error
        if layer.ring:
            returned, failure = _ring_backward(layer, engine, group, q, k, v, out, lse, dout, dq, failure)
        if exchange is not None:
            received = exchange.wait()
            try:
                if failure is None and layer.size:
                    o_g, lse_g, do_g = torch.empty(b, h, g, dv), torch.empty(b, h, g), torch.empty(b, h, g, dv)
                    for s in range(world):
                        index = layer.global_index[s]
                        count = len(index)
                        if not count:
                            continue
                        if s == rank:
                            local = layer.own_global_local
                            o_g[:, :, index], lse_g[:, :, index], do_g[:, :, index] = \
                                out[:, :, local], lse[:, :, local], dout[:, :, local]
                            continue
                        buffer = received[s]
                        m = b * h * count
                        o_g[:, :, index] = buffer[:m * dv].view(b, h, count, dv)
                        lse_g[:, :, index] = buffer[m * dv:m * dv + m].view(b, h, count)
                        do_g[:, :, index] = buffer[m * dv + m:].view(b, h, count, dv)
                    dq_global, gk, gv = layer.global_calls.backward(engine, q_global, k, v, o_g, lse_g, do_g)
                    dk_local += gk
                    dv_local += gv
            except Exception as error:  # noqa: BLE001
                failure = error
        _agree(group, failure, world)
        if returned is not None:  # this rank's block's dK, dV accumulated along the ring
            kn = b * hkv * n * dk
            dk_local += returned[:kn].view(b, hkv, n, dk)
            dv_local += returned[kn:].view(b, hkv, n, dv)
        # 2. Partial dK, dV of fetched keys back to their owners; partial dQ of global rows to theirs.
        sends = []
        at = 0
        for s in range(world):
            parts = []
            count = layer.receive_counts[s]
            if count:
                parts += [dk_far[:, :, at:at + count].reshape(-1), dv_far[:, :, at:at + count].reshape(-1)]
                at += count
            index = layer.global_index[s]
            if s != rank and len(index) and dq_global is not None:
                parts.append(dq_global[:, :, index].reshape(-1))
            sends.append(torch.cat(parts) if parts else None)
        receive = [layer.send_counts[s] * b * hkv * (dk + dv) + (mine * b * h * dk if layer.sizes[s] else 0)
                   for s in range(world)]
        exchange = _Exchange(group, rank, world, _GRADIENT_TAG, "backward")
        exchange.post(sends, receive)
        received = exchange.wait()
        # 3. Sums in rank order.
        dq_own = [None] * world
        for s in range(world):
            if s == rank:
                if mine and dq_global is not None:
                    dq_own[s] = dq_global[:, :, layer.global_index[rank]]
                continue
            buffer = received.get(s)
            if buffer is None:
                continue
            count = layer.send_counts[s]
            kn, vn = b * hkv * count * dk, b * hkv * count * dv
            if count:
                index = layer.send_index[s]
                dk_local[:, :, index] += buffer[:kn].view(b, hkv, count, dk)
                dv_local[:, :, index] += buffer[kn:kn + vn].view(b, hkv, count, dv)
            if mine:
                dq_own[s] = buffer[kn + vn:].view(b, h, mine, dk)
        if mine:
            total = torch.zeros(b, h, mine, dk)
            for part in dq_own:
                if part is not None:
                    total += part
            dq[:, :, layer.own_global_local] += total
        dsinks = None
        if sinks is not None and ctx.needs_input_grad[3]:
            d = (dout.double() * out.double()).sum(-1)  # [b, h, n]
            dsinks = -(torch.exp(sinks.double().view(1, -1, 1) - lse.double()) * d).sum(dim=(0, 2)).float()
        return dq, dk_local, dv_local, dsinks, None


def attention(query, key, value, mask, *, group=None, scale=None, softcap=None, alibi=None, sinks=None,
              return_lse=False, shard_sizes=None, threads=None, placement="contiguous", schedule="auto"):
    """This rank's rows of exact graph attention over a sequence sharded across the ranks of `group`.

    Args:
        query, key, value: this rank's shard, `[L_r, d]`, `[H, L_r, d]` or `[B, H, L_r, d]` CPU fp32 tensors (key
            and value may have fewer heads: GQA), as `shard(x, rank, P, placement)` makes them. Contiguous
            placement: the shards in rank order covering the sequence, `torch.tensor_split(x, P, dim=-2)`'s or of
            any sizes (`shard_sizes`, checked against the tensors; a rank may hold 0 tokens). Zigzag: chunks r
            and 2P-1-r of `torch.tensor_split(x, 2P, dim=-2)`, concatenated. Self-attention: queries and keys
            share the sharding.
        mask: the global mask (a specification, a Graph, or one per query head) in global positions.
        group: the process group (None: the default group). Backends: gloo (CPU tensors).
        scale, softcap, alibi, sinks: as `graph_attention.attention`. ALiBi's distances are global. `sinks`, a
            tensor, receives this rank's share of its gradient (sum it over the ranks, as for any replicated
            parameter).
        return_lse: also return the rows' log-sum-exp (sinks included).
        threads: engine threads per rank (None: every processor).
        placement: "contiguous" (default) or "zigzag" (balances a causal mask's work: every rank holds one early
            and one late chunk). Outputs and gradients come back in the same layout as the inputs.
        schedule: how other ranks' K and V arrive: "auto" (default: the ring where some rank needs at least half
            of the keys the other ranks hold, as `full` or dense `causal`, and the ring holds fewer fetched keys
            than the direct exchange, P >= 4 for those; else the direct exchange), "direct" (each rank fetches
            exactly the keys its rows need, all at once) or "ring" (whole blocks passed along the ring, P-1
            steps, each block computed while the next is in flight; peak memory two blocks; the backward sends
            the blocks again with their dK, dV accumulators). Both give the same values to rounding, each
            deterministic.

    Returns:
        This rank's output rows `[..., L_r, d_v]` (and the LSE), differentiable in query, key, value and sinks.

    Raises:
        GraphAttentionError on every rank when any rank's inputs are bad (naming it), instead of leaving the others
        waiting. A rank that dies makes the others' torch.distributed calls fail after the group's timeout.
    """
    group_rank = dist.get_rank(group)
    world = dist.get_world_size(group)
    failure = None
    layer = engine = None
    shapes = None
    try:
        q4, k4, v4 = _as4d(query, "query"), _as4d(key, "key"), _as4d(value, "value")
        if not (query.dim() == key.dim() == value.dim()):
            raise GraphAttentionError("shape: query, key and value have different ranks. Fix: use one layout.", "shape")
        for name, t in (("query", q4), ("key", k4), ("value", v4)):
            if t.dtype != torch.float32:
                raise GraphAttentionError(f"dtype: {name} is {t.dtype}; distributed attention computes fp32 tensors. "
                                          "Fix: convert with .float().", "dtype")
            if t.device.type != "cpu":
                raise GraphAttentionError(f"device: {name} is on {t.device}; distributed attention runs the CPU engine "
                                          "over gloo. Fix: move the shards to the CPU.", "device")
        b, h, n, dk = q4.shape
        if k4.shape[:1] != (b,) or k4.shape[2] != n or v4.shape[:3] != k4.shape[:3] or k4.shape[-1] != dk \
                or h % k4.shape[1] != 0:
            raise GraphAttentionError(f"shape: query {list(query.shape)}, key {list(key.shape)}, value "
                                      f"{list(value.shape)} do not fit one shard of self-attention. Fix: shard Q, K and V "
                                      "alike along dim -2; key and value heads must divide the query heads.", "shape")
        for name, t in (("query", q4), ("key", k4), ("value", v4)):
            if not torch.isfinite(t.detach()).all():
                raise GraphAttentionError(f"value: this rank's {name} holds NaN or infinity. Fix: remove them.", "value")
        shapes = [n, b, h, k4.shape[1], dk, v4.shape[-1]]
    except Exception as error:  # noqa: BLE001 - reported to every rank
        failure = error
    # Every rank learns every rank's shapes (and failures) before anything else is sent.
    info = torch.tensor([1 if failure is not None else 0] + (shapes or [0] * 6), dtype=torch.int64)
    gathered = [torch.zeros_like(info) for _ in range(world)]
    dist.all_gather(gathered, info, group=group)
    if any(int(t[0]) for t in gathered):
        _raise_failures(group, failure, world)
    sizes = [int(t[1]) for t in gathered]
    forms = [tuple(int(x) for x in t[2:]) for t in gathered]
    common = max(set(forms), key=forms.count)
    odd = [r for r, f in enumerate(forms) if f != common]
    if odd:  # every rank sees the same shapes, so every rank raises here
        raise GraphAttentionError(f"distributed: attention failed on rank(s) {odd}: their shards' (batch, heads, "
                                  f"key/value heads, d_k, d_v) are {[forms[r] for r in odd]}, the others' {common}. Fix: "
                                  "shard only the sequence dimension, alike on every rank.", "distributed")
    try:
        if shard_sizes is not None and [int(x) for x in shard_sizes] != sizes:
            raise GraphAttentionError(f"shape: shard_sizes {list(shard_sizes)} differ from the shards' lengths "
                                      f"{sizes}. Fix: pass the lengths the ranks hold.", "shape")
        if sum(sizes) < 1:
            raise GraphAttentionError("shape: the sequence is empty. Fix: pass at least one token.", "shape")
        _exchange.check_placement(placement)
        _exchange.check_schedule(schedule)
        if placement == "zigzag" and sizes != _exchange.zigzag_sizes(sum(sizes), world):
            raise GraphAttentionError(f"shape: the ranks hold {sizes} tokens, not zigzag placement's "
                                      f"{_exchange.zigzag_sizes(sum(sizes), world)} for {sum(sizes)} tokens. Fix: shard "
                                      "with graph_attention.distributed.shard(x, rank, world_size, placement='zigzag').",
                                      "shape")
        masks = _expand_per_head(mask, h)
        scale = 1.0 / math.sqrt(dk) if scale is None else float(scale)
        softcap = check_softcap(softcap)
        code, slopes = alibi_code(alibi)
        if code == ALIBI_STANDARD:
            slopes = torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)], dtype=torch.float32)
            code = ALIBI_SLOPES
        elif code == ALIBI_SLOPES:
            slopes = torch.as_tensor(slopes, dtype=torch.float32).detach().contiguous()
            if tuple(slopes.shape) != (h,):
                raise GraphAttentionError(f"option: alibi has shape {list(slopes.shape)} for {h} heads. Fix: pass "
                                          "one slope per query head.", "option")
        if sinks is not None:
            sinks = sinks if isinstance(sinks, torch.Tensor) else torch.as_tensor(sinks)
            sinks = sinks.to(torch.float32)
            if tuple(sinks.shape) != (h,):
                raise GraphAttentionError(f"option: sinks has shape {list(sinks.shape)} for {h} heads. Fix: pass one "
                                          "logit per query head.", "option")
        layer = _layer(masks, sizes, group_rank, h, code != ALIBI_NONE, placement, schedule)
        engine = _Engine(scale, threads or 0, softcap, code, slopes)
    except Exception as error:  # noqa: BLE001 - reported to every rank
        failure = error
    _agree(group, failure, world)
    config = {"layer": layer, "engine": engine, "group": group}
    out, lse = _DistributedAttention.apply(q4, k4, v4, sinks, config)
    shape = query.shape[:-1] + (out.shape[-1],)
    out = out.reshape(shape)
    lse = lse.reshape(query.shape[:-1])
    return (out, lse) if return_lse else out
