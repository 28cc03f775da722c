"""The C ABI of libgraph_attention.so (Sources/_GraphAttentionCABI) through ctypes.

Three layers, as in the Swift package's C boundaries: the raw ctypes functions (`lib`), `check` turning a
status code into a Python exception carrying the engine's message, and the public API in graph.py and
attention.py. ctypes releases the GIL for the duration of every call into a CDLL, so other Python threads run
while the engine computes.
"""
import ctypes
import functools
import math
import os
from pathlib import Path

LIBRARY_NAME = "libgraph_attention.so"

# Element type codes of the C ABI.
DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}
EMPTY_ROWS_CODES = {"zero": 0, "nan": 1}
FLAG_CHECK_FINITE = 1

# Tests set this so outputs start as NaN: an element the engine failed to write then fails the comparison.
POISON_OUTPUTS = bool(os.environ.get("GRAPH_ATTENTION_POISON_OUTPUTS"))

# Status codes: 0 success, 1-9 follow GraphAttentionError.Kind, 10 a broken C contract, 11 unclassified.
_STATUS_NAMES = {1: "file", 2: "shape", 3: "dtype", 4: "mask", 5: "index", 6: "option", 7: "value",
                 8: "resource", 9: "device", 10: "argument", 11: "internal"}
# The environment (files, memory, threads, devices) fails with OSError; the caller's values with ValueError.
_OS_ERRORS = {1, 8, 9}


class GraphAttentionError(ValueError):
    """An engine error about the caller's values: shapes, dtypes, masks, indices, options, NaN inputs.

    `kind` names the class ("shape", "mask", ...); the message is the engine's: the problem and the fix.
    """

    def __init__(self, message, kind):
        super().__init__(message)
        self.kind = kind


class GraphAttentionOSError(OSError):
    """An engine error from the environment: an unreadable graph file, no memory or threads, no device."""

    def __init__(self, message, kind):
        super().__init__(message)
        self.kind = kind


class AttentionOptions(ctypes.Structure):
    """`ga_attention_options` of graph_attention.h, version 1 (56 bytes); `size` is set by `__init__`, and `softcap`
    defaults to NaN (none)."""

    _fields_ = [("size", ctypes.c_uint32), ("graph_count", ctypes.c_int32), ("graphs", ctypes.POINTER(ctypes.c_void_p)),
                ("alibi_slopes", ctypes.c_void_p), ("sinks", ctypes.c_void_p), ("scale", ctypes.c_float),
                ("softcap", ctypes.c_float), ("empty_rows", ctypes.c_int32), ("threads", ctypes.c_int32),
                ("flags", ctypes.c_uint32), ("alibi", ctypes.c_int32)]

    def __init__(self, **fields):
        fields.setdefault("softcap", math.nan)  # NaN: no softcap (0 would be a softcap the engine refuses)
        super().__init__(size=ctypes.sizeof(AttentionOptions), **fields)


# ALiBi codes of ga_attention_options.alibi.
ALIBI_NONE, ALIBI_STANDARD, ALIBI_SLOPES = 0, 1, 2


def _library_path():
    override = os.environ.get("GRAPH_ATTENTION_LIBRARY")
    return Path(override) if override else Path(__file__).with_name(LIBRARY_NAME)


def _load():
    path = _library_path()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        raise ImportError(
            f"graph_attention cannot load its engine {path}: {error}. Fix: reinstall with "
            "`pip install ./python` from the GraphAttention repository (needs Swift at build time only), "
            "or point GRAPH_ATTENTION_LIBRARY at a built libgraph_attention.so") from None
    c_int64_p = ctypes.POINTER(ctypes.c_int64)
    p, i32, i64, u32, f32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint32, ctypes.c_float
    signatures = {
        "ga_version": (ctypes.c_char_p, []),
        "ga_last_error": (ctypes.c_char_p, []),
        "ga_graph_parse": (i32, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]),
        "ga_graph_free": (None, [p]),
        "ga_graph_validate": (i32, [p, i64, i64]),
        "ga_graph_edge_count": (i32, [p, i64, i64, c_int64_p]),
        "ga_graph_degree": (i32, [p, i64, i64, i64, c_int64_p]),
        "ga_graph_describe": (i32, [p, ctypes.c_char_p, i64, c_int64_p]),
        "ga_graph_dense_mask": (i32, [p, i64, i64, p]),
        "ga_mask_files": (i32, [ctypes.c_char_p, ctypes.c_char_p, i64, c_int64_p]),
        "ga_mask_grammar": (i32, [ctypes.c_char_p, i64, c_int64_p]),
        "ga_attention_forward": (i32, [p, c_int64_p, i32, p, c_int64_p, i32, p, c_int64_p, i32, i32,
                                       p, i32, p, p, f32, i32, i32, u32, c_int64_p]),
        "ga_attention_backward": (i32, [p, c_int64_p, i32, p, c_int64_p, i32, p, c_int64_p, i32, i32,
                                        p, i32, p, p, i32, p, p, p, p, f32, i32, i32, u32]),
        "ga_attention_forward_ex": (i32, [p, c_int64_p, i32, p, c_int64_p, i32, p, c_int64_p, i32, i32,
                                          p, i32, p, ctypes.POINTER(AttentionOptions), c_int64_p]),
        "ga_attention_backward_ex": (i32, [p, c_int64_p, i32, p, c_int64_p, i32, p, c_int64_p, i32, i32,
                                           p, i32, p, p, i32, p, p, p, p, ctypes.POINTER(AttentionOptions)]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name, None)
        if function is None:
            raise ImportError(f"{path} lacks {name}: it was built from another version. Fix: reinstall graph_attention")
        function.restype = restype
        function.argtypes = argtypes
    return lib, path


lib, library_path = _load()


def error_for(status):
    """The exception for a non-zero status, with this thread's last engine message."""
    text = lib.ga_last_error()
    message = text.decode("utf-8", "replace") if text else f"graph_attention failed with status {status}"
    kind = _STATUS_NAMES.get(status, "internal")
    if status in _OS_ERRORS:
        return GraphAttentionOSError(message, kind)
    if status in (10, 11):
        return RuntimeError(f"graph_attention internal error (please report): {message}")
    return GraphAttentionError(message, kind)


def check(status):
    """Raises the engine's error for a non-zero status."""
    if status != 0:
        raise error_for(status)


@functools.lru_cache(maxsize=256)
def shape_array(shape):
    """The extents of `shape` (a tuple) as a C int64 array, cached: the engine only reads it, and building one
    costs a few microseconds of the call's overhead."""
    return (ctypes.c_int64 * len(shape))(*shape)


def text(function, *arguments):
    """The text a `ga_*` function writes with the (buffer, capacity, length) convention, as a str."""
    length = ctypes.c_int64()
    check(function(*arguments, None, 0, ctypes.byref(length)))
    buffer = ctypes.create_string_buffer(length.value + 1)
    check(function(*arguments, buffer, length.value + 1, ctypes.byref(length)))
    return buffer.value.decode()


def version():
    """The engine's version string."""
    return lib.ga_version().decode()
