"""Masks of Hugging Face transformers as graphs (the mask side of `graph_attention.transformers`).

transformers builds a mask by calling the mask function registered for the model's `attn_implementation` with
sizes, offsets, the 2-D padding mask and a composed `mask_function(batch, head, q_idx, kv_idx)`. The function
registered here reads that composition (causal, sliding-window, bidirectional, bidirectional-window, chunked,
packed documents: `and_masks` of transformers' own building blocks) and returns a `GraphMask`: for each batch
element, a few row ranges, each with a key range and one engine specification (`causal`,
`window:W:causal`, `full`, `documents:...&causal`, ...). Nothing of size `L_q * L_k` is built.

Every row of a recognised mask attends to one interval of keys, `[max(A, r + s + alpha), min(B, r + s + beta)]`
in the call's local coordinates (`A`, `B` the first and last unpadded key, `s = q_offset - kv_offset`), so a
row range maps onto a bottom-right aligned causal kind over a key slice, `full` over one, or (rows cut by the
last valid key on their right, e.g. a window running into right padding) a causal kind over the flipped rows
and keys. Rows with no key at all are "masked": transformers' eager attention gives them the uniform average
of every value (all their scores are the dtype's minimum), or zeros with attention sinks; so do we.

Mask functions that are not recognised (`or_mask_function` overlays, token-type masks, ...) become explicit CSR
graphs, evaluated in row blocks through transformers' own `sdpa_mask` (memory of one block, never `[L, L]`),
refused with an error above `GRAPH_ATTENTION_MAX_EXPLICIT_EDGES` edges (default 2^28).
"""
import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict

import numpy as np
import torch

from ._library import GraphAttentionError

__all__ = ["GraphMask", "Part", "graph_mask_function", "plan_from_dense", "plan_default"]

_INF = None  # an open side of a band (alpha = -inf, beta = +inf)


class _Unrecognised(Exception):
    pass


class Part:
    """Query rows `[r0, r1)` of some batch elements attend keys `[c0, c1)` through `spec` (an engine mask
    specification over that slice, bottom-right aligned), with `flip` reversing the rows and keys first;
    `spec is None` marks masked rows (no key: the eager average of the values, or zeros with sinks)."""

    __slots__ = ("r0", "r1", "c0", "c1", "spec", "flip")

    def __init__(self, r0, r1, c0=0, c1=0, spec=None, flip=False):
        self.r0, self.r1, self.c0, self.c1, self.spec, self.flip = int(r0), int(r1), int(c0), int(c1), spec, flip

    def key(self):
        """A hashable identity (plans with equal keys run together)."""
        return (self.r0, self.r1, self.c0, self.c1, self.spec, self.flip)

    def __repr__(self):
        if self.spec is None:
            return f"Part(rows {self.r0}:{self.r1} masked)"
        flip = ", flipped" if self.flip else ""
        return f"Part(rows {self.r0}:{self.r1}, keys {self.c0}:{self.c1}, {self.spec!r}{flip})"


class GraphMask:
    """What the `graph_attention` mask function gives transformers in place of a dense mask, and what its
    attention function reads: `groups`, a tuple of `(batch indices, parts)`, the parts covering every query row
    once (in order); `masked_rows` for plans whose parts leave empty rows in place (explicit graphs), a tuple of
    `(batch indices, bool row array)`; `band` the recognised `(alpha, beta)` (None for an explicit mask).

    `shape` is `(batch, 1, q_length, kv_length)`, as a dense mask's would be; `describe()` lists the graphs.
    """

    def __init__(self, batch_size, q_length, kv_length, groups, band=None, causal=True, masked_rows=(), plain=False):
        self.batch_size, self.q_length, self.kv_length = int(batch_size), int(q_length), int(kv_length)
        self.groups = tuple((tuple(int(b) for b in batch), tuple(parts)) for batch, parts in groups)
        self.band = band
        self.causal = causal
        self.masked_rows = tuple(masked_rows)
        self.plain = plain  # a band alone: no padding, documents or explicit graph (packing may still apply)
        self.derived = {}  # masks derived from this one in the attention function, shared by its layers
        self.shape = (self.batch_size, 1, self.q_length, self.kv_length)
        self.ndim = 4
        self.dtype = torch.bool

    def describe(self):
        """One line per group of batch elements: their indices and the graph of each row range."""
        lines = []
        for batch, parts in self.groups:
            lines.append(f"batch {list(batch)}: " + "; ".join(repr(p) for p in parts))
        return "\n".join(lines)

    def __repr__(self):
        return f"GraphMask(q_length={self.q_length}, kv_length={self.kv_length},\n{self.describe()})"


# ---------------------------------------------------------------------------------------------------------------
# Reading transformers' mask functions


def _cells(fn):
    code = getattr(fn, "__code__", None)
    if code is None or not fn.__closure__:
        return {}
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, fn.__closure__)}


def _structure(fn):
    """The structure of a mask function: a dict with `band` (alpha, beta) in positions (kv - q in
    [alpha, beta], None for an open side), and optionally `documents` (("packed", ids [B, L]) or ("chunked",
    size, left_padding [B])). Raises _Unrecognised for anything else."""
    from transformers import masking_utils as mu

    if fn is mu.causal_mask_function:
        return {"band": (_INF, 0)}
    if fn is mu.bidirectional_mask_function:
        return {"band": (_INF, _INF)}
    name = getattr(fn, "__qualname__", "")
    cells = _cells(fn)
    if name == "and_masks.<locals>.and_mask":
        result = {"band": (_INF, _INF)}
        for inner in cells["mask_functions"]:
            part = _structure(inner)
            alpha = _max_open(result["band"][0], part["band"][0])
            beta = _min_open(result["band"][1], part["band"][1])
            result["band"] = (alpha, beta)
            if "documents" in part:
                if "documents" in result:
                    raise _Unrecognised("two document structures")
                result["documents"] = part["documents"]
        return result
    if name == "sliding_window_overlay.<locals>.inner_mask":
        return {"band": (-(int(cells["sliding_window"]) - 1), _INF)}  # kv > q - W
    if name == "sliding_window_bidirectional_overlay.<locals>.inner_mask":
        w = int(cells["sliding_window"])
        return {"band": (-w, w)}  # |q - kv| <= W
    if name == "chunked_overlay.<locals>.inner_mask":
        return {"band": (_INF, _INF), "documents": ("chunked", int(cells["chunk_size"]), cells["left_padding"])}
    if name == "packed_sequence_mask_function.<locals>.inner_mask":
        return {"band": (_INF, _INF), "documents": ("packed", cells["packed_sequence_mask"])}
    if name == "remap_positions_for_packed_sequence.<locals>.inner_mask":
        # Positions restart at each packed document and grow by one inside it (that is how transformers finds
        # the documents), so a band over positions is the same band over indices inside a document; the
        # packed_sequence_mask_function beside it in the and_masks keeps rows inside their document.
        return _structure(cells["mask_function"])
    raise _Unrecognised(name or repr(fn))


def _max_open(a, b):
    return b if a is None else a if b is None else max(a, b)


def _min_open(a, b):
    return b if a is None else a if b is None else min(a, b)


def band_spec(alpha, beta):
    """The engine specification of the band kv - q in [alpha, beta] over a slice where it is bottom-right
    aligned (None when the band is not one of the causal kinds)."""
    if beta is None:
        return None
    if alpha is None:
        return "causal"
    return f"window:{beta - alpha}:causal"


# ---------------------------------------------------------------------------------------------------------------
# Planning rows into parts


def _band_parts(lq, lk, s, alpha, beta, first, last):
    """Parts covering rows [0, lq) of one batch element whose valid keys are [first, last] (inclusive; first >
    last for none) under the band kv - q in [alpha, beta] with s = q_offset - kv_offset."""
    if first > last:
        return [Part(0, lq)]
    if (s == 0 and lq == lk and first == 0 and last == lk - 1 and alpha is not None and beta is not None
            and alpha == -beta):
        return [Part(0, lq, 0, lk, f"window:{beta}")]  # the engine's own bidirectional window clips both ends
    rows = np.arange(lq, dtype=np.int64)
    big = np.int64(1) << 62
    lo_raw = rows + s + alpha if alpha is not None else np.full(lq, -big)
    hi_raw = rows + s + beta if beta is not None else np.full(lq, big)
    lo = np.maximum(lo_raw, first)
    hi = np.minimum(hi_raw, last)
    empty = lo > hi
    # Rows whose right end is cut by the last valid key need `full` or a flipped causal kind; a tie (hi_raw ==
    # last) keeps the bottom-right aligned kind, so plain causal and decoding stay one part.
    hi_cut = hi_raw > last
    lo_cut = lo_raw <= first
    # kind: 0 masked, 1 bottom-right (causal / window:causal), 2 full, 3 flipped causal
    kind = np.where(empty, 0, np.where(~hi_cut, 1, np.where(lo_cut, 2, 3)))
    breaks = np.flatnonzero(np.diff(kind)) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [lq]))
    parts = []
    for r0, r1 in zip(starts.tolist(), ends.tolist()):
        k = int(kind[r0])
        if k == 0:
            parts.append(Part(r0, r1))
        elif k == 1:
            c0 = int(lo[r0])  # rows clipped at `first` all start there, the engine clips them at the slice start
            c1 = int(hi[r1 - 1]) + 1
            parts.append(Part(r0, r1, c0, c1, band_spec(alpha, beta)))
        elif k == 2:
            parts.append(Part(r0, r1, first, last + 1, "full"))
        else:
            # Reversing rows and keys turns "keys from r + s + alpha up to `last`" into a causal bound.
            parts.append(Part(r0, r1, int(lo[r0]), last + 1, "causal", flip=True))
    return parts


def _documents_spec(bounds, alpha, beta):
    """`documents:...` intersected with the band inside each document, or None where the grammar has no such
    intersection."""
    docs = "documents:" + ",".join(str(int(b)) for b in bounds)
    if alpha is None and beta is None:
        return docs
    if beta == 0:
        return f"{docs}&{band_spec(alpha, beta)}"
    if alpha is not None and beta is not None and alpha == -beta:
        return f"{docs}&window:{beta}"
    return None


def _bounds_from_ids(ids):
    """Document offsets (cu_seqlens) from per-token document ids (non-decreasing runs)."""
    ids = np.asarray(ids)
    changes = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    return np.concatenate(([0], changes, [len(ids)]))


def _valid_keys(attention_mask, batch_size, kv_length, kv_offset):
    """Per batch element (first, last, contiguous) of the unpadded keys in local coordinates."""
    if attention_mask is None:
        return [(0, kv_length - 1, True)] * batch_size
    mask = attention_mask.detach().to("cpu", torch.bool).numpy()
    if mask.ndim != 2:
        raise GraphAttentionError(f"mask: the padding mask has shape {list(mask.shape)}. Fix: pass a 2-D "
                                  "attention_mask of shape [batch, tokens] (1 for tokens, 0 for padding).", "mask")
    window = mask[:, kv_offset:kv_offset + kv_length]
    if window.shape[1] < kv_length:  # as transformers' prepare_padding_mask: missing keys are padding
        window = np.pad(window, ((0, 0), (0, kv_length - window.shape[1])))
    out = []
    for row in window:
        idx = np.flatnonzero(row)
        if len(idx) == 0:
            out.append((0, -1, True))
        else:
            out.append((int(idx[0]), int(idx[-1]), len(idx) == idx[-1] - idx[0] + 1))
    if len(out) == 1 and batch_size > 1:
        out = out * batch_size
    return out


def _int(x):
    return int(x.item()) if isinstance(x, torch.Tensor) else int(x)


def _group(plans):
    """[(batch indices, parts)] with batch elements of equal plans together, in first-seen order."""
    groups = OrderedDict()
    for b, parts in enumerate(plans):
        key = tuple(p.key() for p in parts)
        groups.setdefault(key, ([], parts))[0].append(b)
    return [(batch, parts) for batch, parts in groups.values()]


def plan_structure(structure, batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask, causal=True):
    """The GraphMask of a recognised structure, or raises _Unrecognised where it needs an explicit graph."""
    alpha, beta = structure["band"]
    s = q_offset - kv_offset
    valid = _valid_keys(attention_mask, batch_size, kv_length, kv_offset)
    documents = structure.get("documents")
    plans = []
    for b in range(batch_size):
        first, last, contiguous = valid[b]
        if not contiguous:
            raise _Unrecognised("padding with holes")
        if documents is None:
            plans.append(_band_parts(q_length, kv_length, s, alpha, beta, first, last))
            continue
        # Documents: self-attention without a cache; padding only on the left, with a causal kind (padded rows,
        # which see only padded keys, are then masked).
        if q_length != kv_length or s != 0 or last != kv_length - 1 or (first > 0 and (beta is None or beta > 0)):
            raise _Unrecognised("documents with a cache or right padding")
        if first > last:
            plans.append([Part(0, q_length)])
            continue
        if documents[0] == "packed":
            ids = documents[1][b if documents[1].shape[0] > 1 else 0].detach().cpu().numpy()[first:]
            bounds = _bounds_from_ids(ids)
        else:
            size = documents[1]
            left = _int(documents[2][b]) if isinstance(documents[2], torch.Tensor) else int(documents[2])
            if left != first:
                raise _Unrecognised("chunks not aligned with the padding")
            n = kv_length - first
            bounds = np.concatenate((np.arange(0, n, size), [n]))
        spec = _documents_spec(bounds, alpha, beta)
        if spec is None:
            raise _Unrecognised("documents with this band")
        parts = [Part(0, first)] if first > 0 else []
        parts.append(Part(first, q_length, first, kv_length, spec))
        plans.append(parts)
    plain = documents is None and all(v == (0, kv_length - 1, True) for v in valid)
    return GraphMask(batch_size, q_length, kv_length, _group(plans), band=(alpha, beta), causal=causal, plain=plain)


# ---------------------------------------------------------------------------------------------------------------
# Explicit graphs


_DEFAULT_MAX_EDGES = 1 << 28
_BLOCK_ELEMENTS = 1 << 24  # booleans evaluated per block (16 MiB)


def max_explicit_edges():
    """The edge budget of explicit graphs (GRAPH_ATTENTION_MAX_EXPLICIT_EDGES, default 2^28: 1 GiB of indices)."""
    value = os.environ.get("GRAPH_ATTENTION_MAX_EXPLICIT_EDGES")
    return int(value) if value else _DEFAULT_MAX_EDGES


class _Files:
    """A private directory of CSR .npy files named by their content's hash, kept while the process runs (the
    backward pass reads the graph of its forward again) and bounded to the most recent `limit` graphs."""

    def __init__(self, limit=256):
        self.directory = None
        self.limit = limit
        self.entries = OrderedDict()
        self.lock = threading.Lock()

    def spec(self, indptr, indices):
        digest = hashlib.sha1()
        digest.update(indptr.tobytes())
        digest.update(indices.tobytes())
        name = digest.hexdigest()[:24]
        with self.lock:
            if self.directory is None:
                self.directory = tempfile.mkdtemp(prefix="graph_attention_masks_")
                atexit.register(shutil.rmtree, self.directory, True)
            if name in self.entries:
                self.entries.move_to_end(name)
                return self.entries[name]
            paths = [os.path.join(self.directory, f"{name}.{kind}.npy") for kind in ("indptr", "indices")]
            np.save(paths[0], indptr)
            np.save(paths[1], indices)
            spec = "csr:" + ":".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in paths)
            self.entries[name] = spec
            while len(self.entries) > self.limit:
                old, _ = self.entries.popitem(last=False)
                for kind in ("indptr", "indices"):
                    try:
                        os.remove(os.path.join(self.directory, f"{old}.{kind}.npy"))
                    except OSError:
                        pass
            return spec


_files = _Files()


def _too_many(edges, limit, what):
    return GraphAttentionError(
        f"mask: {what} is not a pattern graph_attention describes in closed form, and as an explicit graph it has "
        f"more than {limit} edges ({edges} counted so far, 4 bytes each). Fix: raise "
        f"GRAPH_ATTENTION_MAX_EXPLICIT_EDGES if the memory is there, or give the model a mask transformers builds "
        "from its own pieces (causal, sliding window, bidirectional, chunked, packed documents).", "mask")


def _explicit_plans(blocks, batch_size, q_length, kv_length, what):
    """CSR plans from an iterator of (r0, bool array [B, rows, L_k]) blocks: per batch element one part over
    every row and key, and the rows without keys (masked)."""
    limit = max_explicit_edges()
    indices = [[] for _ in range(batch_size)]
    degrees = [[] for _ in range(batch_size)]
    edges = 0
    for _, block in blocks:
        for b in range(batch_size):
            rows, cols = np.nonzero(block[b])
            edges += len(cols)
            if edges > limit:
                raise _too_many(edges, limit, what)
            indices[b].append(cols.astype(np.int32))
            degrees[b].append(np.bincount(rows, minlength=block.shape[1]))
    plans, masked = [], []
    for b in range(batch_size):
        degree = np.concatenate(degrees[b]) if degrees[b] else np.zeros(q_length, np.int64)
        indptr = np.concatenate(([0], np.cumsum(degree))).astype(np.int64)
        cols = np.concatenate(indices[b]) if indices[b] else np.zeros(0, np.int32)
        plans.append([Part(0, q_length, 0, kv_length, _files.spec(indptr, cols))])
        masked.append(degree == 0)
    groups = _group(plans)
    masked_rows = []
    for batch, _ in groups:
        rows = masked[batch[0]]
        if rows.any():
            masked_rows.append((tuple(batch), rows))
    return groups, masked_rows


def plan_explicit(mask_function, batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask, use_vmap,
                  causal=True):
    """An explicit CSR GraphMask for any mask function, evaluated through transformers' `sdpa_mask` in blocks
    of rows (at most 2^24 booleans at a time)."""
    from transformers.masking_utils import sdpa_mask

    rows_per_block = max(1, _BLOCK_ELEMENTS // max(1, batch_size * kv_length))

    def blocks():
        for r0 in range(0, q_length, rows_per_block):
            n = min(rows_per_block, q_length - r0)
            block = sdpa_mask(batch_size=batch_size, q_length=n, kv_length=kv_length, q_offset=q_offset + r0,
                              kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                              allow_is_causal_skip=False, allow_is_bidirectional_skip=False, use_vmap=use_vmap,
                              device="cpu")
            yield r0, block[:, 0].expand(batch_size, n, kv_length).numpy()

    name = getattr(mask_function, "__qualname__", repr(mask_function))
    groups, masked_rows = _explicit_plans(blocks(), batch_size, q_length, kv_length, f"the mask function {name}")
    return GraphMask(batch_size, q_length, kv_length, groups, band=None, causal=causal, masked_rows=masked_rows)


def plan_from_dense(mask, q_length, kv_length):
    """A GraphMask from a prepared 4-D mask `[B, 1 or H, L_q, L_k]` (bool, True to attend; or float, 0 to
    attend and the dtype's minimum or -inf not to) that a caller passed in place of a 2-D padding mask."""
    if mask.dim() != 4 or mask.shape[-2:] != (q_length, kv_length):
        raise GraphAttentionError(f"mask: a prepared mask of shape {list(mask.shape)} does not match {q_length} "
                                  f"queries and {kv_length} keys. Fix: pass a [batch, 1, {q_length}, {kv_length}] "
                                  "mask, or the 2-D attention_mask.", "mask")
    if mask.shape[1] != 1 and not bool((mask == mask[:, :1]).all()):
        raise GraphAttentionError("mask: the prepared mask differs between heads. Fix: pass one mask for every head "
                                  "([batch, 1, L_q, L_k]).", "mask")
    mask = mask[:, 0].detach().cpu()
    if mask.dtype != torch.bool:
        low = torch.finfo(mask.dtype).min if mask.dtype.is_floating_point else None
        allowed = mask == 0
        blocked = (mask <= low / 2) if low is not None else ~allowed
        if not bool((allowed | blocked).all()):
            raise GraphAttentionError("mask: the prepared float mask holds biases other than 0 and the dtype's minimum "
                                      "(or -inf); graph_attention takes which keys a query attends to, not additive "
                                      "biases. Fix: pass a boolean mask, or use ALiBi through graph_attention.attention.",
                                      "mask")
        mask = allowed
    batch = mask.shape[0]
    groups, masked_rows = _explicit_plans([(0, mask.numpy())], batch, q_length, kv_length, "a prepared 4-D mask")
    return GraphMask(batch, q_length, kv_length, groups, band=None, masked_rows=masked_rows)


def plan_default(batch_size, q_length, kv_length, causal, sliding_window=None):
    """The GraphMask used when transformers passes no mask: causal (bottom-right aligned) or full, within
    `sliding_window` keys when given."""
    if causal:
        alpha = None if not sliding_window else -(int(sliding_window) - 1)
        band = (alpha, 0)
    else:
        band = (None, None)
    s = kv_length - q_length if causal else 0
    parts = _band_parts(q_length, kv_length, s, band[0], band[1], 0, kv_length - 1)
    return GraphMask(batch_size, q_length, kv_length, [(range(batch_size), parts)], band=band, causal=causal,
                     plain=True)


def graph_mask_function(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                        attention_mask=None, use_vmap=False, config=None, **kwargs):
    """The mask function registered with transformers' AttentionMaskInterface as `graph_attention`: the same
    arguments as `sdpa_mask`, and a `GraphMask` (per-batch row ranges with engine specifications) in place of
    the dense boolean mask."""
    from transformers import masking_utils as mu

    mask_function = mask_function or mu.causal_mask_function
    q_offset, kv_offset = _int(q_offset), _int(kv_offset)
    causal = getattr(config, "is_causal", True) if config is not None else True
    try:
        structure = _structure(mask_function)
        return plan_structure(structure, batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask,
                              causal=causal)
    except _Unrecognised:
        return plan_explicit(mask_function, batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask,
                             use_vmap, causal=causal)
