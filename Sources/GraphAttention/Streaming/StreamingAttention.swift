#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Attention of tensors in files, streamed through memory maps in row chunks into a memory-mapped output
/// file: the context is bounded by disk, not memory. Resumable, cancellable, and safe against a second
/// job on the same output.
///
/// What a run does, in order:
/// 1. opens Q, K and V (`.npy` or `.safetensors`, fp32/fp16/bf16) as mappings and validates shapes and graph;
/// 2. refuses an output that is one of the inputs (same device and inode), takes an exclusive lock on the
///    output (`.<name>.lock`, held until the run returns), and scans Q, K and V for NaN and infinity
///    (one pass, pages dropped behind: cheap next to the attention);
/// 3. creates the output at a temporary path with its disk blocks reserved (a full disk fails here, before
///    any work), or reopens it from the progress record with `resume`;
/// 4. computes chunks of rows of every head (`StreamingChunkPolicy`), asking the kernel to read each chunk's
///    rows ahead and releasing the pages behind it (dirty output pages are written back first), so the
///    resident set stays bounded (about 512 MiB for implicit graphs at any length);
/// 5. every `checkpointSeconds` syncs the output and writes the progress record (`ProgressRecord`);
/// 6. checks `checkRows` sampled rows against the float64 reference, then renames the output into place.
///
/// A failure leaves an existing output as it was and removes the temporary file and record; a
/// cancellation (`isCancelled`), a kill, or a mapped file truncated under the run (SIGBUS, turned into an
/// error naming the file) keep both, and `run(resume: true)` continues to the same bytes.
///
/// ```swift
/// var job = StreamingAttention(query: "q.npy", key: "k.npy", value: "v.npy",
///                              graph: try Graph(parsing: "window:256+global:0"), output: "o.npy")
/// job.outputType = .float16
/// let result = try job.run(progress: { print($0.completedRows, "of", $0.totalRows) })
/// print(result.edges, "edges per head in", result.attentionSeconds, "s")
/// ```
///
/// - Complexity: O(edges · (d_k + d_v)) per head, plus one O(inputs) scan; memory O(chunk) for implicit graphs.
public struct StreamingAttention: Sendable {
  /// A tensor in a file: a `.npy` file, or one tensor of a `.safetensors` file.
  public struct Source: Sendable, Equatable {
    /// The file.
    public var path: String
    /// The tensor's name in a `.safetensors` file (nil: the only one); ignored for `.npy`.
    public var name: String?

    /// Names a tensor in a file.
    public init(path: String, name: String? = nil) {
      self.path = path
      self.name = name
    }
  }

  /// How far a run has got, reported after every chunk.
  public struct Progress: Sendable, Equatable {
    /// Query rows (of every head) finished, including those of an earlier, resumed run.
    public var completedRows: Int
    /// `L_q`.
    public var totalRows: Int
    /// The row this invocation started at (non-zero when resumed).
    public var firstRow: Int
    /// Seconds since this invocation started.
    public var seconds: Double

    /// Rows per second computed by this invocation.
    public var rowsPerSecond: Double { seconds > 0 ? Double(completedRows - firstRow) / seconds : 0 }
    /// Seconds left at the current rate (0 when unknown).
    public var estimatedSecondsLeft: Double {
      rowsPerSecond > 0 ? Double(totalRows - completedRows) / rowsPerSecond : 0
    }
    /// `completedRows / totalRows`.
    public var fraction: Double { totalRows > 0 ? Double(completedRows) / Double(totalRows) : 1 }
  }

  /// The sampled-row check of `checkRows`.
  public struct Check: Sendable, Equatable {
    /// Rows checked (at most `L_q`).
    public var rows: Int
    /// The largest relative error against the float64 reference.
    public var worstRelativeError: Double
    /// The bound it had to meet for the output type (1e-5 fp32, 1e-3 fp16, 8e-3 bf16).
    public var tolerance: Double
  }

  /// What a run did.
  public struct Result: Sendable, Equatable {
    /// The attention shape.
    public var shape: AttentionShape
    /// The output's path (as given).
    public var output: String
    /// The output's storage type.
    public var outputType: StorageType
    /// The row this invocation started at (non-zero when resumed).
    public var firstRow: Int
    /// Rows done when it returned: `shape.queryCount` when complete.
    public var completedRows: Int
    /// Whether every row was computed and the output committed (false: cancelled, resumable).
    public var isComplete: Bool
    /// Edges of the rows this invocation computed, over every head.
    public var edgesAllHeads: Int
    /// `edgesAllHeads` per head.
    public var edges: Int { edgesAllHeads / max(1, shape.batch * shape.queryHeads) }
    /// Seconds spent in the attention kernels.
    public var attentionSeconds: Double
    /// Seconds of the whole invocation.
    public var wallSeconds: Double
    /// The sampled-row check, when `checkRows > 0` and the run completed.
    public var check: Check?
    /// Query rows per chunk used.
    public var chunkRows: Int
  }

  /// The query tensor `[L_q, d_k]`, `[H, L_q, d_k]` or `[B, H, L_q, d_k]`.
  public var query: Source
  /// The key tensor, `H_kv` heads dividing `H`.
  public var key: Source
  /// The value tensor.
  public var value: Source
  /// Which keys each query attends to.
  public var graph: Graph
  /// The output file (`.npy`, or `.safetensors` for any type); its directory must exist.
  public var output: String
  /// The output's storage type.
  public var outputType: StorageType = .float32
  /// The tensor name in a `.safetensors` output.
  public var outputName = "o"
  /// Scale, empty-row policy, threads, kernel. `checksFiniteInputs` scans Q, K and V before the work;
  /// `options.progress` is not used (pass `progress` to `run`).
  public var options = AttentionOptions()
  /// Query rows per chunk; nil: `StreamingChunkPolicy`'s choice (what `ContextPlan` predicts).
  public var chunkRows: Int?
  /// How far keys (random and explicit edges) are read: `.read` (positioned reads, bounded memory) or `.mapped`.
  public var scatteredKeys = ScatteredKeyAccess.read
  /// Seconds between checkpoints (output synced, progress record written); 0: after every chunk.
  public var checkpointSeconds = 2.0
  /// Sampled rows to check against the float64 reference before committing (capped at `L_q`).
  public var checkRows = 0
  /// Copy the inputs into memory first (to compare streaming with in-memory runs).
  public var inMemory = false
  /// Where the attention runs. `.cuda` is not streamed: the inputs are read into memory and computed in
  /// one call on the GPU (they must fit in host and device memory); without a driver the run fails first.
  public var device = AttentionDevice.cpu
  /// Also write each row's log-sum-exp here (fp32 `.npy` or `.safetensors`, the query's shape without its
  /// last dimension; `-inf` for empty rows), as `grad --lse` needs. Chunk by chunk beside the output,
  /// committed with it; such a job cannot be resumed (an interrupted one leaves no log-sum-exp).
  public var logSumExpOutput: String?
  /// One graph per query head (`Graph.perHead(parsing:heads:)`), or nil for `graph` on every head. With
  /// them, `graph` should be their union (`Graph.union(headGraphs)`): it sizes chunks and releases pages.
  /// Each chunk then runs head by head with all keys mapped (far keys are not read from the files);
  /// CPU only.
  public var headGraphs: [Graph]?

  /// A job computing `output` from tensors in files.
  public init(query: Source, key: Source, value: Source, graph: Graph, output: String) {
    self.query = query
    self.key = key
    self.value = value
    self.graph = graph
    self.output = output
  }

  /// A job computing `output` from `.npy` files (or single-tensor `.safetensors` files).
  public init(query: String, key: String, value: String, graph: Graph, output: String) {
    self.init(query: Source(path: query), key: Source(path: key), value: Source(path: value), graph: graph, output: output)
  }

  /// The sampled-row tolerance for an output type: fp32 rounding, or the storage type's.
  public static func tolerance(for type: StorageType) -> Double {
    type == .float32 ? 1e-5 : (type == .float16 ? 1e-3 : 8e-3)
  }

  /// Runs the job (or continues it with `resume`).
  ///
  /// - Parameters:
  ///   - resume: continue the interrupted job recorded beside the output (the record must describe the
  ///     same job: a refusal lists what changed). Without it, an existing record is refused, unless it
  ///     records this same job with every row done (then it is checked and committed).
  ///   - progress: called on the calling thread after every chunk.
  ///   - isCancelled: polled after every chunk; when true, the job checkpoints and returns with
  ///     `isComplete == false`, resumable.
  /// - Returns: what was done.
  /// - Throws: `GraphAttentionError`: `.file` for missing, malformed or truncated inputs, an output that
  ///   is an input, another job holding the output, a mapped file truncated during the run (naming it;
  ///   the record is kept for `resume`); `.value` for NaN or infinity in Q, K or V (before any work) or a
  ///   failed sampled check; `.resource` for a full disk (before any work); `.device` for `.cuda` without
  ///   a driver; `.option` for a refused resume; others as `attention`.
  public func run(resume: Bool = false, progress: ((Progress) -> Void)? = nil,
                  isCancelled: () -> Bool = { false }) throws -> Result {
    let start = monotonicSeconds()
    var (q, k, v) = (try TensorFile.open(query.path, name: query.name), try TensorFile.open(key.path, name: key.name),
                     try TensorFile.open(value.path, name: value.name))
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    try graph.validate(queryCount: shape.queryCount, keyCount: shape.keyCount)
    guard k.type == v.type else {
      throw GraphAttentionError(.dtype, "key is \(k.type.rawValue) but value is \(v.type.rawValue)",
                                fix: "store key and value in the same type")
    }
    if let headGraphs {
      guard headGraphs.count == shape.queryHeads else {
        throw GraphAttentionError(.mask, "\(headGraphs.count) graph(s) were given for \(shape.queryHeads) query head(s)",
                                  fix: "give exactly one graph per query head")
      }
      for graph in headGraphs { try graph.validate(queryCount: shape.queryCount, keyCount: shape.keyCount) }
      guard device == .cpu else {
        throw GraphAttentionError(.option, "per-head graphs run on the CPU", fix: "drop --device")
      }
    }
    if logSumExpOutput != nil, resume || device != .cpu {
      throw GraphAttentionError(.option, "the log-sum-exp is written only by a CPU run from the start",
                                fix: "drop --resume and --device, or the log-sum-exp output")
    }
    if case .cuda = device {
      try CUDARuntime.shared.locked { _ = try CUDARuntime.shared.loadDriver() }
    }
    // The output's path is split and checked here, once: every file beside it is named by `location`.
    let destination = try checkedOutput(notAmong: [(query.path, q), (key.path, k), (value.path, v)])
    let location = destination.location
    let lock = try OutputLock(location: location)
    defer { withExtendedLifetime(lock) {} }
    if options.checksFiniteInputs {
      // Before any work, so a NaN at the end of K does not cost the whole run (one pass, pages dropped behind).
      try q.requireFinite(name: "query")
      try k.requireFinite(name: "key")
      try v.requireFinite(name: "value")
    }
    if inMemory { (q, k, v) = (streamingHeapCopy(q), streamingHeapCopy(k), streamingHeapCopy(v)) }
    if case .cuda = device {
      return try runOnDevice(q, k, v, shape: shape, destination: destination, start: start)
    }

    let access = inMemory ? ScatteredKeyAccess.mapped : scatteredKeys
    let chunk = chunkRows ?? StreamingChunkPolicy.rows(shape: shape, graph: graph, queryBytes: q.type.byteCount,
                                                       keyBytes: k.type.byteCount, access: access, inMemory: inMemory)
    precondition(chunk > 0, "chunkRows must be positive")
    let scattered = graph.scatteredKeysPerRow(queryCount: shape.queryCount, keyCount: shape.keyCount) > 0
    if scattered && access == .mapped {
      // Read-ahead around each scattered key would page in whole files; the chunk's own span is asked for
      // explicitly instead (prefetch below).
      k.mappedFile?.adviseRandom()
      v.mappedFile?.adviseRandom()
    }

    let (out, firstRow, recordTemplate) = try openOutput(destination, shape: shape, chunk: chunk, resume: resume)
    var record = recordTemplate
    let lseFile: OutputTensorFile?
    do {
      lseFile = try logSumExpOutput.map { try TensorFile.create($0, shape: Array(q.shape.dropLast()), type: .float32, name: "lse") }
    } catch {
      out.abandon()
      ProgressRecord.remove(at: location)
      throw error
    }
    let pages = StreamingPages(query: q, key: k, value: v, output: out.view, shape: shape, graph: graph)
    let guardToken = MappedFaultGuard.watch([q.mappedFile, k.mappedFile, v.mappedFile, out.mapping].compactMap { $0 })
    defer { MappedFaultGuard.unwatch(guardToken) }

    var attentionSeconds = 0.0
    var edgesAllHeads = 0
    var row = firstRow
    var lastCheckpoint = monotonicSeconds()
    var cancelled = false
    do {
      let keysFinished: @Sendable (Int, Range<Int>) -> Void = { kvHead, span in pages.keysFinished(kvHead: kvHead, keys: span) }
      var chunkOptions = options
      chunkOptions.checksFiniteInputs = false  // scanned above, or the caller vouches for the files
      chunkOptions.assumesFiniteInputs = true
      chunkOptions.progress = nil
      // The call is checked and resolved once; each chunk only runs its rows.
      let sharedGraphCall = headGraphs != nil ? nil : try ViewAttention(
        query: q, key: k, value: v, output: out.view, graph: graph, options: chunkOptions,
        streaming: StreamingKeys(access: access, keysFinished: keysFinished), logSumExp: lseFile?.view)
      while row < shape.queryCount {
        let rows = row..<min(shape.queryCount, row + chunk)
        pages.prefetch(rows: rows)
        let chunkStart = monotonicSeconds()
        if let sharedGraphCall {
          edgesAllHeads += try sharedGraphCall.run(rows: rows).edges
        } else if let headGraphs {
          edgesAllHeads += try headwiseAttention(query: q, key: k, value: v, output: out.view, shape: shape, graphs: headGraphs,
                                                 options: chunkOptions, rows: rows, logSumExp: lseFile?.view).edges
        }
        attentionSeconds += monotonicSeconds() - chunkStart
        try MappedFaultGuard.check(guardToken)
        pages.release(done: rows)
        row = rows.upperBound
        cancelled = row < shape.queryCount && isCancelled()
        // Checkpoint every few seconds (not every chunk: small chunks would spend their time in fsync):
        // the output's pages first, then the record that vouches for them.
        if monotonicSeconds() - lastCheckpoint >= checkpointSeconds || row == shape.queryCount || cancelled {
          try out.mapping.sync()
          try MappedFaultGuard.check(guardToken)
          record.completedRows = row
          try record.save(at: location)
          lastCheckpoint = monotonicSeconds()
        }
        progress?(Progress(completedRows: row, totalRows: shape.queryCount, firstRow: firstRow, seconds: monotonicSeconds() - start))
        if cancelled { break }
      }
      var check: Check?
      if !cancelled {
        if checkRows > 0 { check = try checkSampledRows(q, k, v, out.view, shape: shape) }
        try MappedFaultGuard.check(guardToken)
        try lseFile?.commit()
        try out.commit()
        ProgressRecord.remove(at: location)
      } else {
        lseFile?.abandon()
      }
      return Result(shape: shape, output: output, outputType: outputType, firstRow: firstRow, completedRows: row,
                    isComplete: !cancelled, edgesAllHeads: edgesAllHeads, attentionSeconds: attentionSeconds,
                    wallSeconds: monotonicSeconds() - start, check: check, chunkRows: chunk)
    } catch let error as MappedFaultGuard.Fault {
      // A file changed under the run: what the record vouches for is on disk, so it stays for resume.
      lseFile?.abandon()
      throw error.error(resumable: location.progressRecordPath)
    } catch {
      // A real failure: nothing of this run may remain, and an existing output stays as it was.
      lseFile?.abandon()
      out.abandon()
      ProgressRecord.remove(at: location)
      throw error
    }
  }

  // MARK: - Steps

  /// `output`, checked: a known extension, an existing writable directory, not a directory itself, and not
  /// the same file (device and inode) as one of the inputs, under any path.
  private func checkedOutput(notAmong inputs: [(String, TensorView)]) throws -> CheckedOutputPath {
    let destination = try OutputPath(output).checked()
    var target = stat()
    let exists = stat(output, &target) == 0
    _ = try TensorFileFormat(path: output)
    guard exists else { return destination }
    for (path, view) in inputs {
      guard let file = view.mappedFile else { continue }
      var info = stat()
      if fstat(file.descriptor, &info) == 0, info.st_dev == target.st_dev, info.st_ino == target.st_ino {
        throw GraphAttentionError(.file, "the output \(output) is the input \(path) (the same file): writing it would replace the input",
                                  fix: "choose another --output")
      }
    }
    return destination
  }

  /// The output to write (created, or reopened for resume), the first row to compute and the job's record.
  private func openOutput(_ destination: CheckedOutputPath, shape: AttentionShape, chunk: Int,
                          resume: Bool) throws -> (OutputTensorFile, Int, ProgressRecord) {
    let location = destination.location
    var record = ProgressRecord(output: output, mask: headGraphs.map { $0.map(\.description).joined(separator: " | ") } ?? graph.description,
                                inputs: [(query.path, query.name ?? ""), (key.path, key.name ?? ""), (value.path, value.name ?? "")],
                                outputType: outputType.rawValue, chunkRows: chunk, scale: options.scale,
                                emptyRows: options.emptyRows.rawValue, tokens: shape.queryCount,
                                scoreModifiers: options.scoreModifierDescription)
    let recordPath = location.progressRecordPath
    let existing = try ProgressRecord.load(at: location)
    if let existing {
      // Without --resume, a record of this very job with every row done (killed during the check or
      // commit) is finished rather than refused; anything else needs a decision.
      let finished = existing.completedRows >= shape.queryCount && existing.differences(from: record).isEmpty
      guard resume || finished else {
        throw GraphAttentionError(.option, "an interrupted run left \(recordPath) (\(existing.completedRows) of \(existing.tokens) rows done)",
                                  fix: "add --resume to continue it, or delete that file (and \(existing.temporaryPath ?? location.partialPath)) to start over")
      }
      try existing.requireSameJob(as: record, recordPath: recordPath)
      let temporary = existing.temporaryPath ?? location.partialPath
      let out: OutputTensorFile
      do {
        out = try TensorFile.reopenForResume(temporaryPath: temporary, shape: shape.outputShape, type: outputType,
                                             name: outputName, path: output)
      } catch let error as GraphAttentionError {
        var info = stat()
        let missing = stat(temporary, &info) != 0
        throw GraphAttentionError(
          .file, "cannot resume: the partial output \(temporary) of the interrupted run "
            + (missing ? "is missing (deleted?)" : "is damaged or truncated (\(error.problem))"),
          fix: "delete \(recordPath)\(missing ? "" : " and \(temporary)") and run again without --resume to start over")
      }
      record.temporaryPath = out.temporaryPath
      record.completedRows = existing.completedRows
      return (out, min(existing.completedRows, shape.queryCount), record)
    }
    if resume {
      throw GraphAttentionError(.option, "--resume given but there is no progress record \(recordPath)",
                                fix: "run without --resume")
    }
    let out = try TensorFile.create(output, tensors: [.init(name: outputName, shape: shape.outputShape, type: outputType)],
                                    resumable: true, reservingBlocks: true, checked: destination)
    record.temporaryPath = out.temporaryPath
    return (out, 0, record)
  }

  /// Checks `checkRows` rows (capped at `L_q`), spread over rows and heads, against the float64 reference.
  private func checkSampledRows(_ q: TensorView, _ k: TensorView, _ v: TensorView, _ out: MutableTensorView,
                                shape: AttentionShape) throws -> Check {
    let scale = Double(options.scale ?? 1 / Float(shape.keyDim).squareRoot())
    let samples = min(checkRows, shape.queryCount)
    let heads = shape.batch * shape.queryHeads
    var scratch = RowScratch()
    let sampled = (0..<samples).map { s -> (head: Int, row: Int) in
      var row = samples == 1 ? 0 : Int((Double(s) / Double(samples - 1)) * Double(shape.queryCount - 1))
      // The reference reads keys one element at a time: rows of millions of keys (global tokens) would
      // take minutes and page in the whole key file, so the sample moves past them.
      while row < shape.queryCount - 1,
            graph.degree(row: row, queryCount: shape.queryCount, keyCount: shape.keyCount, scratch: &scratch) > 1 << 20 {
        row += 1
      }
      return (s % heads, row)
    }
    let worst = ReferenceAttention.check(rows: sampled, output: { out.element($0) }, shape: shape, options: options) { head, row in
      ReferenceAttention.row(row, head: head, query: q, key: k, value: v, shape: shape,
                             graph: headGraphs?[head % shape.queryHeads] ?? graph, scale: scale, options: options)
    }.worstError
    let check = Check(rows: samples, worstRelativeError: worst, tolerance: StreamingAttention.tolerance(for: out.type))
    guard worst <= check.tolerance else {
      throw GraphAttentionError(.value, "\(samples) sampled rows differ from the float64 reference by \(worst) (tolerance \(check.tolerance))",
                                fix: "report this as a bug, with the command line")
    }
    return check
  }

  /// `.cuda`: the whole job in one device call (not streamed), written and committed.
  private func runOnDevice(_ q: TensorView, _ k: TensorView, _ v: TensorView, shape: AttentionShape,
                           destination: CheckedOutputPath, start: Double) throws -> Result {
    let out = try TensorFile.create(output, tensors: [.init(name: outputName, shape: shape.outputShape, type: outputType)],
                                    resumable: false, reservingBlocks: true, checked: destination)
    var deviceOptions = options
    deviceOptions.checksFiniteInputs = false
    deviceOptions.assumesFiniteInputs = true
    deviceOptions.device = device
    let begin = monotonicSeconds()
    try attention(query: q, key: k, value: v, output: out.view, graph: graph, options: deviceOptions)
    let seconds = monotonicSeconds() - begin
    try out.commit()
    let edges = graph.edgeCount(queryCount: shape.queryCount, keyCount: shape.keyCount) * shape.batch * shape.queryHeads
    return Result(shape: shape, output: output, outputType: outputType, firstRow: 0, completedRows: shape.queryCount,
                  isComplete: true, edgesAllHeads: edges, attentionSeconds: seconds, wallSeconds: monotonicSeconds() - start,
                  check: nil, chunkRows: shape.queryCount)
  }
}

/// A heap copy of a view, its mapped pages released.
private func streamingHeapCopy(_ view: TensorView) -> TensorView {
  let heap = MutableTensorView(allocating: view.shape, type: view.type)
  heap.base.copyMemory(from: view.base, byteCount: view.byteCount)
  view.dropPages(elements: 0..<view.count)
  return heap.readOnly
}
