"""Sequence-parallel (context-parallel) graph attention on torch.distributed: each rank holds a shard of the
sequence and fetches only the keys its rows attend to, as the mask's exchange plan says.

    import torch.distributed as dist, graph_attention.distributed as gad
    dist.init_process_group("gloo")                       # torchrun --nproc-per-node P ...
    q, k, v = (torch.tensor_split(x, dist.get_world_size(), dim=-2)[dist.get_rank()] for x in (Q, K, V))
    out = gad.attention(q, k, v, "window:256+global:0")   # this rank's rows of the global attention

How (docs/distributed.md): rank r computes its rows against its own keys while the halo (the keys `plan` lists)
is in flight, then against the fetched keys, and merges the two partial softmax states with log-sum-exp. Global
tokens as queries are computed by every rank against its own keys and merged by the owner, so no rank ships all
its keys. The backward runs the engine's backward on the same views: dQ locally, dK and dV partial sums of
fetched keys returned to their owners and added in rank order. No atomics: the same bits on every run at a given
world size.
"""
import math
from typing import Optional

import torch
import torch.distributed as dist

from . import _exchange
from ._attention import alibi_code, backward_raw, check_softcap, forward_raw
from ._library import ALIBI_NONE, ALIBI_SLOPES, ALIBI_STANDARD, GraphAttentionError
from .graph import Graph, cached_graph

__all__ = ["attention", "plan", "traffic", "ExchangePlan"]

ExchangePlan = _exchange.ExchangePlan

_FORWARD_TAG, _PARTIAL_TAG, _STATE_TAG, _GRADIENT_TAG = 11, 12, 13, 14


def plan(mask, tokens, world_size, shard_sizes=None, *, batch=1, heads=1, kv_heads=None, head_dim=64, value_dim=None,
         element_bytes=4):
    """The exchange plan of `mask` (a specification, a Graph, or one per query head) over `tokens` tokens split
    into `world_size` shards: `shard_sizes`, or `torch.tensor_split`'s (the first `tokens % world_size` shards one
    token longer).

    Returns an `ExchangePlan`: per pair of ranks the key runs `needs[r][s]` (start, count, stride) and their
    `key_counts[r][s]`, the `global_rows`, and per rank the bytes sent per forward and backward pass for the
    given shape (`forward_bytes`, `backward_bytes`) beside ring attention's (`ring_bytes`). Computed in closed
    form for structured masks (no pass over rows), by enumeration for random and explicit ones. Pure: no
    process group needed, so other transports (MPI) can use it.
    """
    masks = _expand_per_head(mask, heads)
    return _exchange.make_plan(masks, tokens, world_size, shard_sizes, batch=batch, heads=heads, kv_heads=kv_heads,
                               head_dim=head_dim, value_dim=value_dim, element_bytes=element_bytes)


_last_traffic = {"forward": 0, "backward": 0, "forward_messages": 0, "backward_messages": 0}


def traffic():
    """Bytes (and point-to-point messages) this rank sent in the last distributed forward and backward pass."""
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


def _indices(runs, offset):
    """The indices of `runs`, minus `offset`, as an int64 tensor."""
    if not runs:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat([torch.arange(start, start + count * stride, stride, dtype=torch.int64)
                      for start, count, stride in runs]) - offset


def _split_runs(runs):
    """Runs as contiguous pieces (strided runs key by key), for calls with ALiBi, which need one alignment."""
    out = []
    for start, count, stride in runs:
        if stride == 1 or count == 1:
            out.append([(start, count, 1)])
        else:
            out.extend([(start + t * stride, 1, 1)] for t in range(count))
    return out


class _Layer:
    """Everything one rank needs for one mask and sharding: the plan, index tensors, views (cached)."""

    def __init__(self, masks, sizes, rank, heads, alibi):
        tokens = sum(sizes)
        world = len(sizes)
        graphs = [cached_graph(m) for m in masks]
        self.plan = _exchange.make_plan(graphs, tokens, world, sizes)
        p = self.plan
        self.rank, self.world, self.tokens = rank, world, tokens
        self.start, self.stop = p.shards[rank]
        self.size = self.stop - self.start
        self.sizes = sizes
        self.global_rows = p.global_rows
        self.global_owner = [p.owner(g) for g in p.global_rows]
        self.own_global = [g for g in p.global_rows if self.start <= g < self.stop]
        self.own_global_local = torch.tensor([g - self.start for g in self.own_global], dtype=torch.int64)
        # Positions of each rank's global rows among all global rows (owners in rank order, rows sorted).
        self.global_slices = []
        at = 0
        for s in range(world):
            n = sum(1 for o in self.global_owner if o == s)
            self.global_slices.append(slice(at, at + n))
            at += n
        # Keys other ranks fetch from this one (local indices), and the keys fetched from each other rank.
        self.send_index = [_indices(p.needs[s][rank], self.start) for s in range(world)]
        self.send_counts = [p.key_counts[s][rank] for s in range(world)]
        self.receive_counts = [p.key_counts[rank][s] for s in range(world)]
        remote_runs = [run for s in range(world) if s != rank for run in p.needs[rank][s]]
        self.remote_count = sum(self.receive_counts)
        # Views: per piece of keys (one piece, or contiguous ones with ALiBi), one graph per head.
        def views(rows, keys, excluded):
            return [_exchange.view_graph(g, tokens, rows, keys, excluded) for g in graphs]
        local_rows = [(self.start, self.size, 1)] if self.size else []
        self.local_views = views(local_rows, local_rows, self.own_global) if self.size else None
        self.remote_pieces = []  # (first, count of fetched keys, views)
        if self.size and remote_runs:
            pieces = _split_runs(remote_runs) if alibi else [remote_runs]
            at = 0
            for piece in pieces:
                n = sum(run[1] for run in piece)
                self.remote_pieces.append((at, n, views(local_rows, piece, self.own_global)))
                at += n
        self.global_pieces = []  # (first global row, count, views)
        if self.size and self.global_rows:
            pieces = [[(g, 1, 1)] for g in self.global_rows] if alibi else [_runs_of(self.global_rows)]
            at = 0
            for piece in pieces:
                n = sum(run[1] for run in piece)
                self.global_pieces.append((at, n, views(piece, local_rows, ())))
                at += n


_layers = {}


def _layer(masks, sizes, rank, heads, alibi):
    key = (tuple(_spec_of(m) for m in masks), tuple(sizes), rank, heads, bool(alibi))
    layer = _layers.get(key)
    if layer is None:
        if len(_layers) > 32:
            _layers.clear()
        layer = _layers[key] = _Layer(masks, sizes, rank, heads, alibi)
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


class _Exchange:
    """One round of point-to-point messages (one per peer with something to say), posted at once."""

    def __init__(self, group, rank, world, tag, phase):
        self.group, self.rank, self.world, self.tag, self.phase = group, rank, world, tag, phase
        self.requests, self.received = [], {}

    def post(self, sends, receive_sizes):
        """`sends[s]`: a flat fp32 tensor for rank s (or None); `receive_sizes[s]`: elements expected from s."""
        for s in range(self.world):
            if s != self.rank and receive_sizes[s]:
                buffer = torch.empty(receive_sizes[s], dtype=torch.float32)
                self.received[s] = buffer
                self.requests.append(dist.irecv(buffer, src=_global_rank(self.group, s), group=self.group, tag=self.tag))
        for s in range(self.world):
            t = sends[s]
            if s != self.rank and t is not None and t.numel():
                t = t.contiguous()
                self.requests.append(dist.isend(t, dst=_global_rank(self.group, s), group=self.group, tag=self.tag))
                _last_traffic[self.phase] += t.numel() * t.element_size()
                _last_traffic[self.phase + "_messages"] += 1
                self.received.setdefault(("sent", s), t)  # kept alive until wait()

    def wait(self):
        for request in self.requests:
            request.wait()
        return {s: t for s, t in self.received.items() if not isinstance(s, tuple)}


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
        _last_traffic.update(forward=0, forward_messages=0)
        # 1. Post K/V halos and this rank's global rows' Q.
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
        receive = [layer.receive_counts[s] * b * hkv * (dk + dv)
                   + (layer.global_slices[s].stop - layer.global_slices[s].start) * b * h * dk * (layer.size > 0)
                   for s in range(world)]
        exchange = _Exchange(group, rank, world, _FORWARD_TAG, "forward")
        exchange.post(sends, receive)
        failure = None
        parts, global_partial = [], None
        try:
            # 2. Local edges while the exchange is in flight.
            if layer.size:
                parts.append(engine.forward(layer.local_views, q, k, v))
        except Exception as error:  # noqa: BLE001 - reported to every rank below
            failure = error
        received = exchange.wait()
        k_far = torch.empty(b, hkv, layer.remote_count, dk)
        v_far = torch.empty(b, hkv, layer.remote_count, dv)
        q_global = torch.empty(b, h, g, dk)
        at = 0
        for s in range(world):
            count = layer.receive_counts[s]
            gs = layer.global_slices[s]
            if s == rank:
                if own_q is not None:
                    q_global[:, :, gs, :] = own_q
                continue
            buffer = received.get(s)
            if buffer is None:
                continue
            kn, vn = b * hkv * count * dk, b * hkv * count * dv
            if count:
                k_far[:, :, at:at + count, :] = buffer[:kn].view(b, hkv, count, dk)
                v_far[:, :, at:at + count, :] = buffer[kn:kn + vn].view(b, hkv, count, dv)
            if gs.stop > gs.start and layer.size:
                q_global[:, :, gs, :] = buffer[kn + vn:].view(b, h, gs.stop - gs.start, dk)
            at += count
        # 3. Remote edges, and every global row against this rank's keys.
        try:
            if failure is None and layer.size:
                for first, count, views in layer.remote_pieces:
                    parts.append(engine.forward(views, q, k_far[:, :, first:first + count], v_far[:, :, first:first + count]))
                if g:
                    global_partial = [engine.forward(views, q_global[:, :, first:first + count], k, v)
                                      for first, count, views in layer.global_pieces]
                    global_partial = (torch.cat([o for o, _ in global_partial], dim=2),
                                      torch.cat([lse for _, lse in global_partial], dim=2))
        except Exception as error:  # noqa: BLE001
            failure = error
        _agree(group, failure, world)
        # 4. Partial states of global rows to their owners; merge.
        if g:
            sends = [None] * world
            for s in range(world):
                gs = layer.global_slices[s]
                if s != rank and gs.stop > gs.start and global_partial is not None:
                    sends[s] = torch.cat([global_partial[0][:, :, gs, :].reshape(-1), global_partial[1][:, :, gs].reshape(-1)])
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
            gs = layer.global_slices[rank]
            states = []
            for s in range(world):
                if s == rank:
                    states.append((global_partial[0][:, :, gs, :], global_partial[1][:, :, gs]))
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
            receive = [(layer.global_slices[s].stop - layer.global_slices[s].start) * b * h * (2 * dv + 1)
                       * (layer.size > 0) for s in range(world)]
            exchange = _Exchange(group, rank, world, _STATE_TAG, "backward")
            exchange.post(sends, receive)
        failure = None
        dq = torch.zeros(b, h, n, dk)
        dk_local = torch.zeros(b, hkv, n, dk)
        dv_local = torch.zeros(b, hkv, n, dv)
        dk_far = torch.zeros(b, hkv, layer.remote_count, dk)
        dv_far = torch.zeros(b, hkv, layer.remote_count, dv)
        dq_global = None
        try:
            if layer.size:
                gq, gk, gv = engine.backward(layer.local_views, q, k, v, out, lse, dout)
                dq += gq
                dk_local += gk
                dv_local += gv
                for first, count, views in layer.remote_pieces:
                    gq, gk, gv = engine.backward(views, q, k_far[:, :, first:first + count], v_far[:, :, first:first + count],
                                                 out, lse, dout)
                    dq += gq
                    dk_far[:, :, first:first + count] = gk
                    dv_far[:, :, first:first + count] = gv
        except Exception as error:  # noqa: BLE001
            failure = error
        if exchange is not None:
            received = exchange.wait()
            try:
                if failure is None and layer.size:
                    o_g, lse_g, do_g = torch.empty(b, h, g, dv), torch.empty(b, h, g), torch.empty(b, h, g, dv)
                    for s in range(world):
                        gs = layer.global_slices[s]
                        count = gs.stop - gs.start
                        if not count:
                            continue
                        if s == rank:
                            index = layer.own_global_local
                            o_g[:, :, gs], lse_g[:, :, gs], do_g[:, :, gs] = out[:, :, index], lse[:, :, index], dout[:, :, index]
                            continue
                        buffer = received[s]
                        m = b * h * count
                        o_g[:, :, gs] = buffer[:m * dv].view(b, h, count, dv)
                        lse_g[:, :, gs] = buffer[m * dv:m * dv + m].view(b, h, count)
                        do_g[:, :, gs] = buffer[m * dv + m:].view(b, h, count, dv)
                    dq_global = torch.zeros(b, h, g, dk)
                    for first, count, views in layer.global_pieces:
                        rows = slice(first, first + count)
                        gq, gk, gv = engine.backward(views, q_global[:, :, rows], k, v, o_g[:, :, rows], lse_g[:, :, rows],
                                                     do_g[:, :, rows])
                        dq_global[:, :, rows] = gq
                        dk_local += gk
                        dv_local += gv
            except Exception as error:  # noqa: BLE001
                failure = error
        _agree(group, failure, world)
        # 2. Partial dK, dV of fetched keys back to their owners; partial dQ of global rows to theirs.
        sends = []
        at = 0
        for s in range(world):
            parts = []
            count = layer.receive_counts[s] if s != rank else 0
            if count:
                parts += [dk_far[:, :, at:at + count].reshape(-1), dv_far[:, :, at:at + count].reshape(-1)]
                at += count
            gs = layer.global_slices[s]
            if s != rank and gs.stop > gs.start and dq_global is not None:
                parts.append(dq_global[:, :, gs].reshape(-1))
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
                    dq_own[s] = dq_global[:, :, layer.global_slices[rank]]
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
              return_lse=False, shard_sizes=None, threads=None):
    """This rank's rows of exact graph attention over a sequence sharded across the ranks of `group`.

    Args:
        query, key, value: this rank's shard, `[L_r, d]`, `[H, L_r, d]` or `[B, H, L_r, d]` CPU fp32 tensors (key
            and value may have fewer heads: GQA), the shards in rank order covering the sequence, as
            `torch.tensor_split(x, P, dim=-2)` makes them or of any sizes (`shard_sizes`, checked against the
            tensors; a rank may hold 0 tokens). Self-attention: queries and keys share the sharding.
        mask: the global mask (a specification, a Graph, or one per query head) in global positions.
        group: the process group (None: the default group). Backends: gloo (CPU tensors).
        scale, softcap, alibi, sinks: as `graph_attention.attention`. ALiBi's distances are global. `sinks`, a
            tensor, receives this rank's share of its gradient (sum it over the ranks, as for any replicated
            parameter).
        return_lse: also return the rows' log-sum-exp (sinks included).
        threads: engine threads per rank (None: every processor).

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
        layer = _layer(masks, sizes, group_rank, h, code != ALIBI_NONE)
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
