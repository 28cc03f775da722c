"""Hatchling build hook: builds the engine's shared library with Swift and puts it in the wheel.

The library (libgraph_attention.so) is the Swift package's C ABI (Sources/_GraphAttentionCABI) linked with the
Swift runtime inside it, so the installed wheel needs no Swift toolchain. Swift is needed only here, at build
time. Set GRAPH_ATTENTION_PREBUILT_LIBRARY to a built .so to skip the Swift build (CI reuses one).
"""
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

LIBRARY = "libgraph_attention.so"


class SwiftLibraryBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version, build_data):
        if self.target_name != "wheel":
            return
        package_dir = Path(self.root) / "graph_attention"
        library = package_dir / LIBRARY
        prebuilt = os.environ.get("GRAPH_ATTENTION_PREBUILT_LIBRARY")
        if prebuilt:
            if not library.exists() or not os.path.samefile(prebuilt, library):
                shutil.copyfile(prebuilt, library)
        else:
            repository = Path(self.root).resolve().parent
            script = repository / "scripts" / "build_python_library.sh"
            if not (repository / "Package.swift").is_file() or not script.is_file():
                raise RuntimeError(
                    f"graph_attention must be built from the GraphAttention repository (no Package.swift or "
                    f"{script.name} next to {self.root}); run `pip install ./python` from the repository root, or "
                    f"set GRAPH_ATTENTION_PREBUILT_LIBRARY to a built {LIBRARY}")
            if shutil.which("swift") is None:
                raise RuntimeError("building graph_attention needs the Swift toolchain (`swift` on PATH), "
                                   "see https://swift.org/install; it is not needed once the wheel is built")
            subprocess.run(["bash", str(script), str(library)], check=True)
        # Not pure Python (it ships a native library) but independent of the Python version and ABI.
        build_data["pure_python"] = False
        platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        build_data["tag"] = f"py3-none-{platform}"
        if version != "editable":
            # The .so is ignored by git, so hatchling would leave it out without this.
            build_data["force_include"][str(library)] = f"graph_attention/{LIBRARY}"
