"""Hugging Face transformers integration: `attn_implementation="graph_attention"`.

    import graph_attention.transformers                      # registers "graph_attention" (transformers 5.x)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="graph_attention")
    model.set_attn_implementation("graph_attention")         # or switch a loaded model

Importing this module registers one name with transformers' `AttentionInterface` (the attention function)
and `AttentionMaskInterface` (the mask function). The mask function turns what the model asks for (causal,
sliding window, bidirectional or bidirectional-window, chunked, packed documents, padding, KV-cache offsets and
sliding-window caches) into a `GraphMask`: per batch element a few row ranges, each one engine graph
specification over a key slice; any other mask function becomes an explicit graph built from blocks of rows,
or an error where that would exceed the edge budget. No `[L_q, L_k]` tensor is built, and neither eager nor
SDPA attention is called. The attention function maps transformers' arguments (scaling, Gemma 2's softcap,
GPT-OSS's sinks, grouped-query K/V without repetition, `cu_seq_lens_q/k` of packed batches) onto
`graph_attention.attention`, whose torch op carries the gradients and traces under `torch.compile`.

Rows that attend no key (all padding) get what transformers' eager attention gives them: the average of all
values (every score is the dtype's minimum there), or zeros with attention sinks. Their outputs match; the
gradients that flow into such rows' queries and keys are not reproduced (eager's come through the mask's
rounding), which matters only for a loss over padded positions.
"""
import numpy as np
import torch
import torch.utils.checkpoint

from . import _hf_masks
from ._attention import attention
from ._hf_masks import GraphMask, graph_mask_function, plan_default, plan_from_dense
from ._library import GraphAttentionError

__all__ = ["NAME", "register", "graph_attention_forward", "graph_mask_function", "GraphMask"]

NAME = "graph_attention"


def register(name=NAME):
    """Registers `name` (default "graph_attention") with transformers' AttentionInterface and
    AttentionMaskInterface, so `from_pretrained(..., attn_implementation=name)`, `from_config(...)` and
    `model.set_attn_implementation(name)` select graph_attention. Idempotent; returns the name.

    Raises ImportError naming the fix when transformers (5.x) is not installed."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError as error:
        raise ImportError(f"graph_attention.transformers needs transformers 5.x ({error}). Fix: pip install "
                          "'graph-attention[transformers]' or pip install 'transformers>=5'.") from None
    AttentionInterface.register(name, graph_attention_forward)
    AttentionMaskInterface.register(name, graph_mask_function)
    return name


def _sinks(module, s_aux, heads):
    if s_aux is not None:
        return s_aux
    sinks = getattr(module, "sinks", None)
    if isinstance(sinks, torch.Tensor) and sinks.dim() == 1 and sinks.shape[0] == heads:
        return sinks
    return None


def _documents_mask(cu_q, cu_k, mask, batch_size, q_length, kv_length):
    """The GraphMask of flash-attention style packing (`cu_seq_lens_q/k`): documents intersected with the
    band the model's mask asked for."""
    cu_q = [int(x) for x in cu_q.tolist()]
    cu_k = cu_q if cu_k is None else [int(x) for x in cu_k.tolist()]
    if batch_size != 1 or q_length != kv_length or cu_q != cu_k or cu_q[-1] != q_length:
        raise GraphAttentionError(
            f"mask: cu_seq_lens_q/k describe {len(cu_q) - 1} packed documents of {cu_q[-1]} tokens, but the call has "
            f"batch {batch_size}, {q_length} queries and {kv_length} keys. Fix: pack the documents into one row "
            "(batch 1) of self-attention with equal cu_seq_lens_q and cu_seq_lens_k ending at the length.", "mask")
    alpha, beta = (None, 0) if mask is None or mask.band is None else mask.band
    spec = _hf_masks._documents_spec(cu_q, alpha, beta)
    if spec is None:
        raise GraphAttentionError(f"mask: packed documents with the band kv - q in [{alpha}, {beta}] have no graph "
                                  "form. Fix: use a causal, sliding-window or bidirectional model.", "mask")
    parts = [_hf_masks.Part(0, q_length, 0, kv_length, spec)]
    return GraphMask(1, q_length, kv_length, [((0,), parts)], band=(alpha, beta))


_UNIFORM_BLOCK = 1 << 24  # scores per block of masked rows when their gradient is needed (64 MiB of fp32)


def _uniform_block(q, k, v, scale, softcap):
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    # Eager adds the dtype's minimum to every score of such a row, so its softmax is uniform while the gradient
    # still flows through the scores: softmax(s - s.detach()) is exactly that.
    weights = torch.softmax(s - s.detach(), dim=-1)
    return torch.matmul(weights, v)


def _packed_by_positions(mask, position_ids):
    """Flash attention's packing without cu_seq_lens: in a batch of one without padding, positions that go back
    to their minimum start a new document (as `flash_attention_2` reads them, also for models whose own mask
    does not look at the positions). Outside torch.compile only: reading the positions is data-dependent."""
    if torch.compiler.is_compiling() or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return mask
    key = (id(position_ids), position_ids.data_ptr(), position_ids._version)
    found = mask.derived.get(key)
    if found is None:
        positions = position_ids[0].detach().cpu().numpy()
        starts = np.flatnonzero(positions == positions.min())
        if len(starts) <= 1 or starts[0] != 0:
            found = mask
        else:
            cu = torch.from_numpy(np.concatenate((starts, [len(positions)])))
            found = _documents_mask(cu, None, mask, 1, mask.q_length, mask.kv_length)
        mask.derived.clear()
        mask.derived[key] = found
    return found


def _masked_rows(query, key, value, scale, softcap, sinks):
    """What eager attention gives rows without keys (`query` holds just those rows): the mean of every value
    (a uniform softmax: every score is the dtype's minimum), with eager's gradients, which flow through the
    scores; or zeros when a sink takes the whole softmax. Without gradients this is one mean over the keys;
    with them, blocks of rows recomputed in the backward (memory of one block)."""
    heads, rows = query.shape[1], query.shape[2]
    shape = query.shape[:-1] + value.shape[-1:]
    if sinks is not None:
        return value.new_zeros(shape)
    groups = heads // key.shape[1]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    if not needs_grad:
        mean = value.mean(dim=-2, keepdim=True)
        if groups != 1:
            mean = mean.repeat_interleave(groups, dim=1)
        return mean.expand(shape)
    if groups != 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    block = max(1, _UNIFORM_BLOCK // max(1, query.shape[0] * heads * key.shape[2]))
    pieces = []
    for r0 in range(0, rows, block):
        q = query[:, :, r0:r0 + block]
        pieces.append(torch.utils.checkpoint.checkpoint(_uniform_block, q, key, value, scale, softcap,
                                                        use_reentrant=False))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-2)


def _run_parts(query, key, value, parts, scale, softcap, sinks):
    pieces = []
    for part in parts:
        if part.spec is None:
            pieces.append(_masked_rows(query[:, :, part.r0:part.r1], key, value, scale, softcap, sinks))
            continue
        q = query[:, :, part.r0:part.r1]
        k = key[:, :, part.c0:part.c1]
        v = value[:, :, part.c0:part.c1]
        if part.flip:
            q, k, v = q.flip(-2), k.flip(-2), v.flip(-2)
        out = attention(q, k, v, mask=part.spec, scale=scale, softcap=softcap, sinks=sinks)
        pieces.append(out.flip(-2) if part.flip else out)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-2)


def graph_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None,
                            s_aux=None, sliding_window=None, **kwargs):
    """transformers' attention function for `graph_attention`.

    Args:
        module: the attention module (`is_causal`, `training`, and `sinks` when the model has them).
        query: `[B, H_q, L_q, d]`; key, value: `[B, H_kv, L_k, d]` with `H_kv` dividing `H_q` (not repeated).
        attention_mask: the `GraphMask` of the mask function; a prepared 4-D mask (bool, or float of 0 and the
            dtype's minimum) passed by the caller; or None (causal or full as `module.is_causal` says, within
            `sliding_window`).
        scaling: the factor on `q.k` (None: `1/sqrt(d)`); softcap: Gemma 2's logit softcap; s_aux: GPT-OSS's
            attention sinks (`[H_q]` logits, differentiable); dropout: must be 0 (graph_attention has no
            attention dropout); `cu_seq_lens_q/k` in kwargs: packed documents as flash attention reads them.

    Returns:
        `(attn_output [B, L_q, H_q, d_v], None)`: no attention weights are formed.
    """
    if dropout and dropout > 0 and getattr(module, "training", True):
        raise GraphAttentionError(
            f"option: attention dropout {dropout} was asked for while training, and graph_attention has no attention "
            "dropout. Fix: set the config's attention_dropout to 0.0 (most recent models train without it), or "
            "train this model with another attn_implementation.", "option")
    batch, heads, q_length = query.shape[0], query.shape[1], query.shape[2]
    kv_length = key.shape[2]
    causal = bool(getattr(module, "is_causal", True))
    mask = attention_mask
    if isinstance(mask, torch.Tensor):
        mask = plan_from_dense(mask, q_length, kv_length)
    elif mask is None:
        mask = plan_default(batch, q_length, kv_length, causal, sliding_window if causal else None)
    elif not isinstance(mask, GraphMask):
        raise GraphAttentionError(f"mask: the attention function got a {type(mask).__name__} as its mask. Fix: build "
                                  "the model with attn_implementation='graph_attention' so transformers creates the "
                                  "mask with graph_attention's mask function.", "mask")
    cu_q = kwargs.get("cu_seq_lens_q")
    if cu_q is not None:
        mask = _documents_mask(cu_q, kwargs.get("cu_seq_lens_k"), mask, batch, q_length, kv_length)
    elif mask.plain and batch == 1 and q_length == kv_length > 1 and kwargs.get("position_ids") is not None:
        mask = _packed_by_positions(mask, kwargs["position_ids"])
    if mask.q_length != q_length or mask.kv_length != kv_length or mask.batch_size != batch:
        raise GraphAttentionError(
            f"mask: the mask was made for batch {mask.batch_size}, {mask.q_length} queries and {mask.kv_length} keys, "
            f"but attention got batch {batch}, {q_length} queries and {kv_length} keys. Fix: let transformers create "
            "the mask in the same forward (do not reuse a mask across calls or caches).", "mask")
    sinks = _sinks(module, s_aux, heads)
    groups = mask.groups
    if len(groups) == 1:
        output = _run_parts(query, key, value, groups[0][1], scaling, softcap, sinks)
    else:
        outputs = [None] * batch
        for indices, parts in groups:
            index = list(indices)
            if index == list(range(index[0], index[-1] + 1)):
                sl = slice(index[0], index[-1] + 1)
                q, k, v = query[sl], key[sl], value[sl]
            else:
                ix = torch.tensor(index)
                q, k, v = query[ix], key[ix], value[ix]
            out = _run_parts(q, k, v, parts, scaling, softcap, sinks)
            for j, b in enumerate(index):
                outputs[b] = out[j:j + 1]
        output = torch.cat(outputs, dim=0)
    for indices, rows in mask.masked_rows:  # explicit graphs: rows without edges, wherever they lie
        index = torch.tensor(list(indices))
        row_index = torch.from_numpy(np.flatnonzero(rows))
        fill = _masked_rows(query[index].index_select(2, row_index), key[index], value[index], scaling, softcap,
                            sinks)
        output = output.index_copy(0, index, output[index].index_copy(2, row_index, fill.to(output.dtype)))
    return output.transpose(1, 2).contiguous(), None


register()
