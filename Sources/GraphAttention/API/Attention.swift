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
  /// Whether a NaN or infinity in the inputs is an error (`GraphAttentionError(.value)` naming the first
  /// one). On the CPU the work items scan the rows they are about to use, so the check reads nothing twice;
  /// after such an error the output's contents are unspecified. When false, non-finite inputs propagate as with SDPA and a boolean mask: a
  /// NaN or infinity reaches exactly the query rows whose edges touch it, which get what the formula gives
  /// in IEEE arithmetic (rows reached through a NaN score are NaN; a NaN in column `c` of a value row makes
  /// column `c` NaN in the rows that attend to it), and every other row is exact. Either way the inputs
  /// are scanned once (O(inputs), vectorised); reached rows are recomputed in float64 (`NonFiniteInputs`).
  /// Streamed jobs (`StreamingAttention`) scan once per job when checking and otherwise assume finite
  /// inputs.
  public var checksFiniteInputs: Bool
  /// Set where the inputs are known to be finite (a streamed job's chunks after its scan, benchmarks):
  /// no scan at all, and non-finite inputs would give unspecified rows.
  package var assumesFiniteInputs = false
  /// Called from worker threads with the fraction of work done, about a hundred times per call.
  public var progress: (@Sendable (Double) -> Void)?
  /// The CPU kernel; `.automatic` unless comparing implementations.
  public var kernel: CPUKernel
  /// Logit softcap `C > 0` (Gemma 2): each score `s = scale * q.k` becomes `C * tanh(s / C)` before the
  /// softmax (and before ALiBi's bias); nil for none. Costs a vector tanh per score.
  public var softcap: Float?
  /// ALiBi biases `-slope_h * |i + L_k - L_q - j|` added to each score of query head `h`; nil for none.
  public var alibi: ALiBi?
  /// Where the call runs: the CPU engine (the default) or a CUDA GPU (`AttentionDevice`). The GPU takes one
  /// graph for every head, whole calls (no `rows`, no log-sum-exp) and no score modifiers yet.
  public var device: AttentionDevice = .cpu
  /// Learnable attention sinks (GPT-OSS): one logit `s_h` per query head that joins every row's softmax
  /// denominator and contributes no value, `o_i = sum_j e^(s_ij) v_j / (e^(s_h) + sum_j e^(s_ij))`; a
  /// row without edges then gives zeros (whatever `emptyRows` says) and its log-sum-exp is `s_h`. nil for none.
  public var sinks: [Float]?

  /// Options with the defaults: scale `1/sqrt(d_k)`, zero empty rows, all processors, inputs checked, no
  /// score modifiers.
  public init(scale: Float? = nil, emptyRows: EmptyRowPolicy = .zero, threads: Int? = nil,
              checksFiniteInputs: Bool = true, progress: (@Sendable (Double) -> Void)? = nil,
              kernel: CPUKernel = .automatic, softcap: Float? = nil, alibi: ALiBi? = nil, sinks: [Float]? = nil,
              device: AttentionDevice = .cpu) {
    self.device = device
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

/// Sparse attention over a graph: `o_i = sum_{j in N(i)} softmax_j(scale * q_i . k_j) v_j`, for tensors in
/// memory; a thin form of the core entry `attention(query:key:value:output:graphs:options:rows:logSumExp:)`,
/// which also takes any storage, row ranges and the log-sum-exp and reports the work done.
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
///   - options: scale, empty rows, threads, checks, kernel, score modifiers and the device.
/// - Returns: the output, shaped like the query with last dimension `d_v`.
/// - Throws: `GraphAttentionError` for mismatched shapes, graphs that do not fit, bad options and
///   (if checked) non-finite inputs, naming the first offending element; on `.cuda`, as `AttentionDevice` says.
/// - Complexity: O(edges * (d_k + d_v)) time per head, plus O(L_q) for the plan; O(output) memory.
public func attention(query: Tensor, key: Tensor, value: Tensor, graph: Graph,
                      options: AttentionOptions = AttentionOptions()) throws -> Tensor {
  try attention(query: query, key: key, value: value, graphs: .shared(graph), options: options)
}

/// Sparse attention with one graph per query head, for tensors in memory; see
/// `attention(query:key:value:output:graphs:options:rows:logSumExp:)`.
/// - Returns: the output, shaped like the query with the value's last dimension.
/// - Complexity: the sum of each head's single-graph cost.
public func attention(query: Tensor, key: Tensor, value: Tensor, graphs: [Graph],
                      options: AttentionOptions = AttentionOptions()) throws -> Tensor {
  try attention(query: query, key: key, value: value, graphs: .perHead(graphs), options: options)
}

/// The tensor forms' one body: an fp32 output on the heap, filled by the core entry.
private func attention(query: Tensor, key: Tensor, value: Tensor, graphs: AttentionGraphs,
                       options: AttentionOptions) throws -> Tensor {
  let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
  let output = MutableTensorView(allocating: shape.outputShape, type: .float32)
  try attention(query: TensorView(query), key: TensorView(key), value: TensorView(value), output: output,
                graphs: graphs, options: options)
  return Tensor(output.readOnly)
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
  func run(excluding: Graph?, rows: Range<Int>? = nil, pointers: CPUExecutor.Pointers,
           finiteScan: CPUExecutor.FiniteScan? = nil) -> CPUExecutor.Work {
    CPUExecutor.run(shape: shape, graph: graph, excluding: excluding, edgesPerHead: edgesPerHead, scale: scale,
                    threads: threads, kernel: kernel, rows: rows, modifiers: modifiers, pointers: pointers,
                    progress: progress, keysFinished: keysFinished, finiteScan: finiteScan)
  }
}
