"""The float64 reference the tests compare against: torch attention through a dense boolean mask.

The mask comes from scripts/numpy_reference.py (an independent NumPy builder sharing no code with the engine)
for every kind except random, whose generator is defined by the engine: its edges come from the engine's
dense mask of that component alone.
"""
import math
import sys
from pathlib import Path

import numpy as np
import torch

import graph_attention

_scripts = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(_scripts))
from numpy_reference import parse_mask  # noqa: E402


def dense_mask(spec, query_count, key_count=None, base_dir=None):
    """Dense bool mask [L_q, L_k] for a spec, built independently of the engine (random edges excepted)."""
    key_count = query_count if key_count is None else key_count
    components = [c.strip() for c in spec.split("+")]
    mask = np.zeros((query_count, key_count), dtype=bool)
    for component in components:
        if component.startswith("random:"):
            mask |= graph_attention.Graph(component).to_dense(query_count, key_count)
    others = [c for c in components if not c.startswith("random:")]
    if others:
        mask |= parse_mask("+".join(others), query_count, key_count, base_dir=base_dir)
    return mask


def random_inputs(shapes, dtype=torch.float32, seed=0):
    """Independent standard-normal tensors (one generator stream each) rounded to `dtype`."""
    out = []
    for n, shape in enumerate(shapes):
        g = torch.Generator().manual_seed(seed * 1000 + n)
        out.append(torch.randn(shape, generator=g, dtype=torch.float64).to(dtype))
    return out


def attention64(q, k, v, mask, scale=None, empty_rows="zero", softcap=None, bias=None, sinks=None):
    """float64 attention over a dense bool mask ([L_q, L_k], or [H_q, L_q, L_k] per head) with GQA; differentiable
    (sinks too); empty rows as asked. Score modifiers in the engine's order: `s = scale q.k`, then the softcap
    `C tanh(s / C)`, then `+ bias` (broadcast over [..., H_q, L_q, L_k], e.g. `alibi_bias`); `sinks` ([H_q]) adds
    one logit per head to every row's softmax denominator (and to the LSE), with no value."""
    q, k, v = (t.to(torch.float64) for t in (q, k, v))
    mask = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if q.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        group = q.shape[-3] // k.shape[-3]
        k = k.repeat_interleave(group, dim=-3)
        v = v.repeat_interleave(group, dim=-3)
    scores = scale * (q @ k.transpose(-1, -2))
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if bias is not None:
        scores = scores + torch.as_tensor(bias).to(torch.float64)
    empty = ~mask.any(dim=-1, keepdim=True)
    minus_inf = torch.tensor(-math.inf, dtype=torch.float64)
    if sinks is not None:
        # The sink is one more logit per row (its weight multiplies no value), so no row's softmax is empty.
        sink = sinks.to(torch.float64).view(-1, 1, 1).expand(*scores.shape[:-1], 1)
        logits = torch.cat([torch.where(mask, scores, minus_inf), sink], dim=-1)
        out = torch.softmax(logits, dim=-1)[..., :-1] @ v
        lse = torch.logsumexp(logits, dim=-1)
    else:
        # Empty rows get finite scores (zeros) and then weights 0: a softmax over no terms, without NaN gradients.
        filler = torch.where(empty, torch.zeros((), dtype=torch.float64), minus_inf)
        p = torch.softmax(torch.where(mask, scores, filler), dim=-1) * mask
        out = p @ v
        lse = torch.logsumexp(torch.where(mask, scores, minus_inf), dim=-1)
    if empty_rows == "nan" and sinks is None:  # with a sink no row is empty: its output is zeros
        out = torch.where(empty, torch.tensor(math.nan, dtype=torch.float64), out)
    return out, lse


def standard_alibi_slopes(heads):
    """ALiBi's slopes for `heads` query heads: 2^(-8 (h + 1) / H) (Press et al.)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)], dtype=torch.float64)


def alibi_bias(slopes, query_count, key_count):
    """[H_q, L_q, L_k] ALiBi bias `-slope_h |i + L_k - L_q - j|` (query i at key position i + L_k - L_q)."""
    i = torch.arange(query_count, dtype=torch.float64)[:, None] + (key_count - query_count)
    j = torch.arange(key_count, dtype=torch.float64)[None, :]
    return -torch.as_tensor(slopes).to(torch.float64).view(-1, 1, 1) * (i - j).abs()


def relative_error(actual, expected):
    """max |actual - expected| / max |expected| (normwise), NaN in `actual` where `expected` has none -> inf."""
    actual = torch.as_tensor(np.asarray(actual) if not isinstance(actual, torch.Tensor) else actual).to(torch.float64)
    expected = torch.as_tensor(expected).to(torch.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    nan_a, nan_e = torch.isnan(actual), torch.isnan(expected)
    if not torch.equal(nan_a, nan_e):
        return math.inf
    a, e = actual[~nan_e], expected[~nan_e]
    if e.numel() == 0:
        return 0.0
    finite_e = torch.isfinite(e)
    if not torch.equal(torch.isfinite(a), finite_e) or not torch.equal(a[~finite_e], e[~finite_e]):
        return math.inf
    a, e = a[finite_e], e[finite_e]
    scale = e.abs().max().item() if e.numel() else 0.0
    diff = (a - e).abs().max().item() if e.numel() else 0.0
    return diff / scale if scale > 0 else diff
