/// A stored attention pattern in canonical CSR form: for each query row, its sorted, unique key columns.
///
/// Built from CSR arrays (`indptr`, `indices`), from COO pairs in any order, or from a Matrix Market
/// file; duplicates are merged and each row is sorted once here, so kernels gather without checks.
/// Row offsets are 64-bit; columns are stored as `UInt32` (4 bytes per edge), so key counts up to
/// 2^32 are supported.
///
/// Shapes are bound when the graph is used: a CSR graph has exactly `rowCount` rows, a COO graph at
/// most as many rows as there are queries (missing trailing rows are empty), and every column must
/// be below the key count.
public struct ExplicitGraph: Sendable {
  @usableFromInline
  final class Storage: Sendable {
    /// `rowCount + 1` offsets into `columns`.
    let rowOffsets: [Int]
    let columns: [UInt32]
    init(rowOffsets: [Int], columns: [UInt32]) {
      self.rowOffsets = rowOffsets
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

  /// The number of stored edges after merging duplicates.
  public var edgeCount: Int { storage.columns.count }

  /// Builds a graph from CSR arrays.
  ///
  /// - Parameters:
  ///   - rowOffsets: `rowCount + 1` non-decreasing offsets starting at 0 and ending at `columns.count`.
  ///   - columns: key indices, in any order within a row; duplicates are merged.
  /// - Throws: `GraphAttentionError` (`.index`) naming the first bad offset or column.
  /// - Complexity: O(edges) time when rows are already sorted, O(edges log degree) otherwise.
  public init(rowOffsets: [Int64], columns: [Int64], source: String = "csr") throws {
    guard rowOffsets.count >= 1 else {
      throw GraphAttentionError(.index, "CSR row offsets (indptr) are empty", fix: "indptr needs rowCount+1 entries, starting with 0")
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
    let narrow = try ExplicitGraph.narrowColumns(columns, what: "CSR indices")
    let offsets = rowOffsets.map { Int($0) }
    let (canonicalOffsets, canonicalColumns) = ExplicitGraph.canonicalize(offsets: offsets, columns: narrow)
    self.init(rowOffsets: canonicalOffsets, columns: canonicalColumns, rowCount: rowOffsets.count - 1,
              exact: true, declaredColumns: nil, source: source)
  }

  /// Builds a graph from COO pairs `(rows[e], columns[e])` in any order; duplicates are merged.
  ///
  /// - Parameters:
  ///   - rowCount: the number of rows if known; otherwise `max(rows) + 1`, and rows beyond it are empty.
  ///   - columnCount: the number of keys if known; columns must be below it.
  /// - Throws: `GraphAttentionError` (`.index` or `.shape`) naming the first bad entry.
  /// - Complexity: O(edges + rows) time (counting sort) plus the per-row sort of unsorted rows.
  public init(rows: [Int64], columns: [Int64], rowCount: Int? = nil, columnCount: Int? = nil,
              source: String = "coo") throws {
    guard rows.count == columns.count else {
      throw GraphAttentionError(.shape, "COO has \(rows.count) rows but \(columns.count) columns",
                                fix: "the row and column arrays must have the same length")
    }
    var maxRow: Int64 = -1
    for (e, r) in rows.enumerated() {
      if r < 0 || (rowCount != nil && r >= Int64(rowCount!)) {
        throw GraphAttentionError(.index, "COO row index \(r) at entry \(e) is out of range\(rowCount.map { " 0..<\($0)" } ?? "")",
                                  fix: "row indices must be >= 0 and below the number of query tokens")
      }
      maxRow = max(maxRow, r)
    }
    let narrow = try ExplicitGraph.narrowColumns(columns, what: "COO columns", bound: columnCount)
    let rowTotal = rowCount ?? Int(maxRow + 1)
    var counts = [Int](repeating: 0, count: rowTotal + 1)
    for r in rows { counts[Int(r) + 1] += 1 }
    for r in 0..<rowTotal { counts[r + 1] += counts[r] }
    var cursor = counts
    var sorted = [UInt32](repeating: 0, count: narrow.count)
    for e in 0..<rows.count {
      let r = Int(rows[e])
      sorted[cursor[r]] = narrow[e]
      cursor[r] += 1
    }
    let (canonicalOffsets, canonicalColumns) = ExplicitGraph.canonicalize(offsets: counts, columns: sorted)
    self.init(rowOffsets: canonicalOffsets, columns: canonicalColumns, rowCount: rowTotal,
              exact: rowCount != nil, declaredColumns: columnCount, source: source)
  }

  init(rowOffsets: [Int], columns: [UInt32], rowCount: Int, exact: Bool, declaredColumns: Int?, source: String) {
    self.storage = Storage(rowOffsets: rowOffsets, columns: columns)
    self.rowCount = rowCount
    self.rowCountIsExact = exact
    self.declaredColumnCount = declaredColumns
    var bound = 0
    for r in 0..<rowCount where rowOffsets[r + 1] > rowOffsets[r] {
      bound = max(bound, Int(columns[rowOffsets[r + 1] - 1]) + 1)
    }
    self.columnBound = bound
    self.source = source
  }

  /// The sorted, unique columns of `row` (empty for rows beyond `rowCount`).
  public func columns(ofRow row: Int) -> ArraySlice<UInt32> {
    guard row < rowCount else { return [] }
    return storage.columns[storage.rowOffsets[row]..<storage.rowOffsets[row + 1]]
  }

  /// Checks that the pattern fits `queryCount` queries and `keyCount` keys.
  func validate(queryCount: Int, keyCount: Int) throws {
    if rowCountIsExact ? rowCount != queryCount : rowCount > queryCount {
      throw GraphAttentionError(
        .shape, "graph \(source) has \(rowCount) rows but the query has \(queryCount) tokens",
        fix: rowCountIsExact ? "use a graph with one row per query token (indptr of length L_q+1)"
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

  private static func narrowColumns(_ columns: [Int64], what: String, bound: Int? = nil) throws -> [UInt32] {
    var out = [UInt32](repeating: 0, count: columns.count)
    for (e, c) in columns.enumerated() {
      guard c >= 0, c <= Int64(UInt32.max), bound == nil || c < Int64(bound!) else {
        throw GraphAttentionError(.index, "\(what) entry \(e) is \(c), out of range \(bound.map { "0..<\($0)" } ?? "0..<2^32")",
                                  fix: "column indices must be >= 0 and below the number of key tokens")
      }
      out[e] = UInt32(c)
    }
    return out
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
