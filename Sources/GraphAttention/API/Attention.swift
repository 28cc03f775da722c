/// What a query row with no edges produces.
public enum EmptyRowPolicy: String, Sendable, CaseIterable {
  /// Zeros (the reference paper's default, and what a sum over no terms gives).
  case zero
  /// NaN in every element, as PyTorch's `scaled_dot_product_attention` gives for fully masked rows.
  case nan
}

/// Which CPU kernel runs the tiles.
///
/// `.automatic` picks the widest kernel this CPU and OS run, unless the environment variable
/// `GRAPH_ATTENTION_KERNEL` names another (`portable`, `avx2`, `avx512`; how tests run every path).
public enum CPUKernel: String, Sendable, CaseIterable {
  /// `GRAPH_ATTENTION_KERNEL` if set, else the widest this CPU supports: AVX-512, AVX2 + FMA, or portable.
  case automatic
  /// Plain C for the baseline instruction set (for comparisons and tests).
  case portable
  /// AVX2 + FMA (8 lanes, 16 registers): tiles of several rows with the rows in the lanes of two vectors;
  /// single-row tiles as dot-product register blocks.
  case avx2
  /// AVX-512 (16 lanes, 32 registers): tiles of several rows run as packed GEMM-shaped blocks; single-row
  /// tiles run the AVX2 kernel.
  case avx512
}

/// How keys far from their query row are read from memory-mapped key and value files by a streamed job
/// (`StreamingAttention.scatteredKeys`).
public enum ScatteredKeyAccess: String, Sendable, CaseIterable {
  /// Through the mapping, like all other keys: fastest while the files' pages stay resident.
  case mapped
  /// With positioned reads (`pread`) into a per-thread buffer, for the far keys of single-row tiles
  /// (random and explicit edges, rows that share no keys): those pages then stay in the page cache and
  /// never enter this process's resident set, so memory stays bounded however scattered the keys are.
  /// Keys within the graph's local reach (`Graph.backwardReach`) and global tokens
  /// are still mapped. Each call first reads its rows' far keys ahead in key order, in one sweep through the
  /// mapping that releases the pages behind it (up to `readAheadBytes` of key and value rows; beyond that,
  /// one `pread` per key), which costs about one page fault per 64 KiB of keys and values swept.
  case read

  /// Bytes of far key and value rows one call with `.read` reads ahead (held during the call).
  public static let readAheadBytes = ScatteredKeyReader.defaultReadAheadBytes
}

/// How attention is computed.
public struct AttentionOptions: Sendable {
  /// The factor on `q . k` before the softmax; nil means `1 / sqrt(d_k)`.
  public var scale: Float?
  /// The output of rows that attend to no key.
  public var emptyRows: EmptyRowPolicy
  /// Worker threads; nil uses every online processor.
  public var threads: Int?
  /// Whether inputs are scanned for NaN and infinity first (O(inputs), a small fraction of the run).
  public var checksFiniteInputs: Bool
  /// Called from worker threads with the fraction of work done, about a hundred times per call.
  public var progress: (@Sendable (Double) -> Void)?
  /// The CPU kernel; `.automatic` unless comparing implementations.
  public var kernel: CPUKernel
  /// Logit softcap `C > 0` (Gemma 2): each score `s = scale * q.k` becomes `C * tanh(s / C)` before the
  /// softmax (and before ALiBi's bias); nil for none. Costs a vector tanh per score.
  public var softcap: Float?
  /// ALiBi biases `-slope_h * |i + L_k - L_q - j|` added to each score of query head `h`; nil for none.
  public var alibi: ALiBi?
  /// Learnable attention sinks (GPT-OSS): one logit `s_h` per query head that joins every row's softmax
  /// denominator and contributes no value, `o_i = sum_j e^(s_ij) v_j / (e^(s_h) + sum_j e^(s_ij))`; a
  /// row without edges then gives zeros (whatever `emptyRows` says) and its log-sum-exp is `s_h`. nil for none.
  public var sinks: [Float]?

  /// Options with the defaults: scale `1/sqrt(d_k)`, zero empty rows, all processors, inputs checked, no
  /// score modifiers.
  public init(scale: Float? = nil, emptyRows: EmptyRowPolicy = .zero, threads: Int? = nil,
              checksFiniteInputs: Bool = true, progress: (@Sendable (Double) -> Void)? = nil,
              kernel: CPUKernel = .automatic, softcap: Float? = nil, alibi: ALiBi? = nil, sinks: [Float]? = nil) {
    self.kernel = kernel
    self.softcap = softcap
    self.alibi = alibi
    self.sinks = sinks
    self.scale = scale
    self.emptyRows = emptyRows
    self.threads = threads
    self.checksFiniteInputs = checksFiniteInputs
    self.progress = progress
  }
}

/// Sparse attention over a graph: `o_i = sum_{j in N(i)} softmax_j(scale * q_i . k_j) v_j`.
///
/// The softmax of row `i` runs over its neighbourhood `N(i)` only, in fp32 with an online
/// (streaming) maximum, so no score matrix is ever formed. Rows with no edges give zeros, or NaN
/// with `options.emptyRows = .nan`.
///
/// ```swift
/// let q = Tensor.random(shape: [8, 4096, 64], seed: 1)   // [heads, tokens, d]
/// let k = Tensor.random(shape: [8, 4096, 64], seed: 2)
/// let v = Tensor.random(shape: [8, 4096, 64], seed: 3)
/// let o = try attention(query: q, key: k, value: v, graph: try Graph(parsing: "window:128+global:0"))
/// ```
///
/// - Parameters:
///   - query: `[L_q, d_k]`, `[H_q, L_q, d_k]` or `[B, H_q, L_q, d_k]`.
///   - key: `[.., H_kv, L_k, d_k]` with `H_kv` dividing `H_q` (grouped-query attention).
///   - value: `[.., H_kv, L_k, d_v]`.
///   - graph: which keys each query attends to; self-attention kinds need `L_q == L_k`.
/// - Returns: the output, shaped like the query with last dimension `d_v`.
/// - Throws: `GraphAttentionError` for mismatched shapes, graphs that do not fit, bad options and
///   (if checked) non-finite inputs, naming the first offending element.
/// - Complexity: O(edges * (d_k + d_v)) time per head, plus O(L_q) for the plan; O(output) memory.
public func attention(query: Tensor, key: Tensor, value: Tensor, graph: Graph,
                      options: AttentionOptions = AttentionOptions()) throws -> Tensor {
  var work = AttentionWork(edges: 0, scoresComputed: 0)
  return try attention(query: query, key: key, value: value, graph: graph, options: options, device: .cpu, work: &work)
}

/// `attention(query:key:value:graph:options:)`, also reporting the work done.
///
/// - Parameter scoresComputed: set to the number of `q . k` scores the kernels computed over all heads.
@available(*, deprecated, message: "use attention(query:key:value:graph:options:device:work:), whose AttentionWork also holds edges and GPU kernel time")
public func attention(query: Tensor, key: Tensor, value: Tensor, graph: Graph, options: AttentionOptions,
                      scoresComputed: inout Int) throws -> Tensor {
  var work = AttentionWork(edges: 0, scoresComputed: 0)
  defer { scoresComputed = work.scoresComputed }
  return try attention(query: query, key: key, value: value, graph: graph, options: options, device: .cpu, work: &work)
}

/// `attention(query:key:value:graph:options:device:)`, also reporting what the call did in `work`: the
/// edges visited, the scores computed (their ratio to the edges measures how close to work-optimal a run
/// was; on CUDA the masked scores of dense tensor-core tiles are not counted) and, on a GPU, the kernel
/// time. Every form of `attention` reports its work this way: the view form returns the same value.
///
/// ```swift
/// var work = AttentionWork(edges: 0, scoresComputed: 0)
/// let o = try attention(query: q, key: k, value: v, graph: .causal, device: .cuda(), work: &work)
/// print(work.edges, work.kernelSeconds ?? 0)
/// ```
/// - Throws: as `attention(query:key:value:graph:options:device:)`.
/// - Complexity: as `attention(query:key:value:graph:options:)`.
public func attention(query: Tensor, key: Tensor, value: Tensor, graph: Graph,
                      options: AttentionOptions = AttentionOptions(), device: AttentionDevice = .cpu,
                      work: inout AttentionWork) throws -> Tensor {
  let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
  if case let .cuda(ordinal, storage, tensorCores) = device {
    let (output, done) = try cudaAttention(runtime: .shared, ordinal: ordinal, storage: storage, tensorCores: tensorCores,
                                           query: query, key: key, value: value, graph: graph, options: options)
    work = done
    return output
  }
  if graph.variesPerHead, shape.queryHeads > 1 {  // a per-head random pattern: head by head
    let output = MutableTensorView(allocating: shape.outputShape, type: .float32)
    work = try attention(query: TensorView(query), key: TensorView(key), value: TensorView(value), output: output,
                         graphs: Array(repeating: graph, count: shape.queryHeads), options: options)
    return Tensor(output.readOnly)
  }
  let prepared = try AttentionCall(shape: shape, graph: graph, options: options)
  if options.checksFiniteInputs { try AttentionCall.checkFinite(query: query, key: key, value: value) }
  var output = [Float](repeating: .nan, count: shape.batch * shape.queryHeads * shape.queryCount * shape.valueDim)
  let done = query.scalars.withUnsafeBufferPointer { q in
    key.scalars.withUnsafeBufferPointer { k in
      value.scalars.withUnsafeBufferPointer { v in
        output.withUnsafeMutableBufferPointer { o in
          prepared.run(excluding: nil, pointers: .init(
            query: q.baseAddress!, key: k.baseAddress!, value: v.baseAddress!,
            destination: .output(UnsafeMutableRawPointer(o.baseAddress!), type: .float32, emptyRows: options.emptyRows)))
        }
      }
    }
  }
  work = AttentionWork(edges: done.edges, scoresComputed: done.scores, idleThreadFraction: done.idleFraction)
  return Tensor(shape: shape.outputShape, scalars: output)
}

/// A validated call: shape, graph, scale and thread count, shared by `attention` and `AttentionState`.
struct AttentionCall {
  let shape: AttentionShape
  let graph: Graph
  let scale: Float
  let threads: Int
  let edgesPerHead: Int
  let progress: (@Sendable (Double) -> Void)?
  let kernel: CPUKernel
  /// Softcap, ALiBi and sinks, resolved for the call's heads.
  var modifiers: ScoreModifiers
  /// Set by a streamed job (`StreamingKeys`): releases the pages of keys a long row has passed.
  var keysFinished: (@Sendable (Int, Range<Int>) -> Void)? = nil

  init(shape: AttentionShape, graph: Graph, options: AttentionOptions, edgesPerHead: Int? = nil) throws {
    try graph.validate(queryCount: shape.queryCount, keyCount: shape.keyCount)
    if graph.variesPerHead, shape.queryHeads > 1 {
      throw GraphAttentionError(.mask, "\(graph) varies per head, which this path computes with one graph for all heads",
                                fix: "drop :per-head, or compute it head by head (attention(..., graphs:), verify --mask-file); streamed runs, the state API and CUDA take one graph for all heads")
    }
    if let scale = options.scale, !scale.isFinite {
      throw GraphAttentionError(.option, "scale \(scale) is not finite", fix: "pass a finite scale, or none for 1/sqrt(d_k)")
    }
    if let threads = options.threads, threads < 1 {
      throw GraphAttentionError(.option, "thread count \(threads) is below 1", fix: "pass at least 1 thread, or none for all processors")
    }
    self.shape = shape
    self.graph = graph
    self.scale = options.scale ?? 1 / Float(shape.keyDim).squareRoot()
    self.threads = options.threads ?? CPUExecutor.defaultThreadCount
    // A cheap estimate sizes work items; the exact count costs a pass over the rows for unions.
    self.edgesPerHead = edgesPerHead ?? max(1, graph.estimatedEdgeCount(queryCount: shape.queryCount, keyCount: shape.keyCount))
    self.progress = options.progress
    self.kernel = try options.kernel.resolved()
    self.modifiers = try ScoreModifiers(options: options, shape: shape)
    if options.alibi != nil, let alignment = try graph.viewAlignment() { modifiers.alignment = alignment }
  }

  /// Throws for the first NaN or infinity in the inputs, naming the tensor and the index.
  static func checkFinite(query: Tensor, key: Tensor, value: Tensor) throws {
    for (name, tensor) in [("query", query), ("key", key), ("value", value)] {
      if let (index, bad) = tensor.firstNonFinite() {
        throw GraphAttentionError(.value, "\(name)\(index) is \(bad)",
                                  fix: "remove NaN and infinity from the \(name) (e.g. np.nan_to_num) before running")
      }
    }
  }

  @discardableResult
  func run(excluding: Graph?, rows: Range<Int>? = nil, pointers: CPUExecutor.Pointers) -> CPUExecutor.Work {
    CPUExecutor.run(shape: shape, graph: graph, excluding: excluding, edgesPerHead: edgesPerHead, scale: scale,
                    threads: threads, kernel: kernel, rows: rows, modifiers: modifiers, pointers: pointers,
                    progress: progress, keysFinished: keysFinished)
  }
}
