"""Per-head masks (`mask=[spec per query head]`): forward, LSE and gradients against the float64 reference with
one dense mask per head, through NumPy, the eager torch path and the custom ops."""
import numpy as np
import pytest
import torch

import graph_attention
from graph_attention import Graph, GraphAttentionError
from masks import L, aligned_causal
from reference import attention64, dense_mask, random_inputs, relative_error

FP32 = 1e-5
MIXED = ["window:16:causal", "causal", "window:16:causal", "causal"]


def dense_masks(specs, query_count, key_count=None):
    """[H_q, L_q, L_k]: each head's dense mask, broadcast by the reference over the batch."""
    return np.stack([dense_mask(spec, query_count, key_count) for spec in specs])


def check_forward_and_gradients(q, k, v, specs, reference_mask, tolerance=FP32, **options):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out, lse = graph_attention.attention(q, k, v, mask=specs, return_lse=True, **options)
    grad_out = random_inputs([out.shape], seed=77)[0]
    out.backward(grad_out)
    q64, k64, v64 = (t.detach().to(torch.float64).requires_grad_() for t in (q, k, v))
    ref, ref_lse = attention64(q64, k64, v64, reference_mask, scale=options.get("scale"))
    ref.backward(grad_out.to(torch.float64))
    assert relative_error(out, ref) < tolerance
    assert relative_error(lse, ref_lse) < tolerance
    for name, actual, expected in (("dq", q.grad, q64.grad), ("dk", k.grad, k64.grad), ("dv", v.grad, v64.grad)):
        assert actual.shape == expected.shape, name
        error = relative_error(actual, expected)
        assert error < tolerance, f"{specs} {name}: relative error {error:.3g}"


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_mixed_window_and_causal_heads_with_grouped_queries(kv_heads):
    q, k, v = random_inputs([(2, 4, L, 16), (2, kv_heads, L, 16), (2, kv_heads, L, 24)], seed=60)
    check_forward_and_gradients(q, k, v, MIXED, dense_masks(MIXED, L))


def test_every_head_different_including_unions_and_documents():
    specs = ["window:3+global:0", "dilated:2:1", "documents:0,40,41,97&causal", "blocked:8:0+causal", "full",
             "global:5"]
    q, k, v = random_inputs([(6, L, 16), (3, L, 16), (3, L, 16)], seed=61)
    documents = np.zeros((L, L), bool)
    for start, end in ((0, 40), (40, 41), (41, 97)):
        documents[start:end, start:end] = True
    reference = np.stack([dense_mask(s, L) if not s.startswith("documents") else documents & dense_mask("causal", L)
                          for s in specs])
    check_forward_and_gradients(q, k, v, specs, reference, scale=0.3)


def test_decoding_heads_over_a_longer_cache():
    # L_q < L_k: the causal kinds align bottom-right (the last query sees every key).
    for lq in (1, 5):
        q, k, v = random_inputs([(1, 2, lq, 16), (1, 1, 64, 16), (1, 1, 64, 16)], seed=62 + lq)
        reference = np.stack([aligned_causal(lq, 64, window=8), aligned_causal(lq, 64)])
        check_forward_and_gradients(q, k, v, ["window:8:causal", "causal"], reference)


def test_graphs_tuples_and_equal_heads():
    q, k, v = random_inputs([(2, 4, L, 16)] * 3, seed=63)
    with torch.no_grad():
        as_specs = graph_attention.attention(q, k, v, mask=MIXED)
        as_graphs = graph_attention.attention(q, k, v, mask=tuple(Graph(s) for s in MIXED))
        same = graph_attention.attention(q, k, v, mask=["window:5"] * 4)
        one = graph_attention.attention(q, k, v, mask="window:5")
    assert torch.equal(as_specs, as_graphs)
    assert torch.equal(same, one)


def test_numpy_with_per_head_masks():
    q, k, v = (t.numpy() for t in random_inputs([(4, L, 16), (2, L, 16), (2, L, 16)], seed=64))
    out, lse = graph_attention.attention(q, k, v, mask=MIXED, return_lse=True)
    assert isinstance(out, np.ndarray)
    ref, ref_lse = attention64(*(torch.from_numpy(a) for a in (q, k, v)), dense_masks(MIXED, L))
    assert relative_error(out, ref) < FP32 and relative_error(lse, ref_lse) < FP32


def test_one_head_takes_a_list_of_one():
    q, k, v = random_inputs([(L, 16)] * 3, seed=65)
    assert torch.equal(graph_attention.attention(q, k, v, mask=["causal"]), graph_attention.attention(q, k, v, mask="causal"))


def test_custom_ops_carry_the_masks_as_lines():
    q, k, v = (t.requires_grad_() for t in random_inputs([(1, 2, 24, 8), (1, 1, 24, 8), (1, 1, 24, 8)], seed=66))
    mask = "window:2:causal\ncausal"
    torch.library.opcheck(torch.ops.graph_attention.attention.default, (q, k, v, mask, 0.3, "zero", 0, True))
    out, lse = torch.ops.graph_attention.attention(q, k, v, mask, 0.3, "zero", 0, True)
    ref, _ = attention64(q, k, v, dense_masks(["window:2:causal", "causal"], 24), scale=0.3)
    assert relative_error(out, ref) < FP32
    torch.library.opcheck(torch.ops.graph_attention.attention_backward.default,
                          (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), mask,
                           0.3, "zero", 0, False))


def test_compile_fullgraph_with_per_head_masks():
    torch._dynamo.reset()
    q, k, v = (t.requires_grad_() for t in random_inputs([(2, 4, 40, 8), (2, 2, 40, 8), (2, 2, 40, 8)], seed=67))
    fn = torch.compile(lambda q, k, v: graph_attention.attention(q, k, v, mask=MIXED).square().sum(), fullgraph=True,
                       backend="aot_eager")
    fn(q, k, v).backward()
    compiled = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    graph_attention.attention(q, k, v, mask=MIXED).square().sum().backward()
    for a, b in zip(compiled, (q.grad, k.grad, v.grad)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mask,heads,words", [
    (["causal"] * 3, 4, "3 masks were given for 4 query head"),
    (["causal", "window:2"], 1, "2 masks were given for 1 query head"),
    ([], 2, "0 masks were given for 2 query head"),
    (["causal", "window:x"], 2, "window"),
    ("causal\nwindow:2", 2, "line break"),
])
def test_bad_per_head_masks(mask, heads, words):
    shape = (heads, 16, 8) if heads > 1 else (16, 8)
    for inputs in (random_inputs([shape] * 3, seed=68), [t.numpy() for t in random_inputs([shape] * 3, seed=68)]):
        with pytest.raises(GraphAttentionError, match=words) as error:
            graph_attention.attention(*inputs, mask=mask)
        assert error.value.kind == "mask" and "Fix:" in str(error.value)


def test_per_head_mask_of_wrong_type():
    with pytest.raises(TypeError):
        graph_attention.attention(*random_inputs([(2, 16, 8)] * 3, seed=69), mask=["causal", 3])
