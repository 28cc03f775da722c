import Foundation
import ArgumentParser
import GraphAttention

extension EmptyRowPolicy: ExpressibleByArgument {}

/// `--device`: where attention runs.
enum DeviceKind: String, ExpressibleByArgument, CaseIterable {
  case cpu
  case cuda
}

/// Options shared by the commands that compute attention.
struct ComputeOptions: ParsableArguments {
  @Option(help: "Output of rows with no edges: zero or nan.")
  var emptyRows: EmptyRowPolicy = .zero

  @Option(help: "Factor on q.k before the softmax (default 1/sqrt(d_k)).")
  var scale: Float?

  @Option(help: "Worker threads (default: every processor).")
  var threads: Int?

  @Option(help: "Where attention runs: cpu, or cuda (an NVIDIA GPU; needs the driver and NVRTC, loaded at run time).")
  var device: DeviceKind = .cpu

  @Option(help: "With --device cuda: the GPU ordinal.")
  var cudaDevice: Int = 0

  @Option(help: "With --device cuda: how Q, K, V are stored on the GPU, f32, f16 or bf16 (fp32, fp16 also accepted; arithmetic is fp32).")
  var storage: StorageType = .float32

  @Flag(inversion: .prefixedNo, help: "With --device cuda and fp16/bf16 storage: tensor cores for the contiguous part of the mask.")
  var tensorCores = true

  /// The device the options select.
  var attentionDevice: AttentionDevice {
    device == .cpu ? .cpu : .cuda(ordinal: cudaDevice, storage: storage, tensorCores: tensorCores)
  }

  func validate() throws {
    if device == .cpu, storage != .float32 {
      throw ValidationError("--storage \(storage.shortName) applies to --device cuda; the CPU engine computes from f32 inputs.")
    }
    if cudaDevice < 0 {
      throw ValidationError("--cuda-device must be >= 0, got \(cudaDevice).")
    }
    if let threads, threads < 1 || threads > 4096 {
      throw ValidationError("--threads must be between 1 and 4096, got \(threads).")
    }
    if let scale, !scale.isFinite {
      throw ValidationError("--scale must be a finite number, got \(scale).")
    }
  }

  func attentionOptions(progress: (@Sendable (Double) -> Void)? = nil) -> AttentionOptions {
    AttentionOptions(scale: scale, emptyRows: emptyRows, threads: threads, progress: progress)
  }
}

/// Checks a token or dimension count given on the command line.
func requirePositive(_ value: Int, _ name: String, max: Int = 1 << 40) throws {
  guard value >= 1, value <= max else {
    throw ValidationError("--\(name) must be between 1 and \(max), got \(value).")
  }
}

/// Fails early, before any work, if `path` cannot be written (the library's checks, as every output makes them).
func checkOutputWritable(_ path: String) throws {
  try AtomicFile.checkDestination(path)
}

/// Writes a graph's edges as an int64 `[E, 2]` (row, column) .npy file, row by row (for cross-checks).
/// - Complexity: O(edges) time and memory (16 bytes per edge).
func writeEdges(of graph: Graph, queryCount: Int, keyCount: Int, edges: Int, to path: String) throws {
  var pairs: [Int64] = []
  pairs.reserveCapacity(2 * edges)
  var scratch = RowScratch()
  for row in 0..<queryCount {
    graph.neighbourhood(row: row, queryCount: queryCount, keyCount: keyCount, into: &scratch)
    for run in scratch.runs {
      var key = run.start
      for _ in 0..<run.count { pairs.append(Int64(row)); pairs.append(Int64(key)); key += run.stride }
    }
  }
  try NPYWriter.write(pairs, shape: [pairs.count / 2, 2], to: path)
}
