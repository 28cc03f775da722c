"""Forward (and LSE) against the float64 torch reference through the dense mask."""
import numpy as np
import pytest
import torch

import graph_attention
from masks import L, SELF_MASKS, write_explicit_graphs
from reference import attention64, dense_mask, random_inputs, relative_error

FP32 = 1e-5


@pytest.mark.parametrize("mask", SELF_MASKS)
def test_every_mask_kind_fp32(mask):
    q, k, v = random_inputs([(2, L, 16), (2, L, 16), (2, L, 16)], seed=1)
    out, lse = graph_attention.attention(q, k, v, mask=mask, return_lse=True)
    ref, ref_lse = attention64(q, k, v, dense_mask(mask, L))
    assert out.dtype == torch.float32 and out.shape == (2, L, 16)
    assert relative_error(out, ref) < FP32
    assert relative_error(lse, ref_lse) < FP32


@pytest.mark.parametrize("layout", [(L, 16), (3, L, 16), (2, 3, L, 16)])
@pytest.mark.parametrize("mask", ["window:4+global:0", "causal"])
def test_layouts(layout, mask):
    q, k, v = random_inputs([layout] * 3, seed=2)
    out = graph_attention.attention(q, k, v, mask=mask)
    ref, _ = attention64(q, k, v, dense_mask(mask, L))
    assert out.shape == layout
    assert relative_error(out, ref) < FP32


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_heads(kv_heads):
    q, k, v = random_inputs([(2, 4, L, 16), (2, kv_heads, L, 16), (2, kv_heads, L, 16)], seed=3)
    out = graph_attention.attention(q, k, v, mask="window:6+global:3")
    ref, _ = attention64(q, k, v, dense_mask("window:6+global:3", L))
    assert relative_error(out, ref) < FP32


def test_value_dim_differs_from_key_dim():
    q, k, v = random_inputs([(2, L, 16), (2, L, 16), (2, L, 40)], seed=4)
    out = graph_attention.attention(q, k, v, mask="dilated:4:1+global:0")
    assert out.shape == (2, L, 40)
    assert relative_error(out, attention64(q, k, v, dense_mask("dilated:4:1+global:0", L))[0]) < FP32


def test_cross_attention(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lq, lk = 33, 71
    specs = write_explicit_graphs(tmp_path, lq, lk) + ["full", "random:0.2:9"]
    q, k, v = random_inputs([(2, lq, 16), (2, lk, 16), (2, lk, 24)], seed=5)
    for spec in specs:
        out, lse = graph_attention.attention(q, k, v, mask=spec, return_lse=True)
        ref, ref_lse = attention64(q, k, v, dense_mask(spec, lq, lk))
        assert relative_error(out, ref) < FP32, spec
        assert relative_error(lse, ref_lse) < FP32, spec


@pytest.mark.parametrize("policy", ["zero", "nan"])
def test_empty_rows(tmp_path, monkeypatch, policy):
    monkeypatch.chdir(tmp_path)
    specs = write_explicit_graphs(tmp_path, L, L) + ["blocked:16:1"]
    q, k, v = random_inputs([(2, L, 16)] * 3, seed=6)
    for spec in specs:
        mask = dense_mask(spec, L)
        assert (~mask.any(axis=1)).any(), "the graph must have empty rows"
        out, lse = graph_attention.attention(q, k, v, mask=spec, empty_rows=policy, return_lse=True)
        ref, ref_lse = attention64(q, k, v, mask, empty_rows=policy)
        assert relative_error(out, ref) < FP32, spec
        assert torch.isneginf(lse[:, ~torch.as_tensor(mask).any(dim=1)]).all()
        assert relative_error(lse, ref_lse) < FP32


@pytest.mark.parametrize("dtype,tolerance", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision(dtype, tolerance):
    # The reference sees the same rounded inputs; the tolerance covers fp32 accumulation and one final rounding.
    q, k, v = random_inputs([(2, L, 32)] * 3, dtype=dtype, seed=7)
    mask = "window:8+global:0+random:0.05:2"
    out = graph_attention.attention(q, k, v, mask=mask)
    assert out.dtype == dtype
    assert relative_error(out, attention64(q, k, v, dense_mask(mask, L))[0]) < tolerance


def test_scale_and_thread_count():
    q, k, v = random_inputs([(2, L, 16)] * 3, seed=8)
    ref, _ = attention64(q, k, v, dense_mask("window:7", L), scale=0.3)
    one = graph_attention.attention(q, k, v, mask="window:7", scale=0.3, threads=1)
    many = graph_attention.attention(q, k, v, mask="window:7", scale=0.3, threads=3)
    assert relative_error(one, ref) < FP32
    assert torch.equal(one, many)


def test_graph_object_as_mask():
    q, k, v = random_inputs([(2, L, 16)] * 3, seed=9)
    g = graph_attention.Graph("window:2+global:5")
    assert torch.equal(graph_attention.attention(q, k, v, mask=g), graph_attention.attention(q, k, v, mask=g.spec))


def test_non_contiguous_inputs_are_copied():
    q, k, v = random_inputs([(L, 2, 16)] * 3, seed=10)
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # [2, L, 16] views with strides
    assert not q.is_contiguous()
    out = graph_attention.attention(q, k, v, mask="causal")
    assert relative_error(out, attention64(q, k, v, dense_mask("causal", L))[0]) < FP32


def test_numpy_in_numpy_out():
    q, k, v = (t.numpy() for t in random_inputs([(2, L, 16)] * 3, seed=11))
    out, lse = graph_attention.attention(q, k, v, mask="window:3+global:0", return_lse=True)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, L, 16)
    assert isinstance(lse, np.ndarray) and lse.dtype == np.float32 and lse.shape == (2, L)
    ref, ref_lse = attention64(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), dense_mask("window:3+global:0", L))
    assert relative_error(out, ref) < FP32
    assert relative_error(lse, ref_lse) < FP32


def test_numpy_float16_and_strided():
    q, k, v = (t.numpy() for t in random_inputs([(L, 2, 16)] * 3, dtype=torch.float16, seed=12))
    q, k, v = (a.transpose(1, 0, 2) for a in (q, k, v))
    out = graph_attention.attention(q, k, v, mask="causal")
    assert out.dtype == np.float16
    ref, _ = attention64(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (q, k, v)), dense_mask("causal", L))
    assert relative_error(out, ref) < 2e-3


def test_zero_copy_for_contiguous_inputs(monkeypatch):
    # The engine must receive the caller's own buffers.
    import graph_attention._attention as module
    seen = []
    real = module.forward_raw

    def spy(graph, pointers, *rest):
        seen.append(pointers)
        return real(graph, pointers, *rest)

    monkeypatch.setattr(module, "forward_raw", spy)
    q, k, v = (t.numpy() for t in random_inputs([(2, L, 16)] * 3, seed=13))
    graph_attention.attention(q, k, v, mask="window:3")
    assert seen[-1] == [a.ctypes.data for a in (q, k, v)]
