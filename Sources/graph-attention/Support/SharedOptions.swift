import Foundation
import ArgumentParser
import GraphAttention

extension EmptyRowPolicy: ExpressibleByArgument {}
extension CPUKernel: ExpressibleByArgument {}

/// `--device`: where attention runs.
enum DeviceKind: String, ExpressibleByArgument, CaseIterable {
  case cpu
  case cuda
}

/// Options shared by the commands that compute attention.
/// `--threads`, declared once for every command that runs work on the engine's worker threads.
struct ThreadOption: ParsableArguments {
  @Option(parsing: .unconditional, help: "Worker threads (default: every processor).")
  var threads: Int?

  /// The threads to use: the option, or every online processor.
  var count: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }

  func validate() throws {
    if let threads, threads < 1 || threads > 4096 {
      throw ValidationError("--threads must be between 1 and 4096, got \(threads).")
    }
  }
}

struct ComputeOptions: ParsableArguments {
  @Option(help: "Output of rows with no edges: zero or nan.")
  var emptyRows: EmptyRowPolicy = .zero

  @Option(parsing: .unconditional, help: "Factor on q.k before the softmax (default 1/sqrt(d_k)); may be negative.")
  var scale: Float?

  @OptionGroup var threadOption: ThreadOption
  var threads: Int? { threadOption.threads }

  @Option(help: "CPU kernel: automatic (GRAPH_ATTENTION_KERNEL, else the widest this CPU runs), portable, avx2 or avx512.")
  var kernel: CPUKernel = .automatic

  @Option(help: "Where attention runs: cpu, or cuda (an NVIDIA GPU; needs the driver and NVRTC, loaded at run time).")
  var device: DeviceKind = .cpu

  @Option(parsing: .unconditional, help: "With --device cuda: the GPU ordinal.")
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
    if let scale, !scale.isFinite {
      throw ValidationError("--scale must be a finite number, got \(scale).")
    }
  }

  func attentionOptions(progress: (@Sendable (Double) -> Void)? = nil) -> AttentionOptions {
    AttentionOptions(scale: scale, emptyRows: emptyRows, threads: threads, progress: progress, kernel: kernel,
                     device: attentionDevice)
  }
}

/// `--tokens`, `--heads`, `--dim`: the extents of Q, K and V ([H, L, d]), declared once for the commands
/// that make or size tensors (generate, verify, inspect, time).
///
/// Numeric options here and elsewhere parse `.unconditional`ly, so a negative value after the option
/// (`--tokens -1`) reaches validation and gets a range message instead of "Missing value".
struct ShapeOptions: ParsableArguments {
  @Option(parsing: .unconditional, help: "Tokens L (the sequence length).")
  var tokens: Int

  @Option(parsing: .unconditional, help: "Heads H.")
  var heads: Int = 1

  @Option(parsing: .unconditional, help: "Head dimension d (d_k = d_v).")
  var dim: Int = 64

  /// Limits every command shares (64-bit offsets hold 2^40 tokens of 2^20 dimensions); commands with
  /// tighter limits check those in their own `validate()`.
  static let maximumTokens = 1 << 40
  static let maximumHeads = 1 << 20
  static let maximumDim = 1 << 20

  func validate() throws {
    try requirePositive(tokens, "tokens", max: Self.maximumTokens)
    try requirePositive(heads, "heads", max: Self.maximumHeads)
    try requirePositive(dim, "dim", max: Self.maximumDim)
  }
}

/// `--mask`, declared once for the commands that compute over a graph (verify, inspect, time).
struct MaskOptions: ParsableArguments {
  @Option(help: "Mask specification, e.g. window:256+global:0 (see graph-attention --help for the grammar).")
  var mask: String
}

/// `--mask` or `--mask-file`, declared once for the commands that take one graph per query head (run, verify,
/// grad): exactly one of a specification for every head, or a file of one specification a line, one line per
/// query head (blank lines and `#` comments skipped).
struct HeadMaskOptions: ParsableArguments {
  @Option(help: "Mask specification (one graph for every head), e.g. window:256+global:0.")
  var mask: String?

  @Option(name: .customLong("mask-file"), help: "A file of mask specifications, one a line, one line per query head (per-head graphs).")
  var maskFile: String?

  func validate() throws {
    guard (mask == nil) != (maskFile == nil) else { throw ValidationError("Pass exactly one of --mask and --mask-file.") }
  }

  /// `--mask-file`'s graphs, one per query head and each specialised for its head (`Graph.forHead`), or nil
  /// with `--mask`. Explicit graphs are checked against `queryCount` and `keyCount` while loading when given.
  func headGraphs(heads: Int, queryCount: Int? = nil, keyCount: Int? = nil) throws -> [Graph]? {
    guard let maskFile else { return nil }
    guard let text = try? String(contentsOfFile: maskFile, encoding: .utf8) else {
      throw GraphAttentionError(.file, "cannot read the mask file \(maskFile)", fix: "pass a readable text file, one mask a line")
    }
    return try Graph.perHead(parsing: text, heads: heads, queryCount: queryCount, keyCount: keyCount)
  }

  /// How output lines name the mask: its canonical description, or the file and its number of graphs.
  func described(_ graph: Graph, heads: Int) -> String {
    maskFile.map { "mask file \($0) (\(heads) graphs)" } ?? graph.description
  }
}

/// The query heads `H` of a tensor shape `[L, d]`, `[H, L, d]` or `[B, H, L, d]` (1 for rank 2).
func queryHeads(of shape: [Int]) -> Int {
  shape.count >= 3 ? shape[shape.count - 3] : 1
}

/// A command with the shared `ShapeOptions` group: reads its extents by their option names.
protocol ShapedCommand {
  var shape: ShapeOptions { get }
}

extension ShapedCommand {
  var tokens: Int { shape.tokens }
  var heads: Int { shape.heads }
  var dim: Int { shape.dim }
}

/// A command with the shared `MaskOptions` group too.
protocol MaskedCommand: ShapedCommand {
  var maskOptions: MaskOptions { get }
}

extension MaskedCommand {
  var mask: String { maskOptions.mask }
}

/// The options given more than once that would silently keep only the last value (`--mask a --mask b`),
/// before `--` ends the options. `GraphAttentionCommand.main` refuses them.
func repeatedSingleValueOptions(in arguments: [String], options: [String] = ["--mask"]) -> [(option: String, values: [String])] {
  var seen: [String: [String]] = [:]
  var index = 0
  while index < arguments.count, arguments[index] != "--" {
    let argument = arguments[index]
    for option in options {
      if argument == option, index + 1 < arguments.count {
        seen[option, default: []].append(arguments[index + 1])
      } else if argument.hasPrefix(option + "=") {
        seen[option, default: []].append(String(argument.dropFirst(option.count + 1)))
      }
    }
    index += 1
  }
  return options.compactMap { option in seen[option].flatMap { $0.count > 1 ? (option, $0) : nil } }
}

/// The value of the last `option VALUE` or `option=VALUE` before `--`, or nil.
func optionValue(_ option: String, in arguments: [String]) -> String? {
  var found: String?
  var index = 0
  while index < arguments.count, arguments[index] != "--" {
    if arguments[index] == option, index + 1 < arguments.count {
      found = arguments[index + 1]
    } else if arguments[index].hasPrefix(option + "=") {
      found = String(arguments[index].dropFirst(option.count + 1))
    }
    index += 1
  }
  return found
}

/// `run`'s tensor-name options given for a `.npy` input, which holds one unnamed array: the name would
/// be ignored, so say so (e.g. "--query-name x applies to .safetensors inputs, but --query q.npy is a .npy file").
func ignoredTensorNames(in arguments: [String]) -> String? {
  for tensor in ["query", "key", "value"] {
    guard let name = optionValue("--\(tensor)-name", in: arguments),
          let path = optionValue("--\(tensor)", in: arguments), path.lowercased().hasSuffix(".npy") else { continue }
    return "--\(tensor)-name \(name) names a tensor inside a .safetensors file, but --\(tensor) \(path) is a .npy file "
      + "(one unnamed array), so the name would be ignored. Drop --\(tensor)-name, or pass the .safetensors file."
  }
  return nil
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
