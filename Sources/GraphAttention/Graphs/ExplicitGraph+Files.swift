extension ExplicitGraph {
  /// Reads an explicit graph from its files: CSR or COO as integer `.npy` arrays, or a Matrix Market file.
  ///
  /// - Parameters:
  ///   - source: the files.
  ///   - specification: how messages and `source` name the graph, e.g. `csr:indptr.npy:indices.npy`.
  ///   - queryCount: the query length the graph will be used with, if known; rows and declared sizes
  ///     are checked against it before the pattern is built.
  ///   - keyCount: the key length, if known; columns and declared sizes are checked against it.
  /// - Throws: `GraphAttentionError` for unreadable or malformed files (`.file`, `.dtype`) and for
  ///   indices or sizes that do not fit (`.index`, `.shape`).
  /// - Complexity: O(file sizes); memory O(entries), whatever the indices or declared sizes.
  public init(contentsOf source: ExplicitGraphSource, specification: String? = nil, queryCount: Int? = nil,
              keyCount: Int? = nil) throws {
    switch source {
    case let .csr(indptr, indices):
      let name = specification ?? "csr:\(indptr):\(indices)"
      let offsets = try NPYArray(contentsOf: indptr).integers(name: "CSR indptr \(indptr)")
      let columns = try NPYArray(contentsOf: indices).integers(name: "CSR indices \(indices)")
      try self.init(rowOffsets: offsets, columns: columns, source: name, queryCount: queryCount, keyCount: keyCount)
    case let .coo(rowsPath, columnsPath):
      let name = specification ?? "coo:\(rowsPath):\(columnsPath)"
      let rows = try NPYArray(contentsOf: rowsPath).integers(name: "COO rows \(rowsPath)")
      let columns = try NPYArray(contentsOf: columnsPath).integers(name: "COO columns \(columnsPath)")
      try self.init(rows: rows, columns: columns, source: name, queryCount: queryCount, keyCount: keyCount)
    case let .matrixMarket(path):
      let pattern = try MatrixMarketPattern(contentsOf: path)
      try self.init(rows: pattern.rows, columns: pattern.columns, rowCount: pattern.rowCount,
                    columnCount: pattern.columnCount, source: specification ?? "mtx:\(path)",
                    queryCount: queryCount, keyCount: keyCount)
    }
  }
}

extension Graph {
  /// Parses a mask specification (see `init(parsing:explicit:)` for the grammar), reading explicit
  /// graphs from their files.
  ///
  /// File paths are relative to the working directory; quote a path holding `+` or `:`
  /// (`csr:"my+ptr.npy":indices.npy`). Pass the lengths when they are known, so an explicit graph's
  /// indices and sizes are checked against them before its pattern is built.
  ///
  /// - Throws: `GraphAttentionError` (`.mask`) naming the component and the expected form, or the
  ///   file and index errors of loading an explicit graph.
  public init(parsing specification: String, queryCount: Int? = nil, keyCount: Int? = nil) throws {
    try self.init(parsing: specification, explicit: { source, text in
      try ExplicitGraph(contentsOf: source, specification: text, queryCount: queryCount, keyCount: keyCount)
    }, documents: { path, text in
      try DocumentGraph(contentsOf: path, specification: text)
    })
  }
}

extension DocumentGraph {
  /// Reads cumulative document offsets from an integer `.npy` file (int32 or int64, one dimension).
  /// - Throws: `GraphAttentionError` for unreadable or malformed files, and as `init(offsets:source:)`.
  /// - Complexity: O(documents).
  public init(contentsOf path: String, specification: String? = nil) throws {
    let array = try NPYArray(contentsOf: path)
    let name = specification ?? "documents:\(path)"
    guard array.shape.count == 1 else {
      throw GraphAttentionError(.shape, "\(name): the offsets have shape \(array.shape), not one dimension",
                                fix: "save a 1-D array of cumulative offsets, e.g. np.save(path, np.array([0, 100, 250], dtype='<i8'))")
    }
    try self.init(offsets: try array.integers(name: "document offsets \(path)"), source: name)
  }
}
