"""The C ABI itself: contract violations a binding could make return a status and a message, never a trap."""
import ctypes

import numpy as np
import pytest

from graph_attention import Graph
from graph_attention._library import lib, shape_array

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
