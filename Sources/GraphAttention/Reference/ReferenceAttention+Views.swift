extension ReferenceAttention {
  /// Row `row` of flattened head `head`, exactly, from tensors in any storage (memory-mapped files included).
  ///
  /// Reads only the query row and the keys and values the row attends to. `options`' score modifiers apply
  /// as in the in-memory form.
  /// - Complexity: O(L_k * cost of `contains` + degree * (d_k + d_v)).
  public static func row(_ row: Int, head: Int, query: TensorView, key: TensorView, value: TensorView,
                         shape: AttentionShape, graph: Graph, scale: Double,
                         options: AttentionOptions = AttentionOptions()) -> Row {
    let modifiers = ReferenceModifiers(options: options, head: head, shape: shape)
    let kvHead = shape.keyValueHead(ofQueryHead: head)
    let qBase = (head * shape.queryCount + row) * shape.keyDim
    let q = (0..<shape.keyDim).map { Double(query.element(qBase + $0)) }
    var neighbours: [Int] = []
    var scores: [Double] = []
    var scratch = RowScratch()
    graph.neighbourhood(row: row, queryCount: shape.queryCount, keyCount: shape.keyCount, into: &scratch)
    // Candidates from the runs, confirmed one by one by the definitions (`contains`), so a key the runs
    // invent is caught; keys the runs miss are caught by the tests that compare runs and definitions.
    for run in scratch.runs {
      var j = run.start
      for _ in 0..<run.count {
        defer { j += run.stride }
        guard graph.contains(row: row, column: j, queryCount: shape.queryCount, keyCount: shape.keyCount) else { continue }
        let kBase = (kvHead * shape.keyCount + j) * shape.keyDim
        var s = 0.0
        for c in 0..<shape.keyDim { s += q[c] * Double(key.element(kBase + c)) }
        neighbours.append(j)
        scores.append(modifiers.score(s * scale, row: row, key: j, shape: shape))
      }
    }
    return softmax(scores: scores, neighbours: neighbours, valueDim: shape.valueDim, sink: modifiers.sink) { j, c in
      Double(value.element((kvHead * shape.keyCount + j) * shape.valueDim + c))
    }
  }
}
