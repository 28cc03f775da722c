#!/usr/bin/env bash
# The 160M-token run of the long-context issue, end to end on this machine: generate fp16 Q, K, V
# (d = 32) as memory-mapped .npy files, run window:64 and BigBird over them streaming, check sampled rows
# against float64, and record wall time, attention time and peak resident memory. Then the
# in-memory case: fp16, d = 64, at 97% of the length `plan` predicts for the available memory.
#   Benchmarks/run_long_context.sh [DIR]     # DIR holds the ~40 GiB of files (default /work/big)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/work/big}
tokens=${TOKENS:-160000000}
out=bench/results/long-context
mkdir -p "$dir" "$out"
swift build -c release >/dev/null
bin=.build/release/graph-attention
log=$out/run-$tokens.txt
: > "$log"
step() {  # label, then the command; GNU time gives the peak RSS
  echo "== $1: $*" | tee -a "$log"
  shift
  /usr/bin/time -v "$@" 2> >(tee -a "$log" | grep -E "Maximum resident|Elapsed|Exit status" >&2) | tee -a "$log"
}
step plan "$bin" plan --mask window:64 --dim 32 --heads 1 --dtype f16 --tokens "$tokens"
step generate "$bin" generate --tokens "$tokens" --heads 1 --dim 32 --dtype f16 --seed 1 --output "$dir"
step window "$bin" run --query "$dir/q.npy" --key "$dir/k.npy" --value "$dir/v.npy" --mask window:64 \
  --output "$dir/o.npy" --output-dtype f16 --check-rows 16 --json
step bigbird "$bin" run --query "$dir/q.npy" --key "$dir/k.npy" --value "$dir/v.npy" \
  --mask "window:64+global:0,1+random:0.00000001:7" --output "$dir/o-bigbird.npy" --output-dtype f16 --check-rows 16 --json
rm -f "$dir/o.npy" "$dir/o-bigbird.npy"
# In memory, nothing on disk: the plan's maximum for fp16, d = 64 (MemAvailable counts the files' page
# cache, which the kernel reclaims), run at 97% of it.
max=$("$bin" plan --mask window:64 --dim 64 --heads 1 --dtype f16 --disk 1G --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["max_tokens_in_memory"])')
inmem=$((max * 97 / 100))
step plan-in-memory "$bin" plan --mask window:64 --dim 64 --heads 1 --dtype f16 --disk 1G --tokens "$inmem"
step in-memory "$bin" time --mask window:64 --tokens "$inmem" --dim 64 --dtype f16 --warmup 0 --repeat 1 --json
