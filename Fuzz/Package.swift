// swift-tools-version: 6.0
// Fuzz targets for GraphAttention's input parsers, apart from the main package so users' builds stay plain.
// Build and run: `scripts/run_fuzzers.sh SECONDS` (libFuzzer + AddressSanitizer, from the Swift toolchain).
import PackageDescription

let package = Package(
  name: "GraphAttentionFuzz",
  dependencies: [
    .package(name: "GraphAttention", path: ".."),
  ],
  targets: [
    // One executable, five targets: `graph-attention-fuzz TARGET [libFuzzer options] [CORPUS...]`.
    .executableTarget(
      name: "graph-attention-fuzz",
      dependencies: [.product(name: "GraphAttention", package: "GraphAttention"), "_FuzzShims"],
      path: "Sources/GraphAttentionFuzz"
    ),
    // The libFuzzer driver's C declaration. No stable API.
    .target(name: "_FuzzShims", path: "Sources/_FuzzShims"),
  ]
)
