#!/usr/bin/env bash
# ============================================================================================
#  UNVERIFIED: written on a machine without a GPU. Nothing below has run on a GPU yet; the CUDA
#  kernels have only been compiled with NVRTC (sm_80, sm_90) and run in the CPU warp emulator of
#  the unit tests. The first run on a GPU is the check; read its output before trusting numbers.
# ============================================================================================
#
# Checks the CUDA backend on an NVIDIA GPU against the CPU engine and the float64 reference, then
# times it against PyTorch (SDPA flash dense and causal, SDPA with the boolean mask, FlexAttention with
# the same block mask). Two halves, because the GPU machine has CUDA, PyTorch and Triton but no Swift:
#
#   scripts/gpu_check.sh build   here: builds the CLI in release with the Swift runtime linked
#                                statically, stripped and gzipped to .carry/graph-attention.gz (ignored by git);
#   scripts/gpu_check.sh run     on the GPU machine, from the repository root with .carry/ beside it:
#                                correctness (fails on any error above tolerance), then timings.
#   scripts/gpu_check.sh         build if swift is here, then run if nvidia-smi is here.
#
# NVRTC on the GPU machine: PyTorch's wheels bring nvidia-cuda-nvrtc-cu12 (site-packages/nvidia/
# cuda_nvrtc/lib), which graph-attention finds through python3; else set GRAPH_ATTENTION_NVRTC to the
# directory holding libnvrtc.so.*. The compiled kernels are cached in ~/.cache/graph-attention/cuda.
#
# Results: bench/results/gpu-check-<gpu>-<utc time>/ (log, correctness.txt, bench.json, bench.md, with
# the GPU name, driver, CUDA, PyTorch versions), also copied to $OUT when that is set.
# Environment: GPU_CHECK_QUICK=1 runs fewer and smaller cases (a smoke test, about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
  swift build -c release --static-swift-stdlib --product graph-attention
  mkdir -p .carry
  # Stripped and gzipped (about 23 MB instead of 73): what is carried to the GPU machine is size-limited.
  strip -o .carry/graph-attention "$(swift build -c release --static-swift-stdlib --show-bin-path)/graph-attention"
  gzip -f .carry/graph-attention
  echo "gpu_check: built .carry/graph-attention.gz ($(du -h .carry/graph-attention.gz | cut -f1)); carry .carry/ to the GPU machine"
}

run() {
  local bin=.carry/graph-attention
  if [ ! -x "$bin" ] && [ -f "$bin.gz" ]; then gunzip -c "$bin.gz" > "$bin" && chmod +x "$bin"; fi
  [ -x "$bin" ] || { echo "gpu_check: $bin missing: run 'scripts/gpu_check.sh build' where Swift is installed" >&2; exit 1; }
  command -v nvidia-smi >/dev/null || { echo "gpu_check: nvidia-smi not found; this half needs the GPU machine" >&2; exit 1; }
  local gpu stamp dir
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' /' '__')
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  dir="bench/results/gpu-check-${gpu}-${stamp}"
  mkdir -p "$dir"
  local failed=0
  {
    echo "# gpu_check $stamp (UNVERIFIED script: first runs on a GPU)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    "$bin" cuda-info
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || true
  } 2>&1 | tee "$dir/log.txt"

  # 1. Correctness: every graph kind and the paper's failure cases, on the GPU vs the float64 reference.
  python3 scripts/gpu_check_correctness.py --binary "$bin" --out "$dir" ${GPU_CHECK_QUICK:+--quick} 2>&1 | tee -a "$dir/log.txt" \
    || failed=1

  # 2. Timings against PyTorch SDPA and FlexAttention (skipped, with a note, where torch is missing).
  python3 scripts/gpu_bench_torch.py --binary "$bin" --out "$dir" ${GPU_CHECK_QUICK:+--quick} 2>&1 | tee -a "$dir/log.txt" \
    || failed=1

  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp -r "$dir" "$OUT/"; fi
  echo "gpu_check: results in $dir"
  if [ "$failed" != 0 ]; then echo "gpu_check: FAIL (see $dir/log.txt)"; exit 1; fi
  echo "gpu_check: PASS"
}

case "${1:-auto}" in
  build) build ;;
  run) run ;;
  auto)
    if command -v swift >/dev/null; then build; fi
    if command -v nvidia-smi >/dev/null; then run; fi
    ;;
  *) echo "usage: scripts/gpu_check.sh [build|run]" >&2; exit 2 ;;
esac
