/// Sparse attention over tensors in any storage, the core entry of the forward: every other form of
/// `attention` is a thin wrapper over this one. Inputs are heap or memory-mapped files, fp32, fp16 or bf16,
/// written into `output` (fp32, fp16 or bf16); arithmetic is fp32.
///
/// This is the form for contexts beyond RAM: inputs are read where they lie (keys and values in their
/// storage type by the kernels, query rows widened per tile) and each output row is written once, so a
/// caller can process `rows` in chunks and release the pages behind it.
///
/// ```swift
/// let o = MutableTensorView(allocating: [8, 4096, 64], type: .bfloat16)
/// let work = try attention(query: q, key: k, value: v, output: o, graphs: .shared(try Graph(parsing: "window:128")))
/// print(work.edges, Double(work.scoresComputed) / Double(work.edges))
/// ```
///
/// - Parameters:
///   - query: `[L_q, d_k]`, `[H_q, L_q, d_k]` or `[B, H_q, L_q, d_k]`.
///   - key: `[.., H_kv, L_k, d_k]` with `H_kv` dividing `H_q` (grouped-query attention).
///   - value: `[.., H_kv, L_k, d_v]`; `key` and `value` share a storage type.
///   - output: shaped like the query with last dimension `d_v`.
///   - graphs: one graph for every head, or one per query head (`AttentionGraphs`).
///   - options: scale, empty rows, threads, checks, kernel, score modifiers and `device`.
///   - rows: the query rows to compute (all when nil); other rows of `output` are left as they are.
///   - logSumExp: if given, receives each computed row's log-sum-exp `LSE = m + log(l)` (natural log of
///     the scaled scores' softmax denominator; `-inf` for rows without edges), which the backward
///     (`attentionGradients`) needs; fp32, shaped like the query without its last dimension.
/// - Returns: the edges visited and the scores the kernels computed, over every head (on a GPU, also the
///   kernel time; on the CPU with one graph, the idle share of the worker threads).
/// - Throws: `GraphAttentionError` for mismatched shapes or types, graphs that do not fit, bad options and,
///   when checked, non-finite inputs (with `rows`, only those query rows are scanned: check keys and
///   values once yourself); `.device` for what the GPU does not run (per-head graphs, `rows`, `logSumExp`).
/// - Complexity: O(edges of `rows` * (d_k + d_v)) per head, plus O(L_q) for the plan; no memory beyond
///   the output but O(threads) scratch.
///
/// To stream whole files larger than memory (chunks, page release, checkpoints, resume), use
/// `StreamingAttention`, which calls this per chunk.
@discardableResult
public func attention(query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView,
                      graphs: AttentionGraphs, options: AttentionOptions = AttentionOptions(), rows: Range<Int>? = nil,
                      logSumExp: MutableTensorView? = nil) throws -> AttentionWork {
  let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
  try checkDestinations(shape: shape, query: query, output: output, logSumExp: logSumExp)
  let resolved = try graphs.resolved(shape: shape)
  if case let .cuda(ordinal, storage, tensorCores) = options.device {
    guard case let .shared(graph) = resolved, rows == nil, logSumExp == nil else {
      throw GraphAttentionError(.device, "per-head graphs, row ranges and the log-sum-exp are computed on the CPU only",
                                fix: "run this call with device .cpu")
    }
    let (result, work) = try cudaAttention(runtime: .shared, ordinal: ordinal, storage: storage, tensorCores: tensorCores,
                                           query: Tensor(query), key: Tensor(key), value: Tensor(value), graph: graph,
                                           options: options)
    result.scalars.withUnsafeBufferPointer { output.store($0, at: 0) }
    return work
  }
  switch resolved {
  case let .shared(graph):
    return try viewAttention(query: query, key: key, value: value, output: output, graph: graph, options: options,
                             rows: rows, streaming: nil, logSumExp: logSumExp)
  case let .perHead(headGraphs):
    return try headwiseAttention(query: query, key: key, value: value, output: output, shape: shape, graphs: headGraphs,
                                 options: options, rows: rows, logSumExp: logSumExp)
  }
}

/// The core entry with one graph for every head: `attention(..., graphs: .shared(graph), ...)`.
@discardableResult
public func attention(query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView, graph: Graph,
                      options: AttentionOptions = AttentionOptions(), rows: Range<Int>? = nil,
                      logSumExp: MutableTensorView? = nil) throws -> AttentionWork {
  try attention(query: query, key: key, value: value, output: output, graphs: .shared(graph), options: options, rows: rows,
                logSumExp: logSumExp)
}

/// The core entry with one graph per query head: `attention(..., graphs: .perHead(graphs), ...)`.
@discardableResult
public func attention(query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView, graphs: [Graph],
                      options: AttentionOptions = AttentionOptions(), rows: Range<Int>? = nil,
                      logSumExp: MutableTensorView? = nil) throws -> AttentionWork {
  try attention(query: query, key: key, value: value, output: output, graphs: .perHead(graphs), options: options, rows: rows,
                logSumExp: logSumExp)
}

/// What only a streamed job sets on a chunk's call (see `StreamingAttention`).
struct StreamingKeys {
  /// How far keys are read from mapped key and value files (ignored for heap tensors).
  var access: ScatteredKeyAccess
  /// With `.read`: bytes of far key and value rows read ahead in key order per call (tests set 0 to
  /// exercise the one-`pread`-per-key path).
  var readAheadBytes = ScatteredKeyReader.defaultReadAheadBytes
  /// Called from worker threads when a very long row (a global token's, over millions of keys) has
  /// finished a span of keys of a key/value head, so the caller can release those pages.
  var keysFinished: (@Sendable (_ keyValueHead: Int, _ keys: Range<Int>) -> Void)?
}

/// One graph for every head on the CPU, with the streaming-only parameters; `streaming == nil` maps every
/// key. The graph is validated and does not vary per head (the core entry resolved it).
/// - Throws: as `attention`; with `.read` access, `.file` if a key or value row cannot be read (the rows
///   computed are then garbage and must not be used).
func viewAttention(query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView, graph: Graph,
                   options: AttentionOptions, rows: Range<Int>?, streaming: StreamingKeys?,
                   logSumExp: MutableTensorView? = nil) throws -> AttentionWork {
  try ViewAttention(query: query, key: key, value: value, output: output, graph: graph, options: options,
                    streaming: streaming, logSumExp: logSumExp).run(rows: rows)
}

/// One call over views with one graph for every head, resolved once: shapes, destinations, types, the graph
/// and the options checked, and the scale, threads, kernel and score modifiers fixed (`AttentionCall`).
/// `run(rows:)` then computes any range of rows, so a streamed job checks its call once, not per chunk.
struct ViewAttention {
  let query: TensorView, key: TensorView, value: TensorView
  let output: MutableTensorView
  let logSumExp: MutableTensorView?
  let graph: Graph
  let options: AttentionOptions
  let streaming: StreamingKeys?
  private(set) var call: AttentionCall

  /// Checks everything that does not depend on the rows.
  /// - Throws: as `attention`.
  /// - Complexity: O(graph components); no pass over the tensors.
  init(query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView, graph: Graph,
       options: AttentionOptions, streaming: StreamingKeys?, logSumExp: MutableTensorView?) throws {
    let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
    try checkDestinations(shape: shape, query: query, output: output, logSumExp: logSumExp)
    guard key.type == value.type else {
      throw GraphAttentionError(.dtype, "key is \(key.type.rawValue) but value is \(value.type.rawValue)",
                                fix: "store key and value in the same type")
    }
    call = try AttentionCall(shape: shape, graph: graph, options: options)
    call.keysFinished = streaming?.keysFinished
    (self.query, self.key, self.value, self.output, self.logSumExp) = (query, key, value, output, logSumExp)
    (self.graph, self.options, self.streaming) = (graph, options, streaming)
  }

  /// Computes query rows `rows` of every head (all rows when nil).
  /// - Throws: `.option` for rows outside `0..<L_q`; `.value` for a non-finite input when the options check;
  ///   `.file` from a key reader.
  /// - Complexity: O(edges of the rows · (d_k + d_v)) per head.
  func run(rows: Range<Int>?) throws -> AttentionWork {
    let shape = call.shape
    if let rows, rows.lowerBound < 0 || rows.upperBound > shape.queryCount {
      throw GraphAttentionError(.option, "rows \(rows) are outside 0..<\(shape.queryCount)", fix: "pass a range of query rows")
    }
    // Checked inputs are scanned by the work items as they start (`CPUExecutor.FiniteScan`): the query rows of
    // `rows`, and all of K and V for a call on every row. A non-finite element is an error after the run (the
    // output's contents are then unspecified), naming the first one as a scan before the work would.
    let finiteScan = options.checksFiniteInputs ? CPUExecutor.FiniteScan(includesKeys: rows == nil) : nil
    if !options.checksFiniteInputs, !options.assumesFiniteInputs, streaming == nil,
       let nonFinite = NonFiniteInputs(shape: shape, query: query, key: key, value: value) {
      var finite = options
      finite.assumesFiniteInputs = true
      return try nonFinite.forward(shape: shape, graph: graph, scale: call.scale, modifiers: call.modifiers,
                                   rows: rows ?? 0..<shape.queryCount, query: query, key: key, value: value,
                                   output: output, logSumExp: logSumExp, emptyRows: options.emptyRows) { q, k, v in
        try viewAttention(query: q, key: k, value: v, output: output, graph: graph, options: finite, rows: rows,
                          streaming: nil, logSumExp: logSumExp)
      }
    }
    let reader = streaming?.access == .read
      ? try ScatteredKeyReader(key: key, value: value, keyCount: shape.keyCount, keyDim: shape.keyDim,
                               valueDim: shape.valueDim,
                               near: NearKeys(reach: graph.backwardReach(keyCount: shape.keyCount, queryCount: shape.queryCount),
                                               resident: graph.globalTokens))
      : nil
    reader?.prepare(graph: graph, rows: rows ?? 0..<shape.queryCount, queryCount: shape.queryCount,
                    keyValueHeads: shape.batch * shape.keyValueHeads, threads: call.threads,
                    budget: streaming?.readAheadBytes ?? ScatteredKeyReader.defaultReadAheadBytes)
    let work = call.run(excluding: nil, rows: rows, pointers: .init(
      query: query.base, queryType: query.type, key: key.base, value: value.base, keyValueType: key.type,
      destination: .output(output.base, type: output.type, emptyRows: options.emptyRows), scatteredReader: reader,
      logSumExp: logSumExp?.base.assumingMemoryBound(to: Float.self)), finiteScan: finiteScan)
    if let (tensor, index) = finiteScan?.firstFound {
      let (view, name) = tensor == .query ? (query, "query") : tensor == .key ? (key, "key") : (value, "value")
      try view.requireFinite(name: name, elements: index..<index + 1)
    }
    if let failure = reader?.failure { throw failure }
    return AttentionWork(edges: work.edges, scoresComputed: work.scores, idleThreadFraction: work.idleFraction)
  }
}

/// What one attention call did, over every head and batch.
public struct AttentionWork: Sendable, Equatable {
  /// Edges visited: the sum of the computed rows' degrees, times heads and batches.
  public var edges: Int
  /// `q . k` scores the kernels computed: at least `edges`; tiles of rows that share keys add masked ones,
  /// so `scoresComputed / edges` measures how close to work-optimal a run was. With the AVX2 and AVX-512
  /// kernels, which hold a tile's 16 rows in vector lanes, every lane of the tile's whole key range counts
  /// (for a window of W, about `1 + 16 / (2W)`; a causal window about twice that).
  public var scoresComputed: Int
  /// Seconds the GPU spent in this call's kernels, from launch to completion as the host sees it (no
  /// copies, no compilation; the launch latency of a few microseconds is included); nil on the CPU.
  public var kernelSeconds: Double?
  /// For one CPU call: the share of its worker threads' time spent idle, waiting to start or, at the end, for
  /// the other workers' last items (how well the work was balanced to the end); nil elsewhere (GPU calls, and
  /// per-head graphs, which are several calls).
  public var idleThreadFraction: Double?

  /// A record of `edges` visited, `scoresComputed` scores and, for a GPU call, its kernel time, for a CPU call the
  /// idle share of its threads.
  public init(edges: Int, scoresComputed: Int, kernelSeconds: Double? = nil, idleThreadFraction: Double? = nil) {
    self.edges = edges
    self.scoresComputed = scoresComputed
    self.kernelSeconds = kernelSeconds
    self.idleThreadFraction = idleThreadFraction
  }
}

/// Throws unless `output` has the result's shape and `logSumExp`, when given, is fp32 with the query's
/// shape without its last dimension (the checks every view form of `attention` makes before writing).
func checkDestinations(shape: AttentionShape, query: TensorView, output: MutableTensorView,
                       logSumExp: MutableTensorView?) throws {
  guard output.shape == shape.outputShape else {
    throw GraphAttentionError(.shape, "output has shape \(output.shape) but the result has shape \(shape.outputShape)",
                              fix: "create the output with the query's leading dimensions and the value's last dimension")
  }
  guard let logSumExp else { return }
  guard logSumExp.shape == Array(query.shape.dropLast()) else {
    throw GraphAttentionError(.shape, "logSumExp has shape \(logSumExp.shape) but should have shape \(Array(query.shape.dropLast()))",
                              fix: "create the log-sum-exp with the query's shape without its last dimension")
  }
  guard logSumExp.type == .float32 else {
    throw GraphAttentionError(.dtype, "logSumExp is \(logSumExp.type.rawValue), not fp32", fix: "create the log-sum-exp as fp32")
  }
}
