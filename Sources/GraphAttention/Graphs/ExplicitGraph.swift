/// A stored attention pattern in canonical CSR form: for each query row, its sorted, unique key columns.
///
/// Built from CSR arrays (`indptr`, `indices`), from COO pairs in any order, or from a Matrix Market
/// file; duplicates are merged and each row is sorted once here, so kernels gather without checks.
/// Row offsets are 64-bit; columns are stored as `UInt32` (4 bytes per edge), so key counts up to
/// 2^32 are supported.
///
/// Shapes are bound when the graph is used: a CSR graph has exactly `rowCount` rows, a COO graph at
/// most as many rows as there are queries (missing trailing rows are empty), and every column must
/// be below the key count. Pass `queryCount` and `keyCount` to the initialisers when they are known:
/// every index and declared size is then checked against them before anything is allocated.
///
/// Memory follows the entries, never the indices: a COO or Matrix Market pattern whose rows are few
/// next to its row count (a huge declared `M`, or one entry at row 2^40) stores only its non-empty
/// rows, so no input can make the constructor allocate more than O(entries).
public struct ExplicitGraph: Sendable {
  @usableFromInline
  final class Storage: Sendable {
    /// Offsets into `columns`: `rowCount + 1` of them when `rowIDs` is nil (dense), else one per
    /// stored row plus one.
    let rowOffsets: [Int]
    /// nil when every row has an offset; otherwise the sorted rows that have edges (all others are
    /// empty), found by binary search.
    let rowIDs: [Int]?
    let columns: [UInt32]
    init(rowOffsets: [Int], rowIDs: [Int]?, columns: [UInt32]) {
      self.rowOffsets = rowOffsets
      self.rowIDs = rowIDs
      self.columns = columns
    }
  }

  @usableFromInline let storage: Storage
  /// Rows the pattern has: exact for CSR and Matrix Market, `max row + 1` for COO.
  public let rowCount: Int
  /// Whether the row count is exact (CSR, Matrix Market) or only a lower bound (COO).
  public let rowCountIsExact: Bool
  /// The key count the pattern declares (Matrix Market), or nil when only `maxColumn + 1` is known.
  public let declaredColumnCount: Int?
  /// One more than the largest column, or 0 for a pattern with no edges.
  public let columnBound: Int
  /// The specification this graph was loaded from, e.g. `csr:indptr.npy:indices.npy`.
  public let source: String

  /// The largest number of keys a pattern can address: columns are stored in 32 bits.
  public static let maximumKeyCount = 1 << 32

  /// The number of stored edges after merging duplicates.
  public var edgeCount: Int { storage.columns.count }

  /// Builds a graph from CSR arrays.
  ///
  /// - Parameters:
  ///   - rowOffsets: `rowCount + 1` non-decreasing offsets starting at 0 and ending at `columns.count`.
  ///   - columns: key indices, in any order within a row; duplicates are merged.
  ///   - queryCount: the query length the graph will be used with, if known: `rowOffsets.count` must be
  ///     `queryCount + 1`.
  ///   - keyCount: the key length, if known: every column must be below it.
  /// - Throws: `GraphAttentionError` (`.index` or `.shape`) naming the first bad offset or column.
  /// - Complexity: O(edges) time when rows are already sorted, O(edges log degree) otherwise.
  public init(rowOffsets: [Int64], columns: [Int64], source: String = "csr", queryCount: Int? = nil,
              keyCount: Int? = nil) throws {
    guard rowOffsets.count >= 1 else {
      throw GraphAttentionError(.index, "CSR row offsets (indptr) are empty", fix: "indptr needs rowCount+1 entries, starting with 0")
    }
    if let queryCount, rowOffsets.count - 1 != queryCount {
      throw GraphAttentionError(.shape, "graph \(source) has \(rowOffsets.count - 1) rows but the query has \(queryCount) tokens",
                                fix: "use a graph with one row per query token (indptr of length L_q+1)")
    }
    guard rowOffsets[0] == 0 else {
      throw GraphAttentionError(.index, "CSR indptr[0] is \(rowOffsets[0]), not 0", fix: "indptr must start at 0")
    }
    guard rowOffsets[rowOffsets.count - 1] == Int64(columns.count) else {
      throw GraphAttentionError(
        .index, "CSR indptr ends at \(rowOffsets[rowOffsets.count - 1]) but there are \(columns.count) indices",
        fix: "the last indptr entry must equal the number of indices")
    }
    for r in 0..<(rowOffsets.count - 1) where rowOffsets[r + 1] < rowOffsets[r] {
      throw GraphAttentionError(
        .index, "CSR indptr decreases at row \(r): indptr[\(r)] = \(rowOffsets[r]) > indptr[\(r + 1)] = \(rowOffsets[r + 1])",
        fix: "indptr must be non-decreasing")
    }
    let narrow = try ExplicitGraph.narrowColumns(columns, what: "CSR indices", declared: nil, keyCount: keyCount)
    let offsets = rowOffsets.map { Int($0) }
    let (canonicalOffsets, canonicalColumns) = ExplicitGraph.canonicalize(offsets: offsets, columns: narrow)
    self.init(rowOffsets: canonicalOffsets, rowIDs: nil, columns: canonicalColumns, rowCount: rowOffsets.count - 1,
              exact: true, declaredColumns: nil, source: source)
  }

  /// Builds a graph from COO pairs `(rows[e], columns[e])` in any order; duplicates are merged.
  ///
  /// - Parameters:
  ///   - rowCount: the number of rows if known; otherwise `max(rows) + 1`, and rows beyond it are empty.
  ///   - columnCount: the number of keys if known; columns must be below it.
  ///   - queryCount: the query length the graph will be used with, if known: rows (and `rowCount`) are
  ///     checked against it before anything is allocated.
  ///   - keyCount: the key length, if known: columns (and `columnCount`) are checked against it.
  /// - Throws: `GraphAttentionError` (`.index` or `.shape`) naming the first bad entry or size.
  /// - Complexity: O(edges + rows) time (counting sort) when the rows are dense, O(edges log edges) when
  ///   they are sparse next to the row count; memory O(edges) either way.
  public init(rows: [Int64], columns: [Int64], rowCount: Int? = nil, columnCount: Int? = nil,
              source: String = "coo", queryCount: Int? = nil, keyCount: Int? = nil) throws {
    guard rows.count == columns.count else {
      throw GraphAttentionError(.shape, "COO has \(rows.count) rows but \(columns.count) columns",
                                fix: "the row and column arrays must have the same length")
    }
    if let rowCount {
      guard rowCount >= 0 else {
        throw GraphAttentionError(.shape, "graph \(source) declares \(rowCount) rows", fix: "declare a non-negative row count")
      }
      if let queryCount, rowCount != queryCount {
        throw GraphAttentionError(.shape, "graph \(source) has \(rowCount) rows but the query has \(queryCount) tokens",
                                  fix: "use a graph with one row per query token")
      }
    }
    if let columnCount {
      guard columnCount >= 0 else {
        throw GraphAttentionError(.shape, "graph \(source) declares \(columnCount) columns", fix: "declare a non-negative column count")
      }
      if let keyCount, columnCount != keyCount {
        throw GraphAttentionError(.shape, "graph \(source) has \(columnCount) columns but the key has \(keyCount) tokens",
                                  fix: "use a graph with one column per key token")
      }
    }
    // Rows must lie below every bound that is known; with none, below Int.max so `max + 1` is a count.
    let rowBound = min(rowCount ?? Int.max, queryCount ?? Int.max)
    var maxRow: Int64 = -1
    for (e, r) in rows.enumerated() {
      if r < 0 || r >= Int64(rowBound) {
        let range = rowBound == Int.max ? "0..<\(Int.max)" : "0..<\(rowBound)"
        throw GraphAttentionError(.index, "COO row index \(r) at entry \(e) of \(source) is out of range \(range)",
                                  fix: "row indices must be >= 0 and below the number of query tokens")
      }
      maxRow = max(maxRow, r)
    }
    let narrow = try ExplicitGraph.narrowColumns(columns, what: "COO columns of \(source)", declared: columnCount,
                                                 keyCount: keyCount)
    let rowTotal = rowCount ?? Int(maxRow) + 1
    let (offsets, rowIDs, sorted) = ExplicitGraph.groupByRow(rows: rows, columns: narrow, rowCount: rowTotal)
    let (canonicalOffsets, canonicalColumns) = ExplicitGraph.canonicalize(offsets: offsets, columns: sorted)
    self.init(rowOffsets: canonicalOffsets, rowIDs: rowIDs, columns: canonicalColumns, rowCount: rowTotal,
              exact: rowCount != nil, declaredColumns: columnCount, source: source)
  }

  /// A canonical pattern from its parts: dense offsets (`rowIDs` nil), or the sorted non-empty rows and one
  /// offset per stored row plus one.
  init(rowOffsets: [Int], rowIDs: [Int]? = nil, columns: [UInt32], rowCount: Int, exact: Bool, declaredColumns: Int?,
       source: String) {
    self.storage = Storage(rowOffsets: rowOffsets, rowIDs: rowIDs, columns: columns)
    self.rowCount = rowCount
    self.rowCountIsExact = exact
    self.declaredColumnCount = declaredColumns
    var bound = 0
    for s in 0..<(rowOffsets.count - 1) where rowOffsets[s + 1] > rowOffsets[s] {
      bound = max(bound, Int(columns[rowOffsets[s + 1] - 1]) + 1)
    }
    self.columnBound = bound
    self.source = source
  }

  /// The sorted, unique columns of `row` (empty for rows outside `0..<rowCount`).
  /// - Complexity: O(1), or O(log stored rows) for a pattern stored sparsely.
  public func columns(ofRow row: Int) -> ArraySlice<UInt32> {
    guard row >= 0, row < rowCount else { return [] }
    guard let ids = storage.rowIDs else {
      return storage.columns[storage.rowOffsets[row]..<storage.rowOffsets[row + 1]]
    }
    var lo = 0, hi = ids.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if ids[mid] < row { lo = mid + 1 } else { hi = mid }
    }
    guard lo < ids.count, ids[lo] == row else { return [] }
    return storage.columns[storage.rowOffsets[lo]..<storage.rowOffsets[lo + 1]]
  }

  /// Calls `body` with the CSR arrays (`rowCount + 1` offsets into the columns, and the columns) when the
  /// pattern stores an offset for every row; returns nil without calling it when stored sparsely.
  /// - Complexity: O(1) plus `body`.
  func withDenseRows<R>(_ body: (UnsafeBufferPointer<Int>, UnsafeBufferPointer<UInt32>) -> R) -> R? {
    guard storage.rowIDs == nil else { return nil }
    return storage.rowOffsets.withUnsafeBufferPointer { offsets in
      storage.columns.withUnsafeBufferPointer { columns in body(offsets, columns) }
    }
  }

  /// Whether `withDenseRows` runs its body (the pattern stores an offset for every row).
  var storesRowsDensely: Bool { storage.rowIDs == nil }

  /// Rows with at least one edge.
  /// - Complexity: O(1) when stored sparsely, O(rowCount) otherwise.
  var nonEmptyRowCount: Int {
    if let ids = storage.rowIDs { return ids.count }
    var count = 0
    for r in 0..<rowCount where storage.rowOffsets[r + 1] > storage.rowOffsets[r] { count += 1 }
    return count
  }

  /// Calls `body` with the degree of every row that has edges, in row order.
  /// - Complexity: O(stored rows).
  func forEachNonEmptyRowDegree(_ body: (Int) -> Void) {
    let offsets = storage.rowOffsets
    for s in 0..<(offsets.count - 1) where offsets[s + 1] > offsets[s] { body(offsets[s + 1] - offsets[s]) }
  }

  /// `rowCount + 1` offsets, one per row, for encoders that need the dense form.
  /// - Complexity: O(rowCount) time and memory; call only after `validate` bounded `rowCount` by the queries.
  var denseRowOffsets: [Int] {
    guard let ids = storage.rowIDs else { return storage.rowOffsets }
    var dense = [Int](repeating: 0, count: rowCount + 1)
    var s = 0
    for r in 0..<rowCount {
      if s < ids.count, ids[s] == r { s += 1 }
      dense[r + 1] = storage.rowOffsets[s]
    }
    return dense
  }

  /// Checks that the pattern fits `queryCount` queries and `keyCount` keys.
  func validate(queryCount: Int, keyCount: Int) throws {
    if rowCountIsExact ? rowCount != queryCount : rowCount > queryCount {
      throw GraphAttentionError(
        .shape, "graph \(source) has \(rowCount) rows but the query has \(queryCount) tokens",
        fix: rowCountIsExact ? "use a graph with one row per query token (a CSR indptr of L_q+1 entries, or M = L_q on a Matrix Market size line)"
                             : "row indices must be below the number of query tokens")
    }
    if let declared = declaredColumnCount, declared != keyCount {
      throw GraphAttentionError(.shape, "graph \(source) has \(declared) columns but the key has \(keyCount) tokens",
                                fix: "use a graph with one column per key token")
    }
    if columnBound > keyCount {
      throw GraphAttentionError(.index, "graph \(source) has column \(columnBound - 1), but the key has only \(keyCount) tokens",
                                fix: "column indices must be below the number of key tokens")
    }
  }

  /// Columns as `UInt32`, each checked against the tightest known bound: the declared column count,
  /// the key count, and the 2^32 that 32-bit storage allows. The message names the bound that applies.
  private static func narrowColumns(_ columns: [Int64], what: String, declared: Int?, keyCount: Int?) throws -> [UInt32] {
    let bound = min(declared ?? Int.max, keyCount ?? Int.max, maximumKeyCount)
    let why = bound == maximumKeyCount && (declared ?? Int.max) > bound && (keyCount ?? Int.max) > bound
      ? " (columns are stored in 32 bits)" : ""
    var out = [UInt32](repeating: 0, count: columns.count)
    for (e, c) in columns.enumerated() {
      guard c >= 0, c < Int64(bound) else {
        throw GraphAttentionError(.index, "\(what) entry \(e) is \(c), out of range 0..<\(bound)\(why)",
                                  fix: "column indices must be >= 0 and below the number of key tokens (at most 2^32)")
      }
      out[e] = UInt32(truncatingIfNeeded: c)
    }
    return out
  }

  /// Whether `rowCount` rows holding `entries` entries are few enough for one offset per row: the
  /// dense form's 8 bytes per row must not exceed a small multiple of the entries' 16 bytes.
  static func storesDensely(rowCount: Int, entries: Int) -> Bool {
    rowCount <= max(4096, 4 * entries)
  }

  /// Groups COO entries by row: dense offsets by a counting sort when rows are few, else the
  /// distinct rows and their offsets by a sort of the entries.
  private static func groupByRow(rows: [Int64], columns: [UInt32], rowCount: Int) -> ([Int], [Int]?, [UInt32]) {
    if storesDensely(rowCount: rowCount, entries: rows.count) {
      var counts = [Int](repeating: 0, count: rowCount + 1)
      for r in rows { counts[Int(r) + 1] += 1 }
      for r in 0..<rowCount { counts[r + 1] += counts[r] }
      var cursor = counts
      var sorted = [UInt32](repeating: 0, count: columns.count)
      for e in 0..<rows.count {
        let r = Int(rows[e])
        sorted[cursor[r]] = columns[e]
        cursor[r] += 1
      }
      return (counts, nil, sorted)
    }
    let order = (0..<rows.count).sorted { rows[$0] < rows[$1] }
    var ids: [Int] = []
    var offsets: [Int] = [0]
    var sorted = [UInt32](repeating: 0, count: columns.count)
    for (k, e) in order.enumerated() {
      let r = Int(rows[e])
      if ids.last != r {
        if !ids.isEmpty { offsets.append(k) }
        ids.append(r)
      }
      sorted[k] = columns[e]
    }
    if !ids.isEmpty { offsets.append(order.count) }
    return (offsets, ids, sorted)
  }

  /// Sorts each row and drops duplicate columns, compacting in place.
  private static func canonicalize(offsets: [Int], columns: [UInt32]) -> ([Int], [UInt32]) {
    var columns = columns
    var newOffsets = [Int](repeating: 0, count: offsets.count)
    var write = 0
    for r in 0..<(offsets.count - 1) {
      let lo = offsets[r], hi = offsets[r + 1]
      var sortedRow = true
      if hi - lo > 1 {
        for e in (lo + 1)..<hi where columns[e] <= columns[e - 1] { sortedRow = false; break }
      }
      if !sortedRow { columns[lo..<hi].sort() }
      for e in lo..<hi where e == lo || columns[e] != columns[e - 1] {
        columns[write] = columns[e]
        write += 1
      }
      newOffsets[r + 1] = write
    }
    columns.removeLast(columns.count - write)
    return (newOffsets, columns)
  }
}
