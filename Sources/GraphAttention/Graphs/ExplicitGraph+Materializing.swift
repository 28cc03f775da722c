extension ExplicitGraph {
  /// Stores any graph's pattern explicitly in CSR form (4 bytes per edge plus 8 per row).
  ///
  /// Useful to run an implicit graph through the explicit (gather) path, e.g. a random graph as a
  /// stored sparse mask, or to hand a pattern to another tool.
  /// - Throws: `GraphAttentionError` if the graph does not fit the lengths or has too many edges for memory.
  /// - Complexity: O(edges) time and memory.
  public init(materializing graph: Graph, queryCount: Int, keyCount: Int, maxEdges: Int = 1 << 34) throws {
    try graph.validate(queryCount: queryCount, keyCount: keyCount)
    guard keyCount <= Int(UInt32.max) + 1 else {
      throw GraphAttentionError(.shape, "\(keyCount) keys do not fit 32-bit column indices", fix: "use at most 2^32 keys")
    }
    guard queryCount <= maxEdges else {
      throw GraphAttentionError(.resource, "materialising \(graph) needs \(queryCount) row offsets, more than \(maxEdges)",
                                fix: "use the implicit graph, or fewer tokens")
    }
    var offsets = [Int](repeating: 0, count: queryCount + 1)
    var columns: [UInt32] = []
    var scratch = RowScratch()
    for row in 0..<queryCount {
      graph.neighbourhood(row: row, queryCount: queryCount, keyCount: keyCount, into: &scratch)
      for run in scratch.runs {
        var key = run.start
        for _ in 0..<run.count {
          columns.append(UInt32(key))
          key += run.stride
        }
      }
      guard columns.count <= maxEdges else {
        throw GraphAttentionError(.resource, "materialising \(graph) needs more than \(maxEdges) edges",
                                  fix: "use the implicit graph, or fewer tokens")
      }
      offsets[row + 1] = columns.count
    }
    self.init(rowOffsets: offsets, rowIDs: nil, columns: columns, rowCount: queryCount, exact: true, declaredColumns: keyCount,
              source: "csr(\(graph))")
  }
}
