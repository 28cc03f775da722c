import GraphAttention

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
/// - Complexity: about 2.5-3.5 times the forward's O(edges * (d_k + d_v)) per head.
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
    let q = try CTensor(name: "query", base: query, dtype: queryDtype, rank: rank, shape: queryShape)
    let k = try CTensor(name: "key", base: key, dtype: keyDtype, rank: rank, shape: keyShape)
    let v = try CTensor(name: "value", base: value, dtype: valueDtype, rank: rank, shape: valueShape)
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    guard let output, let logSumExp, let gradOutput, let gradQuery, let gradKey, let gradValue else {
      throw CABIFailure(status: .argument, message: "argument: an output, log-sum-exp, grad_output or gradient pointer is NULL. Fix: pass all of them.")
    }
    let outputType = try storageType(code: outputDtype, name: "output")
    let gradOutputType = try storageType(code: gradOutputDtype, name: "grad_output")
    let options = try attentionOptions(scale: scale, emptyRows: emptyRows, threads: threads, flags: flags)
    try attentionGradients(
      query: q.view, key: k.view, value: v.view,
      output: TensorView(shape: shape.outputShape, type: outputType, base: output, owner: nil),
      logSumExp: TensorView(shape: Array(q.shape.dropLast()), type: .float32, base: UnsafeRawPointer(logSumExp), owner: nil),
      gradOutput: TensorView(shape: shape.outputShape, type: gradOutputType, base: gradOutput, owner: nil),
      gradQuery: MutableTensorView(shape: q.shape, type: .float32, base: UnsafeMutableRawPointer(gradQuery), owner: nil),
      gradKey: MutableTensorView(shape: k.shape, type: .float32, base: UnsafeMutableRawPointer(gradKey), owner: nil),
      gradValue: MutableTensorView(shape: v.shape, type: .float32, base: UnsafeMutableRawPointer(gradValue), owner: nil),
      graph: try GraphHandle.borrow(graph), options: options)
  }
}
