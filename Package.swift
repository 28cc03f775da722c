// swift-tools-version: 6.0
import PackageDescription

let package = Package(
  name: "GraphAttention",
  products: [
    // MARK: - Public API
    .library(name: "GraphAttention", targets: ["GraphAttention"]),
    .executable(name: "graph-attention", targets: ["graph-attention"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
  ],
  targets: [
    // MARK: - Public API
    // Graphs, planning, CPU kernels, storage and the float64 reference. No unsafe compiler flags: a user's
    // `swift build -c release` must produce the fast code, and the package must stay usable as a dependency.
    .target(
      name: "GraphAttention",
      dependencies: ["_GraphAttentionKernels", "_GraphAttentionSystem"],
      path: "Sources/GraphAttention"
    ),
    .executableTarget(
      name: "graph-attention",
      dependencies: [
        "GraphAttention",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Sources/graph-attention"
    ),

    // MARK: - Implementation details
    // C micro-kernels: AVX-512, AVX2/FMA and portable, chosen at run time through function target attributes.
    // The `.inc` files are implementation units included by TileKernelAVX2.c, not compiled alone. No stable API.
    .target(
      name: "_GraphAttentionKernels",
      path: "Sources/_GraphAttentionKernels",
      exclude: ["README.md", "TileKernelAVX2Rows.inc", "TileKernelAVX2Lanes.inc"]
    ),
    // System calls Swift's Glibc module does not expose (fallocate, sync_file_range) and the SIGBUS guard of
    // memory-mapped files: the operating system's side, apart from the kernels. No stable API.
    .target(
      name: "_GraphAttentionSystem",
      path: "Sources/_GraphAttentionSystem"
    ),

    // MARK: - Tests
    .testTarget(
      name: "GraphAttentionTests",
      dependencies: ["GraphAttention"],
      path: "Tests/GraphAttentionTests"
    ),
  ]
)

// MARK: - C ABI for Python
// `ga_*` C functions over the library for the Python package (python/). A static library product: SwiftPM
// links the Swift runtime statically only into executables, so scripts/build_python_library.sh links the
// .so itself with `swiftc -emit-library -static-stdlib`. No stable API beyond the C functions.
package.products.append(.library(name: "GraphAttentionCABI", type: .static, targets: ["_GraphAttentionCABI"]))
package.targets.append(.target(
  name: "_GraphAttentionCABI",
  dependencies: ["GraphAttention"],
  path: "Sources/_GraphAttentionCABI",
  exclude: ["README.md", "graph_attention.h"]
))
