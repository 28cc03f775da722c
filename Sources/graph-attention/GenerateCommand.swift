import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention generate`: seeded random Q, K, V written straight into memory-mapped files.
struct GenerateCommand: ParsableCommand, ShapedCommand {
  static let configuration = CommandConfiguration(
    commandName: "generate",
    abstract: "Write seeded random Q, K, V (.npy or .safetensors) of any size in constant memory.",
    discussion: """
      Shapes are [H, L, d], or [B, H, L, d] with --batch. Values are uniform in [-1, 1], exactly those of \
      Tensor.random and RandomTensorGenerator: Q uses seed S, K S+1, V S+2 (the inputs `verify --seed S` \
      uses), rounded to nearest even for f16 and bf16. Any element can be recomputed alone, so sampled rows \
      of a run can be checked without reading the files.

      --output DIR writes DIR/q.npy, DIR/k.npy, DIR/v.npy (DIR is created, with its parents, if missing), or \
      q.safetensors, k.safetensors, v.safetensors (one tensor each, named q, k, v) with --format safetensors, \
      the default for bf16, which .npy cannot hold. --output FILE.safetensors writes one file with tensors \
      q, k and v. Free disk space is checked before anything is created; files are written in 64 MiB chunks \
      on all cores through the mapping, dropping pages behind, and appear (atomically, replacing older \
      ones) only when all three are complete.
      """
  )

  /// File format for `--output DIR`.
  enum Format: String, ExpressibleByArgument, CaseIterable {
    case npy, safetensors
  }

  @OptionGroup var shape: ShapeOptions
  @Option(help: "Element type: f32, f16 or bf16.") var dtype: StorageType = .float32
  @Option(parsing: .unconditional, help: "Seed S: Q uses S, K S+1, V S+2 (independent streams).") var seed: UInt64 = 1
  @Option(help: "A directory for q, k, v files, or FILE.safetensors for one file holding q, k and v.") var output: String
  @Option(parsing: .unconditional, help: "Batch B: shapes [B, H, L, d] instead of [H, L, d].") var batch: Int?
  @Option(help: "Format of the files in a directory: npy or safetensors (default: npy; safetensors for bf16).")
  var format: Format?
  @OptionGroup var threadOption: ThreadOption
  var threads: Int? { threadOption.threads }
  @Flag(help: "Print one JSON object (files, shape, dtype, seed, bytes, seconds).") var json = false

  func validate() throws {
    if let batch { try requirePositive(batch, "batch", max: 1 << 20) }
    if dtype == .bfloat16 && format == .npy {
      throw ValidationError("--dtype bf16 cannot be written as .npy (numpy has no bfloat16); use --format safetensors.")
    }
  }

  func run() throws {
    let shape = (batch.map { [$0] } ?? []) + [heads, tokens, dim]
    guard let elements = shape.reduce(Optional(1), { total, extent in
      total.flatMap { t in t.multipliedReportingOverflow(by: extent).overflow ? nil : t * extent }
    }), !elements.multipliedReportingOverflow(by: 3 * dtype.byteCount).overflow else {
      throw GraphAttentionError(.shape, "shape \(shape) is too large to address with 64-bit offsets", fix: "use fewer tokens, heads or a smaller dim")
    }
    let tensorBytes = elements * dtype.byteCount

    // Where the tensors go: one .safetensors file, or three files in a directory ("dir/" names "dir").
    var output = self.output
    while output.count > 1, output.hasSuffix("/") { output.removeLast() }
    let lower = output.lowercased()
    let names = ["q", "k", "v"]
    let files: [(path: String, tensors: [String])]
    let directory: String
    var makeDirectory = false
    if lower.hasSuffix(".safetensors") {
      files = [(output, names)]
      directory = try AtomicFile.directory(of: output)
    } else if lower.hasSuffix(".npy") {
      throw GraphAttentionError(.option, "--output \(output) names one .npy file, but Q, K and V are three tensors",
                                fix: "give a directory (q.npy, k.npy, v.npy are written inside) or FILE.safetensors")
    } else {
      let fileFormat = format ?? (dtype == .bfloat16 ? .safetensors : .npy)
      files = names.map { ((output == "/" ? "" : output) + "/\($0).\(fileFormat.rawValue)", [$0]) }
      try AtomicFile.checkDirectoryDestination(output, option: "--output")
      directory = output
      makeDirectory = true
    }
    if let format, files.count == 1, format == .npy {
      throw ValidationError("--format npy does not apply to a .safetensors --output.")
    }

    // The file's directory must exist and be writable (a directory output was checked above).
    if !makeDirectory { try checkOutputWritable(files[0].path) }

    // Space for all three tensors (and headers), before anything is created.
    let totalBytes = 3 * tensorBytes
    try DiskSpace.require(totalBytes + 3 * 4096, at: try AtomicFile.nearestExisting(directory),
                          for: "q, k and v (3 x \(Console.format(bytes: Double(tensorBytes))))",
                          advice: "or use a smaller shape or a 16-bit --dtype")
    if makeDirectory { try AtomicFile.createDirectory(output, option: "--output") }

    if !json {
      Console.note("generate: q, k, v of shape \(shape), \(dtype.shortName), seed \(seed) -> "
        + files.map(\.path).joined(separator: ", ") + " (\(Console.format(bytes: Double(totalBytes))))")
    }
    let progress = json ? nil : TransferProgress("generate", totalBytes: totalBytes)
    let start = monotonicSeconds()
    let outputs = try files.map { file in
      try TensorFile.create(file.path, tensors: file.tensors.map { TensorFile.Entry(name: $0, shape: shape, type: dtype) })
    }
    for output in outputs {
      for (name, view) in zip(output.names, output.views) {
        let stream = names.firstIndex(of: name) ?? 0
        RandomTensorGenerator(seed: seed, stream: stream).fill(view, threads: threads) { done in
          progress?.update(part: stream, doneBytes: done * dtype.byteCount)
        }
      }
    }
    // Commit only once every tensor is complete, so a failure leaves all previous files as they were.
    for output in outputs { try output.commit() }
    let seconds = monotonicSeconds() - start

    if json {
      print("{\"files\":[" + files.map { jsonQuoted($0.path) }.joined(separator: ",") + "],"
        + "\"tensors\":[\"q\",\"k\",\"v\"],\"shape\":[" + shape.map(String.init).joined(separator: ",") + "],"
        + "\"dtype\":\(jsonQuoted(dtype.shortName)),\"seed\":\(seed),\"seeds\":[\(seed),\(seed &+ 1),\(seed &+ 2)],"
        + "\"bytes\":\(totalBytes),\"seconds\":\(seconds)}")
    } else {
      print("wrote \(files.map(\.path).joined(separator: ", ")): q, k, v of shape \(shape) \(dtype.shortName), seeds "
        + "\(seed), \(seed &+ 1), \(seed &+ 2); \(Console.format(bytes: Double(totalBytes))) in \(Console.format(seconds: seconds))"
        + " (\(Console.format(bytes: Double(totalBytes) / max(seconds, 1e-9)))/s)")
    }
  }
}
