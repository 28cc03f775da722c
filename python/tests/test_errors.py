"""Bad inputs: each raises a Python exception carrying the problem and the fix; none crashes the process."""
import numpy as np
import pytest
import torch

import graph_attention
from graph_attention import GraphAttentionError, GraphAttentionOSError


def qkv(shape=(2, 16, 8), dtype=torch.float32):
    return [torch.randn(shape, dtype=dtype) for _ in range(3)]


def raises(kind, *args, match=None, **kwargs):
    with pytest.raises(GraphAttentionError, match=match) as error:
        graph_attention.attention(*args, **kwargs)
    assert error.value.kind == kind and "Fix:" in str(error.value), str(error.value)
    return error.value


def test_bad_mask_specification():
    raises("mask", *qkv(), mask="window:abc")


def test_mask_of_wrong_type():
    with pytest.raises(TypeError):
        graph_attention.attention(*qkv(), mask=42)


def test_self_attention_mask_with_cross_lengths():
    q = torch.randn(2, 16, 8)
    k, v = torch.randn(2, 20, 8), torch.randn(2, 20, 8)
    raises("shape", q, k, v, mask="window:2", match="self-attention")


def test_global_token_out_of_range():
    raises("mask", *qkv(), mask="global:16")


def test_missing_graph_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GraphAttentionOSError):
        graph_attention.attention(*qkv(), mask="csr:nothing.npy:here.npy")


def test_rank_too_high():
    raises("shape", *qkv((1, 1, 2, 16, 8)), mask="causal", match="rank 5")


def test_ranks_differ():
    q, k, v = qkv()
    raises("shape", q, k[0], v, mask="causal")


def test_head_dims_differ():
    q, k, v = qkv()
    raises("shape", q, torch.randn(2, 16, 4), v, mask="causal", match="d_k")


def test_heads_not_divisible():
    q = torch.randn(3, 16, 8)
    k, v = torch.randn(2, 16, 8), torch.randn(2, 16, 8)
    raises("shape", q, k, v, mask="causal", match="multiple")


def test_key_value_lengths_differ():
    q, k, _ = qkv()
    raises("shape", q, k, torch.randn(2, 15, 8), mask="full")


def test_empty_dimension():
    raises("shape", *qkv((2, 0, 8)), mask="causal")


def test_unsupported_dtype():
    raises("dtype", *qkv(dtype=torch.float64), mask="causal", match="float64")
    raises("dtype", *(np.zeros((4, 8), np.int32) for _ in range(3)), mask="causal")


def test_mixed_dtypes():
    q, k, v = qkv()
    raises("dtype", q.half(), k, v, mask="causal")


def test_mixed_numpy_and_torch():
    q, k, v = qkv()
    raises("dtype", q, k.numpy(), v, mask="causal")


def test_non_finite_input_named():
    q, k, v = qkv()
    k[1, 3, 2] = float("nan")
    error = raises("value", q, k, v, mask="full", match="key")
    assert "nan" in str(error).lower()
    assert graph_attention.attention(q, k, v, mask="window:0", check_finite=False).shape == q.shape


def test_bad_options():
    raises("option", *qkv(), mask="causal", empty_rows="skip")
    raises("option", *qkv(), mask="causal", threads=0)
    raises("option", *qkv(), mask="causal", threads=-2)
    raises("option", *qkv(), mask="causal", scale=float("inf"))
    raises("option", *qkv(), mask="causal", scale="big")


def test_non_cpu_tensor_refused_with_a_clear_message():
    # No GPU here: the meta device stands in for CUDA (the check is on device.type != "cpu").
    q, k, v = (torch.empty(2, 16, 8, device="meta") for _ in range(3))
    raises("device", q, k, v, mask="causal", match="CPU")


def test_errors_keep_the_process_usable():
    for _ in range(3):
        with pytest.raises(GraphAttentionError):
            graph_attention.attention(*qkv(), mask="window:-1")
    assert graph_attention.attention(*qkv(), mask="causal").shape == (2, 16, 8)
