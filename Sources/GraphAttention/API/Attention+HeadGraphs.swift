/// Per-head graphs: one graph per query head, as models that mix windowed and full (or causal)
/// heads in one layer need.
///
/// Each head runs through the same engine as a single graph, with its own graph; heads whose graphs
/// are equal still run separately (the cost is one dispatch per head and batch element, nothing per
/// edge). Grouped-query attention works as usual: query head `h` reads key/value head
/// `h / (H / H_kv)`.
///
/// ```swift
/// let graphs = try [Graph.window(128, causal: true), .causal, .window(128, causal: true), .causal]
/// let o = try attention(query: q, key: k, value: v, graphs: graphs)  // q: [B, 4, L, d]
/// ```
///
/// - Parameters:
///   - graphs: one graph per query head (`graphs.count == H`); a graph that varies per head
///     (`Graph.variesPerHead`) is specialised with `forHead(h)` for its head `h`.
///   - options, rows, logSumExp: as in `attention(query:key:value:output:graph:options:rows:logSumExp:)`.
/// - Returns: the edges and scores of all heads together.
/// - Throws: `GraphAttentionError` (`.mask`) if the number of graphs is not the number of query heads,
///   and whatever a single-graph call throws for any head's graph.
/// - Complexity: the sum of each head's single-graph cost.
@discardableResult
public func attention(query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView, graphs: [Graph],
                      options: AttentionOptions = AttentionOptions(), rows: Range<Int>? = nil,
                      logSumExp: MutableTensorView? = nil) throws -> AttentionWork {
  let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
  guard graphs.count == shape.queryHeads else {
    throw GraphAttentionError(.mask, "\(graphs.count) graph(s) were given for \(shape.queryHeads) query head(s)",
                              fix: "give exactly one graph per query head (or one graph for every head)")
  }
  guard output.shape == shape.outputShape else {
    throw GraphAttentionError(.shape, "output has shape \(output.shape) but the result has shape \(shape.outputShape)",
                              fix: "create the output with the query's leading dimensions and the value's last dimension")
  }
  for (h, graph) in graphs.enumerated() {
    do { try graph.validate(queryCount: shape.queryCount, keyCount: shape.keyCount) } catch let error as GraphAttentionError {
      throw GraphAttentionError(error.kind, "head \(h): \(error.problem)", fix: error.fix)
    }
  }
  if let logSumExp, logSumExp.shape != Array(query.shape.dropLast()) || logSumExp.type != .float32 {
    throw GraphAttentionError(.shape, "logSumExp is \(logSumExp.type.rawValue) \(logSumExp.shape), not fp32 \(Array(query.shape.dropLast()))",
                              fix: "create the log-sum-exp as fp32 with the query's shape without its last dimension")
  }
  return try headwiseAttention(query: query, key: key, value: value, output: output, shape: shape,
                               graphs: graphs.enumerated().map { $1.forHead($0) }, options: options, rows: rows,
                               logSumExp: logSumExp)
}

/// Per-head graphs over in-memory tensors; see `attention(query:key:value:output:graphs:options:rows:)`.
/// - Returns: the output, shaped like the query with the value's last dimension.
public func attention(query: Tensor, key: Tensor, value: Tensor, graphs: [Graph],
                      options: AttentionOptions = AttentionOptions()) throws -> Tensor {
  let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
  let output = MutableTensorView(allocating: shape.outputShape, type: .float32)
  try attention(query: TensorView(query), key: TensorView(key), value: TensorView(value), output: output, graphs: graphs,
                options: options)
  return Tensor(output.readOnly)
}

/// Runs each (batch element, query head) with its own graph through the single-graph engine, on
/// views of that head's rows (contiguous in the `[B, H, L, d]` layout).
func headwiseAttention(query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView,
                       shape: AttentionShape, graphs: [Graph], options: AttentionOptions, rows: Range<Int>?,
                       logSumExp: MutableTensorView?) throws -> AttentionWork {
  let group = shape.queryHeads / shape.keyValueHeads
  let calls = shape.batch * shape.queryHeads
  var work = AttentionWork(edges: 0, scoresComputed: 0)
  var headOptions = options
  for call in 0..<calls {
    let (b, h) = call.quotientAndRemainder(dividingBy: shape.queryHeads)
    let kv = b * shape.keyValueHeads + h / group
    if let progress = options.progress {
      headOptions.progress = { progress((Double(call) + $0) / Double(calls)) }
    }
    let q = TensorView(shape: [shape.queryCount, shape.keyDim], type: query.type,
                       base: query.base + call * shape.queryCount * shape.keyDim * query.type.byteCount, owner: query.owner)
    let k = TensorView(shape: [shape.keyCount, shape.keyDim], type: key.type,
                       base: key.base + kv * shape.keyCount * shape.keyDim * key.type.byteCount, owner: key.owner)
    let v = TensorView(shape: [shape.keyCount, shape.valueDim], type: value.type,
                       base: value.base + kv * shape.keyCount * shape.valueDim * value.type.byteCount, owner: value.owner)
    let o = MutableTensorView(shape: [shape.queryCount, shape.valueDim], type: output.type,
                              base: output.base + call * shape.queryCount * shape.valueDim * output.type.byteCount, owner: output.owner)
    let lse = logSumExp.map {
      MutableTensorView(shape: [shape.queryCount], type: .float32, base: $0.base + call * shape.queryCount * 4, owner: $0.owner)
    }
    let headWork = try viewAttention(query: q, key: k, value: v, output: o, graph: graphs[h], options: headOptions, rows: rows,
                                     streaming: nil, logSumExp: lse)
    work.edges += headWork.edges
    work.scoresComputed += headWork.scoresComputed
  }
  return work
}
