/// The transpose of a graph: for key `j`, the query rows that attend to it, `{i : j in N(i)}`.
///
/// The backward pass needs it: `dK_j` and `dV_j` are sums over the queries that attend to key `j`, and
/// computing them column by column (through the transpose) lets each worker own its keys' gradients, so
/// no atomics are needed and the result is the same for any thread count.
///
/// Each component transposes on its own, and the transpose of a union is the union of the transposes
/// (transposition maps edges one to one), so a union still visits every edge once: the terms' runs are
/// merged by the same `Graph.unite` the forward uses.
///
/// | component | transpose | memory |
/// |---|---|---|
/// | `full` | `full` with the counts swapped | O(1) |
/// | `causal` (`j <= i + δ`, `δ = L_k - L_q`) | `i >= j - δ`: rows `max(0, j-δ)..<L_q` | O(1) |
/// | `window:W` | itself (symmetric) | O(1) |
/// | `window:W:causal` (`i+δ-W <= j <= i+δ`) | rows `j-δ...j-δ+W` within `0..<L_q` | O(1) |
/// | `prefix:P` (`j < max(P, i+δ+1)`) | every row for `j < P`, else rows `max(0, j-δ)..<L_q` | O(1) |
/// | `documents:..` | itself (`i`, `j` in one document is symmetric) | O(documents) |
/// | `A&B` | `Aᵀ & Bᵀ`, term by term, the runs intersected as in the forward | the operands' |
/// | `dilated:W:D` | itself (`j ≡ i mod D+1` and `|i-j| <= W(D+1)` are symmetric) | O(1) |
/// | `blocked:B:D` | itself (an edge joins two lattice points of the same block) | O(1) |
/// | `global:..` | itself (`i` or `j` listed) | O(1) |
/// | explicit (CSR/COO/mtx) | its CSC, built once by a counting sort | O(edges + L_k) |
/// | `random:P:S` | its CSC, built once from every row's stream | O(edges + L_k) |
///
/// Why random graphs are materialised: the generator is defined row by row (geometric skips along a
/// row's own SplitMix64 stream, `RandomGraph`), so the rows that attend to key `j` can only be found by
/// generating every row: a per-column generator would cost O(L_q) per column, O(L_q * L_k) in all.
/// Changing the definition to a column-wise one would change users' graphs. Generating each row once
/// into a CSC costs what one forward pass's enumeration costs, and 4 bytes per edge (plus 8 per key),
/// which a graph sparse enough to be useful affords (BigBird's `random:0.001` at 64K tokens: 16 MiB).
struct TransposedGraph: Sendable {
  /// One term of the transposed union.
  enum Term: Sendable {
    /// A component that is its own transpose; its rows are enumerated with swapped counts.
    case symmetric(Graph.Component)
    /// The transpose of `causal`: column `j` is attended by rows `max(0, j-δ)..<L_q`.
    case reverseCausal
    /// The transpose of `window(radius, causal: true)`: column `j` is attended by rows `j-δ...j-δ+radius`.
    case reverseCausalWindow(radius: Int)
    /// The transpose of `prefix(length)`: every row for `j < length`, else rows `max(0, j-δ)..<L_q`.
    case reversePrefix(length: Int)
    /// The transpose of an intersection: the operands' transposes, intersected.
    case intersection([Term])
    /// A materialised transpose (explicit and random components): row `j` of the CSC lists the queries.
    case compressedColumns(ExplicitGraph)
    /// The transpose of a view of an implicit component (`Graph.view`).
    case view(TransposedView)
  }

  /// The terms, one per component of the original graph.
  let terms: [Term]
  /// The original graph's query count: the transpose's "key" count.
  let queryCount: Int
  /// The original graph's key count: the transpose's row count.
  let keyCount: Int

  /// The queries that attend to key `column`, as sorted, disjoint runs (query indices) in `scratch.runs`.
  ///
  /// - Complexity: O(runs) for implicit terms whose runs do not overlap, as `Graph.neighbourhood` otherwise.
  func neighbourhood(column: Int, into scratch: inout RowScratch) {
    scratch.runs.removeAll(keepingCapacity: true)
    if terms.count == 1 {
      terms[0].appendRuns(column: column, queryCount: queryCount, keyCount: keyCount, to: &scratch.runs,
                          scratch: &scratch.intersection)
      return
    }
    scratch.operands.removeAll(keepingCapacity: true)
    for term in terms {
      term.appendRuns(column: column, queryCount: queryCount, keyCount: keyCount, to: &scratch.operands,
                      scratch: &scratch.intersection)
    }
    Graph.unite(&scratch.operands, into: &scratch.runs, keys: &scratch.keys, intervals: &scratch.intervals)
  }

  /// Rows of the transpose visited in residue-major order with this stride share their queries (dilated
  /// and blocked graphs are their own transposes, so the original graph's stride holds).
  let preferredRowStride: Int
}

extension TransposedGraph.Term {
  /// Appends the queries attending to key `j` (sorted, disjoint runs). `queryCount` and `keyCount` are
  /// the original graph's; `δ = keyCount - queryCount` aligns the causal kinds bottom-right.
  func appendRuns(column j: Int, queryCount m: Int, keyCount n: Int, to runs: inout [KeyRun],
                  scratch: inout IntersectionScratch) {
    var unused = IntersectionScratch()
    switch self {
    case let .symmetric(component):
      // Symmetric components are square (or full, whose rows do not depend on the row).
      component.appendRuns(row: j, queryCount: n, keyCount: m, to: &runs, scratch: &unused)
    case .reverseCausal:
      let first = max(0, j - (n - m))
      if first < m { runs.append(KeyRun(start: first, count: m - first)) }
    case let .reverseCausalWindow(radius):
      let lo = j - (n - m)
      let first = max(0, lo)
      let last = radius >= m - 1 - lo ? m - 1 : lo + radius  // lo + radius without overflow
      if first <= last { runs.append(KeyRun(start: first, count: last - first + 1)) }
    case let .reversePrefix(length):
      let first = j < length ? 0 : max(0, j - (n - m))
      if first < m { runs.append(KeyRun(start: first, count: m - first)) }
    case let .intersection(terms):
      scratch.intersect(operands: terms.count, into: &runs) { k, out in
        terms[k].appendRuns(column: j, queryCount: m, keyCount: n, to: &out, scratch: &unused)
      }
    case let .compressedColumns(csc):
      Graph.Component.explicit(csc).appendRuns(row: j, queryCount: n, keyCount: m, to: &runs, scratch: &unused)
    case let .view(view):
      view.appendRuns(column: j, to: &runs, scratch: &unused)
    }
  }
}

extension Graph {
  /// The transpose of this graph for `queryCount` queries and `keyCount` keys (see `TransposedGraph`).
  ///
  /// The graph must have been validated for these counts.
  /// - Complexity: O(components) for implicit graphs; O(edges + L_k) time and memory per explicit or random
  ///   component, whose compressed columns are built here once.
  func transposed(queryCount: Int, keyCount: Int) -> TransposedGraph {
    func transpose(_ component: Component) -> TransposedGraph.Term {
      switch component {
      case .full, .window(_, causal: false), .dilated, .blocked, .global, .documents:
        return .symmetric(component)
      case .causal:
        return .reverseCausal
      case let .window(radius, causal: true):
        return .reverseCausalWindow(radius: radius)
      case let .prefix(length):
        return .reversePrefix(length: length)
      case let .intersection(atoms):
        return .intersection(atoms.map(transpose))
      case let .random(graph):
        return .compressedColumns(TransposedGraph.compressedColumns(queryCount: queryCount, keyCount: keyCount) { row, body in
          graph.forEachKey(row: row, keyCount: keyCount) { key in body(key); return true }
        })
      case let .explicit(graph):
        return .compressedColumns(TransposedGraph.compressedColumns(queryCount: queryCount, keyCount: keyCount) { row, body in
          for column in graph.columns(ofRow: row) { body(Int(column)) }
        })
      case let .view(view) where view.hasScatteredBase:
        // The view's own edges (not the global graph's) into a CSC: O(edges of the view).
        return .compressedColumns(TransposedGraph.compressedColumns(queryCount: queryCount, keyCount: keyCount) { row, body in
          var runs: [KeyRun] = [], scratch = IntersectionScratch()
          view.appendRuns(row: row, to: &runs, scratch: &scratch)
          for run in runs { for t in 0..<run.count { body(run.start + t * run.stride) } }
        })
      case let .view(view):
        return .view(TransposedView(base: transpose(view.base), view: view))
      }
    }
    let terms = components.map(transpose)
    return TransposedGraph(terms: terms, queryCount: queryCount, keyCount: keyCount, preferredRowStride: preferredRowStride)
  }
}

extension TransposedGraph {
  /// Builds the CSC of a pattern given row by row: counts per column, then a second enumeration fills in
  /// the rows. Rows are visited in increasing order, so each column's query list comes out sorted.
  /// - Complexity: two enumerations of the pattern; 4 bytes per edge plus 8 per key.
  static func compressedColumns(queryCount: Int, keyCount: Int,
                                forEachKey: (_ row: Int, _ body: (Int) -> Void) -> Void) -> ExplicitGraph {
    // Query indices are stored as UInt32, like explicit graphs' columns.
    precondition(queryCount <= Int(UInt32.max) + 1, "the transpose of an explicit or random graph holds at most 2^32 queries")
    var offsets = [Int](repeating: 0, count: keyCount + 1)
    for row in 0..<queryCount { forEachKey(row) { offsets[$0 + 1] += 1 } }
    for j in 0..<keyCount { offsets[j + 1] += offsets[j] }
    var cursor = offsets
    var rows = [UInt32](repeating: 0, count: offsets[keyCount])
    for row in 0..<queryCount {
      forEachKey(row) { key in
        rows[cursor[key]] = UInt32(truncatingIfNeeded: row)
        cursor[key] += 1
      }
    }
    return ExplicitGraph(rowOffsets: offsets, rowIDs: nil, columns: rows, rowCount: keyCount, exact: true,
                         declaredColumns: queryCount, source: "transpose")
  }
}
