"""Exchange plans and graph views through the C ABI (ga_exchange_plan_*, ga_graph_view): what
`graph_attention.distributed` and any other transport need from the engine, with no torch dependency."""
import ctypes

from . import _library
from ._library import GraphAttentionError, check, lib
from .graph import cached_graph

__all__ = ["ExchangePlan", "ViewGraph", "make_plan", "view_graph"]

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


class ExchangePlan:
    """What each rank of a sequence-parallel attention job fetches from each other rank (docs/distributed.md).

    Attributes:
        tokens: the sequence length; world_size: the number of ranks.
        shards: per rank, its token range as (start, stop).
        needs: `needs[r][s]`, the keys rank r fetches from rank s, as (start, count, stride) runs of global keys.
        key_counts: `key_counts[r][s]`, the number of those keys.
        global_rows: global tokens as queries (computed by every rank on its own keys, merged by the owner).
        forward_bytes, backward_bytes: per rank, bytes it sends per forward and per backward pass for the shape
            given to `plan` (fp32 partial states and gradients).
        ring_bytes: per rank, what ring attention sends per forward for the same shape: every K and V block
            to every other rank, (P-1) times its own shard's K and V rows.
    """

    def __init__(self, graphs, tokens, world_size, shard_sizes, row_bytes):
        handles = (ctypes.c_void_p * len(graphs))(*(g._handle.value for g in graphs))
        sizes = None if shard_sizes is None else _int64_array(shard_sizes)
        if shard_sizes is not None and len(shard_sizes) != world_size:
            raise GraphAttentionError(f"shape: {len(shard_sizes)} shard sizes were given for {world_size} ranks. Fix: "
                                      "give one size per rank.", "shape")
        handle = ctypes.c_void_p()
        check(lib.ga_exchange_plan_create(handles, len(graphs), int(tokens), sizes, int(world_size), ctypes.byref(handle)))
        try:
            self.tokens, self.world_size = int(tokens), int(world_size)
            self.needs = [[self._needs(handle, r, s) for s in range(world_size)] for r in range(world_size)]
            self.key_counts = [[sum(run[1] for run in self.needs[r][s]) for s in range(world_size)]
                               for r in range(world_size)]
            count = ctypes.c_int64()
            check(lib.ga_exchange_plan_global_rows(handle, None, 0, ctypes.byref(count)))
            rows = (ctypes.c_int64 * max(1, count.value))()
            check(lib.ga_exchange_plan_global_rows(handle, rows, count.value, ctypes.byref(count)))
            self.global_rows = list(rows[:count.value])
            if shard_sizes is None:
                shard_sizes = [tokens // world_size + (1 if r < tokens % world_size else 0) for r in range(world_size)]
            starts = [sum(shard_sizes[:r]) for r in range(world_size)]
            self.shards = [(starts[r], starts[r] + shard_sizes[r]) for r in range(world_size)]
            self.row_bytes = tuple(row_bytes)
            array = _int64_array(row_bytes)
            out = ctypes.c_int64()
            self.forward_bytes, self.backward_bytes = [], []
            for r in range(world_size):
                check(lib.ga_exchange_plan_bytes_sent(handle, r, array, 0, ctypes.byref(out)))
                self.forward_bytes.append(out.value)
                check(lib.ga_exchange_plan_bytes_sent(handle, r, array, 1, ctypes.byref(out)))
                self.backward_bytes.append(out.value)
            self.ring_bytes = [(world_size - 1) * (stop - start) * row_bytes[0] for start, stop in self.shards]
        finally:
            lib.ga_exchange_plan_free(handle)

    @staticmethod
    def _needs(handle, receiver, sender):
        runs, keys = ctypes.c_int64(), ctypes.c_int64()
        check(lib.ga_exchange_plan_needs(handle, receiver, sender, None, 0, ctypes.byref(runs), ctypes.byref(keys)))
        if runs.value == 0:
            return []
        buffer = (ctypes.c_int64 * (3 * runs.value))()
        check(lib.ga_exchange_plan_needs(handle, receiver, sender, buffer, runs.value, ctypes.byref(runs), ctypes.byref(keys)))
        return [tuple(buffer[3 * n:3 * n + 3]) for n in range(runs.value)]

    def owner(self, token):
        """The rank holding `token`."""
        for r, (start, stop) in enumerate(self.shards):
            if start <= token < stop:
                return r
        raise IndexError(f"token {token} is outside 0..<{self.tokens}")

    def global_rows_of(self, rank):
        """The global rows rank `rank` owns, sorted."""
        start, stop = self.shards[rank]
        return [g for g in self.global_rows if start <= g < stop]

    def __repr__(self):
        return (f"ExchangePlan(tokens={self.tokens}, world_size={self.world_size}, global_rows={len(self.global_rows)}, "
                f"keys fetched per rank={[sum(row) for row in self.key_counts]})")


def row_bytes(batch, heads, kv_heads, head_dim, value_dim, element_bytes):
    """One token's bytes in each message (graph_attention.h's ga_exchange_plan_bytes_sent): K+V, Q (input
    dtype), partial state, dK+dV, global row state, dQ (fp32)."""
    return (batch * kv_heads * (head_dim + value_dim) * element_bytes, batch * heads * head_dim * element_bytes,
            batch * heads * (value_dim + 1) * 4, batch * kv_heads * (head_dim + value_dim) * 4,
            batch * heads * (2 * value_dim + 1) * 4, batch * heads * head_dim * 4)


def make_plan(masks, tokens, world_size, shard_sizes=None, *, batch=1, heads=1, kv_heads=None, head_dim=64,
              value_dim=None, element_bytes=4):
    """An `ExchangePlan` for a mask (a spec or Graph) or a list of them (one per query head)."""
    masks = masks if isinstance(masks, (list, tuple)) else [masks]
    graphs = [cached_graph(m) for m in masks]
    kv_heads = heads if kv_heads is None else kv_heads
    value_dim = head_dim if value_dim is None else value_dim
    return ExchangePlan(graphs, tokens, world_size, shard_sizes,
                        row_bytes(batch, heads, kv_heads, head_dim, value_dim, element_bytes))
