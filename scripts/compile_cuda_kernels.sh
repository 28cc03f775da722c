#!/usr/bin/env bash
# Compiles every CUDA kernel of the package with NVRTC for sm_80 and sm_90 (CUBIN) and compute_80 (the
# PTX fallback), through the real Swift code path (`graph-attention cuda-compile`), on a machine without
# a GPU, with NVRTC 13 and NVRTC 12. Fails on any compile error, any compiler warning, or a kernel
# missing from an image.
#
# NVRTC comes from PyPI (python3 -m pip). No ptxas wheel is needed: NVRTC emits CUBIN itself.
#
# Usage: scripts/compile_cuda_kernels.sh [PATH/TO/graph-attention]   (default: build the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-}"
if [ -z "$bin" ]; then
  swift build -c release --product graph-attention
  bin=.build/release/graph-attention
fi

# The folder of an installed NVRTC wheel (relative to site-packages), or nothing.
nvrtc_dir() {
  python3 - "$1" <<'PY'
import site, os, sys
for d in site.getsitepackages() + [site.getusersitepackages()]:
    folder = os.path.join(d, sys.argv[1])
    if any(name.startswith("libnvrtc.so") for name in (os.listdir(folder) if os.path.isdir(folder) else [])):
        print(folder)
        break
PY
}

# NVRTC wheels, pinned to a major version so a new release cannot silently change what is checked:
# CUDA 13 (nvidia-cuda-nvrtc, nvidia/cu13/lib) and CUDA 12 (nvidia-cuda-nvrtc-cu12, nvidia/cuda_nvrtc/lib),
# the one PyTorch's wheels bring to GPU machines.
for wheel in "nvidia-cuda-nvrtc>=13,<14:nvidia/cu13/lib" "nvidia-cuda-nvrtc-cu12>=12,<13:nvidia/cuda_nvrtc/lib"; do
  requirement=${wheel%%:*}
  folder=$(nvrtc_dir "${wheel#*:}")
  if [ -z "$folder" ]; then
    echo "compile_cuda_kernels: installing $requirement from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "$requirement"
    folder=$(nvrtc_dir "${wheel#*:}")
  fi
  [ -n "$folder" ] || { echo "compile_cuda_kernels: $requirement did not install an NVRTC" >&2; exit 1; }
  echo "compile_cuda_kernels: $requirement in $folder"
  GRAPH_ATTENTION_NVRTC="$folder" "$bin" cuda-compile --arch sm_80 --arch sm_90 --arch compute_80
done
