extension Graph {
  /// Checks that the graph can be used with `queryCount` queries and `keyCount` keys.
  ///
  /// `full`, `random`, explicit graphs and the causal kinds (`causal`, `window:W:causal`, `prefix:P`,
  /// aligned bottom-right) allow `queryCount != keyCount`; the other implicit kinds are self-attention
  /// graphs and need `queryCount == keyCount`; global tokens must be below the length; explicit
  /// patterns must fit; document offsets must end at the length.
  /// - Throws: `GraphAttentionError` naming the component and the fix.
  ///   Edge counts must fit in `Int` (2^63 - 1): `full` at 2^32 x 2^32 tokens does not.
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
          fix: "use an explicit graph (csr:, coo:, mtx:), full, random or a causal kind (aligned bottom-right) for cross-attention")
      }
      for atom in component.intersectionAtoms { try atom.validateAtom(queryCount: queryCount, keyCount: keyCount) }
    }
    // Counts must fit in Int: when L_q * L_k does not, the components' counts (their sum bounds the
    // union's) must. Random graphs are bounded only by L_q * L_k.
    if (try? EdgeCountOverflow.product(queryCount, keyCount)) == nil {
      do {
        var total = 0
        for component in components {
          let count = try component.closedFormEdgeCount(queryCount: queryCount, keyCount: keyCount)
            ?? component.intersectionAtoms.compactMap { try? $0.closedFormEdgeCount(queryCount: queryCount, keyCount: keyCount) }.min()
            ?? EdgeCountOverflow.product(queryCount, keyCount)
          total = try EdgeCountOverflow.sum(total, count)
        }
      } catch {
        throw GraphAttentionError(
          .shape, "mask \(self) over \(queryCount) x \(keyCount) tokens can have more than \(Int.max) edges, which no count can hold",
          fix: "use fewer tokens or a sparser mask (random graphs need L_q * L_k below 2^63)")
      }
    }
  }

  /// The exact number of edges (query-key pairs attended to), counting shared edges of a union once.
  ///
  /// - Precondition: the graph is valid for these lengths (`validate(queryCount:keyCount:)` passes),
  ///   which also guarantees that the count fits in `Int`.
  /// - Complexity: O(1) for a single implicit component; O(edges) for random graphs;
  ///   O(queryCount * runs per row) for unions. Never materialises the graph.
  public func edgeCount(queryCount: Int, keyCount: Int) -> Int {
    requireValid(queryCount: queryCount, keyCount: keyCount)
    if components.count == 1, let total = try? components[0].closedFormEdgeCount(queryCount: queryCount, keyCount: keyCount) {
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
  /// components' closed-form counts (a random graph's expected `p * L_q * L_k`), capped at `L_q * L_k`
  /// and at 9e18 (so it never overflows, whatever the lengths). Exact for a single implicit component
  /// below the cap; above the exact count by the edges components share.
  ///
  /// Why not sample rows: a few rows of a union can hold most of its edges (a global token's row attends
  /// to every key), and a sample that hits one of them overstates the typical row a millionfold.
  /// - Complexity: O(components).
  public func estimatedEdgeCount(queryCount: Int, keyCount: Int) -> Int {
    let q = max(queryCount, 0), k = max(keyCount, 0)
    let cap = min(Double(q) * Double(k), 9e18)
    var total = 0.0
    for component in components {
      total += Graph.estimate(component, queryCount: q, keyCount: k, cap: cap)
    }
    return Int(min(total, cap).rounded())
  }

  /// One component's closed-form count, a random graph's expected count, and for an intersection
  /// without a closed form the least of its operands' (an upper bound).
  private static func estimate(_ component: Component, queryCount q: Int, keyCount k: Int, cap: Double) -> Double {
    if case let .random(graph) = component { return graph.probability * Double(q) * Double(k) }
    if case let .view(view) = component {  // the base's edges, scaled to the view's share of the rows
      let base = estimate(view.base, queryCount: view.globalQueryCount, keyCount: view.globalKeyCount, cap: 9e18)
      return min(cap, base * Double(q) / Double(max(1, view.globalQueryCount)))
    }
    do {
      if let count = try component.closedFormEdgeCount(queryCount: q, keyCount: k) { return Double(count) }
    } catch {
      return cap  // more than Int.max edges in one component: above the cap
    }
    if case let .intersection(atoms) = component {
      return atoms.map { estimate($0, queryCount: q, keyCount: k, cap: cap) }.min() ?? 0
    }
    return 0
  }

  /// Row degrees summarised: the least, the mean and the largest number of keys a query attends to,
  /// the number of rows with no keys, and the number of edges.
  ///
  /// - Parameter progress: called with the number of rows done, about every 2^16 rows, when the rows
  ///   are enumerated one by one (unions and random graphs); never for closed forms.
  /// - Precondition: the graph is valid for these lengths (`validate(queryCount:keyCount:)` passes).
  /// - Complexity: O(1) for a single implicit component (closed forms, at any length), O(stored rows)
  ///   for a single explicit one, as `edgeCount` otherwise.
  public func degreeStatistics(queryCount: Int, keyCount: Int, progress: ((_ rowsDone: Int) -> Void)? = nil)
    -> (min: Int, mean: Double, max: Int, emptyRows: Int, edges: Int) {
    requireValid(queryCount: queryCount, keyCount: keyCount)
    if components.count == 1,
       let edges = try? components[0].closedFormEdgeCount(queryCount: queryCount, keyCount: keyCount),
       let stats = components[0].closedFormDegreeStatistics(queryCount: queryCount, keyCount: keyCount) {
      return (stats.min, Double(edges) / Double(queryCount), stats.max, stats.emptyRows, edges)
    }
    var scratch = RowScratch()
    var lo = Int.max, hi = 0, empty = 0, total = 0
    for row in 0..<queryCount {
      let d = degree(row: row, queryCount: queryCount, keyCount: keyCount, scratch: &scratch)
      lo = min(lo, d)
      hi = max(hi, d)
      total += d
      if d == 0 { empty += 1 }
      if let progress, row & 0xFFFF == 0xFFFF { progress(row + 1) }
    }
    progress?(queryCount)
    return (lo, Double(total) / Double(queryCount), hi, empty, total)
  }

  /// Traps with the validation message when the graph does not fit the lengths: counting an unvalidated
  /// graph would answer nonsense (a global token beyond L, a negative row).
  @inline(__always)
  func requireValid(queryCount: Int, keyCount: Int) {
    do { try validate(queryCount: queryCount, keyCount: keyCount) } catch {
      preconditionFailure("\(self) is not valid for L_q = \(queryCount), L_k = \(keyCount): \(error)")
    }
  }

  /// Whether query `row` attends to key `column`, decided from the definitions, independently of
  /// the run enumeration the kernels use (the reference and `verify` rely on this independence).
  /// - Complexity: O(1) for implicit kinds, O(log degree) explicit, O(degree) random.
  public func contains(row i: Int, column j: Int, queryCount: Int, keyCount: Int) -> Bool {
    components.contains { $0.contains(row: i, column: j, queryCount: queryCount, keyCount: keyCount) }
  }
}

extension Graph.Component {
  /// Checks one operand (not an intersection) against the lengths: global tokens, explicit patterns
  /// and document offsets.
  func validateAtom(queryCount: Int, keyCount: Int) throws {
    switch self {
    case let .global(tokens):
      if let last = tokens.last, last >= keyCount {
        throw GraphAttentionError(.mask, "global token \(last) is out of range for \(keyCount) tokens",
                                  fix: "list tokens in 0..<\(keyCount)")
      }
    case let .explicit(graph):
      try graph.validate(queryCount: queryCount, keyCount: keyCount)
    case let .documents(documents):
      if documents.tokenCount != keyCount {
        throw GraphAttentionError(
          .mask, "\(documents.source) covers \(documents.tokenCount) tokens (its last offset) but the sequence has \(keyCount)",
          fix: "end the offsets at the sequence length \(keyCount)")
      }
    case let .view(view):
      if view.rows.count != queryCount || view.keys.count != keyCount {
        throw GraphAttentionError(.shape, "a view of \(view.rows.count) rows and \(view.keys.count) keys is used with L_q = \(queryCount), L_k = \(keyCount)",
                                  fix: "pass the view's rows as the query and its keys as the key and value")
      }
    default:
      break
    }
  }

  func contains(row i: Int, column j: Int, queryCount m: Int, keyCount n: Int) -> Bool {
    guard j >= 0, j < n else { return false }
    switch self {
    case .full: return true
    case .causal: return j <= i + (n - m)
    case let .window(radius, causal):
      return causal ? (j <= i + (n - m) && i + (n - m) - j <= radius) : abs(i - j) <= radius
    case let .prefix(length): return j < max(length, i + (n - m) + 1)
    case let .documents(documents):
      let (start, end) = documents.document(of: i)
      return j >= start && j < end
    case let .intersection(atoms):
      return atoms.allSatisfy { $0.contains(row: i, column: j, queryCount: m, keyCount: n) }
    case let .view(view):
      let g = view.rows.global(i)
      if Graph.Component.binarySearch(view.excluded, g) { return false }
      return view.base.contains(row: g, column: view.keys.global(j), queryCount: view.globalQueryCount, keyCount: view.globalKeyCount)
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
  /// - Throws: `EdgeCountOverflow` when the count does not fit in `Int`.
  func closedFormEdgeCount(queryCount: Int, keyCount: Int) throws(EdgeCountOverflow) -> Int? {
    let n = keyCount, m = queryCount
    // Aligned causal kinds: the t = min(L_q, L_k) non-empty rows are the last t rows of the square graph.
    let t = min(m, n)
    switch self {
    case .full: return try EdgeCountOverflow.product(queryCount, keyCount)
    case .causal: return try Graph.Component.triangle(n) - Graph.Component.triangle(n - t)
    case let .window(radius, causal):
      return causal ? try Graph.Component.causalWindowEdges(n, radius) - Graph.Component.causalWindowEdges(n - t, radius)
        : try Graph.Component.windowEdges(n, radius)
    case let .prefix(length):
      // Rows with i + L_k - L_q + 1 = h > p = min(P, L_k) see h keys (h = a...L_k); the others p.
      let p = min(length, n)
      if m <= 0 { return 0 }
      if p == n { return try EdgeCountOverflow.product(m, n) }
      let a = max(n - m, p) + 1  // p < n and n - m < n: no overflow
      let long = max(0, n - a + 1)
      let longEdges = long == 0 ? 0 : try Graph.Component.triangle(n) - Graph.Component.triangle(a - 1)
      return try EdgeCountOverflow.sum(EdgeCountOverflow.product(m - long, p), longEdges)
    case let .documents(documents):
      return documents.edgeCount
    case let .intersection(atoms):
      guard let (documents, other) = Graph.Component.documentsPair(atoms) else { return nil }
      switch other {
      case .full: return documents.edgeCount
      case .causal: return documents.causalEdgeCount
      case let .window(radius, causal):
        var total = 0
        for d in 1..<documents.offsets.count {
          let length = documents.offsets[d] - documents.offsets[d - 1]
          let edges = causal ? try Graph.Component.causalWindowEdges(length, radius) : try Graph.Component.windowEdges(length, radius)
          total = try EdgeCountOverflow.sum(total, edges)
        }
        return total
      default: return nil
      }
    case let .dilated(radius, dilation):
      // Each residue class mod s is a plain window over its members; there are two class sizes.
      let s = dilation + 1
      let (q, r) = n.quotientAndRemainder(dividingBy: s)
      let long = r == 0 ? 0 : try EdgeCountOverflow.product(r, Graph.Component.windowEdges(q + 1, radius))
      let short = s > n ? 0 : try EdgeCountOverflow.product(s - r, Graph.Component.windowEdges(q, radius))
      return try EdgeCountOverflow.sum(long, short)
    case let .blocked(block, dilation):
      // A block of b keys has ceil(b/s) active rows, each attending to ceil(b/s) keys.
      let (full, perFull, perPartial) = Graph.Component.blockedShape(n, block: block, dilation: dilation)
      let fullEdges = try EdgeCountOverflow.product(full, EdgeCountOverflow.product(perFull, perFull))
      return try EdgeCountOverflow.sum(fullEdges, EdgeCountOverflow.product(perPartial, perPartial))
    case let .global(tokens):
      // g full rows plus g keys in each of the other n - g rows.
      let g = tokens.count
      return try EdgeCountOverflow.sum(EdgeCountOverflow.product(g, n), EdgeCountOverflow.product(g, n - g))
    case .random, .view: return nil
    case let .explicit(graph): return graph.edgeCount
    }
  }

  /// The least and largest row degree and the number of empty rows, in closed form, for every kind
  /// but random (nil). `queryCount == keyCount` for the square kinds (validated).
  /// - Complexity: O(1), O(stored rows) for explicit graphs.
  func closedFormDegreeStatistics(queryCount: Int, keyCount n: Int) -> (min: Int, max: Int, emptyRows: Int)? {
    let m = queryCount, empty = max(0, m - n)  // rows before the aligned diagonal, for causal kinds
    switch self {
    case .full: return (n, n, 0)
    case .causal: return (empty > 0 ? 0 : n - m + 1, n, empty)
    case let .window(radius, causal):
      // The first row sees radius + 1 keys (or all), an interior row 2 radius + 1 (or all).
      let edgeRow = radius >= n ? n : radius + 1
      return causal ? (empty > 0 ? 0 : min(radius, n - m) + 1, edgeRow, empty) : (edgeRow, radius >= n ? n : min(n, 2 * radius + 1), 0)
    case let .prefix(length):
      // Degrees do not decrease with the row.
      let first = Graph.Component.prefixDegree(row: 0, length: length, queryCount: m, keyCount: n)
      let last = Graph.Component.prefixDegree(row: m - 1, length: length, queryCount: m, keyCount: n)
      return (first, last, length > 0 ? 0 : empty)
    case let .documents(documents):
      return (documents.shortest, documents.longest, 0)
    case let .intersection(atoms):
      guard let (documents, other) = Graph.Component.documentsPair(atoms) else { return nil }
      switch other {
      case .full: return (documents.shortest, documents.longest, 0)
      case .causal: return (1, documents.longest, 0)
      case let .window(radius, causal):
        // A document's first row sees min(W+1, n_d) keys; its middle rows min(2W+1, n_d) (W+1 causal).
        let widest = causal ? radius + 1 : radius.addingReportingOverflow(radius + 1).partialValue
        return (causal ? 1 : min(radius + 1, documents.shortest), min(widest, documents.longest), 0)
      default: return nil
      }
    case let .dilated(radius, dilation):
      // Residue classes of sizes q and q + 1, each a plain window over its members.
      let (q, r) = n.quotientAndRemainder(dividingBy: dilation + 1)
      let smallest = max(q, 1), largest = r > 0 ? q + 1 : q
      return (radius >= smallest ? smallest : radius + 1, radius >= largest ? largest : min(largest, 2 * radius + 1), 0)
    case let .blocked(block, dilation):
      let (full, perFull, perPartial) = Graph.Component.blockedShape(n, block: block, dilation: dilation)
      let active = full * perFull + perPartial
      let degrees = (full > 0 ? [perFull] : []) + (perPartial > 0 ? [perPartial] : [])
      let empty = n - active
      return (empty > 0 ? 0 : degrees.min() ?? 0, degrees.max() ?? 0, empty)
    case let .global(tokens):
      return (tokens.count < n ? tokens.count : n, n, 0)
    case .random, .view: return nil
    case let .explicit(graph):
      var lo = Int.max, hi = 0
      graph.forEachNonEmptyRowDegree { d in
        lo = min(lo, d)
        hi = max(hi, d)
      }
      let empty = queryCount - graph.nonEmptyRowCount
      return (empty > 0 ? 0 : lo, hi, empty)
    }
  }

  /// An intersection of a document graph with one other operand (in either order), the forms whose
  /// counts have closed forms (`documents & causal`, `documents & window:W[:causal]`, `documents & full`).
  static func documentsPair(_ atoms: [Graph.Component]) -> (DocumentGraph, Graph.Component)? {
    guard atoms.count == 2 else { return nil }
    if case let .documents(d) = atoms[0] { return (d, atoms[1]) }
    if case let .documents(d) = atoms[1] { return (d, atoms[0]) }
    return nil
  }

  /// `blocked` over `n` keys: full blocks, and the active rows (equal to the degree) of a full and of
  /// the partial block.
  static func blockedShape(_ n: Int, block: Int, dilation: Int) -> (full: Int, perFull: Int, perPartial: Int) {
    let s = dilation + 1
    let (full, partial) = n.quotientAndRemainder(dividingBy: block)
    return (full, (block - 1) / s + 1, partial == 0 ? 0 : (partial - 1) / s + 1)
  }

  /// `n(n+1)/2`, halving the even factor first so the product overflows only when the result does.
  static func triangle(_ n: Int) throws(EdgeCountOverflow) -> Int {
    n % 2 == 0 ? try EdgeCountOverflow.product(n / 2, n + 1) : try EdgeCountOverflow.product(n, n / 2 + 1)
  }

  /// Edges of `window(radius)` over `n` tokens: `n(2w+1) - w(w+1)`, or `n^2` when the window covers all.
  static func windowEdges(_ n: Int, _ radius: Int) throws(EdgeCountOverflow) -> Int {
    guard n > 0 else { return 0 }
    if radius >= n - 1 { return try EdgeCountOverflow.product(n, n) }
    // radius < n - 1, so 2 radius + 1 < 2n and w(w+1) < n(2w+1).
    let band = try EdgeCountOverflow.product(n, EdgeCountOverflow.sum(radius, radius + 1))
    return band - 2 * (try triangle(radius))
  }

  /// Edges of `window(radius, causal: true)`: `n(w+1) - w(w+1)/2`, or `n(n+1)/2` when it covers all.
  static func causalWindowEdges(_ n: Int, _ radius: Int) throws(EdgeCountOverflow) -> Int {
    guard n > 0 else { return 0 }
    if radius >= n - 1 { return try triangle(n) }
    return try EdgeCountOverflow.product(n, radius + 1) - (try triangle(radius))
  }
}

/// An edge count that does not fit in `Int` (more than 2^63 - 1 query-key pairs).
struct EdgeCountOverflow: Error {
  static func product(_ a: Int, _ b: Int) throws(EdgeCountOverflow) -> Int {
    let (value, overflow) = a.multipliedReportingOverflow(by: b)
    if overflow { throw EdgeCountOverflow() }
    return value
  }

  static func sum(_ a: Int, _ b: Int) throws(EdgeCountOverflow) -> Int {
    let (value, overflow) = a.addingReportingOverflow(b)
    if overflow { throw EdgeCountOverflow() }
    return value
  }
}
