import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention run`: a thin shell over `StreamingAttention`, which streams the files in row chunks
/// into a memory-mapped output, resumable and interruptible.
struct RunCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run",
    abstract: "Compute attention of Q, K, V (.npy or .safetensors; fp32, fp16 or bf16) over a mask and write O.",
    discussion: """
      Q is [L_q, d_k], [H, L_q, d_k] or [B, H, L_q, d_k]; K and V have the same rank, H_kv heads dividing H \
      (grouped-query attention), L_k tokens, and V's last dimension d_v. O has Q's leading shape and d_v. \
      Inputs are memory-mapped and never loaded whole; query rows are processed in chunks and the pages behind \
      each chunk are released, so the context is bounded by disk, not memory. Q, K and V are scanned for NaN \
      and infinity first, and O's disk blocks are reserved, so neither a bad value nor a full disk is found \
      late. O is written into a temporary file beside --output and renamed at the end: a failed run leaves an \
      existing file as it was. One run at a time may write an output (a second is refused while the first \
      holds the lock .<name>.lock). Ctrl-C stops after the current chunk; a progress record beside the output \
      lets `--resume` continue an interrupted or killed run, giving the same bytes as an uninterrupted one.
      """
  )

  @Option(help: "Query tensor (.npy or .safetensors).") var query: String
  @Option(help: "Key tensor (.npy or .safetensors).") var key: String
  @Option(help: "Value tensor (.npy or .safetensors).") var value: String
  @OptionGroup var masks: HeadMaskOptions
  @Option(help: "Output tensor (.npy, or .safetensors for bf16).") var output: String
  @Option(help: "Tensor name of the query inside a .safetensors input.") var queryName = "q"
  @Option(help: "Tensor name of the key inside a .safetensors input.") var keyName = "k"
  @Option(help: "Tensor name of the value inside a .safetensors input.") var valueName = "v"
  @Option(help: "Output storage type: f32, f16 or bf16.") var outputDtype = "f32"
  @Option(parsing: .unconditional, help: "Query rows per chunk (default: about 2^26 edges per chunk, as `plan` shows).") var chunkRows: Int?
  @Option(parsing: .unconditional, help: "After the run, check this many sampled rows (at most L_q) against the float64 reference.") var checkRows = 0
  @Flag(help: "Continue an interrupted run from its progress record.") var resume = false
  @Flag(help: "Copy the inputs into memory first (to compare streaming with in-memory runs).") var inMemory = false
  @Option(help: ArgumentHelp("How far keys (random, explicit edges) are read: read (pread, bounded memory) or mapped.",
                             discussion: "mapped is faster while K and V fit in memory; read keeps them out of the resident set."))
  var scatteredKeys = "read"
  @Option(parsing: .unconditional, help: "Seconds between checkpoints (output synced, progress record written); 0 = after every chunk.")
  var checkpointSeconds = 2.0
  @Option(parsing: .unconditional, help: "When stderr is not a terminal: seconds between plain progress lines (rows, rate, ETA).")
  var progressSeconds = 10.0
  @OptionGroup var compute: ComputeOptions
  @OptionGroup var modifiers: ScoreModifierOptions
  @Flag(help: "Print one JSON object with edges, seconds (attention only), gflops and peak_resident_bytes (VmHWM).")
  var json = false
  @Option(help: "Also write each row's log-sum-exp (fp32 .npy, Q's shape without d; -inf for empty rows), for `grad --lse`.")
  var saveLse: String?


  func validate() throws {
    guard StorageType(parsing: outputDtype) != nil else {
      throw ValidationError("--output-dtype must be f32, f16 or bf16, got '\(outputDtype)'.")
    }
    guard ScatteredKeyAccess(rawValue: scatteredKeys) != nil else {
      throw ValidationError("--scattered-keys must be read or mapped, got '\(scatteredKeys)'.")
    }
    if let chunkRows { try requirePositive(chunkRows, "chunk-rows") }
    guard checkRows >= 0 else { throw ValidationError("--check-rows must be >= 0.") }
    guard checkpointSeconds >= 0, checkpointSeconds.isFinite else { throw ValidationError("--checkpoint-seconds must be >= 0.") }
    if saveLse != nil, resume { throw ValidationError("--save-lse cannot be combined with --resume; rerun from the start.") }
    guard progressSeconds >= 0, progressSeconds.isFinite else { throw ValidationError("--progress-seconds must be >= 0.") }
  }

  func run() throws {
    // The query's header is read here once, for what needs its heads before the job: --mask-file's graphs (read
    // once, their union sizing chunks and page release) and the per-head modifier files.
    let needsHeads = masks.maskFile != nil || !modifiers.isEmpty
    let heads = needsHeads ? queryHeads(of: try TensorFile.open(query, name: queryName).shape) : 0
    let headGraphs = try masks.maskFile == nil ? nil : masks.headGraphs(heads: heads)
    let graph = try masks.mask.map { try Graph(parsing: $0) } ?? Graph.union(headGraphs!)
    var job = StreamingAttention(query: .init(path: query, name: queryName), key: .init(path: key, name: keyName),
                                 value: .init(path: value, name: valueName), graph: graph, output: output)
    job.headGraphs = headGraphs
    job.outputType = StorageType(parsing: outputDtype)!
    job.options = compute.attentionOptions()
    if !modifiers.isEmpty { job.options = try modifiers.applied(to: job.options, queryHeads: heads) }
    job.chunkRows = chunkRows
    job.scatteredKeys = ScatteredKeyAccess(rawValue: scatteredKeys)!
    job.checkpointSeconds = checkpointSeconds
    job.checkRows = checkRows
    job.inMemory = inMemory
    job.device = compute.attentionDevice
    job.logSumExpOutput = saveLse
    Interrupt.install()
    let report = json ? nil : Console.rowProgress("attention", lineSeconds: progressSeconds)
    let result = try job.run(resume: resume, progress: { report?($0) }, isCancelled: { Interrupt.requested })
    guard result.isComplete else {
      Console.note("interrupted at row \(result.completedRows) of \(result.shape.queryCount); rerun the same command with --resume to continue")
      throw ExitCode(130)
    }
    if let check = result.check {
      Console.note(String(format: "check: max relative error %.2e over %d sampled rows vs float64 (PASS, tolerance %.0e for %@ output)",
                          check.worstRelativeError, check.rows, check.tolerance, result.outputType.rawValue))
    }
    let flops = result.shape.usefulFlops(edges: result.edges)
    if json {
      print(Console.json([
        "edges": result.edges, "edges_all_heads": result.edgesAllHeads, "seconds": result.attentionSeconds,
        "first_row": result.firstRow, "wall_seconds": result.wallSeconds, "gflops": flops / result.attentionSeconds / 1e9,
        "output_shape": result.shape.outputShape, "mask": job.graph.description, "chunk_rows": result.chunkRows,
        "peak_resident_bytes": Int(PeakMemory.current() ?? 0),
      ]))
    } else {
      print("wrote \(output) \(result.shape.outputShape) \(result.outputType.rawValue): \(result.edges) edges per head"
        + (result.firstRow > 0 ? " (rows \(result.firstRow)..<\(result.shape.queryCount), resumed)" : "") + ", attention "
        + "\(Console.format(seconds: result.attentionSeconds)) of \(Console.format(seconds: result.wallSeconds)), "
        + "\(String(format: "%.2f", flops / result.attentionSeconds / 1e9)) useful GFLOP/s")
    }
  }
}
