/// The carried online-softmax state `(m, l, acc)` of every query row, for composing graphs.
///
/// The reference paper composes masks (BigBird = window, then global, then random) by running one
/// kernel after another on shared `O, m, l` buffers; an edge shared by two of them is counted twice,
/// so callers must make the graphs disjoint by hand. This state does it for them: it remembers the
/// graphs already accumulated and visits only the new edges of each later graph. Accumulating `A`
/// then `B` gives the same result as accumulating `A + B` (up to fp32 rounding), in any order.
///
/// ```swift
/// var state = try AttentionState(query: q, value: v)
/// try state.accumulate(query: q, key: k, value: v, graph: try .window(64))
/// try state.accumulate(query: q, key: k, value: v, graph: try .global([0]))  // skips window edges
/// let o = state.output()                                                   // == window:64+global:0
/// ```
///
/// Per row: `m` is the largest scaled score seen (`-inf` before any edge), `l` the sum of
/// `e^(s - m)`, and `acc` the unnormalised `sum e^(s - m) v`. Memory: `(2 + d_v)` floats per row and head.
public struct AttentionState: Sendable {
  /// The problem's dimensions; later calls must use the same query shape and key count.
  public let shape: AttentionShape
  /// Running maxima `m`, `[B, H_q, L_q]`.
  public internal(set) var maxima: [Float]
  /// Running sums `l`, `[B, H_q, L_q]`.
  public internal(set) var sums: [Float]
  /// Unnormalised accumulators, `[B, H_q, L_q, d_v]`.
  public internal(set) var accumulator: [Float]
  /// The union of the graphs accumulated so far, or nil before the first.
  public internal(set) var visited: Graph?

  /// An empty state (no edges seen) for the given query and value tensors.
  /// - Throws: `GraphAttentionError` (`.shape`) for unusable shapes.
  public init(query: Tensor, value: Tensor) throws {
    let keyShape = Array(value.shape.dropLast()) + [query.shape.last ?? 1]
    try self.init(shape: AttentionShape(query: query.shape, key: keyShape, value: value.shape))
  }

  /// An empty state for `shape`.
  public init(shape: AttentionShape) {
    self.shape = shape
    let rows = shape.batch * shape.queryHeads * shape.queryCount
    maxima = [Float](repeating: -.infinity, count: rows)
    sums = [Float](repeating: 0, count: rows)
    accumulator = [Float](repeating: 0, count: rows * shape.valueDim)
    visited = nil
  }

  /// The validated call of an accumulation on any device: the tensors must fit the state, and the inputs
  /// are finite (unless `options` says not to check).
  func accumulationCall(query: Tensor, key: Tensor, value: Tensor, graph: Graph, options: AttentionOptions) throws -> AttentionCall {
    let callShape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
    guard callShape.outputShape == shape.outputShape, callShape.keyCount == shape.keyCount else {
      throw GraphAttentionError(
        .shape, "tensors with output shape \(callShape.outputShape) and \(callShape.keyCount) keys do not match the state's \(shape.outputShape) and \(shape.keyCount) keys",
        fix: "accumulate with the query, key and value the state was made for")
    }
    if options.sinks != nil {
      throw GraphAttentionError(.option, "sinks were given to an accumulation; a sink joins each row's softmax once, when it is normalised",
                                fix: "pass the sinks to output(sinks:) and logSumExp(sinks:) instead")
    }
    let call = try AttentionCall(shape: callShape, graph: graph, options: options)
    if options.checksFiniteInputs { try AttentionCall.checkFinite(query: query, key: key, value: value) }
    return call
  }

  /// Folds the edges of `graph` that no earlier call visited into the state.
  ///
  /// - Throws: `GraphAttentionError` if the tensors' shapes differ from the state's, or as `attention`.
  /// - Complexity: as `attention` over the new edges, plus O(runs) per row to exclude earlier graphs.
  public mutating func accumulate(query: Tensor, key: Tensor, value: Tensor, graph: Graph,
                                  options: AttentionOptions = AttentionOptions()) throws {
    if case let .cuda(ordinal, storage, tensorCores) = options.device {
      return try cudaAccumulate(runtime: .shared, ordinal: ordinal, storage: storage, tensorCores: tensorCores,
                                query: query, key: key, value: value, graph: graph, options: options)
    }
    let call = try accumulationCall(query: query, key: key, value: value, graph: graph, options: options)
    let excluding = visited
    _ = query.scalars.withUnsafeBufferPointer { q in
      key.scalars.withUnsafeBufferPointer { k in
        value.scalars.withUnsafeBufferPointer { v in
          maxima.withUnsafeMutableBufferPointer { m in
            sums.withUnsafeMutableBufferPointer { l in
              accumulator.withUnsafeMutableBufferPointer { acc in
                call.run(excluding: excluding, pointers: .init(
                  query: q.baseAddress!, key: k.baseAddress!, value: v.baseAddress!,
                  destination: .state(maxima: m.baseAddress!, sums: l.baseAddress!, accumulator: acc.baseAddress!)))
              }
            }
          }
        }
      }
    }
    visited = visited.map { $0 + graph } ?? graph
  }

  /// The normalised output `acc / l`, shaped like the query with last dimension `d_v`.
  /// Rows with no edges give zeros, or NaN with `.nan`.
  /// - Complexity: O(output).
  public func output(emptyRows: EmptyRowPolicy = .zero) -> Tensor {
    normalized(emptyRows: emptyRows, sinks: nil)
  }

  /// The normalised output with attention sinks: each row's softmax also counts `e^(sinks[h])` for its query
  /// head `h` (see `AttentionOptions.sinks`), once, however many graphs were accumulated. Rows with no
  /// edges give zeros.
  /// - Throws: `GraphAttentionError` (`.option`) unless `sinks` holds one finite logit per query head.
  /// - Complexity: O(output).
  public func output(sinks: [Float]) throws -> Tensor {
    normalized(emptyRows: .zero, sinks: try checkedSinks(sinks))
  }

  /// The rows' outputs, normalised by `CPUExecutor.finish`.
  func normalized(emptyRows: EmptyRowPolicy, sinks: [Float]?) -> Tensor {
    var out = accumulator
    out.withUnsafeMutableBufferPointer { o in
      for row in 0..<sums.count {
        let head = (row / shape.queryCount) % shape.queryHeads
        _ = CPUExecutor.finish(acc: o.baseAddress! + row * shape.valueDim, maximum: maxima[row], sum: sums[row],
                               count: shape.valueDim, emptyRows: emptyRows, sink: sinks?[head])
      }
    }
    return Tensor(shape: shape.outputShape, scalars: out)
  }

  /// `sinks`, validated against the state's query heads.
  func checkedSinks(_ sinks: [Float]) throws -> [Float] {
    var options = AttentionOptions()
    options.sinks = sinks
    return try ScoreModifiers(options: options, shape: shape).sinks!
  }
}
