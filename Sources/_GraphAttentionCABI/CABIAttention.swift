import GraphAttention

/// Element type codes of the C ABI.
func storageType(code: Int32, name: String) throws -> StorageType {
  switch code {
  case 0: return .float32
  case 1: return .float16
  case 2: return .bfloat16
  default:
    throw CABIFailure(status: .argument, message: "argument: \(name) has dtype code \(code). Fix: use 0 (fp32), 1 (fp16) or 2 (bf16).")
  }
}

/// A C-contiguous tensor described by a pointer, a dtype code and `rank` extents, checked so that building a
/// view can never trap: non-null, rank 2...4, extents >= 1, byte size within `Int`.
struct CTensor {
  var shape: [Int]
  var type: StorageType
  /// The caller's memory as a view (borrowed: the caller owns it for the call).
  var view: TensorView { TensorView(shape: shape, type: type, base: base, owner: nil) }
  private let base: UnsafeRawPointer

  init(name: String, base: UnsafeRawPointer?, dtype: Int32, rank: Int32, shape: UnsafePointer<Int64>?) throws {
    guard (2...4).contains(rank) else {
      throw GraphAttentionError(.shape, "\(name) has rank \(rank)", fix: "use a tensor of shape [L, d], [H, L, d] or [B, H, L, d]")
    }
    guard let shape else {
      throw CABIFailure(status: .argument, message: "argument: \(name) shape pointer is NULL. Fix: pass one.")
    }
    self.type = try storageType(code: dtype, name: name)
    self.shape = (0..<Int(rank)).map { Int(shape[$0]) }
    try Self.checkExtents(name: name, self.shape, type)
    // After the extents: an empty tensor's data pointer may well be NULL, and the shape error is the useful one.
    guard let base else {
      throw CABIFailure(status: .argument, message: "argument: \(name) data pointer is NULL. Fix: pass one.")
    }
    self.base = base
  }

  static func checkExtents(name: String, _ shape: [Int], _ type: StorageType) throws {
    var bytes = type.byteCount
    for extent in shape {
      guard extent >= 1 else {
        throw GraphAttentionError(.shape, "\(name) has an empty or negative dimension (shape \(shape))", fix: "every dimension must be at least 1")
      }
      let (product, overflow) = bytes.multipliedReportingOverflow(by: extent)
      guard !overflow else { throw GraphAttentionError(.shape, "\(name) of shape \(shape) is too large to address", fix: "use a smaller tensor") }
      bytes = product
    }
  }
}

/// The flag bit of `ga_attention_forward` and `ga_attention_backward` that scans inputs for NaN and infinity.
let checkFiniteFlag: UInt32 = 1

/// Options from the C arguments: `scale` NaN means 1/sqrt(d_k); `threads` 0 means every processor.
func attentionOptions(scale: Float, emptyRows: Int32, threads: Int32, flags: UInt32) throws -> AttentionOptions {
  guard threads >= 0 else {
    throw GraphAttentionError(.option, "thread count \(threads) is negative", fix: "pass at least 1 thread, or 0 for all processors")
  }
  let policy: EmptyRowPolicy
  switch emptyRows {
  case 0: policy = .zero
  case 1: policy = .nan
  default: throw CABIFailure(status: .argument, message: "argument: empty-rows code \(emptyRows). Fix: use 0 (zero) or 1 (nan).")
  }
  return AttentionOptions(scale: scale.isNaN ? nil : scale, emptyRows: policy, threads: threads == 0 ? nil : Int(threads),
                          checksFiniteInputs: flags & checkFiniteFlag != 0)
}

/// The three inputs of a forward or backward call, each checked (`CTensor`), and their attention shape.
struct CAttentionInputs {
  var query: CTensor
  var key: CTensor
  var value: CTensor
  var shape: AttentionShape

  init(_ query: UnsafeRawPointer?, _ queryShape: UnsafePointer<Int64>?, _ queryDtype: Int32,
       _ key: UnsafeRawPointer?, _ keyShape: UnsafePointer<Int64>?, _ keyDtype: Int32,
       _ value: UnsafeRawPointer?, _ valueShape: UnsafePointer<Int64>?, _ valueDtype: Int32, rank: Int32) throws {
    self.query = try CTensor(name: "query", base: query, dtype: queryDtype, rank: rank, shape: queryShape)
    self.key = try CTensor(name: "key", base: key, dtype: keyDtype, rank: rank, shape: keyShape)
    self.value = try CTensor(name: "value", base: value, dtype: valueDtype, rank: rank, shape: valueShape)
    self.shape = try AttentionShape(query: self.query.shape, key: self.key.shape, value: self.value.shape)
  }

  /// The forward both entry points run: one graph for every head, or one per query head.
  func forward(output: UnsafeMutableRawPointer?, outputDtype: Int32, logSumExp: UnsafeMutablePointer<Float>?,
               graphs: [Graph], options: AttentionOptions, work: UnsafeMutablePointer<Int64>?) throws {
    guard let output else { throw CABIFailure(status: .argument, message: "argument: output pointer is NULL. Fix: pass one.") }
    let outputType = try storageType(code: outputDtype, name: "output")
    try CTensor.checkExtents(name: "output", shape.outputShape, outputType)
    let out = MutableTensorView(shape: shape.outputShape, type: outputType, base: output, owner: nil)
    let lse = logSumExp.map {
      MutableTensorView(shape: Array(query.shape.dropLast()), type: .float32, base: UnsafeMutableRawPointer($0), owner: nil)
    }
    let done = graphs.count == 1
      ? try attention(query: query.view, key: key.view, value: value.view, output: out, graph: graphs[0], options: options, logSumExp: lse)
      : try attention(query: query.view, key: key.view, value: value.view, output: out, graphs: graphs, options: options, logSumExp: lse)
    if let work {
      work[0] = Int64(done.edges)
      work[1] = Int64(done.scoresComputed)
    }
  }
}

/// Sparse attention over C-contiguous tensors: `out = softmax(scale * q k^T restricted to the graph) v`.
///
/// - Parameters:
///   - query, key, value: data pointers; `*_shape` hold `rank` extents each (`[L, d]`, `[H, L, d]` or
///     `[B, H, L, d]`, key/value heads dividing query heads); `*_dtype` 0 fp32, 1 fp16, 2 bf16.
///   - output: `query` shape with last extent `d_v`, of `output_dtype`; written whole.
///   - log_sum_exp: NULL, or fp32 of the query shape without its last extent: `m + log(l)` per row of the
///     scaled scores, -inf for rows with no edge.
///   - graph: a handle from `ga_graph_parse`.
///   - scale: the factor on `q . k`; NaN for `1/sqrt(d_k)`.
///   - empty_rows: 0 writes zeros to rows with no edge, 1 NaN.
///   - threads: worker threads, 0 for every processor.
///   - flags: bit 0 scans the inputs for NaN and infinity first.
///   - work: NULL, or two Int64 receiving the edges visited and the scores computed.
/// - Returns: 0, or a status with `ga_last_error` set; the outputs are then unspecified.
/// - Complexity: O(edges * (d_k + d_v)) per head, on `threads` threads; the calling thread waits.
@_cdecl("ga_attention_forward")
public func ga_attention_forward(
  _ query: UnsafeRawPointer?, _ queryShape: UnsafePointer<Int64>?, _ queryDtype: Int32,
  _ key: UnsafeRawPointer?, _ keyShape: UnsafePointer<Int64>?, _ keyDtype: Int32,
  _ value: UnsafeRawPointer?, _ valueShape: UnsafePointer<Int64>?, _ valueDtype: Int32,
  _ rank: Int32,
  _ output: UnsafeMutableRawPointer?, _ outputDtype: Int32,
  _ logSumExp: UnsafeMutablePointer<Float>?,
  _ graph: UnsafeMutableRawPointer?,
  _ scale: Float, _ emptyRows: Int32, _ threads: Int32, _ flags: UInt32,
  _ work: UnsafeMutablePointer<Int64>?
) -> Int32 {
  withStatus {
    let inputs = try CAttentionInputs(query, queryShape, queryDtype, key, keyShape, keyDtype, value, valueShape, valueDtype, rank: rank)
    try inputs.forward(output: output, outputDtype: outputDtype, logSumExp: logSumExp, graphs: [try GraphHandle.borrow(graph)],
                       options: try attentionOptions(scale: scale, emptyRows: emptyRows, threads: threads, flags: flags),
                       work: work)
  }
}

/// `ga_attention_forward` with its options in a versioned struct: per-head graphs and the score modifiers
/// (softcap, ALiBi, sinks; see `AttentionOptions`).
///
/// - Parameters:
///   - query ... work: as for `ga_attention_forward`.
///   - options: a `ga_attention_options` (see graph_attention.h): `graph_count` 1 applies `graphs[0]` to every
///     head, `graph_count` H_q gives query head `h` the graph `graphs[h]` (any other count is a mask error).
/// - Returns: 0, or a status with `ga_last_error` set; the outputs are then unspecified.
/// - Complexity: the sum of each head's single-graph cost.
@_cdecl("ga_attention_forward_ex")
public func ga_attention_forward_ex(
  _ query: UnsafeRawPointer?, _ queryShape: UnsafePointer<Int64>?, _ queryDtype: Int32,
  _ key: UnsafeRawPointer?, _ keyShape: UnsafePointer<Int64>?, _ keyDtype: Int32,
  _ value: UnsafeRawPointer?, _ valueShape: UnsafePointer<Int64>?, _ valueDtype: Int32,
  _ rank: Int32,
  _ output: UnsafeMutableRawPointer?, _ outputDtype: Int32,
  _ logSumExp: UnsafeMutablePointer<Float>?,
  _ options: UnsafeRawPointer?,
  _ work: UnsafeMutablePointer<Int64>?
) -> Int32 {
  withStatus {
    let inputs = try CAttentionInputs(query, queryShape, queryDtype, key, keyShape, keyDtype, value, valueShape, valueDtype, rank: rank)
    let read = try CAttentionOptions(options, queryHeads: inputs.shape.queryHeads)
    try inputs.forward(output: output, outputDtype: outputDtype, logSumExp: logSumExp, graphs: read.graphs,
                       options: read.options, work: work)
  }
}
