extension ReferenceAttention {
  /// The worst of a set of sampled rows of a computed output against the float64 reference: the one check
  /// behind `verify`, the demo and a streamed job's `checkRows`.
  public struct SampledCheck: Sendable, Equatable {
    /// The largest relative error (`relativeError`) over the rows; infinity when a row was wrong in kind (NaN
    /// where a number was due, a number where an empty row's NaN was due).
    public var worstError: Double
    /// Where it was: flattened head (`b * H_q + h`) and row; (0, 0) when every row was exact.
    public var head: Int
    public var row: Int
    /// Rows checked.
    public var rows: Int
  }

  /// Checks `rows` (pairs of flattened head and row) of `output` against `reference`'s rows: the in-memory
  /// `row(_:head:query:key:value:shape:graph:scale:options:)`, which tests every key with the graph's own
  /// definition (`contains`), or its view form for memory-mapped files, which tests the keys of the row's runs.
  ///
  /// A row without edges is due zeros, or NaN with `options.emptyRows == .nan` and no sinks.
  /// - Parameters:
  ///   - output: element `i` (flat, C order) of the computed output, shaped `shape.outputShape`.
  ///   - reference: the exact row for (flattened head, row).
  /// - Complexity: per row, as the reference's row.
  public static func check(rows: [(head: Int, row: Int)], output: (Int) -> Float, shape: AttentionShape,
                           options: AttentionOptions, reference: (_ head: Int, _ row: Int) -> Row) -> SampledCheck {
    var result = SampledCheck(worstError: 0, head: 0, row: 0, rows: rows.count)
    let expectNaN = options.emptyRows == .nan && options.sinks == nil
    for (head, row) in rows {
      let reference = reference(head, row)
      let base = (head * shape.queryCount + row) * shape.valueDim
      let computed = (0..<shape.valueDim).map { output(base + $0) }
      let error = relativeError(computed: computed[...], reference: reference, expectNaN: expectNaN)
      if !(error <= result.worstError) { (result.worstError, result.head, result.row) = (error, head, row) }
    }
    return result
  }
}
