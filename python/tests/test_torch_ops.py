"""The torch custom ops: opcheck, torch.compile(fullgraph=True) forward and backward, the fake kernels."""
import pytest
import torch

import graph_attention
from reference import attention64, dense_mask, random_inputs, relative_error


@pytest.mark.parametrize("mask,shapes", [
    ("window:3+global:0", [(2, 24, 8)] * 3),
    ("causal", [(1, 4, 24, 8), (1, 2, 24, 8), (1, 2, 24, 12)]),
    ("full", [(2, 10, 8), (2, 24, 8), (2, 24, 8)]),
])
def test_opcheck(mask, shapes):
    q, k, v = (t.requires_grad_() for t in random_inputs(shapes, seed=40))
    scale = 1 / 8 ** 0.5
    torch.library.opcheck(torch.ops.graph_attention.attention.default, (q, k, v, mask, scale, "zero", 0, True))
    out, lse = torch.ops.graph_attention.attention(q, k, v, mask, scale, "zero", 0, True)
    grad = torch.randn_like(out)
    torch.library.opcheck(torch.ops.graph_attention.attention_backward.default,
                          (grad, q.detach(), k.detach(), v.detach(), out.detach(), lse.detach(), mask, scale, "zero", 0,
                           False))


def test_opcheck_forward_without_grad():
    q, k, v = random_inputs([(2, 24, 8)] * 3, seed=41)
    torch.library.opcheck(torch.ops.graph_attention.attention.default, (q, k, v, "window:2", 0.3, "nan", 1, True),
                          test_utils=("test_schema", "test_faketensor"))


def test_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(16, 48)

        def forward(self, x):
            q, k, v = self.proj(x).view(x.shape[0], -1, 3, 2, 8).permute(2, 0, 3, 1, 4)
            return graph_attention.attention(q, k, v, mask="window:4+global:0").sum()

    model = Block()
    x = torch.randn(2, 40, 16)
    eager = model(x)
    eager.backward()
    eager_grad = model.proj.weight.grad.clone()
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss = compiled(x)
    loss.backward()
    assert torch.allclose(loss, eager, rtol=1e-5)
    assert torch.allclose(model.proj.weight.grad, eager_grad, rtol=1e-4, atol=1e-6)


def test_compile_fullgraph_inductor_forward():
    torch._dynamo.reset()
    q, k, v = random_inputs([(2, 64, 16)] * 3, seed=42)
    fn = torch.compile(lambda q, k, v: graph_attention.attention(q, k, v, mask="causal+global:0") * 2, fullgraph=True)
    out = fn(q, k, v)
    assert relative_error(out, 2 * attention64(q, k, v, dense_mask("causal+global:0", 64))[0]) < 1e-5


def test_fake_tensor_shapes_without_engine():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, k, v = torch.empty(2, 4, 100, 16), torch.empty(2, 2, 100, 16), torch.empty(2, 2, 100, 24)
        out, lse = torch.ops.graph_attention.attention(q, k, v, "window:3", 0.25, "zero", 0, True)
    assert out.shape == (2, 4, 100, 24) and lse.shape == (2, 4, 100) and lse.dtype == torch.float32


def test_eager_fast_path_matches_the_custom_op():
    # Eager calls skip the dispatcher (autograd.Function or a direct call); the op path must agree exactly.
    q, k, v = random_inputs([(2, 2, 40, 8), (2, 1, 40, 8), (2, 1, 40, 12)], seed=43)
    grad = random_inputs([(2, 2, 40, 12)], seed=44)[0]
    results = []
    for use_op in (False, True):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        if use_op:
            out, _ = torch.ops.graph_attention.attention(*leaves, "window:3+global:0", 0.35, "zero", 0, True)
        else:
            out = graph_attention.attention(*leaves, mask="window:3+global:0", scale=0.35)
        out.backward(grad)
        results.append([out.detach()] + [t.grad for t in leaves])
    for a, b in zip(*results):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(graph_attention.attention(q, k, v, mask="window:3+global:0", scale=0.35), results[0][0])
