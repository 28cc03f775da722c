"""The three gradients against the float64 torch reference's autograd through the dense mask."""
import pytest
import torch

import graph_attention
from masks import L, SELF_MASKS, write_explicit_graphs
from reference import attention64, dense_mask, random_inputs, relative_error

FP32 = 1e-5


def check_gradients(q, k, v, mask, tolerance=FP32, seed=0, **options):
    """Runs forward and backward through graph_attention and the reference with the same random grad_output."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = graph_attention.attention(q, k, v, mask=mask, **options)
    grad_out = random_inputs([out.shape], seed=seed + 99)[0]
    out.backward(grad_out.to(out.dtype))
    q64, k64, v64 = (t.detach().to(torch.float64).requires_grad_() for t in (q, k, v))
    ref, _ = attention64(q64, k64, v64, dense_mask(mask, q.shape[-2], k.shape[-2]), scale=options.get("scale"))
    ref.backward(grad_out.to(out.dtype).to(torch.float64))
    for name, actual, expected in (("dq", q.grad, q64.grad), ("dk", k.grad, k64.grad), ("dv", v.grad, v64.grad)):
        assert actual.dtype == q.dtype and actual.shape == expected.shape, name
        error = relative_error(actual, expected)
        assert error < tolerance, f"{mask} {name}: relative error {error:.3g}"


@pytest.mark.parametrize("mask", SELF_MASKS)
def test_every_mask_kind(mask):
    check_gradients(*random_inputs([(2, L, 16)] * 3, seed=20), mask)


@pytest.mark.parametrize("layout", [(L, 16), (2, 3, L, 16)])
def test_layouts(layout):
    check_gradients(*random_inputs([layout] * 3, seed=21), "window:4+global:0")


def test_grouped_query_heads_sum_over_the_group():
    check_gradients(*random_inputs([(2, 4, L, 16), (2, 1, L, 16), (2, 1, L, 16)], seed=22), "causal+global:1")
    check_gradients(*random_inputs([(1, 6, L, 16), (1, 2, L, 16), (1, 2, L, 16)], seed=23), "window:9")


def test_value_dim_differs_and_scale():
    check_gradients(*random_inputs([(2, L, 16), (2, L, 16), (2, L, 40)], seed=24), "dilated:4:1+global:0", scale=0.2)


def test_cross_attention(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lq, lk = 33, 71
    for spec in write_explicit_graphs(tmp_path, lq, lk) + ["full", "random:0.2:9"]:
        check_gradients(*random_inputs([(2, lq, 16), (2, lk, 16), (2, lk, 24)], seed=25), spec)


def test_empty_rows_get_zero_gradients(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spec in write_explicit_graphs(tmp_path, L, L) + ["blocked:16:1"]:
        check_gradients(*random_inputs([(2, L, 16)] * 3, seed=26), spec)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_half_precision(dtype, tolerance):
    check_gradients(*random_inputs([(2, L, 32)] * 3, dtype=dtype, seed=27), "window:8+global:0", tolerance)


def test_gradients_do_not_depend_on_thread_count():
    q, k, v = random_inputs([(2, L, 16)] * 3, seed=28)
    grads = []
    for threads in (1, 3):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        graph_attention.attention(*leaves, mask="window:5+global:0", threads=threads).square().sum().backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_only_some_inputs_require_grad():
    q, k, v = random_inputs([(2, L, 16)] * 3, seed=29)
    q.requires_grad_()
    graph_attention.attention(q, k, v, mask="causal").sum().backward()
    assert q.grad is not None and k.grad is None


def test_nan_empty_rows_give_nan_query_gradients_as_torch(tmp_path, monkeypatch):
    # SDPA's convention: fully masked rows give NaN outputs and NaN dq; dk and dv stay finite and exact.
    monkeypatch.chdir(tmp_path)
    spec = write_explicit_graphs(tmp_path, L, L)[0]
    mask = torch.as_tensor(dense_mask(spec, L))
    empty = ~mask.any(dim=1)
    q, k, v = (t.requires_grad_() for t in random_inputs([(2, L, 16)] * 3, seed=30))
    out = graph_attention.attention(q, k, v, mask=spec, empty_rows="nan")
    assert torch.isnan(out[:, empty]).all() and not torch.isnan(out[:, ~empty]).any()
    out.nan_to_num().sum().backward()
    q64, k64, v64 = (t.detach().to(torch.float64).requires_grad_() for t in (q, k, v))
    attention64(q64, k64, v64, mask)[0].sum().backward()
    assert torch.isnan(q.grad[:, empty]).all()
    assert relative_error(q.grad[:, ~empty], q64.grad[:, ~empty]) < FP32
    assert relative_error(k.grad, k64.grad) < FP32 and relative_error(v.grad, v64.grad) < FP32
