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
    # env -i: no PATH, no LD_LIBRARY_PATH; the toolchain's library directories cannot be found. torch is kept out
    # (sys.modules["torch"] = None makes its import fail) only to save the seconds of importing it.
    script = ("import sys; sys.modules['torch'] = None;"
              "import numpy as np, graph_attention as ga;"
              "x = np.ones((2, 8, 4), np.float32);"
              "print(ga.__version__, ga.attention(x, x, x, mask='window:1+global:0').sum());"
              "maps = open('/proc/self/maps').read();"
              "print('libswift' in maps or 'libdispatch' in maps)")
    result = subprocess.run(["env", "-i", sys.executable, "-c", script], capture_output=True, text=True,
                            cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    version, total, swift_mapped = result.stdout.split()
    assert version == graph_attention.__version__ and float(total) == pytest.approx(64.0)
    assert swift_mapped == "False"


def test_gil_is_released_during_a_call():
    # While one thread is inside the engine, another keeps running Python: with the GIL held it could not.
    import threading

    import numpy as np

    q = np.random.default_rng(0).standard_normal((131072, 32), dtype=np.float32)
    inside, done, count = threading.Event(), threading.Event(), 0

    def work():
        inside.set()
        graph_attention.attention(q, q, q, mask="window:64", threads=1)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    inside.wait()
    while not done.is_set():
        count += 1
    worker.join()
    assert count > 1000, count


def test_last_error_is_per_thread():
    import threading

    errors = {}

    def fail(radius):
        for _ in range(200):
            try:
                graph_attention.Graph(f"window:{radius}")
            except ValueError as error:
                errors.setdefault(radius, set()).add(str(error))

    threads = [threading.Thread(target=fail, args=(-n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for radius, messages in errors.items():
        assert messages == {next(iter(messages))} and f"got {radius}" in next(iter(messages)), messages
    assert len(errors) == 4
