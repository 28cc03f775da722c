#!/usr/bin/env bash
# The committed CPU benchmark: builds in release, sweeps the masks of the issue over lengths, head
# dimensions and head counts, and times PyTorch beside it where PyTorch can run. Results go to
# bench/results/<name>/ (results.json, results.csv, results.svg) with the console table in table.txt.
#   Benchmarks/run_cpu_bench.sh            # everything (about 40-50 minutes on the 2-core machine)
#   Benchmarks/run_cpu_bench.sh lengths    # one part: peers, lengths or sweep
#   QUICK=1 Benchmarks/run_cpu_bench.sh    # one length, d = 64, one head
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release >/dev/null
bin=.build/release/graph-attention
run() {  # name, then bench arguments
  local name=$1; shift
  mkdir -p "bench/results/$name"
  echo "== $name: graph-attention bench $*" | tee "bench/results/$name/table.txt"
  "$bin" bench "$@" --output-directory "bench/results/$name" 2>&1 | tee -a "bench/results/$name/table.txt"
}
if [ -n "${QUICK:-}" ]; then
  run quick --tokens 65536 --dims 64 --heads 1 --repeats 3
  exit 0
fi
if [ -n "${SWEEP_ONLY:-}" ]; then set -- sweep; fi
part=${1:-all}
case $part in all|peers|lengths|sweep) ;; *) echo "error: unknown part '$part' (peers, lengths or sweep)" >&2; exit 2;; esac
if [ "$part" = all ] || [ "$part" = peers ]; then
# Against PyTorch, on the lengths where its peers can run at all.
[ -x Benchmarks/peers/.venv/bin/python ] || Benchmarks/peers/setup.sh
run cpu-vs-pytorch --tokens 16384,32768 --dims 64 --heads 1 --repeats 5 --peers \
  --masks window,causal-window,dilated,blocked,longformer,bigbird,random-1e-2,causal
fi
if [ "$part" = all ] || [ "$part" = lengths ]; then
# Percent of peak against length (results.svg), per mask, 16K to 1M tokens, d = 64 and 128, one head.
run cpu-lengths --tokens 16384,65536,262144,1048576 --dims 64,128 --heads 1 --repeats 5 --max-row-seconds 30 \
  --masks window,causal-window,dilated,blocked,longformer
fi
[ "$part" = all ] || [ "$part" = sweep ] || exit 0
# The roofline sweep: every mask, 64K and 1M tokens, d = 64 and 128, 1 and 8 heads (rows over the
# time budget are listed as skipped, with their estimate).
run cpu-sweep --tokens 65536,1048576 --dims 64,128 --heads 1,8 --repeats 3 --max-row-seconds 30 \
  --masks window,causal-window,dilated,blocked,longformer,bigbird,random-1e-4,random-1e-3,random-1e-2,causal
