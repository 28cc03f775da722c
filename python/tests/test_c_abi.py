"""The C ABI itself: contract violations a binding could make return a status and a message, never a trap."""
import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from graph_attention import Graph
from graph_attention._library import AttentionOptions, lib, shape_array

NAN = float("nan")


def forward(q=True, q_shape=(8, 4), dtype=0, rank=2, out=True, graph=True, empty_rows=0, threads=0, v_shape=None):
    x = np.ones((8, 4), np.float32)
    o = np.empty((8, 4), np.float32)
    g = Graph("window:1")
    status = lib.ga_attention_forward(
        x.ctypes.data if q else None, shape_array(q_shape) if q_shape is not None else None, dtype,
        x.ctypes.data, shape_array((8, 4)), 0, x.ctypes.data, shape_array(v_shape or (8, 4)), 0, rank,
        o.ctypes.data if out else None, 0, None, g._handle if graph else None, NAN, empty_rows, threads, 1, None)
    message = lib.ga_last_error()
    return status, (message or b"").decode()


def test_success_clears_the_last_error():
    assert forward() == (0, "")


@pytest.mark.parametrize("arguments,status,words", [
    (dict(q=False), 10, "query data pointer is NULL"),
    (dict(q_shape=None), 10, "shape pointer is NULL"),
    (dict(out=False), 10, "output pointer is NULL"),
    (dict(graph=False), 10, "graph handle is NULL"),
    (dict(dtype=7), 10, "dtype code 7"),
    (dict(empty_rows=5), 10, "empty-rows code 5"),
    (dict(rank=9), 2, "rank 9"),
    (dict(rank=-1), 2, "rank -1"),
    (dict(q_shape=(8, -4)), 2, "negative"),
    (dict(q_shape=(1 << 40, 1 << 40)), 2, "too large"),
    (dict(threads=-3), 6, "negative"),
    (dict(v_shape=(9, 4)), 2, "tokens"),
])
def test_contract_violations_are_statuses(arguments, status, words):
    got, message = forward(**arguments)
    assert got == status and words in message, (got, message)


def test_graph_functions_check_their_arguments():
    out = ctypes.c_int64()
    assert lib.ga_graph_parse(None, None) == 10
    assert lib.ga_graph_edge_count(None, 4, 4, ctypes.byref(out)) == 10
    g = Graph("full")
    assert lib.ga_graph_edge_count(g._handle, 4, 4, None) == 10
    assert lib.ga_graph_edge_count(g._handle, 1 << 40, 1 << 40, ctypes.byref(out)) == 2
    assert lib.ga_graph_degree(g._handle, 4, 4, -1, ctypes.byref(out)) == 5
    assert lib.ga_graph_dense_mask(g._handle, 4, 4, None) == 10
    lib.ga_graph_free(None)  # ignored


def test_backward_checks_its_pointers():
    x = np.ones((8, 4), np.float32)
    s = shape_array((8, 4))
    g = Graph("window:1")
    status = lib.ga_attention_backward(x.ctypes.data, s, 0, x.ctypes.data, s, 0, x.ctypes.data, s, 0, 2,
                                       x.ctypes.data, 0, None, x.ctypes.data, 0, None, None, None, g._handle,
                                       NAN, 0, 0, 0)
    assert status == 10 and "NULL" in lib.ga_last_error().decode()


def forward_ex(heads=2, specs=("window:1", "causal"), options=None, **fields):
    """ga_attention_forward_ex on [heads, 8, 4] ones; `fields` override the options built from `specs`."""
    x = np.ones((heads, 8, 4), np.float32)
    o = np.empty_like(x)
    graphs = [Graph(s) for s in specs]
    handles = (ctypes.c_void_p * max(1, len(graphs)))(*(g._handle.value for g in graphs))
    if options is None:
        options = AttentionOptions(graph_count=len(graphs), graphs=handles, scale=NAN, flags=1)
        for name, value in fields.items():
            setattr(options, name, value)
    s = shape_array(x.shape)
    status = lib.ga_attention_forward_ex(x.ctypes.data, s, 0, x.ctypes.data, s, 0, x.ctypes.data, s, 0, 3,
                                         o.ctypes.data, 0, None, options, None)
    return status, (lib.ga_last_error() or b"").decode()


def test_options_struct_matches_the_header():
    # The Swift side reads the struct at the offsets graph_attention.h documents; check the header against them.
    assert ctypes.sizeof(AttentionOptions) == 56
    offsets = {name: getattr(AttentionOptions, name).offset for name, _ in AttentionOptions._fields_}
    assert offsets == dict(size=0, graph_count=4, graphs=8, alibi_slopes=16, sinks=24, scale=32, softcap=36,
                           empty_rows=40, threads=44, flags=48, alibi=52)
    compiler = shutil.which("cc") or shutil.which("clang") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to read graph_attention.h")
    header = Path(__file__).resolve().parents[2] / "Sources" / "_GraphAttentionCABI"
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "layout.c"
        fields = ", ".join(f'(long)offsetof(ga_attention_options, {name})' for name in offsets)
        source.write_text('#include <stddef.h>\n#include <stdio.h>\n#include "graph_attention.h"\n'
                          'int main(void) { ga_attention_options d = ga_attention_options_default();\n'
                          f'  long o[] = {{{fields}}};\n'
                          '  printf("%ld %u %d %d", (long)sizeof d, d.size, d.graph_count, (int)d.flags);\n'
                          '  for (int i = 0; i < 11; i++) printf(" %ld", o[i]);\n  return 0; }\n')
        binary = Path(directory) / "layout"
        subprocess.run([compiler, "-std=c11", "-Wall", "-Werror", "-I", str(header), str(source), "-o", str(binary)],
                       check=True)
        printed = [int(n) for n in subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout.split()]
    assert printed == [56, 56, 1, 1] + list(offsets.values())


def test_forward_ex_success():
    assert forward_ex() == (0, "")
    assert forward_ex(specs=("causal",)) == (0, "")  # one graph for every head


@pytest.mark.parametrize("arguments,status,words", [
    (dict(size=48), 10, "options size is 48 bytes"),
    (dict(size=64), 10, "at least as new"),
    (dict(graph_count=0), 10, "0 graph(s)"),
    (dict(graphs=None), 10, "graph_count >= 1"),
    (dict(specs=("causal", "causal", "causal")), 4, "3 graph(s) were given for 2 query head(s)"),
    (dict(empty_rows=3), 10, "empty-rows code 3"),
    (dict(threads=-1), 6, "negative"),
    (dict(alibi=5), 10, "alibi code 5"),
    (dict(alibi=2), 10, "alibi_slopes is NULL"),
    (dict(softcap=-1.0), 6, "softcap"),
    (dict(softcap=float("inf")), 6, "softcap"),
    (dict(softcap=0.0), 6, "softcap"),
])
def test_forward_ex_contract_violations_are_statuses(arguments, status, words):
    got, message = forward_ex(**arguments)
    assert got == status and words in message, (got, message)


def test_forward_ex_null_options_and_handles():
    status = lib.ga_attention_forward_ex(None, None, 0, None, None, 0, None, None, 0, 2, None, 0, None, None, None)
    assert status == 10
    x = np.ones((8, 4), np.float32)
    s = shape_array((8, 4))
    assert lib.ga_attention_forward_ex(x.ctypes.data, s, 0, x.ctypes.data, s, 0, x.ctypes.data, s, 0, 2,
                                       x.ctypes.data, 0, None, None, None) == 10
    assert "options pointer is NULL" in lib.ga_last_error().decode()
    causal = Graph("causal")  # alive through the call: the options borrow its handle
    handles = (ctypes.c_void_p * 2)(causal._handle.value, None)
    options = AttentionOptions(graph_count=2, graphs=handles, scale=NAN)
    assert forward_ex(options=options)[0] == 10 and "graph handle is NULL" in lib.ga_last_error().decode()


def test_backward_ex_needs_grad_sinks_with_sinks():
    x = np.ones((2, 8, 4), np.float32)
    s = shape_array(x.shape)
    lse = np.zeros((2, 8), np.float32)
    grads = [np.empty_like(x) for _ in range(3)]
    sinks = np.zeros(2, np.float32)
    graph = Graph("causal")
    handles = (ctypes.c_void_p * 1)(graph._handle.value)
    options = AttentionOptions(graph_count=1, graphs=handles, scale=NAN, sinks=sinks.ctypes.data)
    arguments = [x.ctypes.data, s, 0, x.ctypes.data, s, 0, x.ctypes.data, s, 0, 3, x.ctypes.data, 0, lse.ctypes.data,
                 x.ctypes.data, 0] + [g.ctypes.data for g in grads]
    assert lib.ga_attention_backward_ex(*arguments, None, options) == 10
    assert "grad_sinks is NULL" in lib.ga_last_error().decode()
    dsinks = np.full(2, np.nan, np.float32)
    assert lib.ga_attention_backward_ex(*arguments, dsinks.ctypes.data, options) == 0
    assert np.isfinite(dsinks).all()
