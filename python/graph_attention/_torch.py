"""PyTorch custom ops over the engine: `graph_attention::attention` (output and LSE) and
`graph_attention::attention_backward` (dq, dk, dv, dsinks), with fake (meta) implementations for torch.compile
and autograd wired between them. The mask travels as a string argument (per-head masks as one specification a
line), so compiled graphs hold plain values; ALiBi slopes and sinks are tensors (the sinks differentiable)."""
from typing import Optional

import numpy as np
import torch

from . import _library
from ._library import ALIBI_NONE, ALIBI_SLOPES, EMPTY_ROWS_CODES, GraphAttentionError
from ._attention import (alibi_code, backward_raw, check_arguments, check_per_head, check_softcap, forward_raw,
                         query_heads)
from .graph import cached_graphs, mask_argument

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _dtype_name(dtype):
    return _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def _new_tensor(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype) if _library.POISON_OUTPUTS else torch.empty(shape, dtype=dtype)


def _require_cpu(*tensors, names=("query", "key", "value", "grad_output")):
    for name, t in zip(names, tensors):
        if t is not None and t.device.type != "cpu":
            raise GraphAttentionError(
                f"device: {name} is on {t.device}, but graph_attention computes on the CPU (its CUDA backend is "
                "not yet verified on a GPU). Fix: move the tensors to the CPU with .cpu().", "device")


def _modifiers(query, softcap, alibi, alibi_slopes, sinks):
    """The modifiers argument of forward_raw / backward_raw (addresses of contiguous fp32 [H_q] tensors, checked
    here because the engine reads H_q floats from each), the tensors kept alive in the second element."""
    if softcap is None and alibi == ALIBI_NONE and sinks is None:
        return None, ()
    _require_cpu(alibi_slopes, sinks, names=("alibi", "sinks"))
    heads = query_heads(query.shape)
    if alibi == ALIBI_SLOPES and alibi_slopes is None:
        raise GraphAttentionError("option: alibi is 2 (slopes) but no slopes were given. Fix: pass alibi_slopes.",
                                  "option")
    kept = []
    for name, t in (("alibi", alibi_slopes if alibi == ALIBI_SLOPES else None), ("sinks", sinks)):
        if t is not None:
            check_per_head(name, tuple(t.shape), _dtype_name(t.dtype), heads)
            kept.append(t.detach().contiguous())
        else:
            kept.append(None)
    slopes, sinks = kept
    return (softcap, alibi, None if slopes is None else slopes.data_ptr(),
            None if sinks is None else sinks.data_ptr()), (slopes, sinks)


def _attention_impl(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: str, scale: float,
                    empty_rows: str, threads: int, check_finite: bool, softcap: Optional[float] = None,
                    alibi: int = 0, alibi_slopes: Optional[torch.Tensor] = None,
                    sinks: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    _require_cpu(query, key, value)
    q, k, v = query.contiguous(), key.contiguous(), value.contiguous()  # no copy when contiguous
    shapes = [tuple(t.shape) for t in (q, k, v)]
    _, empty_code, _ = check_arguments(shapes, [_dtype_name(t.dtype) for t in (q, k, v)], scale, empty_rows, None)
    modifiers, _kept = _modifiers(q, softcap, alibi, alibi_slopes, sinks)
    output = _new_tensor(shapes[0][:-1] + shapes[2][-1:], q.dtype)
    lse = _new_tensor(shapes[0][:-1], torch.float32)
    forward_raw(cached_graphs(mask), [t.data_ptr() for t in (q, k, v)], shapes, _dtype_name(q.dtype),
                output.data_ptr(), lse.data_ptr(), scale, empty_code, threads, check_finite, modifiers)
    return output, lse


_attention_op = torch.library.custom_op("graph_attention::attention", _attention_impl, mutates_args=())


@_attention_op.register_fake
def _(query, key, value, mask, scale, empty_rows, threads, check_finite, softcap=None, alibi=0, alibi_slopes=None,
      sinks=None):
    output = query.new_empty(query.shape[:-1] + value.shape[-1:])
    return output, query.new_empty(query.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("graph_attention::attention_backward", mutates_args=())
def _attention_backward_op(grad_output: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           output: torch.Tensor, lse: torch.Tensor, mask: str, scale: float, empty_rows: str,
                           threads: int, check_finite: bool, softcap: Optional[float] = None, alibi: int = 0,
                           alibi_slopes: Optional[torch.Tensor] = None, sinks: Optional[torch.Tensor] = None,
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv (in the query's dtype) and dsinks (fp32 [H_q]; empty without sinks)."""
    _require_cpu(query, key, value, grad_output)
    empty_code = EMPTY_ROWS_CODES[empty_rows]
    dtype = query.dtype
    q, k, v = query.contiguous(), key.contiguous(), value.contiguous()
    o, dout = output.contiguous(), grad_output.to(dtype).contiguous()
    lse = lse.contiguous()
    modifiers, _kept = _modifiers(q, softcap, alibi, alibi_slopes, sinks)
    grads = [_new_tensor(t.shape, torch.float32) for t in (q, k, v)]
    dsinks = _new_tensor((0,) if sinks is None else tuple(sinks.shape), torch.float32)
    backward_raw(cached_graphs(mask), [t.data_ptr() for t in (q, k, v)], [tuple(t.shape) for t in (q, k, v)],
                 _dtype_name(dtype), o.data_ptr(), lse.data_ptr(), dout.data_ptr(), [g.data_ptr() for g in grads],
                 scale, empty_code, threads, check_finite, modifiers, None if sinks is None else dsinks.data_ptr())
    return tuple(g if dtype == torch.float32 else g.to(dtype) for g in grads) + (dsinks,)


@_attention_backward_op.register_fake
def _(grad_output, query, key, value, output, lse, mask, scale, empty_rows, threads, check_finite, softcap=None,
      alibi=0, alibi_slopes=None, sinks=None):
    dsinks = query.new_empty((0,) if sinks is None else tuple(sinks.shape), dtype=torch.float32)
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape), dsinks


def _setup_context(ctx, inputs, output):
    query, key, value, mask, scale, empty_rows, threads, _, softcap, alibi, alibi_slopes, sinks = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, out, lse, alibi_slopes, sinks)
    ctx.arguments = (mask, scale, empty_rows, threads, softcap, alibi)


def _backward(ctx, grad_output, grad_lse):
    # The LSE is returned detached (see `attention`), so grad_lse carries nothing.
    query, key, value, out, lse, alibi_slopes, sinks = ctx.saved_tensors
    mask, scale, empty_rows, threads, softcap, alibi = ctx.arguments
    # No finite check here: the forward checked q, k and v, and a NaN in grad_output (from NaN empty rows, say)
    # propagates as in any torch op.
    dq, dk, dv, dsinks = _attention_backward_op(grad_output, query, key, value, out, lse, mask, scale, empty_rows,
                                                threads, False, softcap, alibi, alibi_slopes, sinks)
    return dq, dk, dv, None, None, None, None, None, None, None, None, None if sinks is None else dsinks


_attention_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerAttention(torch.autograd.Function):
    """The op's autograd wiring (`_setup_context`, `_backward`) without the dispatcher: eager calls with
    gradients skip about 150 us of custom-op overhead. torch.compile always sees the custom op."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _attention_impl(*inputs)
        _setup_context(ctx, inputs, output)
        ctx.mark_non_differentiable(output[1])
        return output

    @staticmethod
    def backward(ctx, grad_output, grad_lse):
        return _backward(ctx, grad_output, grad_lse)


def _plain_eager(tensors):
    """Whether the inputs are plain tensors outside torch.compile and functorch transforms, where calling the
    implementation directly is exactly what the op would do."""
    return (not torch.compiler.is_compiling() and not torch._C._are_functorch_transforms_active()
            and all(type(t) is torch.Tensor for t in tensors))


def _per_head_tensor(name, values):
    """Slopes or sinks as an fp32 tensor: torch tensors through `.to` (so autograd carries the sinks' gradient
    back to the caller's dtype), arrays and sequences as constants."""
    if isinstance(values, torch.Tensor):
        return values.to(torch.float32)
    try:
        return torch.as_tensor(np.asarray(values, dtype=np.float32))
    except (TypeError, ValueError):
        raise GraphAttentionError(f"option: {name} is {values!r}. Fix: pass one number per query head.",
                                  "option") from None


def attention(query, key, value, mask, scale, empty_rows, return_lse, threads, check_finite, softcap=None, alibi=None,
              sinks=None):
    """The torch path of graph_attention.attention (documented there)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise GraphAttentionError(f"dtype: {name} is a {type(t).__name__} while another input is a torch tensor. "
                                      "Fix: pass three torch tensors or three NumPy arrays.", "dtype")
    _require_cpu(query, key, value)
    scale, _, threads = check_arguments([tuple(t.shape) for t in (query, key, value)],
                                        [_dtype_name(t.dtype) for t in (query, key, value)], scale, empty_rows, threads)
    mask = mask_argument(mask, query_heads(query.shape))
    softcap = check_softcap(softcap)
    code, slopes = alibi_code(alibi)
    slopes = None if slopes is None else _per_head_tensor("alibi", slopes).detach()  # constants: no gradient
    sinks = None if sinks is None else _per_head_tensor("sinks", sinks)
    arguments = (query, key, value, mask, scale, empty_rows, threads, bool(check_finite), softcap, code, slopes, sinks)
    tensors = [t for t in (query, key, value, slopes, sinks) if t is not None]
    if not _plain_eager(tensors):
        output, lse = _attention_op(*arguments)
    elif torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        output, lse = _EagerAttention.apply(*arguments)
    else:
        output, lse = _attention_impl(*arguments)  # inference: no dispatcher, no autograd record
    return (output, lse.detach()) if return_lse else output
