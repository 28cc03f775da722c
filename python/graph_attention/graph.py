"""`Graph`: a parsed attention mask (which keys each query attends to), owned through a C handle."""
import ctypes
import os
import textwrap
import threading
from collections import OrderedDict

from . import _library
from ._library import GraphAttentionError, check, lib

__all__ = ["Graph"]


class Graph:
    """An attention mask as a graph: tokens are vertices, the keys a query attends to are its edges.

    `spec` is the engine's mask specification (paths relative to the working directory; explicit graphs are
    read and validated here). The grammar, as the engine's parser defines it:

{grammar}

    >>> g = Graph("window:2+global:0")
    >>> g.edge_count(8), g.degree(0, 8), g.degree(5, 8)
    (44, 8, 6)

    Raises `ValueError` (`GraphAttentionError`) naming the problem and the fix for a malformed spec, and
    `OSError` for an unreadable graph file.
    """

    __slots__ = ("spec", "_handle", "__weakref__")

    def __init__(self, spec):
        if isinstance(spec, Graph):
            spec = spec.spec
        if not isinstance(spec, str):
            raise TypeError(f"a mask specification is a string such as 'window:256+global:0', got {type(spec).__name__}")
        self._handle = None
        handle = ctypes.c_void_p()
        check(lib.ga_graph_parse(spec.encode(), ctypes.byref(handle)))
        self.spec = spec
        self._handle = handle

    def __del__(self):
        if getattr(self, "_handle", None) is not None and lib is not None:
            lib.ga_graph_free(self._handle)
            self._handle = None

    @staticmethod
    def _counts(query_count, key_count):
        key_count = query_count if key_count is None else key_count
        return int(query_count), int(key_count)

    def validate(self, query_count, key_count=None):
        """Checks the graph fits `query_count` queries and `key_count` keys (default: self-attention)."""
        lq, lk = self._counts(query_count, key_count)
        check(lib.ga_graph_validate(self._handle, lq, lk))

    def edge_count(self, query_count, key_count=None):
        """The exact number of (query, key) edges; a union counts shared edges once.

        O(1) for single implicit kinds, O(edges) for random, O(L_q * runs per row) for unions.
        """
        lq, lk = self._counts(query_count, key_count)
        out = ctypes.c_int64()
        check(lib.ga_graph_edge_count(self._handle, lq, lk, ctypes.byref(out)))
        return out.value

    def degree(self, row, query_count, key_count=None):
        """The number of keys query `row` attends to."""
        lq, lk = self._counts(query_count, key_count)
        out = ctypes.c_int64()
        check(lib.ga_graph_degree(self._handle, lq, lk, int(row), ctypes.byref(out)))
        return out.value

    def to_dense(self, query_count, key_count=None):
        """The mask as a NumPy bool array [L_q, L_k] (True where a query attends to a key): O(L_q * L_k) memory,
        for tests and plots of small graphs."""
        import numpy as np

        lq, lk = self._counts(query_count, key_count)
        if lq < 1 or lk < 1:
            check(lib.ga_graph_validate(self._handle, lq, lk))  # the engine's message for bad counts
        out = np.empty((lq, lk), dtype=np.uint8)
        check(lib.ga_graph_dense_mask(self._handle, lq, lk, out.ctypes.data))
        return out.view(np.bool_)

    def __str__(self):
        length = ctypes.c_int64()
        return _library.text(lib.ga_graph_describe, self._handle)

    def __repr__(self):
        return f"Graph({self.spec!r})"


# The grammar comes from the engine's own table of kinds, so this text cannot fall behind the parser.
Graph.__doc__ = Graph.__doc__.replace("{grammar}", textwrap.indent(_library.text(lib.ga_mask_grammar), "    "))

_cache = OrderedDict()
_implicit = {}  # spec -> Graph for specs that read no file (their graph never changes)
_cache_lock = threading.Lock()
_CACHE_SIZE = 64


def mask_files(spec):
    """The files a specification names (explicit graphs, documents' offsets), as the engine's parser reads
    them (quotes and escapes included), without reading them."""
    listed = _library.text(lib.ga_mask_files, spec.encode())
    return listed.split("\n") if listed else []


def _file_stamps(files):
    """(path, mtime, size) of the files a spec reads, so an edited file is read again."""
    stamps = []
    for path in files:
        try:
            st = os.stat(path)
            stamps.append((os.path.abspath(path), st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append((path, None, None))  # parsing reports the missing file
    return tuple(stamps)


def cached_graph(mask):
    """The `Graph` for a mask (a spec string or a Graph), parsed once per spec and kept in a small LRU cache
    (explicit graphs are keyed by their files' paths, times and sizes too)."""
    if isinstance(mask, Graph):
        return mask
    graph = _implicit.get(mask)  # the common case: one dict lookup
    if graph is not None:
        return graph
    if not isinstance(mask, str):
        raise TypeError(f"mask must be a specification string such as 'window:256+global:0' or a Graph, got {type(mask).__name__}")
    files = mask_files(mask)
    explicit = bool(files)
    key = (mask, _file_stamps(files)) if explicit else (mask,)
    with _cache_lock:
        graph = _cache.get(key)
        if graph is not None:
            _cache.move_to_end(key)
            return graph
    graph = Graph(mask)
    with _cache_lock:
        _cache[key] = graph
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        if not explicit:
            if len(_implicit) >= _CACHE_SIZE:
                _implicit.clear()
            _implicit[mask] = graph
    return graph


def _spec_of(mask):
    if isinstance(mask, Graph):
        return mask.spec
    if not isinstance(mask, str):
        raise TypeError(f"mask must be a specification string such as 'window:256+global:0', a Graph, or a list of "
                        f"them (one per query head), got {type(mask).__name__}")
    if "\n" in mask:
        raise GraphAttentionError(f"mask: the specification {mask!r} holds a line break. Fix: pass a list with one "
                                  "specification per query head instead of lines.", "mask")
    return mask


def mask_argument(mask, query_heads):
    """The mask as the one string the torch ops carry: a specification, or for a list (one mask per query head,
    each a spec or a Graph) the specifications joined by newlines. Checks the list has `query_heads` masks."""
    if not isinstance(mask, (list, tuple)):
        return _spec_of(mask)
    if len(mask) != query_heads:
        raise GraphAttentionError(f"mask: {len(mask)} masks were given for {query_heads} query head(s). Fix: give "
                                  "one mask per query head (a list as long as query.shape[-3]), or one mask for every "
                                  "head.", "mask")
    return "\n".join(_spec_of(m) for m in mask)


def cached_graphs(mask):
    """The graphs of a mask argument: `[graph]` for one mask (every head), one per query head for a list or a
    newline-joined string of specifications (as `mask_argument` makes)."""
    if isinstance(mask, (list, tuple)):
        return [cached_graph(m) for m in mask]
    if isinstance(mask, str) and "\n" in mask:
        return [cached_graph(spec) for spec in mask.split("\n")]
    return [cached_graph(mask)]


# Keep the library alive while Graph finalisers run at interpreter exit.
_keep_library = _library
