"""`attention`: sparse attention over a mask graph for NumPy arrays and PyTorch tensors."""
import ctypes
import math

import numpy as np

from . import _library
from ._library import (ALIBI_NONE, ALIBI_SLOPES, ALIBI_STANDARD, DTYPE_CODES, EMPTY_ROWS_CODES, FLAG_CHECK_FINITE,
                       AttentionOptions, GraphAttentionError, check, lib, shape_array)
from .graph import cached_graphs, mask_argument

__all__ = ["attention"]

_LAYOUTS = "[L, d], [H, L, d] or [B, H, L, d]"


def attention(query, key, value, mask="window:256+global:0", scale=None, empty_rows="zero", return_lse=False,
              threads=None, check_finite=True, softcap=None, alibi=None, sinks=None):
    """Exact attention restricted to a graph: `out_i = sum over keys j of row i's mask of softmax_j(scale q_i.k_j) v_j`.

    The softmax of each query row runs over that row's edges only, in fp32 with an online maximum (no score
    matrix is formed): O(edges * (d_k + d_v)) time per head and O(output) memory, on every CPU core.

    Args:
        query: `[L_q, d_k]`, `[H_q, L_q, d_k]` or `[B, H_q, L_q, d_k]` (SDPA's layout), fp32, fp16 or bf16;
            a NumPy array or a CPU torch tensor (then differentiable in query, key and value).
        key: `[..., H_kv, L_k, d_k]` with `H_kv` dividing `H_q` (grouped-query attention), same dtype.
        value: `[..., H_kv, L_k, d_v]`; `d_v` may differ from `d_k`.
        mask: a mask specification (see `Graph`) or a `Graph`, for every head; or a list of them, one per query
            head (`len(mask) == H_q`), as models mixing windowed and full heads need. Self-attention kinds need
            `L_q == L_k`; `full`, `random`, explicit graphs (csr, coo, mtx) and the causal kinds (aligned
            bottom-right) allow `L_q != L_k`.
        scale: the factor on `q . k`; None for `1 / sqrt(d_k)`.
        empty_rows: "zero" (rows with no edge give zeros, their gradients are zero) or "nan" (as SDPA).
        return_lse: also return the log-sum-exp per row and head, fp32 of shape `query.shape[:-1]`:
            `log sum_j exp(scale q_i.k_j)`, -inf for empty rows (not differentiable).
        threads: worker threads; None for every processor.
        check_finite: scan the inputs for NaN and infinity first and raise naming the first one.
        softcap: Gemma 2's logit softcap `C > 0`: each score `s = scale q.k` becomes `C tanh(s / C)`; None for none.
        alibi: ALiBi's bias `-slope_h |i + L_k - L_q - j|` added to each score of query head `h` (after the
            softcap): True for the standard slopes `2^(-8 (h + 1) / H_q)`, or `H_q` slopes (a 1-D tensor, array or
            sequence; constants, no gradient); None or False for none.
        sinks: GPT-OSS attention sinks: `H_q` logits (a 1-D tensor or array), one per query head, each joining
            every row's softmax denominator without a value: `o_i = sum_j e^(s_ij) v_j / (e^(sink_h) +
            sum_j e^(s_ij))`. A torch tensor receives its gradient through autograd. Rows without edges then give
            zeros whatever `empty_rows` says, and the LSE includes the sink.

    Returns:
        The output, shaped like the query with last dimension `d_v`, of the query's dtype and kind (NumPy or
        torch); with `return_lse`, the pair `(output, lse)`.

    Raises:
        ValueError (`GraphAttentionError`) with the engine's problem and fix for bad shapes, dtypes, masks,
        options or non-finite inputs; OSError for an unreadable graph file. CUDA tensors are refused.

    Contiguous CPU inputs are read in place (no copy); others are copied once. The GIL is released while the
    engine runs.
    """
    if _is_torch(query) or _is_torch(key) or _is_torch(value):
        from . import _torch

        return _torch.attention(query, key, value, mask, scale, empty_rows, return_lse, threads, check_finite,
                                softcap, alibi, sinks)
    return _numpy_attention(query, key, value, mask, scale, empty_rows, return_lse, threads, check_finite,
                            softcap, alibi, sinks)


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def check_arguments(shapes, dtype_names, scale, empty_rows, threads):
    """Checks what the C call cannot express (one rank for all three, dtype names) and the Python options,
    raising GraphAttentionError in the engine's words. Returns (scale, empty_rows code, threads)."""
    for name, shape in zip(("query", "key", "value"), shapes):
        if not 2 <= len(shape) <= 4:
            raise GraphAttentionError(f"shape: {name} has rank {len(shape)} (shape {list(shape)}). "
                                      f"Fix: use a tensor of shape {_LAYOUTS}.", "shape")
    if not len(shapes[0]) == len(shapes[1]) == len(shapes[2]):
        raise GraphAttentionError(f"shape: query, key and value have ranks {len(shapes[0])}, {len(shapes[1])}, "
                                  f"{len(shapes[2])}. Fix: give all three the same layout, {_LAYOUTS}.", "shape")
    for name, dtype in zip(("query", "key", "value"), dtype_names):
        if dtype not in DTYPE_CODES:
            raise GraphAttentionError(f"dtype: {name} is {dtype}. Fix: convert query, key and value to float32, "
                                      "float16 or bfloat16.", "dtype")
    if len(set(dtype_names)) != 1:
        raise GraphAttentionError(f"dtype: query, key and value are {', '.join(dtype_names)}. Fix: give all three "
                                  "the same dtype.", "dtype")
    if empty_rows not in EMPTY_ROWS_CODES:
        raise GraphAttentionError(f"option: empty_rows is {empty_rows!r}. Fix: pass 'zero' or 'nan'.", "option")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise GraphAttentionError(f"option: threads is {threads!r}. Fix: pass a positive integer, or None for "
                                  "every processor.", "option")
    if scale is None:
        scale = 1.0 / math.sqrt(shapes[0][-1]) if shapes[0][-1] > 0 else 1.0
    else:
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise GraphAttentionError(f"option: scale is {scale!r}. Fix: pass a finite number, or None for "
                                      "1/sqrt(d_k).", "option") from None
        if not math.isfinite(scale):
            raise GraphAttentionError(f"option: scale {scale} is not finite. Fix: pass a finite number, or None "
                                      "for 1/sqrt(d_k).", "option")
    return scale, EMPTY_ROWS_CODES[empty_rows], threads or 0


def check_softcap(softcap):
    """The softcap as a float (None for none), or GraphAttentionError if it is not a number. Its value is the
    engine's to judge (one rule, in the library): a float NaN would mean "none" at the C ABI, so NaN is refused here
    in the engine's words."""
    if softcap is None:
        return None
    try:
        value = None if isinstance(softcap, bool) else float(softcap)
    except (TypeError, ValueError):
        value = None
    if value is None or math.isnan(value):
        raise GraphAttentionError(f"option: softcap is {softcap!r}, not a number. Fix: pass a positive finite number "
                                  "(Gemma 2 uses 50), or None for none.", "option")
    return value


def alibi_code(alibi):
    """(ALiBi code of the C ABI, the slopes argument or None) for `attention`'s `alibi`."""
    if alibi is None or alibi is False:
        return ALIBI_NONE, None
    if alibi is True:
        return ALIBI_STANDARD, None
    return ALIBI_SLOPES, alibi


def check_per_head(name, shape, dtype_name, heads):
    """Slopes and sinks are read as `heads` fp32 values by the engine: anything else is refused here."""
    if tuple(shape) != (heads,):
        raise GraphAttentionError(f"option: {name} has shape {list(shape)}, but the query has {heads} head(s). Fix: "
                                  f"pass a 1-D tensor of {heads} values, one per query head.", "option")
    if dtype_name != "float32":
        raise GraphAttentionError(f"dtype: {name} is {dtype_name}. Fix: pass float32 values.", "dtype")


def _options(graphs, scale, empty_rows_code, threads, flags, modifiers):
    """The `ga_attention_options` of a call (the struct keeps the handle array alive)."""
    handles = (ctypes.c_void_p * len(graphs))(*(g._handle.value for g in graphs))
    options = AttentionOptions(graph_count=len(graphs), graphs=handles, scale=scale, empty_rows=empty_rows_code,
                               threads=threads, flags=flags)
    if modifiers is not None:
        softcap, options.alibi, options.alibi_slopes, options.sinks = modifiers
        options.softcap = math.nan if softcap is None else softcap
    return options


def forward_raw(graphs, pointers, shapes, dtype, output, lse, scale, empty_rows_code, threads, check_finite,
                modifiers=None):
    """One forward call over contiguous buffers (addresses as ints) of one dtype name: ga_attention_forward for
    one graph without modifiers, else ga_attention_forward_ex. `modifiers`: None, or (softcap or None, ALiBi
    code, slopes address or None, sinks address or None)."""
    code = DTYPE_CODES[dtype]
    flags = FLAG_CHECK_FINITE if check_finite else 0
    q, k, v = pointers
    arguments = (q, shape_array(shapes[0]), code, k, shape_array(shapes[1]), code, v, shape_array(shapes[2]), code,
                 len(shapes[0]), output, code, lse)
    if len(graphs) == 1 and modifiers is None:
        check(lib.ga_attention_forward(*arguments, graphs[0]._handle, scale, empty_rows_code, threads, flags, None))
    else:
        options = _options(graphs, scale, empty_rows_code, threads, flags, modifiers)
        check(lib.ga_attention_forward_ex(*arguments, ctypes.byref(options), None))


def backward_raw(graphs, pointers, shapes, dtype, output, lse, grad_output, grads, scale, empty_rows_code, threads,
                 check_finite, modifiers=None, grad_sinks=None):
    """One backward call: fp32 gradients into `grads` (three addresses) and, with sinks, `grad_sinks`, for the
    graphs and modifiers of `forward_raw`."""
    code = DTYPE_CODES[dtype]
    flags = FLAG_CHECK_FINITE if check_finite else 0
    q, k, v = pointers
    arguments = (q, shape_array(shapes[0]), code, k, shape_array(shapes[1]), code, v, shape_array(shapes[2]), code,
                 len(shapes[0]), output, code, lse, grad_output, code, grads[0], grads[1], grads[2])
    if len(graphs) == 1 and modifiers is None:
        check(lib.ga_attention_backward(*arguments, graphs[0]._handle, scale, empty_rows_code, threads, flags))
    else:
        options = _options(graphs, scale, empty_rows_code, threads, flags, modifiers)
        check(lib.ga_attention_backward_ex(*arguments, grad_sinks, ctypes.byref(options)))


def query_heads(query_shape):
    """H_q of a query shape of rank 2 to 4 (1 for `[L, d]`)."""
    return query_shape[-3] if len(query_shape) >= 3 else 1


def _new_array(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype) if _library.POISON_OUTPUTS else np.empty(shape, dtype=dtype)


_NUMPY_DTYPE_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}


def _numpy_dtype_name(array):
    # A dict lookup: `dtype.name` alone costs about 4 us, a tenth of the call's overhead budget.
    name = _NUMPY_DTYPE_NAMES.get(array.dtype)
    return name if name is not None else array.dtype.name  # bfloat16 through ml_dtypes' dtype name


def _address(array):
    return array.__array_interface__["data"][0]  # cheaper than array.ctypes.data


def _per_head_array(name, values, heads):
    """`values` (an array or a sequence, any real dtype) as a contiguous fp32 array of `heads` values."""
    try:
        array = np.ascontiguousarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise GraphAttentionError(f"option: {name} is {values!r}. Fix: pass {heads} numbers, one per query head.",
                                  "option") from None
    check_per_head(name, array.shape, "float32", heads)
    return array


def _numpy_attention(query, key, value, mask, scale, empty_rows, return_lse, threads, check_finite, softcap, alibi,
                     sinks):
    arrays = [np.asarray(x) for x in (query, key, value)]
    shapes = [tuple(a.shape) for a in arrays]
    dtypes = [_numpy_dtype_name(a) for a in arrays]
    scale, empty_code, threads = check_arguments(shapes, dtypes, scale, empty_rows, threads)
    heads = query_heads(shapes[0])
    mask_argument(mask, heads)
    graphs = cached_graphs(mask)
    softcap = check_softcap(softcap)
    code, slopes = alibi_code(alibi)
    slopes = None if slopes is None else _per_head_array("alibi", slopes, heads)
    sinks = None if sinks is None else _per_head_array("sinks", sinks, heads)
    modifiers = None
    if softcap is not None or code != ALIBI_NONE or sinks is not None:
        modifiers = (softcap, code, None if slopes is None else _address(slopes), None if sinks is None else _address(sinks))
    arrays = [np.ascontiguousarray(a) for a in arrays]  # no copy when already C-contiguous
    q, k, v = arrays
    output = _new_array(q.shape[:-1] + (v.shape[-1],), q.dtype)
    lse = _new_array(q.shape[:-1], np.float32) if return_lse else None
    forward_raw(graphs, [_address(a) for a in arrays], shapes, dtypes[0], _address(output),
                None if lse is None else _address(lse), scale, empty_code, threads, check_finite, modifiers)
    return (output, lse) if return_lse else output

