"""The shared library: the Swift runtime is inside it, and it loads with no Swift toolchain on the search path."""
import os
import shutil
import subprocess
import sys

import pytest

import graph_attention


def test_no_swift_runtime_needed():
    if shutil.which("readelf") is None:
        pytest.skip("readelf not installed")
    dynamic = subprocess.run(["readelf", "-d", str(graph_attention.library_path)], check=True,
                             capture_output=True, text=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert needed, dynamic
    for name in needed:
        assert not name.startswith(("libswift", "libdispatch", "libBlocksRuntime", "libFoundation")), needed


def test_loads_in_an_empty_environment():
    # env -i: no PATH, no LD_LIBRARY_PATH; the toolchain's library directories cannot be found.
    script = ("import numpy as np, graph_attention as ga;"
              "x = np.ones((2, 8, 4), np.float32);"
              "print(ga.__version__, ga.attention(x, x, x, mask='window:1+global:0').sum())")
    result = subprocess.run(["env", "-i", sys.executable, "-c", script], capture_output=True, text=True,
                            cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    version, total = result.stdout.split()
    assert version == graph_attention.__version__ and float(total) == pytest.approx(64.0)
    maps = subprocess.run(["env", "-i", sys.executable, "-c",
                           "import graph_attention, os; print(open('/proc/self/maps').read())"],
                          capture_output=True, text=True, cwd="/", timeout=120).stdout
    assert "libswiftCore" not in maps and "libdispatch" not in maps


def test_gil_is_released_during_a_call():
    import ctypes

    assert isinstance(graph_attention._library.lib, ctypes.CDLL) and not isinstance(graph_attention._library.lib, ctypes.PyDLL)
    assert os.path.basename(str(graph_attention.library_path)) == "libgraph_attention.so"
