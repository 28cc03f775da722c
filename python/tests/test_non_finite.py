"""Unchecked non-finite inputs (`check_finite=False`): a NaN or infinity reaches exactly the rows whose edges touch
it, forward and backward, on every kernel this CPU runs.

The reference is the attention formula evaluated row by row in float64 over each row's own keys (a sparse
reference): dense SDPA with a boolean mask is no reference here, since its `P @ V` multiplies masked zeros by a NaN
value (`0 x NaN = NaN`) and so spreads one bad key to every row.
"""
import pytest
import torch

import graph_attention
from reference import dense_mask, random_inputs

MASKS = ["causal", "window:3", "window:3+global:0", "window:4:causal", "dilated:2:1", "blocked:5:1+causal"]
L, D = 33, 6


def sparse_attention64(q, k, v, mask):
    """Row by row over each row's keys only, in float64: what the formula gives in IEEE arithmetic."""
    rows = []
    for i in range(q.shape[-2]):
        keys = torch.nonzero(torch.as_tensor(mask[i])).flatten()
        s = (q[..., i:i + 1, :] @ k[..., keys, :].transpose(-1, -2)) / D ** 0.5
        rows.append(torch.softmax(s, dim=-1) @ v[..., keys, :])
    return torch.cat(rows, dim=-2)


def poisoned(where, seed):
    q, k, v = random_inputs([(2, L, D)] * 3, dtype=torch.float64, seed=seed)
    tensor, row, column, value = where
    {"q": q, "k": k, "v": v}[tensor][1, row, column] = value
    return q, k, v


POISONS = [("q", 5, 2, float("nan")), ("k", 3, 0, float("nan")), ("v", 3, 4, float("nan")),
           ("v", 30, 1, float("inf")), ("k", 12, 5, float("-inf"))]


def assert_same(actual, expected, what):
    actual = actual.to(torch.float64)
    assert torch.equal(actual.isnan(), expected.isnan()), f"{what}: NaN at {actual.isnan().nonzero().tolist()} " \
                                                          f"but the reference has {expected.isnan().nonzero().tolist()}"
    finite = expected.isfinite()
    assert torch.equal(actual[~finite & ~expected.isnan()], expected[~finite & ~expected.isnan()]), what
    error = (actual[finite] - expected[finite]).abs().max().item() if finite.any() else 0.0
    assert error < 1e-5 * max(1.0, expected[finite].abs().max().item()), f"{what}: error {error:.3g}"


@pytest.fixture(params=["portable", "avx2", "avx512"])
def kernel(request, monkeypatch):
    """Each CPU kernel this machine runs, chosen through GRAPH_ATTENTION_KERNEL (read at every call)."""
    monkeypatch.setenv("GRAPH_ATTENTION_KERNEL", request.param)
    try:
        graph_attention.attention(torch.ones(1, 4, 2), torch.ones(1, 4, 2), torch.ones(1, 4, 2), mask="causal")
    except graph_attention.GraphAttentionError as error:
        if "does not run on this CPU" not in str(error):
            raise
        pytest.skip(f"this CPU does not run the {request.param} kernel")
    return request.param


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("where", POISONS, ids=lambda w: f"{w[0]}{w[1]}={w[3]}")
def test_non_finite_inputs_reach_only_the_rows_that_attend_them(mask, where, kernel):
    q, k, v = poisoned(where, seed=70)
    dense = dense_mask(mask, L)
    q64, k64, v64 = (t.clone().requires_grad_() for t in (q, k, v))
    expected = sparse_attention64(q64, k64, v64, dense)
    grad_out = random_inputs([expected.shape], dtype=torch.float64, seed=71)[0]
    expected.backward(grad_out)
    q32, k32, v32 = (t.to(torch.float32).requires_grad_() for t in (q, k, v))
    out = graph_attention.attention(q32, k32, v32, mask=mask, check_finite=False)
    out.backward(grad_out.to(torch.float32))
    assert_same(out.detach(), expected.detach(), f"{mask} {where} output")
    for name, actual, reference in (("dq", q32.grad, q64.grad), ("dk", k32.grad, k64.grad), ("dv", v32.grad, v64.grad)):
        assert_same(actual, reference, f"{mask} {where} {name}")
    reached = expected.detach().isnan().any(-1)
    assert not reached.all(), "the case must leave some rows unreached"


def test_checked_inputs_still_raise_naming_the_element():
    q, k, v = poisoned(("k", 3, 0, float("nan")), seed=72)
    with pytest.raises(graph_attention.GraphAttentionError, match=r"key\[1, 3, 0\] is nan"):
        graph_attention.attention(q.float(), k.float(), v.float(), mask="causal")
