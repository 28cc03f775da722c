import GraphAttention

/// Checks a validated graph's row enumeration against `contains` (decided from the definitions) for every
/// row and key, and its counts against the rows: the independent oracle for the mask and graph targets.
enum GraphOracle {
  static func check(_ graph: Graph, queryCount: Int, keyCount: Int, what: @autoclosure () -> String) {
    var scratch = RowScratch()
    var edges = 0, lo = Int.max, hi = 0, empty = 0
    var keys: [Int] = []
    for row in 0..<queryCount {
      graph.neighbourhood(row: row, queryCount: queryCount, keyCount: keyCount, into: &scratch)
      keys.removeAll(keepingCapacity: true)
      var previousLast = -1
      for run in scratch.runs {
        require(run.count >= 1 && run.stride >= 1 && run.start > previousLast && run.last < keyCount,
                "\(what()) row \(row): runs not sorted, disjoint and in range: \(scratch.runs)")
        previousLast = run.last
        var k = run.start
        for _ in 0..<run.count { keys.append(k); k += run.stride }
      }
      var expected: [Int] = []
      for j in 0..<keyCount where graph.contains(row: row, column: j, queryCount: queryCount, keyCount: keyCount) {
        expected.append(j)
      }
      require(keys == expected, "\(what()) row \(row): runs give \(keys), the definition \(expected)")
      let degree = graph.degree(row: row, queryCount: queryCount, keyCount: keyCount, scratch: &scratch)
      require(degree == expected.count, "\(what()) row \(row): degree \(degree), expected \(expected.count)")
      edges += degree
      lo = min(lo, degree)
      hi = max(hi, degree)
      if degree == 0 { empty += 1 }
    }
    require(graph.edgeCount(queryCount: queryCount, keyCount: keyCount) == edges, "\(what()): edgeCount")
    let stats = graph.degreeStatistics(queryCount: queryCount, keyCount: keyCount)
    require(stats.edges == edges && stats.min == lo && stats.max == hi && stats.emptyRows == empty,
            "\(what()): degreeStatistics \(stats), rows give edges \(edges) min \(lo) max \(hi) empty \(empty)")
    let estimate = graph.estimatedEdgeCount(queryCount: queryCount, keyCount: keyCount)
    require(estimate >= 0 && estimate <= queryCount * keyCount, "\(what()): estimate \(estimate)")
  }

  /// Sizes no caller may trap on: validation and the estimate at huge lengths.
  static func checkHugeLengths(_ graph: Graph) {
    for (q, k) in [(1 << 40, 1 << 40), (Int.max, Int.max), (1 << 62, 3), (3_000_000_000, 3_000_000_000)] {
      _ = graph.estimatedEdgeCount(queryCount: q, keyCount: k)
      if (try? graph.validate(queryCount: q, keyCount: k)) != nil {
        _ = graph.estimatedEdgeCount(queryCount: q, keyCount: k)
      }
    }
  }

  static func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError(message()) }
  }
}
