#!/usr/bin/env bash
# Builds libgraph_attention.so for the Python package: the library and its C ABI (target _GraphAttentionCABI)
# with `swift build -c release`, then one shared object with the Swift runtime linked statically (SwiftPM
# applies -static-stdlib only to executables). Only the ga_* functions are exported; the .so needs no
# Swift toolchain at run time (checked below with readelf).
#
# Usage: scripts/build_python_library.sh OUTPUT.so     (run from anywhere; builds in the repository)
set -euo pipefail
output=$(realpath -m "${1:?usage: build_python_library.sh OUTPUT.so}")
cd "$(dirname "$0")/.."

swift build -c release --product GraphAttentionCABI >&2
bin=$(swift build -c release --show-bin-path)

# The objects, not the archive: the runtime's link arguments pass --exclude-libs ALL, which would hide
# every symbol that comes from a static archive, ga_* included.
# One object per source file that exists now: a build folder keeps the objects of files since moved or removed,
# and linking those would define their symbols twice.
objects=()
for target in _GraphAttentionCABI GraphAttention _GraphAttentionKernels _GraphAttentionSystem; do
  while IFS= read -r source; do
    objects+=("$bin/$target.build/$(basename "$source").o")
  done < <(find "Sources/$target" -name '*.swift' -o -name '*.c')
done

exports=$(mktemp)
trap 'rm -f "$exports"' EXIT
printf '{ global: ga_*; local: *; };\n' > "$exports"

mkdir -p "$(dirname "$output")"
swiftc -emit-library -static-stdlib -o "$output.tmp" "${objects[@]}" \
  -Xlinker --version-script="$exports" -Xlinker -s >&2
mv "$output.tmp" "$output"

if readelf -d "$output" | grep -E 'NEEDED.*(libswift|libdispatch|libBlocksRuntime|libFoundation)'; then
  echo "error: $output needs a Swift runtime library at run time" >&2
  exit 1
fi
echo "$output"
