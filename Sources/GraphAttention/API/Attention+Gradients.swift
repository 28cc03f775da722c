/// Exact gradients of sparse attention: `dQ`, `dK`, `dV` from `Q, K, V`, the forward's output `O` and
/// log-sum-exp `LSE`, and the output gradient `dO` (FlashAttention-2's formulation).
///
/// Per query row `i` and edge `(i, j)` of the graph, with `s_ij = scale * q_i . k_j`:
///
///     D_i   = sum_c dO_ic O_ic
///     P_ij  = exp(s_ij - LSE_i)
///     dV_j  = sum_i P_ij dO_i
///     dP_ij = dO_i . v_j
///     dS_ij = P_ij (dP_ij - D_i)
///     dQ_i  = scale * sum_j dS_ij k_j
///     dK_j  = scale * sum_i dS_ij q_i
///
/// With grouped-query heads, `dK` and `dV` of a key/value head sum over its query heads (in head
/// order). Rows without edges give zero `dQ` (NaN with `options.emptyRows = .nan`, as PyTorch gives for
/// fully masked rows); keys no query attends to get zero `dK` and `dV`.
///
/// Deterministic: `dQ` is computed in a pass over query rows and `dK`, `dV` in a pass over key columns
/// through the transposed graph (`Graph.transposed`), each gradient row by one worker in a fixed
/// order, so the result has the same bytes for any `options.threads`; no atomics.
///
/// ```swift
/// let lse = MutableTensorView(allocating: [heads, tokens], type: .float32)
/// try attention(query: q, key: k, value: v, output: o, graph: g, logSumExp: lse)
/// try attentionGradients(query: q, key: k, value: v, output: o.readOnly, logSumExp: lse.readOnly,
///                        gradOutput: dO, gradQuery: dq, gradKey: dk, gradValue: dv, graph: g)
/// ```
///
/// - Parameters:
///   - query, key, value: as for `attention`; fp32, fp16 or bf16 (widened to fp32 once, here).
///   - output: the forward's output `O`, shaped like the query with last dimension `d_v`, any storage type.
///   - logSumExp: fp32, the query's shape without its last dimension (`attention(..., logSumExp:)`
///     writes it); `-inf` for rows without edges.
///   - gradOutput: `dO`, shaped like `output`, any storage type.
///   - gradQuery, gradKey, gradValue: fp32, shaped like `query`, `key`, `value`; every element is written.
///   - options: `scale`, `softcap`, `alibi` and `sinks` must be the forward's; `threads`, `emptyRows`,
///     `checksFiniteInputs` and `kernel` (`.portable` forces the portable kernels) apply. With a softcap,
///     `dS` is scaled by its derivative `1 - tanh^2`; ALiBi's bias is a constant; sinks enter through `LSE`.
///   - gradSinks: with `options.sinks`, fp32 `[H_q]`, overwritten with `dL/dsink_h =
///     -sum_i e^(sink_h - LSE_i) D_i` over the head's rows of every batch element; ignored without sinks.
/// - Returns: the edges of the graph over every query head (`edges`), and the scores both passes computed
///   (`scoresComputed`, about twice the edges: `S` is recomputed in each pass).
/// - Throws: `GraphAttentionError` for mismatched shapes or types, bad options, and (when checked)
///   non-finite `Q`, `K`, `V` or `dO`. `O` and `LSE` are not checked: empty rows legitimately hold NaN / -inf.
///   Unchecked, a non-finite input reaches exactly the gradients it reaches in the formula: `dQ` of the
///   rows it touches (through their edges or their own `q` or `dO`), and `dK`, `dV` of those rows' keys.
/// - Complexity: O(edges * (3 d_k + 4 d_v)) time per head (about 3.5x the forward's `2 (d_k + d_v)`);
///   memory O(B * H_q * L_q) floats, plus fp32 copies of inputs stored as fp16/bf16, plus O(edges) for
///   the transpose of explicit and random graphs.
///
/// This is the core entry of the backward; the `graph:` and `graphs: [Graph]` forms are thin wrappers.
/// With per-head graphs each (batch element, query head) runs with its own graph; with grouped-query heads,
/// a key/value head's `dK` and `dV` are the sums of its query heads' contributions, added in head order
/// (deterministic), using O(L_k * (d_k + d_v)) floats more.
@discardableResult
public func attentionGradients(query: TensorView, key: TensorView, value: TensorView,
                               output: TensorView, logSumExp: TensorView, gradOutput: TensorView,
                               gradQuery: MutableTensorView, gradKey: MutableTensorView,
                               gradValue: MutableTensorView, graphs: AttentionGraphs,
                               options: AttentionOptions = AttentionOptions(),
                               gradSinks: MutableTensorView? = nil) throws -> AttentionWork {
  let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
  guard options.device == .cpu else {
    throw GraphAttentionError(.device, "the backward runs on the CPU only", fix: "compute the gradients with device .cpu")
  }
  try checkGradSinks(gradSinks, options: options, queryHeads: shape.queryHeads)
  switch try graphs.resolved(shape: shape) {
  case let .shared(graph):
    return try sharedGraphGradients(query: query, key: key, value: value, output: output, logSumExp: logSumExp,
                                    gradOutput: gradOutput, gradQuery: gradQuery, gradKey: gradKey, gradValue: gradValue,
                                    shape: shape, graph: graph, options: options, gradSinks: gradSinks)
  case let .perHead(headGraphs):
    return try headwiseGradients(query: query, key: key, value: value, output: output, logSumExp: logSumExp,
                                 gradOutput: gradOutput, gradQuery: gradQuery, gradKey: gradKey, gradValue: gradValue,
                                 shape: shape, graphs: headGraphs, options: options, gradSinks: gradSinks)
  }
}

/// The backward core with one graph for every head: `attentionGradients(..., graphs: .shared(graph), ...)`.
@discardableResult
public func attentionGradients(query: TensorView, key: TensorView, value: TensorView,
                               output: TensorView, logSumExp: TensorView, gradOutput: TensorView,
                               gradQuery: MutableTensorView, gradKey: MutableTensorView,
                               gradValue: MutableTensorView, graph: Graph,
                               options: AttentionOptions = AttentionOptions(),
                               gradSinks: MutableTensorView? = nil) throws -> AttentionWork {
  try attentionGradients(query: query, key: key, value: value, output: output, logSumExp: logSumExp, gradOutput: gradOutput,
                         gradQuery: gradQuery, gradKey: gradKey, gradValue: gradValue, graphs: .shared(graph),
                         options: options, gradSinks: gradSinks)
}

/// The backward core with one graph per query head: `attentionGradients(..., graphs: .perHead(graphs), ...)`.
@discardableResult
public func attentionGradients(query: TensorView, key: TensorView, value: TensorView,
                               output: TensorView, logSumExp: TensorView, gradOutput: TensorView,
                               gradQuery: MutableTensorView, gradKey: MutableTensorView,
                               gradValue: MutableTensorView, graphs: [Graph],
                               options: AttentionOptions = AttentionOptions(),
                               gradSinks: MutableTensorView? = nil) throws -> AttentionWork {
  try attentionGradients(query: query, key: key, value: value, output: output, logSumExp: logSumExp, gradOutput: gradOutput,
                         gradQuery: gradQuery, gradKey: gradKey, gradValue: gradValue, graphs: .perHead(graphs),
                         options: options, gradSinks: gradSinks)
}

/// One graph (validated, not varying per head) for every head: the CPU backward.
func sharedGraphGradients(query: TensorView, key: TensorView, value: TensorView, output: TensorView, logSumExp: TensorView,
                          gradOutput: TensorView, gradQuery: MutableTensorView, gradKey: MutableTensorView,
                          gradValue: MutableTensorView, shape: AttentionShape, graph: Graph, options: AttentionOptions,
                          gradSinks: MutableTensorView?) throws -> AttentionWork {
  let rowShape = Array(query.shape.dropLast())
  for (name, view, expected) in [("output", output.shape, shape.outputShape), ("gradOutput", gradOutput.shape, shape.outputShape),
                                 ("logSumExp", logSumExp.shape, rowShape)] where view != expected {
    throw GraphAttentionError(.shape, "\(name) has shape \(view) but should have shape \(expected)",
                              fix: name == "logSumExp" ? "pass the log-sum-exp the forward wrote (the query's shape without d)"
                                                       : "pass tensors shaped like the forward's output")
  }
  for (name, view, expected) in [("gradQuery", gradQuery, query.shape), ("gradKey", gradKey, key.shape),
                                 ("gradValue", gradValue, value.shape)] {
    guard view.shape == expected else {
      throw GraphAttentionError(.shape, "\(name) has shape \(view.shape) but should have shape \(expected)",
                                fix: "create each gradient with the shape of its input")
    }
    guard view.type == .float32 else {
      throw GraphAttentionError(.dtype, "\(name) is \(view.type.rawValue); gradients are fp32", fix: "create the gradients as fp32")
    }
  }
  guard logSumExp.type == .float32 else {
    throw GraphAttentionError(.dtype, "logSumExp is \(logSumExp.type.rawValue), not fp32", fix: "pass the fp32 log-sum-exp the forward wrote")
  }
  let call = try AttentionCall(shape: shape, graph: graph, options: options)
  if options.checksFiniteInputs {
    try query.requireFinite(name: "query")
    try key.requireFinite(name: "key")
    try value.requireFinite(name: "value")
    try gradOutput.requireFinite(name: "gradOutput")
  } else if !options.assumesFiniteInputs,
            let nonFinite = NonFiniteInputs(shape: shape, query: query, key: key, value: value, extraQueryRows: [gradOutput]) {
    var finite = options
    finite.assumesFiniteInputs = true
    return try nonFinite.backward(shape: shape, graph: graph, scale: call.scale, modifiers: call.modifiers,
                                  emptyRows: options.sinks == nil ? options.emptyRows : .zero, query: query, key: key,
                                  value: value, output: output, logSumExp: logSumExp, gradOutput: gradOutput,
                                  gradQuery: gradQuery, gradKey: gradKey, gradValue: gradValue, gradSinks: gradSinks) {
      try sharedGraphGradients(query: $0, key: $1, value: $2, output: $3, logSumExp: $4, gradOutput: $5, gradQuery: gradQuery,
                               gradKey: gradKey, gradValue: gradValue, shape: shape, graph: graph, options: finite,
                               gradSinks: gradSinks)
    }
  }
  // Kernels read fp32: narrower inputs are widened once (O(inputs) memory, a small part of the work).
  var widened: [UnsafeMutablePointer<Float>] = []
  defer { for buffer in widened { buffer.deallocate() } }
  func fp32(_ view: TensorView) -> UnsafePointer<Float> {
    if view.type == .float32 { return view.base.assumingMemoryBound(to: Float.self) }
    let copy = UnsafeMutablePointer<Float>.allocate(capacity: view.count)
    view.copyFloats(0..<view.count, to: copy)
    widened.append(copy)
    return UnsafePointer(copy)
  }
  let buffers = CPUBackward.Buffers(
    query: fp32(query), key: fp32(key), value: fp32(value), output: fp32(output),
    logSumExp: logSumExp.base.assumingMemoryBound(to: Float.self), gradOutput: fp32(gradOutput),
    gradQuery: gradQuery.base.assumingMemoryBound(to: Float.self),
    gradKey: gradKey.base.assumingMemoryBound(to: Float.self),
    gradValue: gradValue.base.assumingMemoryBound(to: Float.self),
    gradSinks: gradSinks?.base.assumingMemoryBound(to: Float.self))
  // With sinks no row is empty: its output and dQ are zeros.
  let work = CPUBackward.run(shape: shape, graph: graph, scale: call.scale, threads: call.threads, kernel: call.kernel,
                             emptyRows: options.sinks == nil ? options.emptyRows : .zero, edgesPerHead: call.edgesPerHead,
                             modifiers: call.modifiers, buffers: buffers)
  return AttentionWork(edges: work.edges, scoresComputed: work.scores)
}

/// Throws unless `gradSinks` is absent or fp32 `[H_q]`.
func checkGradSinks(_ gradSinks: MutableTensorView?, options: AttentionOptions, queryHeads: Int) throws {
  guard let gradSinks else { return }
  guard gradSinks.shape == [queryHeads], gradSinks.type == .float32 else {
    throw GraphAttentionError(.shape, "gradSinks is \(gradSinks.type.rawValue) \(gradSinks.shape), not fp32 [\(queryHeads)]",
                              fix: "create the sinks' gradient as fp32 with one element per query head")
  }
}

/// Useful floating-point work of a backward pass over `edges` edges (over every head, as
/// `AttentionWork.edges` counts them): FlashAttention's count, `2 * edges * (3 d_k + 2 d_v)`
/// (`10 * edges * d` when `d_k == d_v`): S, dP, dQ, dK and dV, each a multiply-add per element.
public func backwardUsefulFlops(shape: AttentionShape, edges: Int) -> Double {
  2 * Double(edges) * Double(3 * shape.keyDim + 2 * shape.valueDim)
}
