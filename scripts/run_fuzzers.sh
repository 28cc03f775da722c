#!/usr/bin/env bash
# Builds the fuzz targets in Fuzz/ (libFuzzer + AddressSanitizer, both from the Swift toolchain) and runs each
# for SECONDS on the committed corpus, failing on any crash, leak, timeout (10 s per input) or allocation above
# 2 GiB. New inputs go to a scratch directory, never into the repository; crash inputs are kept under
# $ARTIFACTS (default /tmp/graph-attention-fuzz-artifacts): add them to Fuzz/Corpus/TARGET with the fix.
#
#   scripts/run_fuzzers.sh SECONDS [TARGET...]      targets: mask npy safetensors mtx arrays (default: all)
#   FUZZ_RUNS=1000000 scripts/run_fuzzers.sh 3600   stop each target after that many executions instead
set -euo pipefail
seconds=${1:?usage: scripts/run_fuzzers.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(mask npy safetensors mtx arrays)
cd "$(dirname "$0")/../Fuzz"

# libFuzzer without its main(): SwiftPM gives the executable its own entry point, which calls LLVMFuzzerRunDriver.
toolchain=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")
driver=$(ls "$toolchain"/lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-"$(uname -m)".a 2>/dev/null | head -1)
[ -n "$driver" ] || { echo "libclang_rt.fuzzer_no_main not found under $toolchain/lib/clang" >&2; exit 1; }

start=$(date +%s)
swift build -c release --sanitize=address \
  -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp \
  -Xcc -fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp \
  -Xlinker "$driver" -Xlinker -lstdc++
echo "fuzz build: $(( $(date +%s) - start )) s"
binary=.build/release/graph-attention-fuzz

artifacts=${ARTIFACTS:-${TMPDIR:-/tmp}/graph-attention-fuzz-artifacts}
mkdir -p "$artifacts"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
limit=(-max_total_time="$seconds")
[ -z "${FUZZ_RUNS:-}" ] || limit+=(-runs="$FUZZ_RUNS")
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target"
  echo "== $target: ${FUZZ_RUNS:-unbounded} runs, at most $seconds s"
  dictionary=()
  [ ! -f "Dictionaries/$target.dict" ] || dictionary=(-dict="Dictionaries/$target.dict")
  # Swift's own crash backtracer is off: libFuzzer and ASan report, and the backtracer can outlive the process.
  if SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=1 \
       "$binary" "$target" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 \
       -malloc_limit_mb=2048 "${dictionary[@]}" -artifact_prefix="$artifacts/$target-" \
       -print_final_stats=1 "$scratch/$target" "Corpus/$target" 2>"$scratch/$target.log"; then
    grep -E "^stat::number_of_executed_units|^Done" "$scratch/$target.log" || true
  else
    tail -40 "$scratch/$target.log"
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]} (inputs in $artifacts)" >&2
  exit 1
fi
echo "fuzzing: no crash, leak or timeout in ${targets[*]}"
