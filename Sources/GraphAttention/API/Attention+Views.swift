/// Sparse attention over tensors in any storage: heap or memory-mapped files, fp32, fp16 or bf16,
/// written into `output` (fp32, fp16 or bf16); arithmetic is fp32.
///
/// This is the form for contexts beyond RAM: inputs are read where they lie (keys and values in their
/// storage type by the kernels, query rows widened per tile) and each output row is written once, so a
/// caller can process `rows` in chunks and release the pages behind it.
///
/// - Parameters:
///   - query, key, value: as for `attention(query:key:value:graph:options:)`; `key` and `value` share a
///     storage type.
///   - output: shaped like the query with last dimension `d_v`.
///   - rows: the query rows to compute (all when nil); other rows of `output` are left as they are.
/// - Returns: the number of scores the kernels computed.
/// - Throws: `GraphAttentionError` for mismatched shapes or types and, when checked, non-finite inputs
///   (with `rows`, only those query rows are scanned: check keys and values once yourself).
/// - Complexity: O(edges of `rows` * (d_k + d_v)) per head.
@discardableResult
public func attention(query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView, graph: Graph,
                      options: AttentionOptions = AttentionOptions(), rows: Range<Int>? = nil) throws -> Int {
  let shape = try AttentionShape(query: query.shape, key: key.shape, value: value.shape)
  guard output.shape == shape.outputShape else {
    throw GraphAttentionError(.shape, "output has shape \(output.shape) but the result has shape \(shape.outputShape)",
                              fix: "create the output with the query's leading dimensions and the value's last dimension")
  }
  guard key.type == value.type else {
    throw GraphAttentionError(.dtype, "key is \(key.type.rawValue) but value is \(value.type.rawValue)",
                              fix: "store key and value in the same type")
  }
  if let rows, rows.lowerBound < 0 || rows.upperBound > shape.queryCount {
    throw GraphAttentionError(.option, "rows \(rows) are outside 0..<\(shape.queryCount)", fix: "pass a range of query rows")
  }
  let call = try AttentionCall(shape: shape, graph: graph, options: options)
  if options.checksFiniteInputs {
    if let rows {
      for head in 0..<(shape.batch * shape.queryHeads) {
        let first = (head * shape.queryCount + rows.lowerBound) * shape.keyDim
        try query.requireFinite(name: "query", elements: first..<first + rows.count * shape.keyDim)
      }
    } else {
      try query.requireFinite(name: "query")
      try key.requireFinite(name: "key")
      try value.requireFinite(name: "value")
    }
  }
  return call.run(excluding: nil, rows: rows, pointers: .init(
    query: query.base, queryType: query.type, key: key.base, value: value.base, keyValueType: key.type,
    destination: .output(output.base, type: output.type, emptyRows: options.emptyRows)))
}

