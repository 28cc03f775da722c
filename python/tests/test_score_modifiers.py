"""Score modifiers (softcap, ALiBi, sinks) against the float64 torch reference with a dense mask and an explicit
bias: output, LSE and every gradient (dsinks through autograd), alone and combined, per-head masks, decoding."""
import math

import numpy as np
import pytest
import torch

import graph_attention
from graph_attention import GraphAttentionError
from masks import L, aligned_causal
from reference import alibi_bias, attention64, dense_mask, random_inputs, relative_error, standard_alibi_slopes

FP32 = 1e-5


def check(q, k, v, mask, reference_mask, softcap=None, alibi=None, sinks=None, tolerance=FP32, empty_rows="zero",
          **options):
    """Forward, LSE and gradients (dq, dk, dv and, with sinks, dsinks) against float64 autograd."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    leaf_sinks = None if sinks is None else sinks.detach().clone().requires_grad_()
    out, lse = graph_attention.attention(q, k, v, mask=mask, softcap=softcap, alibi=alibi, sinks=leaf_sinks,
                                         return_lse=True, empty_rows=empty_rows, **options)
    grad_out = random_inputs([out.shape], seed=91)[0]
    out.backward(grad_out)

    q64, k64, v64 = (t.detach().to(torch.float64).requires_grad_() for t in (q, k, v))
    sinks64 = None if sinks is None else sinks.detach().to(torch.float64).requires_grad_()
    heads = q.shape[-3] if q.dim() >= 3 else 1
    bias = None
    if alibi is not None and alibi is not False:
        slopes = standard_alibi_slopes(heads) if alibi is True else torch.as_tensor(alibi, dtype=torch.float64)
        bias = alibi_bias(slopes, q.shape[-2], k.shape[-2])
        if q.dim() == 2:
            bias = bias[0]
    ref, ref_lse = attention64(q64, k64, v64, reference_mask, scale=options.get("scale"), softcap=softcap, bias=bias,
                               sinks=sinks64, empty_rows=empty_rows)
    ref.backward(grad_out.to(torch.float64))
    assert relative_error(out, ref) < tolerance, "output"
    assert relative_error(lse, ref_lse) < tolerance, "lse"
    pairs = [("dq", q.grad, q64.grad), ("dk", k.grad, k64.grad), ("dv", v.grad, v64.grad)]
    if sinks is not None:
        assert leaf_sinks.grad is not None and leaf_sinks.grad.dtype == sinks.dtype
        pairs.append(("dsinks", leaf_sinks.grad, sinks64.grad))
    for name, actual, expected in pairs:
        error = relative_error(actual, expected)
        assert error < tolerance, f"{mask} {name}: relative error {error:.3g}"


def inputs(shapes, seed, scale=1.0):
    return [t * scale for t in random_inputs(shapes, seed=seed)]


def heads4(seed, scale=1.0, lq=L, lk=L, kv=2):
    return inputs([(2, 4, lq, 16), (2, kv, lk, 16), (2, kv, lk, 24)], seed, scale)


SINKS = torch.tensor([0.5, -1.0, 2.0, 0.0])


@pytest.mark.parametrize("mask", ["full", "causal", "window:7+global:0"])
def test_softcap_alone(mask):
    # Inputs scaled x3 so that scores reach the cap (|s| up to ~20 against C = 5): tanh is far from linear.
    check(*heads4(1, scale=3.0), mask, dense_mask(mask, L), softcap=5.0)


@pytest.mark.parametrize("alibi", [True, [0.5, 0.25, 0.125, 1.0], torch.tensor([0.1, 0.0, -0.2, 0.3])])
def test_alibi_alone(alibi):
    check(*heads4(2), "causal", dense_mask("causal", L), alibi=alibi)
    check(*heads4(3), "window:9+global:2", dense_mask("window:9+global:2", L), alibi=alibi)


@pytest.mark.parametrize("mask", ["full", "causal", "blocked:16:1"])  # blocked:16:1 has empty rows
def test_sinks_alone(mask):
    check(*heads4(4), mask, dense_mask(mask, L), sinks=SINKS)
    check(*heads4(5), mask, dense_mask(mask, L), sinks=SINKS, empty_rows="nan")  # a sink leaves no row empty


def test_sinks_gradcheck_in_float64_terms():
    # torch.autograd.gradcheck needs float64 inputs, which the engine does not take; the same comparison,
    # analytic (engine, fp32) against float64 autograd, on a tiny problem with large sinks that dominate rows.
    check(*inputs([(3, 6, 4), (3, 6, 4), (3, 6, 4)], 6), "causal", dense_mask("causal", 6),
          sinks=torch.tensor([3.0, -2.0, 0.7]))


def test_every_modifier_with_documents_and_per_head_masks():
    specs = ["documents:0,30,31,97&causal", "documents:0,30,31,97&window:5:causal", "causal", "window:3+global:0"]
    documents = np.zeros((L, L), bool)
    for start, end in ((0, 30), (30, 31), (31, 97)):
        documents[start:end, start:end] = True
    causal = dense_mask("causal", L)
    reference = np.stack([documents & causal, documents & dense_mask("window:5:causal", L), causal,
                          dense_mask("window:3+global:0", L)])
    check(*heads4(7, scale=2.0, kv=1), specs, reference, softcap=8.0, alibi=True, sinks=SINKS, scale=0.3)
    check(*heads4(8, scale=2.0), "documents:0,30,31,97&causal", documents & causal, softcap=8.0,
          alibi=[0.3, 0.2, 0.1, 0.05], sinks=SINKS)


@pytest.mark.parametrize("lq", range(1, 9))
def test_decoding_over_a_longer_cache(lq):
    # L_q new tokens over L_k = 64: causal aligned bottom-right, and so is ALiBi's distance.
    q, k, v = inputs([(1, 4, lq, 16), (1, 2, 64, 16), (1, 2, 64, 16)], 10 + lq, 2.0)
    check(q, k, v, "causal", aligned_causal(lq, 64), softcap=6.0, alibi=True, sinks=SINKS)
    check(q, k, v, ["window:8:causal", "causal"] * 2,
          np.stack([aligned_causal(lq, 64, window=8), aligned_causal(lq, 64)] * 2), alibi=True, sinks=SINKS)


def test_large_logits_with_every_modifier():
    # Logits of several hundred before the cap: fp32 scores carry ~3e-5 of rounding (as in torch's fp32), so the
    # README's 1e-4 for such inputs; the softcap then saturates (tanh' near 0).
    check(*heads4(20, scale=30.0), "causal", dense_mask("causal", L), softcap=20.0, alibi=True, sinks=SINKS,
          tolerance=1e-4)


def test_numpy_with_modifiers():
    q, k, v = (t.numpy() for t in heads4(21))
    out, lse = graph_attention.attention(q, k, v, mask="causal", softcap=4, alibi=np.array([0.5, 0.25, 0.1, 0.0]),
                                         sinks=SINKS.numpy().astype(np.float64), return_lse=True)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    bias = alibi_bias(torch.tensor([0.5, 0.25, 0.1, 0.0]), L, L)
    ref, ref_lse = attention64(*(torch.from_numpy(a) for a in (q, k, v)), dense_mask("causal", L), softcap=4.0,
                               bias=bias, sinks=SINKS)
    assert relative_error(out, ref) < FP32 and relative_error(lse, ref_lse) < FP32


def test_half_precision_inputs_with_fp32_sinks():
    q, k, v = (t.to(torch.bfloat16).requires_grad_() for t in heads4(22))
    sinks = SINKS.clone().requires_grad_()
    graph_attention.attention(q, k, v, mask="causal", sinks=sinks, softcap=5.0).float().square().sum().backward()
    assert q.grad.dtype == torch.bfloat16 and sinks.grad.dtype == torch.float32 and torch.isfinite(sinks.grad).all()


def test_custom_ops_with_modifiers():
    q, k, v = (t.requires_grad_() for t in inputs([(1, 2, 24, 8), (1, 1, 24, 8), (1, 1, 24, 8)], 23))
    slopes, sinks = torch.tensor([0.5, 0.25]), torch.tensor([0.3, -0.4], requires_grad=True)
    arguments = (q, k, v, "causal\nwindow:3", 0.3, "zero", 0, True, 4.0, 2, slopes, sinks)
    torch.library.opcheck(torch.ops.graph_attention.attention.default, arguments)
    out, lse = torch.ops.graph_attention.attention(*arguments)
    torch.library.opcheck(torch.ops.graph_attention.attention_backward.default,
                          (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(),
                           "causal\nwindow:3", 0.3, "zero", 0, False, 4.0, 2, slopes, sinks.detach()))


def test_compile_fullgraph_with_learned_sinks():
    torch._dynamo.reset()

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(16, 48)
            self.sinks = torch.nn.Parameter(torch.tensor([0.2, -0.3]))

        def forward(self, x):
            q, k, v = self.proj(x).view(x.shape[0], -1, 3, 2, 8).permute(2, 0, 3, 1, 4)
            return graph_attention.attention(q, k, v, mask=["window:4:causal", "causal"], softcap=10.0, alibi=True,
                                             sinks=self.sinks).square().sum()

    model = Block()
    x = torch.randn(2, 40, 16)
    model(x).backward()
    eager = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.compile(model, fullgraph=True, backend="aot_eager")(x).backward()
    for compiled, expected in zip((p.grad for p in model.parameters()), eager):
        assert torch.allclose(compiled, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("options,kind,words", [
    (dict(softcap=0), "option", "softcap 0.0 is not a positive finite number"),
    (dict(softcap=-2.0), "option", "softcap -2.0 is not a positive finite number"),
    (dict(softcap=math.inf), "option", "softcap inf is not a positive finite number"),
    (dict(softcap=math.nan), "option", "softcap is nan, not a number"),
    (dict(softcap="big"), "option", "softcap is 'big'"),
    (dict(softcap=True), "option", "softcap is True"),
    (dict(alibi=[0.5, 0.5, 0.5]), "option", "alibi has shape \\[3\\], but the query has 4 head"),
    (dict(alibi=[0.5, math.nan, 0.5, 0.5]), "option", "ALiBi slope 1 is nan"),
    (dict(alibi="standard"), "option", "alibi has shape \\[\\]|alibi is 'standard'"),
    (dict(sinks=torch.zeros(3)), "option", "sinks has shape \\[3\\], but the query has 4 head"),
    (dict(sinks=torch.zeros(1, 4)), "option", "sinks has shape \\[1, 4\\]"),
    (dict(sinks=torch.tensor([0.0, math.inf, 0.0, 0.0])), "option", "sink logit 1 is inf"),
])
def test_bad_modifiers(options, kind, words):
    for q, k, v in (heads4(30), [t.numpy() for t in heads4(30)]):
        if "sinks" in options and isinstance(q, np.ndarray):
            options = dict(sinks=options["sinks"].numpy())
        with pytest.raises(GraphAttentionError, match=words) as error:
            graph_attention.attention(q, k, v, mask="causal", **options)
        assert error.value.kind == kind and "Fix:" in str(error.value), str(error.value)
