import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention run`: attention of tensors in files over a mask, streamed through memory maps in row
/// chunks, written to a memory-mapped output; resumable and interruptible.
struct RunCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run",
    abstract: "Compute attention of Q, K, V (.npy or .safetensors; fp32, fp16 or bf16) over a mask and write O.",
    discussion: """
      Q is [L_q, d_k], [H, L_q, d_k] or [B, H, L_q, d_k]; K and V have the same rank, H_kv heads dividing H
      (grouped-query attention), L_k tokens, and V's last dimension d_v. O has Q's leading shape and d_v.
      Inputs are memory-mapped and never loaded whole; query rows are processed in chunks and the pages behind
      each chunk are released, so the context is bounded by disk, not memory. O is written into a temporary file
      beside --output and renamed at the end: a failed run leaves an existing file as it was. Ctrl-C stops after
      the current chunk; a progress record beside the output lets `--resume` continue an interrupted or killed
      run, giving the same bytes as an uninterrupted one.
      """
  )

  @Option(help: "Query tensor (.npy or .safetensors).") var query: String
  @Option(help: "Key tensor (.npy or .safetensors).") var key: String
  @Option(help: "Value tensor (.npy or .safetensors).") var value: String
  @Option(help: "Mask specification, e.g. window:256+global:0.") var mask: String
  @Option(help: "Output tensor (.npy, or .safetensors for bf16).") var output: String
  @Option(help: "Tensor names inside .safetensors inputs.") var queryName = "q"
  @Option(help: "Tensor name of the key inside a .safetensors --key.") var keyName = "k"
  @Option(help: "Tensor name of the value inside a .safetensors --value.") var valueName = "v"
  @Option(help: "Output storage type: f32, f16 or bf16.") var outputDtype = "f32"
  @Option(help: "Query rows per chunk (default: about 2^26 edges per chunk).") var chunkRows: Int?
  @Option(help: "After the run, check this many sampled rows against the float64 reference.") var checkRows = 0
  @Flag(help: "Continue an interrupted run from its progress record.") var resume = false
  @Flag(help: "Copy the inputs into memory first (to compare streaming with in-memory runs).") var inMemory = false
  @Option(help: ArgumentHelp("How far keys (random, explicit edges) are read: read (pread, bounded memory) or mapped.",
                             discussion: "mapped is faster while K and V fit in memory; read keeps them out of the resident set."))
  var scatteredKeys = "read"

  @Option(help: "Seconds between checkpoints (output synced, progress record written); 0 = after every chunk.")
  var checkpointSeconds = 2.0
  @OptionGroup var compute: ComputeOptions
  @Flag(help: "Print one JSON object with edges, seconds (attention only) and gflops.") var json = false

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
  }

  func run() throws {
    let graph = try Graph(parsing: mask)
    var (q, k, v) = (try TensorFile.open(query, name: queryName), try TensorFile.open(key, name: keyName),
                     try TensorFile.open(value, name: valueName))
    if inMemory {
      func copied(_ view: TensorView) -> TensorView {
        let heap = MutableTensorView(allocating: view.shape, type: view.type)
        heap.base.copyMemory(from: view.base, byteCount: view.byteCount)
        view.dropPages(elements: 0..<view.count)
        return heap.readOnly
      }
      (q, k, v) = (copied(q), copied(k), copied(v))
    }
    let (keys, values) = (k, v)
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    try graph.validate(queryCount: shape.queryCount, keyCount: shape.keyCount)
    try checkOutputWritable(output)
    let outputType = StorageType(parsing: outputDtype)!
    let scatteredAccess = inMemory ? ScatteredKeyAccess.mapped : ScatteredKeyAccess(rawValue: scatteredKeys)!
    // The exact edge count is summed from the chunks as they run; sizing only needs an estimate (the exact
    // count of a union with a random graph is a pass over every row).
    let estimatedEdges = graph.estimatedEdgeCount(queryCount: shape.queryCount, keyCount: shape.keyCount)
    // Scattered keys read through the mapping (random, explicit) each map a page of K and one of V, and
    // Linux maps up to 16 cached neighbours with each fault ("fault-around", 64 KiB): keep that to ~512 MiB
    // a chunk. Read with pread (the default), they never enter the resident set.
    let scattered = graph.scatteredKeysPerRow(queryCount: shape.queryCount, keyCount: shape.keyCount)
      * Double(shape.batch * shape.keyValueHeads)
    let readsAhead = scattered > 0 && scatteredAccess == .read
    // About 2^26 edges per chunk (seconds of work), and at most 32 MiB of query rows, so the pages a chunk
    // holds stay small next to the 4 GiB a 160M-token run may use. Far keys read ahead are swept once per
    // chunk at about one fault per 64 KiB of K and V however few keys there are: 8x larger chunks amortise
    // that, up to the read-ahead budget.
    let widen = readsAhead ? 8 : 1
    let rowsByWork = widen * (1 << 26) / max(1, estimatedEdges / shape.queryCount) / (shape.batch * shape.queryHeads) + 1
    let rowsByBytes = widen * (32 << 20) / (shape.batch * shape.queryHeads * shape.keyDim * q.type.byteCount)
    let rowsByScatter = scattered > 0 && scatteredAccess == .mapped && !inMemory
      ? Int(Double(512 << 20) / (scattered * 2 * 65536))
      : readsAhead ? Int(Double(ScatteredKeyAccess.readAheadBytes) / (scattered * Double((shape.keyDim + shape.valueDim) * k.type.byteCount)))
      : Int.max
    let chunk = chunkRows ?? max(1024, min(shape.queryCount, rowsByWork, rowsByBytes, rowsByScatter))
    if scattered > 0 && scatteredAccess == .mapped {
      // Read-ahead around each scattered key would page in whole files; the chunk's own span is asked for
      // explicitly instead (willNeed below).
      k.mappedFile?.adviseRandom()
      v.mappedFile?.adviseRandom()
    }

    let record = ProgressRecord(output: output, mask: graph.description, inputs: [query, key, value],
                                names: [queryName, keyName, valueName], outputType: outputType.rawValue,
                                chunkRows: chunk, scale: compute.scale, emptyRows: compute.emptyRows.rawValue,
                                tokens: shape.queryCount)
    let existing = try ProgressRecord.load(for: output)
    let out: OutputTensorFile
    var firstRow = 0
    if resume {
      guard let existing else {
        throw GraphAttentionError(.option, "--resume given but there is no progress record \(ProgressRecord.path(for: output))",
                                  fix: "run without --resume")
      }
      try existing.requireSameJob(as: record)
      out = try TensorFile.reopenForResume(temporaryPath: existing.temporaryPath ?? "", shape: shape.outputShape,
                                           type: outputType, name: "o")
      firstRow = existing.completedRows
      Console.note("resuming at row \(firstRow) of \(shape.queryCount)")
    } else {
      if existing != nil {
        throw GraphAttentionError(.option, "an interrupted run left \(ProgressRecord.path(for: output))",
                                  fix: "add --resume to continue it, or delete that file (and its temporary output) to start over")
      }
      out = try TensorFile.create(output, shape: shape.outputShape, type: outputType, name: "o", resumable: true)
    }
    var progressRecord = record
    progressRecord.temporaryPath = out.temporaryPath

    var options = compute.attentionOptions()
    options.scatteredKeys = scatteredAccess
    options.keysFinished = { kvHead, span in
      // A global token's row streams the whole key file: let its pages go as it passes.
      keys.dropPages(elements: (kvHead * shape.keyCount + span.lowerBound) * shape.keyDim..<(kvHead * shape.keyCount + span.upperBound) * shape.keyDim)
      values.dropPages(elements: (kvHead * shape.keyCount + span.lowerBound) * shape.valueDim..<(kvHead * shape.keyCount + span.upperBound) * shape.valueDim)
    }
    Interrupt.install()
    let bar = json ? nil : Console.progressBar("attention")
    let start = monotonicSeconds()
    var attentionSeconds = 0.0
    var edgesAllHeads = 0
    var row = firstRow
    var lastCheckpoint = monotonicSeconds()
    do {
    while row < shape.queryCount {
      let rows = row..<min(shape.queryCount, row + chunk)
      prefetch(q: q, k: k, v: v, shape: shape, rows: rows, reach: graph.backwardReach(keyCount: shape.keyCount))
      try checkKeysAndValues(k, v, shape: shape, chunk: rows)
      let chunkStart = monotonicSeconds()
      edgesAllHeads += try attention(query: q, key: k, value: v, output: out.view, graph: graph, options: options, rows: rows).edges
      attentionSeconds += monotonicSeconds() - chunkStart
      releasePages(q: q, k: k, v: v, out: out.view, shape: shape, done: rows, graph: graph)
      row = rows.upperBound
      // Checkpoint every few seconds (not every chunk: small chunks would spend their time in fsync):
      // the output's pages first, then the record that vouches for them.
      if monotonicSeconds() - lastCheckpoint >= checkpointSeconds || row == shape.queryCount || Interrupt.requested {
        try out.view.mappedFile?.sync()
        progressRecord.completedRows = row
        try progressRecord.save()
        lastCheckpoint = monotonicSeconds()
        bar?(Double(row) / Double(shape.queryCount))
      }
      if Interrupt.requested, row < shape.queryCount {
        Console.note("interrupted at row \(row) of \(shape.queryCount); rerun the same command with --resume to continue")
        throw ExitCode(130)
      }
    }
    if checkRows > 0 { try checkSampledRows(q: q, k: k, v: v, out: out.view, shape: shape, graph: graph) }
    try out.commit()
    ProgressRecord.remove(for: output)
    } catch let exit as ExitCode where exit == ExitCode(130) {
      throw exit  // interrupted: the partial output and its record stay for --resume
    } catch {
      // A real failure: nothing of this run may remain, and an existing output stays as it was.
      out.abandon()
      ProgressRecord.remove(for: output)
      throw error
    }
    let wall = monotonicSeconds() - start
    // Edges of the rows this invocation computed (a resumed run counts only its own rows).
    let edges = edgesAllHeads / (shape.batch * shape.queryHeads)
    let flops = shape.usefulFlops(edges: edges)
    if json {
      print(Console.json([
        "edges": edges, "edges_all_heads": edgesAllHeads, "seconds": attentionSeconds, "first_row": firstRow,
        "wall_seconds": wall, "gflops": flops / attentionSeconds / 1e9, "output_shape": shape.outputShape,
        "mask": graph.description,
      ]))
    } else {
      print("wrote \(output) \(shape.outputShape) \(outputType.rawValue): \(edges) edges per head"
        + (firstRow > 0 ? " (rows \(firstRow)..<\(shape.queryCount), resumed)" : "") + ", attention "
        + "\(Console.format(seconds: attentionSeconds)) of \(Console.format(seconds: wall)), "
        + "\(String(format: "%.2f", flops / attentionSeconds / 1e9)) useful GFLOP/s")
    }
  }

  /// Asks the kernel to read the chunk's query rows and its local span of keys and values ahead.
  private func prefetch(q: TensorView, k: TensorView, v: TensorView, shape: AttentionShape, rows: Range<Int>, reach: Int) {
    for head in 0..<(shape.batch * shape.queryHeads) {
      q.willNeed(elements: (head * shape.queryCount + rows.lowerBound) * shape.keyDim..<(head * shape.queryCount + rows.upperBound) * shape.keyDim)
    }
    guard reach < shape.keyCount else { return }
    let span = max(0, rows.lowerBound - reach)..<min(shape.keyCount, rows.upperBound + reach)
    for head in 0..<(shape.batch * shape.keyValueHeads) {
      k.willNeed(elements: (head * shape.keyCount + span.lowerBound) * shape.keyDim..<(head * shape.keyCount + span.upperBound) * shape.keyDim)
      v.willNeed(elements: (head * shape.keyCount + span.lowerBound) * shape.valueDim..<(head * shape.keyCount + span.upperBound) * shape.valueDim)
    }
  }

  /// Scans the keys and values of the rows matching `chunk` for NaN and infinity, so each is scanned once
  /// over the run while its pages are resident anyway. A key used before its own chunk is scanned can only
  /// spoil rows of an output that is then never committed: the run stops at the scan with the error.
  private func checkKeysAndValues(_ k: TensorView, _ v: TensorView, shape: AttentionShape, chunk: Range<Int>) throws {
    let lo = chunk.lowerBound * shape.keyCount / shape.queryCount
    let hi = chunk.upperBound == shape.queryCount ? shape.keyCount : chunk.upperBound * shape.keyCount / shape.queryCount
    guard lo < hi else { return }
    for head in 0..<(shape.batch * shape.keyValueHeads) {
      for (name, view, dim) in [("key", k, shape.keyDim), ("value", v, shape.valueDim)] {
        let first = (head * shape.keyCount + lo) * dim
        try view.requireFinite(name: name, elements: first..<first + (hi - lo) * dim)
      }
    }
  }

  /// Releases the resident pages a finished chunk no longer needs: its query and output rows, and keys
  /// and values outside the graph's reach around the next chunk. Scattered keys (global tokens, random
  /// and explicit edges) touch pages anywhere; those are released too and simply fault back in if needed.
  private func releasePages(q: TensorView, k: TensorView, v: TensorView, out: MutableTensorView, shape: AttentionShape,
                            done rows: Range<Int>, graph: Graph) {
    let heads = shape.batch * shape.queryHeads
    for head in 0..<heads {
      q.dropPages(elements: (head * shape.queryCount + rows.lowerBound) * shape.keyDim..<(head * shape.queryCount + rows.upperBound) * shape.keyDim)
      out.dropPages(elements: (head * shape.queryCount + rows.lowerBound) * shape.valueDim..<(head * shape.queryCount + rows.upperBound) * shape.valueDim)
    }
    let reach = graph.backwardReach(keyCount: shape.keyCount)
    let keep = max(0, rows.upperBound - reach)..<min(shape.keyCount, rows.upperBound + reach + (rows.upperBound - rows.lowerBound))
    for head in 0..<(shape.batch * shape.keyValueHeads) {
      for (view, dim) in [(k, shape.keyDim), (v, shape.valueDim)] {
        let base = head * shape.keyCount
        if keep.lowerBound > 0 { view.dropPages(elements: base * dim..<(base + keep.lowerBound) * dim) }
        if keep.upperBound < shape.keyCount { view.dropPages(elements: (base + keep.upperBound) * dim..<(base + shape.keyCount) * dim) }
      }
    }
  }

  private func checkSampledRows(q: TensorView, k: TensorView, v: TensorView, out: MutableTensorView,
                                shape: AttentionShape, graph: Graph) throws {
    let scale = Double(compute.scale ?? 1 / Float(shape.keyDim).squareRoot())
    var worst = 0.0
    let heads = shape.batch * shape.queryHeads
    var scratch = RowScratch()
    var checked = 0
    for s in 0..<checkRows {
      let head = s % heads
      var row = checkRows == 1 ? 0 : Int((Double(s) / Double(checkRows - 1)) * Double(shape.queryCount - 1))
      // The reference reads keys one element at a time: rows of millions of keys (global tokens) would
      // take minutes and page in the whole key file, so the sample moves past them.
      while row < shape.queryCount - 1,
            graph.degree(row: row, queryCount: shape.queryCount, keyCount: shape.keyCount, scratch: &scratch) > 1 << 20 {
        row += 1
      }
      checked += 1
      let reference = ReferenceAttention.row(row, head: head, query: q, key: k, value: v, shape: shape, graph: graph, scale: scale)
      let base = (head * shape.queryCount + row) * shape.valueDim
      let computed = (0..<shape.valueDim).map { out.element(base + $0) }
      worst = max(worst, ReferenceAttention.relativeError(computed: computed[...], reference: reference,
                                                          expectNaN: compute.emptyRows == .nan))
    }
    let tolerance = out.type == .float32 ? 1e-5 : (out.type == .float16 ? 1e-3 : 8e-3)
    Console.note(String(format: "check: max relative error %.2e over %d sampled rows vs float64 (%@, tolerance %.0e for %@ output)",
                        worst, checked, worst <= tolerance ? "PASS" : "FAIL", tolerance, out.type.rawValue))
    if !(worst <= tolerance) {
      throw GraphAttentionError(.value, String(format: "sampled rows differ from the float64 reference by %.2e", worst),
                                fix: "report this as a bug, with the command line")
    }
  }
}
