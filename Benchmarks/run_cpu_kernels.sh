#!/usr/bin/env bash
# The CPU kernel measurements, on a quiet machine (other processes only lower the numbers):
#   - the FMA peak of the widest instruction set this CPU runs (bench prints and records it with its name);
#   - useful GFLOP/s (4 * edges * d per head) and % of that peak, per forced kernel path (avx512, avx2), for
#     window:256, window:1024, causal window, blocked and dilated graphs, d = 64 and 128, 64K to 1M tokens;
#   - fp16 and bf16 keys/values against fp32 on the same graph (the `time` command, JSON lines).
# Results: bench/results/cpu-kernels/<path>/ (results.json, results.csv, results.svg, table.txt) and
# bench/results/cpu-kernels/dtypes.jsonl; the machine (lscpu, uptime) in machine.txt.
#   Benchmarks/run_cpu_kernels.sh           # everything (about 20-30 minutes on the 2-core machine)
#   QUICK=1 Benchmarks/run_cpu_kernels.sh   # 64K tokens, d = 64, the widest path only (a minute)
#   REPEATS=9 ...                           # more timed runs per row (medians steadier on a noisy host)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product graph-attention >/dev/null
bin=.build/release/graph-attention
out=bench/results/cpu-kernels
mkdir -p "$out"
{ date -u; uptime; lscpu | grep -E "Model name|^CPU\(s\)|Flags" | sed 's/\(Flags:\).*\(avx512[a-z_0-9]*\).*/\1 ... \2 .../'; } > "$out/machine.txt"
cat "$out/machine.txt"

# Forced paths this machine runs (an unsupported one is an option error).
paths=()
for kernel in avx512 avx2; do
  if "$bin" time --mask causal --tokens 64 --dim 16 --repeat 1 --warmup 0 --kernel "$kernel" >/dev/null 2>&1; then paths+=("$kernel"); fi
done
masks="window:256,window:1024,window:256:causal,blocked:256:0,dilated:128:1,dilated:256:3"
if [ -n "${QUICK:-}" ]; then
  paths=("${paths[0]}")
  tokens=65536 dims=64 repeats=${REPEATS:-3}
else
  tokens=65536,262144,1048576 dims=64,128 repeats=${REPEATS:-5}
fi
for kernel in "${paths[@]}"; do
  mkdir -p "$out/$kernel"
  echo "== $kernel: graph-attention bench --kernel $kernel --masks $masks --tokens $tokens --dims $dims" | tee "$out/$kernel/table.txt"
  "$bin" bench --kernel "$kernel" --masks "$masks" --tokens "$tokens" --dims "$dims" --heads 1 \
    --repeats "$repeats" --max-row-seconds 60 --output-directory "$out/$kernel" 2>&1 | tee -a "$out/$kernel/table.txt"
done

# Storage types: fp16 and bf16 K/V (and Q, O) against fp32, widest path, same graph and shape.
: > "$out/dtypes.jsonl"
for mask in window:256 blocked:256:0 dilated:128:1; do
  for dtype in f32 f16 bf16; do
    "$bin" time --mask "$mask" --tokens 262144 --dim 64 --dtype "$dtype" --repeat "$repeats" --json | tee -a "$out/dtypes.jsonl"
  done
done
uptime | tee -a "$out/machine.txt"
