#!/usr/bin/env bash
# Interleaved timings of two graph-attention release binaries: each round runs every mask on both, in an order
# that alternates between rounds, so load from other jobs falls on both alike. One benchmark at a time.
# Usage: [MASKS="m1 m2 ..."] Benchmarks/interleave_binaries.sh OLD_BINARY NEW_BINARY ROUNDS OUT_DIR
set -euo pipefail
old=$1 new=$2 rounds=$3 out=$4
mkdir -p "$out"
read -r -a masks <<< "${MASKS:-window:256 window:256:causal dilated:128:1 blocked:256:1 window:256+global:0,1,2,3}"
for round in $(seq 1 "$rounds"); do
  if (( round % 2 )); then order=(old new); else order=(new old); fi
  for mask in "${masks[@]}"; do
    for which in "${order[@]}"; do
      binary=$old; [[ $which == new ]] && binary=$new
      line=$("$binary" time --mask "$mask" --tokens 65536 --dim 64 --repeat 7 --json)
      echo "$round $which $line" >> "$out/forward.jsonl"
    done
  done
  for which in "${order[@]}"; do
    binary=$old; [[ $which == new ]] && binary=$new
    "$binary" bench --masks window --tokens 65536 --dims 64 --heads 1 --backward --repeats 5 \
      | grep -E '^window ' | sed "s/^/$round $which /" >> "$out/backward.txt"
  done
done
