/// A view of a graph: some of its query rows against some of its keys, renumbered compactly, so a caller
/// holding only those rows and keys (one rank of a sequence-parallel job, a chunk of a streamed one)
/// computes exactly the global graph's edges between them.
///
/// The view's query row `i` is the global row `rows.global(i)` (the rows' segments concatenated in order),
/// its key `j` the global key `keys.global(j)`. Row `i` of the view attends to view key `j` when the global
/// graph has the edge `(rows.global(i), keys.global(j))` and the global row is not excluded. Nothing is
/// enumerated: each component's runs for the global row are clipped to the key segments and shifted, so a
/// window's row is still one run, a dilated row one strided run.
///
/// ```swift
/// // Rank 1 of 4 over 4096 tokens: its 1024 rows against the halo it fetched from rank 0.
/// let halo = try Graph.window(64).view(queryCount: 4096, keyCount: 4096,
///                                      rows: [KeyRun(start: 1024, count: 1024)], keys: [KeyRun(start: 960, count: 64)])
/// ```
extension Graph {
  /// This graph restricted to global query rows `rows` and global keys `keys`, renumbered compactly.
  ///
  /// - Parameters:
  ///   - queryCount, keyCount: the global lengths the graph is defined for (validated here).
  ///   - rows: the view's query rows as runs of global rows, sorted by start with disjoint spans; view row `i`
  ///     is the `i`-th of their rows in order.
  ///   - keys: the view's keys, as runs of global keys in the same form.
  ///   - excludingRows: global rows whose edges the view drops (their view rows are empty), e.g. rows whose
  ///     result is assembled elsewhere.
  /// - Returns: a graph for `rows`' row count and `keys`' key count (`L_q`, `L_k` of the call that uses it).
  /// - Throws: `GraphAttentionError` (`.mask`) if the graph does not fit the global lengths, or a run is
  ///   outside them, unsorted or overlapping; `.shape` if the view has no row or no key.
  /// - Complexity: O(components + runs + excluded rows) to build; per view row, the global row's runs
  ///   plus O(log runs) per run to find its key segments (O(keys) only where two strided runs meet).
  public func view(queryCount: Int, keyCount: Int, rows: [KeyRun], keys: [KeyRun], excludingRows: [Int] = []) throws -> Graph {
    try validate(queryCount: queryCount, keyCount: keyCount)
    let rowMap = try ViewSegments(rows, limit: queryCount, name: "rows")
    let keyMap = try ViewSegments(keys, limit: keyCount, name: "keys")
    if let bad = excludingRows.first(where: { $0 < 0 || $0 >= queryCount }) {
      throw GraphAttentionError(.mask, "excluded row \(bad) is outside 0..<\(queryCount)", fix: "exclude global query rows of the graph")
    }
    let excluded = Array(Set(excludingRows)).sorted()
    return Graph(components: components.map {
      .view(GraphView(base: $0, globalQueryCount: queryCount, globalKeyCount: keyCount, rows: rowMap, keys: keyMap,
                      excluded: excluded))
    })
  }

  /// Whether every component is a view (`view(queryCount:keyCount:rows:keys:excludingRows:)`).
  public var isView: Bool {
    components.allSatisfy { if case .view = $0 { return true } else { return false } }
  }

  /// ALiBi's alignment (`i + alignment - j` is the global distance) for a graph of views that all map one
  /// contiguous row range and one contiguous key range the same way; nil for a graph holding no view.
  /// - Throws: `GraphAttentionError` (`.option`) for views over several segments or strided ones, whose
  ///   distances no single offset gives.
  func viewAlignment() throws -> Int? {
    var alignment: Int?
    for component in components {
      guard case let .view(view) = component else { continue }
      guard view.rows.segments.count == 1, view.keys.segments.count == 1,
            view.rows.segments[0].stride == 1 || view.rows.segments[0].count == 1,
            view.keys.segments[0].stride == 1 || view.keys.segments[0].count == 1 else {
        throw GraphAttentionError(.option, "ALiBi over a view of several or strided row or key segments has no single alignment",
                                  fix: "run one call per contiguous key range (and row range) when ALiBi is on")
      }
      let a = view.globalKeyCount - view.globalQueryCount + view.rows.segments[0].start - view.keys.segments[0].start
      if let alignment, alignment != a {
        throw GraphAttentionError(.option, "views with different alignments were united", fix: "unite views of the same rows and keys")
      }
      alignment = a
    }
    return alignment
  }
}

/// Sorted, disjoint runs of global indices numbered consecutively: the row or key map of a `GraphView`.
struct ViewSegments: Sendable {
  /// The runs, sorted by start, spans disjoint.
  let segments: [KeyRun]
  /// Where each run starts among the view's indices (prefix sums of the counts).
  let offsets: [Int]
  /// The view's indices in all.
  let count: Int

  init(_ runs: [KeyRun], limit: Int, name: String) throws {
    var offsets: [Int] = []
    var total = 0
    for (n, run) in runs.enumerated() {
      guard run.count >= 1, run.stride >= 1, run.start >= 0, run.last < limit else {
        throw GraphAttentionError(.mask, "view \(name) run \(n) (\(run)) is outside 0..<\(limit)",
                                  fix: "give runs of global indices below \(limit)")
      }
      if n > 0, runs[n - 1].last >= run.start {
        throw GraphAttentionError(.mask, "view \(name) runs \(n - 1) (\(runs[n - 1])) and \(n) (\(run)) are unsorted or overlap",
                                  fix: "sort the runs by start and make their spans disjoint")
      }
      offsets.append(total)
      total += run.count
    }
    guard total >= 1 else {
      throw GraphAttentionError(.shape, "a view needs at least one \(name == "rows" ? "row" : "key")",
                                fix: "skip the call when there is nothing to compute")
    }
    self.segments = runs
    self.offsets = offsets
    self.count = total
  }

  /// The global index of view index `i` (binary search over the runs).
  @inline(__always)
  func global(_ i: Int) -> Int {
    var lo = 0, hi = offsets.count - 1
    while lo < hi {
      let mid = (lo + hi + 1) / 2
      if offsets[mid] <= i { lo = mid } else { hi = mid - 1 }
    }
    let s = segments[lo]
    return s.start + (i - offsets[lo]) * s.stride
  }

  /// Appends the view indices of the global indices in `run` that the map holds, as sorted runs.
  /// - Complexity: O(log runs + runs overlapping `run`), plus O(keys) where both are strided.
  func clip(_ run: KeyRun, to out: inout [KeyRun], keys: inout [Int]) {
    // The first segment whose span ends at or after run.start.
    var lo = 0, hi = segments.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if segments[mid].last < run.start { lo = mid + 1 } else { hi = mid }
    }
    let runDense = run.stride == 1 || run.count == 1
    var p = lo
    while p < segments.count, segments[p].start <= run.last {
      let seg = segments[p], base = offsets[p]
      let a = max(run.start, seg.start), b = min(run.last, seg.last)
      p += 1
      guard a <= b else { continue }
      let segDense = seg.stride == 1 || seg.count == 1
      if segDense {
        // The run's keys in a...b, shifted into the segment's view indices.
        let step = runDense ? 1 : run.stride
        let first = run.start + (a - run.start + step - 1) / step * step
        guard first <= b else { continue }
        let count = (b - first) / step + 1
        Graph.appendMerging(KeyRun(start: base + first - seg.start, count: count, stride: count == 1 ? 1 : step), to: &out)
      } else if runDense {
        // The segment's keys in a...b: consecutive view indices.
        let first = seg.start + (a - seg.start + seg.stride - 1) / seg.stride * seg.stride
        guard first <= b else { continue }
        let count = (b - first) / seg.stride + 1
        Graph.appendMerging(KeyRun(start: base + (first - seg.start) / seg.stride, count: count), to: &out)
      } else {
        keys.removeAll(keepingCapacity: true)
        var k = run.start + (a - run.start + run.stride - 1) / run.stride * run.stride
        while k <= b {
          if seg.contains(k) { keys.append(base + (k - seg.start) / seg.stride) }
          k += run.stride
        }
        Graph.compress(sortedKeys: keys[...], to: &out)
      }
    }
  }

  /// The view indices of the sorted global indices `globals` the map holds, as sorted single-key runs.
  func viewIndices(of globals: [Int]) -> [KeyRun] {
    var out: [KeyRun] = [], keys: [Int] = []
    for g in globals { clip(KeyRun(start: g, count: 1), to: &out, keys: &keys) }
    return out
  }
}

/// One component of a graph seen through a view (see `Graph.view`).
@usableFromInline
final class GraphView: Sendable {
  /// The component over the global lengths.
  let base: Graph.Component
  let globalQueryCount: Int, globalKeyCount: Int
  let rows: ViewSegments, keys: ViewSegments
  /// Sorted global rows without edges in the view.
  let excluded: [Int]

  init(base: Graph.Component, globalQueryCount: Int, globalKeyCount: Int, rows: ViewSegments, keys: ViewSegments,
       excluded: [Int]) {
    self.base = base
    self.globalQueryCount = globalQueryCount
    self.globalKeyCount = globalKeyCount
    self.rows = rows
    self.keys = keys
    self.excluded = excluded
  }

  /// The same view of another component (a per-head specialisation of the base).
  func with(base: Graph.Component) -> GraphView {
    GraphView(base: base, globalQueryCount: globalQueryCount, globalKeyCount: globalKeyCount, rows: rows, keys: keys,
              excluded: excluded)
  }

  /// Appends view row `i`'s keys (view indices, sorted, disjoint) to `runs`.
  func appendRuns(row i: Int, to runs: inout [KeyRun], scratch: inout IntersectionScratch) {
    let g = rows.global(i)
    if !excluded.isEmpty, Graph.Component.binarySearch(excluded, g) { return }
    var global = scratch.viewRuns, keyBuffer = scratch.viewKeys
    scratch.viewRuns = []
    scratch.viewKeys = []
    global.removeAll(keepingCapacity: true)
    base.appendRuns(row: g, queryCount: globalQueryCount, keyCount: globalKeyCount, to: &global, scratch: &scratch)
    for run in global { keys.clip(run, to: &runs, keys: &keyBuffer) }
    scratch.viewRuns = global
    scratch.viewKeys = keyBuffer
  }

  /// Whether the base's transpose must be materialised (it holds random or explicit operands).
  var hasScatteredBase: Bool {
    base.intersectionAtoms.contains {
      switch $0 {
      case .random, .explicit: return true
      case let .view(inner): return inner.hasScatteredBase
      default: return false
      }
    }
  }

  var description: String {
    "view(\(base) rows \(rows.segments.map(\.description).joined(separator: ",")) keys \(keys.segments.map(\.description).joined(separator: ","))"
      + (excluded.isEmpty ? "" : " excluding \(excluded.count) row(s)") + ")"
  }
}

/// The transpose of a view: view key `j` is attended by the view rows whose global rows attend to
/// `keys.global(j)` in the base's transpose.
final class TransposedView: Sendable {
  let base: TransposedGraph.Term
  let view: GraphView
  /// The excluded rows that the view holds, as view row indices.
  let excludedRows: [KeyRun]

  init(base: TransposedGraph.Term, view: GraphView) {
    self.base = base
    self.view = view
    self.excludedRows = view.rows.viewIndices(of: view.excluded)
  }

  /// Appends the view rows attending to view key `j` (sorted, disjoint runs).
  func appendRuns(column j: Int, to runs: inout [KeyRun], scratch: inout IntersectionScratch) {
    let g = view.keys.global(j)
    var global: [KeyRun] = [], clipped: [KeyRun] = [], keys: [Int] = []
    base.appendRuns(column: g, queryCount: view.globalQueryCount, keyCount: view.globalKeyCount, to: &global, scratch: &scratch)
    for run in global { view.rows.clip(run, to: &clipped, keys: &keys) }
    if excludedRows.isEmpty {
      runs += clipped
    } else {
      var kept: [KeyRun] = []
      Graph.subtract(excludedRows, from: clipped, into: &kept, keys: &keys)
      runs += kept
    }
  }
}
