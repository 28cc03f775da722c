import GraphAttention

extension CAttentionInputs {
  /// The backward both entry points run: one graph for every head, or one per query head.
  func backward(output: UnsafeRawPointer?, outputDtype: Int32, logSumExp: UnsafePointer<Float>?,
                gradOutput: UnsafeRawPointer?, gradOutputDtype: Int32, gradQuery: UnsafeMutablePointer<Float>?,
                gradKey: UnsafeMutablePointer<Float>?, gradValue: UnsafeMutablePointer<Float>?,
                gradSinks: UnsafeMutablePointer<Float>? = nil, graphs: [Graph], options: AttentionOptions) throws {
    guard let output, let logSumExp, let gradOutput, let gradQuery, let gradKey, let gradValue else {
      throw CABIFailure(status: .argument, message: "argument: an output, log-sum-exp, grad_output or gradient pointer is NULL. Fix: pass all of them.")
    }
    let outputType = try storageType(code: outputDtype, name: "output")
    let gradOutputType = try storageType(code: gradOutputDtype, name: "grad_output")
    let o = TensorView(shape: shape.outputShape, type: outputType, base: output, owner: nil)
    let lse = TensorView(shape: Array(query.shape.dropLast()), type: .float32, base: UnsafeRawPointer(logSumExp), owner: nil)
    let dO = TensorView(shape: shape.outputShape, type: gradOutputType, base: gradOutput, owner: nil)
    let dQ = MutableTensorView(shape: query.shape, type: .float32, base: UnsafeMutableRawPointer(gradQuery), owner: nil)
    let dK = MutableTensorView(shape: key.shape, type: .float32, base: UnsafeMutableRawPointer(gradKey), owner: nil)
    let dV = MutableTensorView(shape: value.shape, type: .float32, base: UnsafeMutableRawPointer(gradValue), owner: nil)
    var dSinks: MutableTensorView?
    if options.sinks != nil {
      guard let gradSinks else {
        throw CABIFailure(status: .argument, message: "argument: options hold sinks but grad_sinks is NULL. Fix: pass H_q floats for dL/dsinks.")
      }
      dSinks = MutableTensorView(shape: [shape.queryHeads], type: .float32, base: UnsafeMutableRawPointer(gradSinks), owner: nil)
    }
    if graphs.count == 1 {
      try attentionGradients(query: query.view, key: key.view, value: value.view, output: o, logSumExp: lse, gradOutput: dO,
                             gradQuery: dQ, gradKey: dK, gradValue: dV, graph: graphs[0], options: options, gradSinks: dSinks)
    } else {
      try attentionGradients(query: query.view, key: key.view, value: value.view, output: o, logSumExp: lse, gradOutput: dO,
                             gradQuery: dQ, gradKey: dK, gradValue: dV, graphs: graphs, options: options, gradSinks: dSinks)
    }
  }
}

/// Gradients of `sum(grad_output * output)` for the forward call with the same arguments: fp32 `grad_query`,
/// `grad_key`, `grad_value` shaped like query, key and value (all written; deterministic for any thread count).
///
/// - Parameters:
///   - query, key, value, rank, graph, scale, empty_rows, threads, flags: as for `ga_attention_forward`; with
///     empty_rows 1 (NaN) the `grad_query` rows of queries without edges are NaN, as PyTorch gives, else zero.
///   - output: the forward's output (query shape with last extent `d_v`) of `output_dtype`.
///   - log_sum_exp: the forward's fp32 LSE (query shape without its last extent).
///   - grad_output: the gradient of the loss with respect to the output, shaped like it, of `grad_output_dtype`.
/// - Returns: 0, or a status with `ga_last_error` set; the gradients are then unspecified.
/// - Complexity: about 2-3.5 times the forward's O(edges * (d_k + d_v)) per head (2-2.7 for windows, dilated and
/// blocked graphs, which take the single pass; see `CPUBackward`).
@_cdecl("ga_attention_backward")
public func ga_attention_backward(
  _ query: UnsafeRawPointer?, _ queryShape: UnsafePointer<Int64>?, _ queryDtype: Int32,
  _ key: UnsafeRawPointer?, _ keyShape: UnsafePointer<Int64>?, _ keyDtype: Int32,
  _ value: UnsafeRawPointer?, _ valueShape: UnsafePointer<Int64>?, _ valueDtype: Int32,
  _ rank: Int32,
  _ output: UnsafeRawPointer?, _ outputDtype: Int32,
  _ logSumExp: UnsafePointer<Float>?,
  _ gradOutput: UnsafeRawPointer?, _ gradOutputDtype: Int32,
  _ gradQuery: UnsafeMutablePointer<Float>?, _ gradKey: UnsafeMutablePointer<Float>?,
  _ gradValue: UnsafeMutablePointer<Float>?,
  _ graph: UnsafeMutableRawPointer?,
  _ scale: Float, _ emptyRows: Int32, _ threads: Int32, _ flags: UInt32
) -> Int32 {
  withStatus {
    let inputs = try CAttentionInputs(query, queryShape, queryDtype, key, keyShape, keyDtype, value, valueShape, valueDtype, rank: rank)
    try inputs.backward(output: output, outputDtype: outputDtype, logSumExp: logSumExp, gradOutput: gradOutput,
                        gradOutputDtype: gradOutputDtype, gradQuery: gradQuery, gradKey: gradKey, gradValue: gradValue,
                        graphs: [try GraphHandle.borrow(graph)],
                        options: try attentionOptions(scale: scale, emptyRows: emptyRows, threads: threads, flags: flags))
  }
}

/// `ga_attention_backward` with its options in a versioned struct, as `ga_attention_forward_ex` takes them.
///
/// - Parameters:
///   - query ... grad_value: as for `ga_attention_backward`.
///   - grad_sinks: NULL, or H_q floats receiving dL/dsinks when `options->sinks` is set (then required).
///   - options: the forward's `ga_attention_options` (the same graphs, scale and modifiers).
/// - Returns: 0, or a status with `ga_last_error` set; the gradients are then unspecified.
/// - Complexity: the sum of each head's single-graph cost.
@_cdecl("ga_attention_backward_ex")
public func ga_attention_backward_ex(
  _ query: UnsafeRawPointer?, _ queryShape: UnsafePointer<Int64>?, _ queryDtype: Int32,
  _ key: UnsafeRawPointer?, _ keyShape: UnsafePointer<Int64>?, _ keyDtype: Int32,
  _ value: UnsafeRawPointer?, _ valueShape: UnsafePointer<Int64>?, _ valueDtype: Int32,
  _ rank: Int32,
  _ output: UnsafeRawPointer?, _ outputDtype: Int32,
  _ logSumExp: UnsafePointer<Float>?,
  _ gradOutput: UnsafeRawPointer?, _ gradOutputDtype: Int32,
  _ gradQuery: UnsafeMutablePointer<Float>?, _ gradKey: UnsafeMutablePointer<Float>?,
  _ gradValue: UnsafeMutablePointer<Float>?, _ gradSinks: UnsafeMutablePointer<Float>?,
  _ options: UnsafeRawPointer?
) -> Int32 {
  withStatus {
    let inputs = try CAttentionInputs(query, queryShape, queryDtype, key, keyShape, keyDtype, value, valueShape, valueDtype, rank: rank)
    let read = try CAttentionOptions(options, queryHeads: inputs.shape.queryHeads)
    try inputs.backward(output: output, outputDtype: outputDtype, logSumExp: logSumExp, gradOutput: gradOutput,
                        gradOutputDtype: gradOutputDtype, gradQuery: gradQuery, gradKey: gradKey, gradValue: gradValue,
                        gradSinks: gradSinks, graphs: read.graphs, options: read.options)
  }
}
