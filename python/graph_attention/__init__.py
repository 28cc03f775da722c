"""graph_attention: exact sparse attention over graphs on the CPU, for NumPy and PyTorch.

    import torch, graph_attention
    q, k, v = (torch.randn(8, 4096, 64, requires_grad=True) for _ in range(3))
    out = graph_attention.attention(q, k, v, mask="window:128+global:0")
    out.sum().backward()

The engine is the GraphAttention Swift package's CPU engine (C kernels, one pass per row with an online
softmax), in libgraph_attention.so next to this file, called through ctypes.
"""
from ._library import GraphAttentionError, GraphAttentionOSError, library_path, version
from ._attention import attention
from .graph import Graph

__version__ = version()
__all__ = ["attention", "Graph", "GraphAttentionError", "GraphAttentionOSError", "library_path", "__version__"]

try:  # register the torch custom ops when torch is present, so torch.compile sees them from the start
    import torch as _torch_module  # noqa: F401
except ImportError:
    pass
else:
    from . import _torch  # noqa: F401
