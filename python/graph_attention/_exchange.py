"""Exchange plans and graph views through the C ABI (ga_exchange_plan_*, ga_graph_view): what
`graph_attention.distributed` and any other transport need from the engine, with no torch dependency."""
import bisect
import ctypes
import math

from . import _library
from ._library import GraphAttentionError, check, lib
from .graph import cached_graph

__all__ = ["ExchangePlan", "ViewGraph", "make_plan", "view_graph", "placement_segments", "PLACEMENTS", "SCHEDULES"]

_c_int64_p = ctypes.POINTER(ctypes.c_int64)
_p, _i32, _i64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
_SIGNATURES = {
    "ga_graph_view": (_i32, [_p, _i64, _i64, _c_int64_p, _i64, _c_int64_p, _i64, _c_int64_p, _i64,
                             ctypes.POINTER(ctypes.c_void_p)]),
    "ga_exchange_plan_create": (_i32, [ctypes.POINTER(ctypes.c_void_p), _i64, _i64, _c_int64_p, _i64,
                                       ctypes.POINTER(ctypes.c_void_p)]),
    "ga_exchange_plan_free": (None, [_p]),
    "ga_exchange_plan_needs": (_i32, [_p, _i64, _i64, _c_int64_p, _i64, _c_int64_p, _c_int64_p]),
    "ga_exchange_plan_global_rows": (_i32, [_p, _c_int64_p, _i64, _c_int64_p]),
    "ga_exchange_plan_bytes_sent": (_i32, [_p, _i64, _c_int64_p, _i32, _c_int64_p]),
}
for _name, (_restype, _argtypes) in _SIGNATURES.items():
    _function = getattr(lib, _name, None)
    if _function is None:
        raise ImportError(f"{_library.library_path} lacks {_name}: it was built from another version. Fix: rebuild "
                          "libgraph_attention.so (scripts/build_python_library.sh) or reinstall graph_attention")
    _function.restype = _restype
    _function.argtypes = _argtypes


def _int64_array(values):
    values = list(values)
    return (ctypes.c_int64 * max(1, len(values)))(*values)


def _runs_array(runs):
    return _int64_array(x for run in runs for x in run)


class ViewGraph:
    """A view of a graph (ga_graph_view) over some global rows and keys, renumbered compactly; usable wherever
    the engine takes a graph handle. Runs are (start, count, stride) triples of global indices."""

    __slots__ = ("spec", "_handle", "__weakref__")

    def __init__(self, graph, tokens, rows, keys, excluded=()):
        self._handle = None
        handle = ctypes.c_void_p()
        excluded = list(excluded)
        check(lib.ga_graph_view(graph._handle, tokens, tokens, _runs_array(rows), len(rows), _runs_array(keys), len(keys),
                                _int64_array(excluded), len(excluded), ctypes.byref(handle)))
        self.spec = f"view of {graph.spec}"
        self._handle = handle

    def __del__(self):
        if getattr(self, "_handle", None) is not None and lib is not None:
            lib.ga_graph_free(self._handle)
            self._handle = None


def view_graph(graph, tokens, rows, keys, excluded=()):
    """A `ViewGraph` of `graph` (a Graph) for `tokens` x `tokens` tokens."""
    return ViewGraph(graph, tokens, rows, keys, excluded)


PLACEMENTS = ("contiguous", "zigzag")
SCHEDULES = ("auto", "direct", "ring")
RING_FRACTION = 0.5  # schedule="auto": the ring when some rank needs at least this share of the others' keys


def _check_choice(name, value, choices, fix):
    """`value` if it is one of `choices`, else a GraphAttentionError naming them and the fix."""
    if value not in choices:
        raise GraphAttentionError(f"option: {name} {value!r} is not one of {', '.join(map(repr, choices))}. Fix: {fix}.",
                                  "option")
    return value


def check_placement(placement):
    """`placement` if it is one of `PLACEMENTS`, else a GraphAttentionError naming the choices."""
    return _check_choice("placement", placement, PLACEMENTS, "pass placement='contiguous' (rank r holds the r-th of "
                         "P slices) or placement='zigzag' (rank r holds chunks r and 2P-1-r of 2P)")


def check_schedule(schedule):
    """`schedule` if it is one of `SCHEDULES`, else a GraphAttentionError naming the choices."""
    return _check_choice("schedule", schedule, SCHEDULES, "pass schedule='auto' (the ring where a rank needs most of "
                         "the others' keys and it holds fewer of them at once), 'direct' or 'ring'")


def split_sizes(tokens, parts):
    """`torch.tensor_split`'s sizes of `tokens` into `parts`: the first `tokens % parts` one longer. O(parts)."""
    return [tokens // parts + (1 if r < tokens % parts else 0) for r in range(parts)]


def zigzag_sizes(tokens, world_size):
    """Per rank, the tokens it holds under zigzag placement: chunks r and 2P-1-r of `split_sizes(tokens, 2P)`."""
    chunks = split_sizes(tokens, 2 * world_size)
    return [chunks[r] + chunks[2 * world_size - 1 - r] for r in range(world_size)]


def placement_segments(tokens, world_size, shard_sizes=None, placement="contiguous"):
    """Per rank, the global token ranges (start, stop) it holds, in the order its shard concatenates them.

    Contiguous: one range per rank, of `shard_sizes` or `split_sizes(tokens, P)`. Zigzag: the sequence cut into
    2P chunks (`split_sizes(tokens, 2P)`), rank r holding chunks r and 2P-1-r (the layout of torch's context
    parallel and ring-flash-attention), which gives every rank the same share of a causal mask's edges to
    within a chunk's rows. O(P)."""
    check_placement(placement)
    if shard_sizes is not None and len(shard_sizes) != world_size:
        raise GraphAttentionError(f"shape: {len(shard_sizes)} shard sizes were given for {world_size} ranks. Fix: "
                                  "give one size per rank.", "shape")
    if placement == "contiguous":
        sizes = split_sizes(tokens, world_size) if shard_sizes is None else [int(x) for x in shard_sizes]
        starts = [sum(sizes[:r]) for r in range(world_size)]
        return [[(starts[r], starts[r] + sizes[r])] for r in range(world_size)]
    expected = zigzag_sizes(tokens, world_size)
    if shard_sizes is not None and [int(x) for x in shard_sizes] != expected:
        raise GraphAttentionError(f"shape: shard sizes {list(shard_sizes)} are not zigzag placement's {expected} for "
                                  f"{tokens} tokens on {world_size} ranks. Fix: shard with "
                                  "graph_attention.distributed.shard(x, rank, world_size, placement='zigzag'), or "
                                  "omit shard_sizes.", "shape")
    chunks = split_sizes(tokens, 2 * world_size)
    starts = [sum(chunks[:c]) for c in range(2 * world_size)]
    return [[(starts[c], starts[c] + chunks[c]) for c in (r, 2 * world_size - 1 - r)] for r in range(world_size)]


def _union_runs(lists):
    """The union of sorted run lists as sorted runs with disjoint spans: contiguous runs merged as intervals,
    strided ones taken key by key (only where two lists both reach one range). O(runs + strided keys)."""
    lists = [runs for runs in lists if runs]
    if not lists:
        return []
    if all(runs == lists[0] for runs in lists):
        return list(lists[0])
    intervals = []
    for runs in lists:
        for start, count, stride in runs:
            if stride == 1 or count == 1:
                intervals.append((start, start + count))
            else:
                intervals.extend((k, k + 1) for k in range(start, start + count * stride, stride))
    intervals.sort()
    merged = []
    for a, b in intervals:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b - a, 1) for a, b in merged]


def _library_plan(graphs, tokens, shard_sizes, row_bytes):
    """The library's plan (ga_exchange_plan_*) over contiguous shards of `shard_sizes`: the needs per pair, the
    global rows, and the library's forward and backward bytes per rank for the direct schedule."""
    handles = (ctypes.c_void_p * len(graphs))(*(g._handle.value for g in graphs))
    handle = ctypes.c_void_p()
    world = len(shard_sizes)
    check(lib.ga_exchange_plan_create(handles, len(graphs), int(tokens), _int64_array(shard_sizes), world,
                                      ctypes.byref(handle)))
    try:
        needs = [[_needs(handle, r, s) for s in range(world)] for r in range(world)]
        count = ctypes.c_int64()
        check(lib.ga_exchange_plan_global_rows(handle, None, 0, ctypes.byref(count)))
        rows = (ctypes.c_int64 * max(1, count.value))()
        check(lib.ga_exchange_plan_global_rows(handle, rows, count.value, ctypes.byref(count)))
        array, out = _int64_array(row_bytes), ctypes.c_int64()
        sent = []
        for backward in (0, 1):
            sent.append([])
            for r in range(world):
                check(lib.ga_exchange_plan_bytes_sent(handle, r, array, backward, ctypes.byref(out)))
                sent[-1].append(out.value)
        return needs, list(rows[:count.value]), sent
    finally:
        lib.ga_exchange_plan_free(handle)


def _needs(handle, receiver, sender):
    runs, keys = ctypes.c_int64(), ctypes.c_int64()
    check(lib.ga_exchange_plan_needs(handle, receiver, sender, None, 0, ctypes.byref(runs), ctypes.byref(keys)))
    if runs.value == 0:
        return []
    buffer = (ctypes.c_int64 * (3 * runs.value))()
    check(lib.ga_exchange_plan_needs(handle, receiver, sender, buffer, runs.value, ctypes.byref(runs), ctypes.byref(keys)))
    return [tuple(buffer[3 * n:3 * n + 3]) for n in range(runs.value)]


def prefers_ring(key_counts, sizes):
    """schedule="auto"'s rule: "ring" when (1) some rank's rows need at least `RING_FRACTION` of the keys the
    other ranks hold (dense causal's last ranks, `full`, large prefixes, windows wider than a shard), so the ring
    delivers to that rank at most 1/RING_FRACTION times the bytes the direct exchange would, and (2) the ring
    holds fewer fetched keys at once than the direct exchange's busiest rank (two blocks against the keys of
    every rank needed: for dense causal from P = 4 on); else "direct". O(P^2)."""
    total = sum(sizes)
    dense = any(others > 0 and sizes[r] > 0 and sum(row) >= RING_FRACTION * others
                for r, row in enumerate(key_counts) for others in (total - sizes[r],))
    if not dense:
        return "direct"
    hops = ring_hops(key_counts)
    world = len(sizes)
    ring = max(_ring_peak(hops, sizes, r) for r in range(world))
    direct = max(sum(row[s] for s in range(world) if s != r) for r, row in enumerate(key_counts))
    return "ring" if ring < direct else "direct"


def ring_hops(key_counts):
    """Per rank s, how many hops its K/V block travels along the ring s -> s+1 -> ...: up to the last rank (in
    ring order) whose rows need any of its keys; 0 when no other rank does. O(P^2)."""
    world = len(key_counts)
    hops = []
    for s in range(world):
        far = [t for t in range(1, world) if key_counts[(s + t) % world][s] > 0]
        hops.append(max(far) if far else 0)
    return hops


def ring_incoming(hops, sizes, rank, step):
    """Under the ring, the rank whose block `rank` receives at `step` (1..P-1), or None. Block s reaches rank
    s+t at step t for t <= hops[s]."""
    world = len(hops)
    s = (rank - step) % world
    return s if 1 <= step < world and step <= hops[s] and sizes[s] else None


def bytes_sent(plan, rank, backward):
    """Bytes rank `rank` sends in one forward or backward pass under `plan.schedule` (the library's formula for
    the direct schedule, generalised to several ranges per rank and to the ring):

    - direct forward: the K and V rows other ranks fetch from it; backward: dK and dV partial sums of the keys it
      fetched, returned to their owners.
    - ring forward: every block it passes on (its own at step 1, then the one it received); backward: the same
      blocks again, each with its dK, dV accumulator (fp32) after the first hop, and the accumulator of each
      block whose last hop ends here, returned to the block's owner.
    - both: its global rows' Q (forward) or O, LSE and dO (backward) to every other rank holding tokens, and its
      partial states (forward) or partial dQ (backward) of the other ranks' global rows.

    O(P^2 + global rows)."""
    world, sizes, b = plan.world_size, plan.sizes, plan.row_bytes
    own = len(plan.global_rows_of(rank))
    others = len(plan.global_rows) - own if sizes[rank] else 0
    peers = sum(1 for s in range(world) if s != rank and sizes[s])
    if plan.schedule == "direct":
        if backward:
            keys = sum(plan.key_counts[rank][s] for s in range(world) if s != rank)
            return keys * b[3] + own * peers * b[4] + others * b[5]
        keys = sum(plan.key_counts[s][rank] for s in range(world) if s != rank)
        return keys * b[0] + own * peers * b[1] + others * b[2]
    blocks = accumulators = 0
    for s in range(world):
        for t in range(1, plan.ring_hops[s] + 1):
            if (s + t - 1) % world == rank:  # hop t of block s leaves rank s+t-1
                blocks += sizes[s]
                accumulators += sizes[s] if t >= 2 else 0
        if plan.ring_hops[s] and (s + plan.ring_hops[s]) % world == rank:
            accumulators += sizes[s]  # the accumulator's return to its owner
    if backward:
        return blocks * b[0] + accumulators * b[3] + own * peers * b[4] + others * b[5]
    return blocks * b[0] + own * peers * b[1] + others * b[2]


def _ring_peak(hops, sizes, rank):
    """Under the ring, the most other ranks' K/V rows `rank` holds at once: the block it computes on plus the one
    in flight. O(P)."""
    held = [sizes[s] if s is not None else 0
            for s in (ring_incoming(hops, sizes, rank, t) for t in range(1, len(sizes) + 1))]
    return max([held[t] + held[t + 1] for t in range(len(held) - 1)] + [0])


def fetched_keys_peak(plan, rank):
    """The most other ranks' K/V rows `rank` holds at once in the forward: every fetched key under the direct
    schedule; under the ring, the block it computes on plus the one in flight. O(P)."""
    if plan.schedule == "direct":
        return sum(plan.key_counts[rank][s] for s in range(plan.world_size) if s != rank)
    return _ring_peak(plan.ring_hops, plan.sizes, rank)


class ExchangePlan:
    """What each rank of a sequence-parallel attention job fetches from each other rank, and how (docs/distributed.md).

    Attributes:
        tokens: the sequence length; world_size: the number of ranks.
        placement: "contiguous" or "zigzag"; segments: per rank, the global token ranges (start, stop) it holds,
            in the order its shard concatenates them (one range when contiguous, two when zigzag); sizes: per
            rank, its token count.
        shards: per rank its (start, stop) when contiguous; None under zigzag (see `segments`).
        needs: `needs[r][s]`, the keys rank r's rows attend to on rank s, as sorted (start, count, stride) runs of
            global keys; key_counts: `key_counts[r][s]`, the number of those keys.
        global_rows: global tokens as queries (computed by every rank on its own keys, merged by the owner).
        schedule: how K and V move: "direct" (each rank fetches `needs` from every other rank at once) or "ring"
            (whole K/V blocks passed along the ring, one block computed while the next is in flight).
        ring_hops: per rank s, how far its block travels along the ring (`ring_hops`); zeros under "direct".
        forward_bytes, backward_bytes: per rank, bytes it sends per forward and per backward pass under
            `schedule` for the shape given to `plan` (fp32 partial states and gradients; `bytes_sent`).
        fetched_keys_peak: per rank, the most other ranks' K/V rows it holds at once in the forward.
        ring_bytes: per rank, what full ring attention sends per forward for the same shape: (P-1) times its
            own shard's K and V rows.
    """

    def __init__(self, graphs, tokens, world_size, shard_sizes, row_bytes, placement="contiguous", schedule="auto"):
        check_schedule(schedule)
        self.tokens, self.world_size, self.placement = int(tokens), int(world_size), placement
        self.segments = placement_segments(self.tokens, self.world_size, shard_sizes, placement)
        self.sizes = [sum(b - a for a, b in segments) for segments in self.segments]
        self.shards = [segments[0] for segments in self.segments] if placement == "contiguous" else None
        # The library plans contiguous shards: every range is a virtual shard, and a rank's needs on another are
        # the union of its ranges' needs on the other's ranges (sorted: each rank's ranges are increasing).
        virtual = sorted((a, b, r) for r, segments in enumerate(self.segments) for a, b in segments)
        needs, self.global_rows, library = _library_plan(graphs, self.tokens, [b - a for a, b, _ in virtual], row_bytes)
        owner = [r for _, _, r in virtual]
        self.needs = [[[] if r == s else
                       [run for j in range(len(virtual)) if owner[j] == s
                        for run in _union_runs([needs[i][j] for i in range(len(virtual)) if owner[i] == r])]
                       for s in range(world_size)] for r in range(world_size)]
        self.key_counts = [[sum(run[1] for run in self.needs[r][s]) for s in range(world_size)]
                           for r in range(world_size)]
        self._ranges = [(a, b, r) for a, b, r in virtual if b > a]
        self.schedule = prefers_ring(self.key_counts, self.sizes) if schedule == "auto" else schedule
        self.ring_hops = ring_hops(self.key_counts) if self.schedule == "ring" else [0] * world_size
        self.row_bytes = tuple(row_bytes)
        if placement == "contiguous" and self.schedule == "direct":
            self.forward_bytes, self.backward_bytes = library
        else:
            self.forward_bytes = [bytes_sent(self, r, False) for r in range(world_size)]
            self.backward_bytes = [bytes_sent(self, r, True) for r in range(world_size)]
        self.fetched_keys_peak = [fetched_keys_peak(self, r) for r in range(world_size)]
        self.ring_bytes = [(world_size - 1) * size * row_bytes[0] for size in self.sizes]

    def owner(self, token):
        """The rank holding `token`. O(log ranges)."""
        at = bisect.bisect_right(self._ranges, (token, math.inf, math.inf)) - 1
        if at >= 0 and self._ranges[at][0] <= token < self._ranges[at][1]:
            return self._ranges[at][2]
        raise IndexError(f"token {token} is outside 0..<{self.tokens}")

    def global_rows_of(self, rank):
        """The global rows rank `rank` holds, sorted."""
        return [g for g in self.global_rows if any(a <= g < b for a, b in self.segments[rank])]

    def __repr__(self):
        return (f"ExchangePlan(tokens={self.tokens}, world_size={self.world_size}, placement={self.placement!r}, "
                f"schedule={self.schedule!r}, global_rows={len(self.global_rows)}, "
                f"keys fetched per rank={[sum(row) for row in self.key_counts]})")


def row_bytes(batch, heads, kv_heads, head_dim, value_dim, element_bytes):
    """One token's bytes in each message (graph_attention.h's ga_exchange_plan_bytes_sent): K+V, Q (input
    dtype), partial state, dK+dV, global row state, dQ (fp32)."""
    return (batch * kv_heads * (head_dim + value_dim) * element_bytes, batch * heads * head_dim * element_bytes,
            batch * heads * (value_dim + 1) * 4, batch * kv_heads * (head_dim + value_dim) * 4,
            batch * heads * (2 * value_dim + 1) * 4, batch * heads * head_dim * 4)


def make_plan(masks, tokens, world_size, shard_sizes=None, *, batch=1, heads=1, kv_heads=None, head_dim=64,
              value_dim=None, element_bytes=4, placement="contiguous", schedule="auto"):
    """An `ExchangePlan` for a mask (a spec or Graph) or a list of them (one per query head)."""
    masks = masks if isinstance(masks, (list, tuple)) else [masks]
    graphs = [cached_graph(m) for m in masks]
    kv_heads = heads if kv_heads is None else kv_heads
    value_dim = head_dim if value_dim is None else value_dim
    return ExchangePlan(graphs, tokens, world_size, shard_sizes,
                        row_bytes(batch, heads, kv_heads, head_dim, value_dim, element_bytes), placement, schedule)
