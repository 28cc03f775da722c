#!/usr/bin/env bash
# The tile kernel's ceiling on one core (Benchmarks/kernel_ceiling.c): one 16-row tile repeated (K and V in
# L2) and consecutive tiles along a sequence (Q, K, V, O streaming), against one core's FMA peak of the same
# instruction set, for the AVX-512 and AVX2 paths this machine runs (the portable one takes no row spans). Compiled as SwiftPM compiles the kernels (clang -O2,
# per-function target attributes, no -march). Results: bench/results/cpu-kernels/ceiling.txt.
#   Benchmarks/run_kernel_ceiling.sh        # about two minutes on the 2-core machine; run it alone
set -euo pipefail
cd "$(dirname "$0")/.."
kernels=Sources/_GraphAttentionKernels
binary=$(mktemp /tmp/kernel_ceiling.XXXXXX)
trap 'rm -f "$binary"' EXIT
clang -O2 -I"$kernels/include" -I"$kernels" Benchmarks/kernel_ceiling.c "$kernels"/*.c -o "$binary" -lm
out=bench/results/cpu-kernels/ceiling.txt
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
{
  echo "== Benchmarks/run_kernel_ceiling.sh ($(git rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'))"
  lscpu | grep -E "Model name" | sed 's/  */ /g'
  for isa in 3 2; do
    for d in 64 128; do
      for keys in 512 2048; do
        "$binary" "$isa" "$d" "$keys" 65536 2>/dev/null || true
      done
    done
  done
} | tee "$tmp"
mv "$tmp" "$out"
