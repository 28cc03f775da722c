extension Graph {
  /// Checks that the graph can be used with `queryCount` queries and `keyCount` keys.
  ///
  /// Implicit kinds other than `full` and `random` are self-attention graphs and need
  /// `queryCount == keyCount`; global tokens must be below the length; explicit patterns must fit.
  /// - Throws: `GraphAttentionError` naming the component and the fix.
  /// - Complexity: O(components + global tokens).
  public func validate(queryCount: Int, keyCount: Int) throws {
    guard queryCount >= 1, keyCount >= 1 else {
      throw GraphAttentionError(.shape, "attention needs at least one query and one key token, got L_q = \(queryCount), L_k = \(keyCount)",
                                fix: "pass tensors with a non-empty token dimension")
    }
    for component in components {
      if component.requiresSquare, queryCount != keyCount {
        throw GraphAttentionError(
          .shape, "mask \(component) is defined for self-attention, but L_q = \(queryCount) differs from L_k = \(keyCount)",
          fix: "use an explicit graph (csr:, coo:, mtx:), full or random for cross-attention")
      }
      switch component {
      case let .global(tokens):
        if let last = tokens.last, last >= keyCount {
          throw GraphAttentionError(.mask, "global token \(last) is out of range for \(keyCount) tokens",
                                    fix: "list tokens in 0..<\(keyCount)")
        }
      case let .explicit(graph):
        try graph.validate(queryCount: queryCount, keyCount: keyCount)
      default:
        break
      }
    }
  }

  /// The exact number of edges (query-key pairs attended to), counting shared edges of a union once.
  ///
  /// - Complexity: O(1) for a single implicit component; O(edges) for random graphs;
  ///   O(queryCount * runs per row) for unions. Never materialises the graph.
  public func edgeCount(queryCount: Int, keyCount: Int) -> Int {
    if components.count == 1, let total = components[0].closedFormEdgeCount(queryCount: queryCount, keyCount: keyCount) {
      return total
    }
    var scratch = RowScratch()
    var total = 0
    for row in 0..<queryCount {
      total += degree(row: row, queryCount: queryCount, keyCount: keyCount, scratch: &scratch)
    }
    return total
  }

  /// An estimate of `edgeCount` that costs no pass over the rows, for sizing work: the sum of the
  /// components' closed-form counts (a random graph's expected `p * L_q * L_k`), capped at `L_q * L_k`.
  /// Exact for a single implicit component; above the exact count by the edges components share.
  ///
  /// Why not sample rows: a few rows of a union can hold most of its edges (a global token's row attends
  /// to every key), and a sample that hits one of them overstates the typical row a millionfold.
  /// - Complexity: O(components).
  public func estimatedEdgeCount(queryCount: Int, keyCount: Int) -> Int {
    var total = 0.0
    for component in components {
      if case let .random(graph) = component {
        total += graph.probability * Double(queryCount) * Double(keyCount)
      } else if let count = component.closedFormEdgeCount(queryCount: queryCount, keyCount: keyCount) {
        total += Double(count)
      }
    }
    return Int(min(total, Double(queryCount) * Double(keyCount), 9e18).rounded())
  }

  /// Row degrees summarised: the least, the mean and the largest number of keys a query attends to,
  /// and the number of rows with no keys.
  /// - Complexity: O(queryCount) for single implicit components, as `edgeCount` otherwise.
  public func degreeStatistics(queryCount: Int, keyCount: Int) -> (min: Int, mean: Double, max: Int, emptyRows: Int, edges: Int) {
    var scratch = RowScratch()
    var lo = Int.max, hi = 0, empty = 0, total = 0
    for row in 0..<queryCount {
      let d = degree(row: row, queryCount: queryCount, keyCount: keyCount, scratch: &scratch)
      lo = min(lo, d)
      hi = max(hi, d)
      total += d
      if d == 0 { empty += 1 }
    }
    return (queryCount == 0 ? 0 : lo, queryCount == 0 ? 0 : Double(total) / Double(queryCount), hi, empty, total)
  }

  /// Whether query `row` attends to key `column`, decided from the definitions, independently of
  /// the run enumeration the kernels use (the reference and `verify` rely on this independence).
  /// - Complexity: O(1) for implicit kinds, O(log degree) explicit, O(degree) random.
  public func contains(row i: Int, column j: Int, queryCount: Int, keyCount: Int) -> Bool {
    components.contains { $0.contains(row: i, column: j, keyCount: keyCount) }
  }
}

extension Graph.Component {
  func contains(row i: Int, column j: Int, keyCount n: Int) -> Bool {
    guard j >= 0, j < n else { return false }
    switch self {
    case .full: return true
    case .causal: return j <= i
    case let .window(radius, causal):
      return causal ? (j <= i && i - j <= radius) : abs(i - j) <= radius
    case let .dilated(radius, dilation):
      let s = dilation + 1
      let distance = abs(i - j)
      return distance % s == 0 && distance / s <= radius
    case let .blocked(block, dilation):
      let s = dilation + 1
      let base = (i / block) * block
      return (i - base) % s == 0 && j >= base && j - base < block && (j - base) % s == 0
    case let .global(tokens):
      return Graph.Component.binarySearch(tokens, i) || Graph.Component.binarySearch(tokens, j)
    case let .random(graph):
      var found = false
      graph.forEachKey(row: i, keyCount: n) { key in
        if key == j { found = true }
        return key < j
      }
      return found
    case let .explicit(graph):
      let columns = graph.columns(ofRow: i)
      var lo = columns.startIndex, hi = columns.endIndex
      while lo < hi {
        let mid = (lo + hi) / 2
        if Int(columns[mid]) < j { lo = mid + 1 } else { hi = mid }
      }
      return lo < columns.endIndex && Int(columns[lo]) == j
    }
  }

  /// Closed-form total edge count of one component, or nil for random graphs.
  func closedFormEdgeCount(queryCount: Int, keyCount: Int) -> Int? {
    let n = keyCount
    switch self {
    case .full: return queryCount * keyCount
    case .causal: return n * (n + 1) / 2
    case let .window(radius, causal):
      return causal ? Graph.Component.causalWindowEdges(n, radius) : Graph.Component.windowEdges(n, radius)
    case let .dilated(radius, dilation):
      // Each residue class mod s is a plain window over its members; there are two class sizes.
      let s = dilation + 1
      let (q, r) = n.quotientAndRemainder(dividingBy: s)
      return r * Graph.Component.windowEdges(q + 1, radius) + (s > n ? 0 : (s - r) * Graph.Component.windowEdges(q, radius))
    case let .blocked(block, dilation):
      // A block of b keys has ceil(b/s) active rows, each attending to ceil(b/s) keys.
      let s = dilation + 1
      let (full, partial) = n.quotientAndRemainder(dividingBy: block)
      let perFull = (block - 1) / s + 1
      let perPartial = partial == 0 ? 0 : (partial - 1) / s + 1
      return full * perFull * perFull + perPartial * perPartial
    case let .global(tokens):
      let g = tokens.count
      return 2 * g * n - g * g
    case .random: return nil
    case let .explicit(graph): return graph.edgeCount
    }
  }

  /// Edges of `window(radius)` over `n` tokens: `n(2w+1) - w(w+1)`, or `n^2` when the window covers all.
  static func windowEdges(_ n: Int, _ radius: Int) -> Int {
    guard n > 0 else { return 0 }
    if radius >= n - 1 { return n * n }
    return n * (2 * radius + 1) - radius * (radius + 1)
  }

  /// Edges of `window(radius, causal: true)`: `n(w+1) - w(w+1)/2`, or `n(n+1)/2` when it covers all.
  static func causalWindowEdges(_ n: Int, _ radius: Int) -> Int {
    guard n > 0 else { return 0 }
    if radius >= n - 1 { return n * (n + 1) / 2 }
    return n * (radius + 1) - radius * (radius + 1) / 2
  }
}
