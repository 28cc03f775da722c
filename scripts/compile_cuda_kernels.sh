#!/usr/bin/env bash
# Compiles every CUDA kernel of the package with NVRTC for sm_80 and sm_90 (CUBIN) and compute_80 (the
# PTX fallback), through the real Swift code path (`graph-attention cuda-compile`), on a machine without
# a GPU. Fails on any compile error, any compiler warning, or a kernel missing from an image.
#
# NVRTC comes from PyPI (nvidia-cuda-nvrtc, CUDA 13: site-packages/nvidia/cu13/lib), which the Swift
# loader finds through python3. It needs no ptxas: NVRTC emits CUBIN itself.
#
# Usage: scripts/compile_cuda_kernels.sh [PATH/TO/graph-attention]   (default: build the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-}"
if [ -z "$bin" ]; then
  swift build -c release --product graph-attention
  bin=.build/release/graph-attention
fi

# The NVRTC wheel, pinned to a major version so a new release cannot change the check's meaning silently.
nvrtc_present() {
  python3 - <<'PY'
import site, os, sys
dirs = site.getsitepackages() + [site.getusersitepackages()]
sys.exit(0 if any(os.path.exists(os.path.join(d, "nvidia", "cu13", "lib", "libnvrtc.so.13")) for d in dirs) else 1)
PY
}
if [ -n "${GRAPH_ATTENTION_NVRTC:-}" ]; then
  echo "compile_cuda_kernels: using NVRTC from GRAPH_ATTENTION_NVRTC=$GRAPH_ATTENTION_NVRTC"
elif nvrtc_present; then
  echo "compile_cuda_kernels: NVRTC (nvidia-cuda-nvrtc 13) already installed"
else
  echo "compile_cuda_kernels: installing NVRTC from PyPI (nvidia-cuda-nvrtc>=13,<14)"
  python3 -m pip install --quiet --disable-pip-version-check "nvidia-cuda-nvrtc>=13,<14"
fi

"$bin" cuda-compile --arch sm_80 --arch sm_90 --arch compute_80
