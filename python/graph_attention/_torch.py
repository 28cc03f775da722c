"""PyTorch custom ops over the engine: `graph_attention::attention` (output and LSE) and
`graph_attention::attention_backward` (dq, dk, dv), with fake (meta) implementations for torch.compile and
autograd wired between them. The mask travels as a string argument (per-head masks as one specification a
line), so compiled graphs hold plain values."""
import torch

from . import _library
from ._library import EMPTY_ROWS_CODES, GraphAttentionError
from ._attention import backward_raw, check_arguments, forward_raw, query_heads
from .graph import cached_graphs, mask_argument

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _dtype_name(dtype):
    return _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def _new_tensor(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype) if _library.POISON_OUTPUTS else torch.empty(shape, dtype=dtype)


def _require_cpu(*tensors):
    for name, t in zip(("query", "key", "value", "grad_output"), tensors):
        if t.device.type != "cpu":
            raise GraphAttentionError(
                f"device: {name} is on {t.device}, but graph_attention computes on the CPU (its CUDA backend is "
                "not yet verified on a GPU). Fix: move the tensors to the CPU with .cpu().", "device")


def _attention_impl(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: str, scale: float,
                  empty_rows: str, threads: int, check_finite: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _require_cpu(query, key, value)
    q, k, v = query.contiguous(), key.contiguous(), value.contiguous()  # no copy when contiguous
    shapes = [tuple(t.shape) for t in (q, k, v)]
    _, empty_code, _ = check_arguments(shapes, [_dtype_name(t.dtype) for t in (q, k, v)], scale, empty_rows, None)
    output = _new_tensor(shapes[0][:-1] + shapes[2][-1:], q.dtype)
    lse = _new_tensor(shapes[0][:-1], torch.float32)
    forward_raw(cached_graphs(mask), [t.data_ptr() for t in (q, k, v)], shapes, _dtype_name(q.dtype),
                output.data_ptr(), lse.data_ptr(), scale, empty_code, threads, check_finite)
    return output, lse


_attention_op = torch.library.custom_op("graph_attention::attention", _attention_impl, mutates_args=())


@_attention_op.register_fake
def _(query, key, value, mask, scale, empty_rows, threads, check_finite):
    output = query.new_empty(query.shape[:-1] + value.shape[-1:])
    return output, query.new_empty(query.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("graph_attention::attention_backward", mutates_args=())
def _attention_backward_op(grad_output: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           output: torch.Tensor, lse: torch.Tensor, mask: str, scale: float, empty_rows: str,
                           threads: int, check_finite: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _require_cpu(query, key, value, grad_output)
    empty_code = EMPTY_ROWS_CODES[empty_rows]
    dtype = query.dtype
    q, k, v = query.contiguous(), key.contiguous(), value.contiguous()
    o, dout = output.contiguous(), grad_output.to(dtype).contiguous()
    lse = lse.contiguous()
    grads = [_new_tensor(t.shape, torch.float32) for t in (q, k, v)]
    backward_raw(cached_graphs(mask), [t.data_ptr() for t in (q, k, v)], [tuple(t.shape) for t in (q, k, v)],
                 _dtype_name(dtype), o.data_ptr(), lse.data_ptr(), dout.data_ptr(), [g.data_ptr() for g in grads],
                 scale, empty_code, threads, check_finite)
    return tuple(g if dtype == torch.float32 else g.to(dtype) for g in grads)


@_attention_backward_op.register_fake
def _(grad_output, query, key, value, output, lse, mask, scale, empty_rows, threads, check_finite):
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape)


def _setup_context(ctx, inputs, output):
    query, key, value, mask, scale, empty_rows, threads, _ = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, out, lse)
    ctx.arguments = (mask, scale, empty_rows, threads)


def _backward(ctx, grad_output, grad_lse):
    # The LSE is returned detached (see `attention`), so grad_lse carries nothing.
    query, key, value, out, lse = ctx.saved_tensors
    mask, scale, empty_rows, threads = ctx.arguments
    # No finite check here: the forward checked q, k and v, and a NaN in grad_output (from NaN empty rows, say)
    # propagates as in any torch op.
    dq, dk, dv = _attention_backward_op(grad_output, query, key, value, out, lse, mask, scale, empty_rows, threads,
                                        False)
    return dq, dk, dv, None, None, None, None, None


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


def attention(query, key, value, mask, scale, empty_rows, return_lse, threads, check_finite):
    """The torch path of graph_attention.attention (documented there)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise GraphAttentionError(f"dtype: {name} is a {type(t).__name__} while another input is a torch tensor. "
                                      "Fix: pass three torch tensors or three NumPy arrays.", "dtype")
    _require_cpu(query, key, value)
    scale, _, threads = check_arguments([tuple(t.shape) for t in (query, key, value)],
                                        [_dtype_name(t.dtype) for t in (query, key, value)], scale, empty_rows, threads)
    mask = mask_argument(mask, query_heads(query.shape))
    arguments = (query, key, value, mask, scale, empty_rows, threads, bool(check_finite))
    if not _plain_eager((query, key, value)):
        output, lse = _attention_op(*arguments)
    elif torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        output, lse = _EagerAttention.apply(*arguments)
    else:
        output, lse = _attention_impl(*arguments)  # inference: no dispatcher, no autograd record
    return (output, lse.detach()) if return_lse else output
