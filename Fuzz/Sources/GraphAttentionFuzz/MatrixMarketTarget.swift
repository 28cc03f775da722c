import GraphAttention

/// Matrix Market text, parsed in memory; accepted patterns become graphs, with and without the lengths.
enum MatrixMarketTarget {
  static func run(_ data: UnsafeRawBufferPointer) {
    guard data.count <= 1 << 16 else { return }
    let pattern: MatrixMarketPattern
    do {
      pattern = try MatrixMarketPattern(bytes: Array(data))
    } catch is GraphAttentionError {
      return
    } catch {
      fatalError("non-GraphAttentionError \(error)")
    }
    GraphOracle.require(pattern.rows.count == pattern.columns.count, "rows and columns differ")
    for (r, c) in zip(pattern.rows, pattern.columns) {
      GraphOracle.require(r >= 0 && Int(r) < pattern.rowCount && c >= 0 && Int(c) < pattern.columnCount,
                          "entry (\(r), \(c)) outside \(pattern.rowCount) x \(pattern.columnCount)")
    }
    for lengths in [nil, (min(pattern.rowCount, 64), min(pattern.columnCount, 64))] as [(Int, Int)?] {
      guard let graph = try? ExplicitGraph(rows: pattern.rows, columns: pattern.columns, rowCount: pattern.rowCount,
                                           columnCount: pattern.columnCount, source: "mtx",
                                           queryCount: lengths?.0, keyCount: lengths?.1) else { continue }
      let whole = Graph.explicit(graph)
      GraphOracle.checkHugeLengths(whole)
      let q = pattern.rowCount, k = pattern.columnCount
      if q >= 1, k >= 1, q <= 64, k <= 64, (try? whole.validate(queryCount: q, keyCount: k)) != nil {
        GraphOracle.check(whole, queryCount: q, keyCount: k, what: "mtx")
      }
    }
  }
}
