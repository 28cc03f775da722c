/// The nonzero pattern of a Matrix Market coordinate file, 0-based.
///
/// Reads `%%MatrixMarket matrix coordinate <field> <symmetry>` files, where the field is `pattern`,
/// `real`, `double`, `integer` or `complex` and the symmetry is `general`, `symmetric`,
/// `skew-symmetric` or `hermitian`. Values are checked to be numbers and then ignored: only
/// positions matter for an attention graph. For the symmetric kinds every off-diagonal entry
/// `(i, j)` is also stored as `(j, i)`. Entries keep file order and duplicates are kept.
///
/// ```swift
/// let graph = try MatrixMarketPattern(contentsOf: "graph.mtx")
/// // graph.rows[k], graph.columns[k]: 0-based position of the k-th stored entry
/// ```
public struct MatrixMarketPattern: Sendable {
  /// Number of matrix rows (`M` on the size line).
  public var rowCount: Int
  /// Number of matrix columns (`N` on the size line).
  public var columnCount: Int
  /// 0-based row of each stored entry, in `0..<rowCount`.
  public var rows: [Int64]
  /// 0-based column of each stored entry, in `0..<columnCount`; `columns.count == rows.count`.
  public var columns: [Int64]

  /// Creates a pattern from its parts, e.g. for tests or graphs built in code.
  ///
  /// - Precondition: `rows.count == columns.count`.
  public init(rowCount: Int, columnCount: Int, rows: [Int64], columns: [Int64]) {
    precondition(rows.count == columns.count, "MatrixMarketPattern: rows and columns differ in length")
    self.rowCount = rowCount
    self.columnCount = columnCount
    self.rows = rows
    self.columns = columns
  }

  /// Reads the pattern of a Matrix Market coordinate file.
  ///
  /// The banner is matched case-insensitively. `%` comment lines and blank lines may appear
  /// anywhere after it; lines may end in `\n` or `\r\n`.
  ///
  /// - Parameter path: the `.mtx` file.
  /// - Throws: `GraphAttentionError(.file)` naming `path` and the 1-based line number for an
  ///   unreadable file, a missing or unsupported banner (`array` format), a bad size line, a
  ///   malformed entry or an entry count different from the size line's; `GraphAttentionError(.index)`
  ///   for an entry whose row or column is 0 or beyond the matrix.
  /// - Complexity: O(file size), one pass over the bytes.
  public init(contentsOf path: String) throws {
    var file = try StorageFileReader(path: path)
    try self.init(bytes: try file.readBytes(upTo: Int.max), name: path)
  }

  /// Parses the text of a Matrix Market coordinate file held in memory; see `init(contentsOf:)`.
  ///
  /// - Parameters:
  ///   - bytes: the file's contents.
  ///   - name: how messages name the text (in place of a path).
  /// - Complexity: O(`bytes.count`); the entries never take more memory than the text justifies.
  public init(bytes: [UInt8], name: String = "<Matrix Market text>") throws {
    self = try bytes.withUnsafeBufferPointer { text in
      var parser = MatrixMarketParser(text: text, path: name)
      return try parser.parse()
    }
  }
}

/// Single-pass byte-level parser; keeps the line number for messages.
private struct MatrixMarketParser {
  let text: UnsafeBufferPointer<UInt8>
  let path: String
  var position = 0
  var line = 1

  init(text: UnsafeBufferPointer<UInt8>, path: String) {
    self.text = text
    self.path = path
  }

  private enum Symmetry { case general, symmetric }

  mutating func parse() throws -> MatrixMarketPattern {
    let (valueCount, symmetry) = try parseBanner()

    // Size line: the first line that is neither blank nor a comment.
    skipBlankAndCommentLines()
    guard position < text.count else {
      throw problem("ends before the size line 'M N NNZ'", fix: "add the size line: rows, columns and entry count")
    }
    let sizeLine = line
    let m = try sizeField("row count M")
    let n = try sizeField("column count N")
    let nnz = try sizeField("entry count NNZ")
    try endOfLine("the size line must be 'M N NNZ' for a coordinate file")
    if symmetry == .symmetric && m != n {
      // A mirrored entry (j, i) would fall outside an M x N matrix with M != N.
      line = sizeLine
      throw problem("is symmetric but not square (\(m) x \(n))",
                    fix: "declare a square size line, or write the file as 'general' with every entry listed")
    }

    // Reserve no more than the file can hold (an entry takes at least 4 bytes) so a bogus NNZ
    // cannot force a huge allocation.
    let plausible = min(nnz, (text.count - position) / 4 + 1)
    let expansion = symmetry == .symmetric ? 2 : 1
    var rows: [Int64] = []
    var columns: [Int64] = []
    rows.reserveCapacity(plausible * expansion)
    columns.reserveCapacity(plausible * expansion)

    var entries = 0
    while true {
      skipBlankAndCommentLines()
      guard position < text.count else { break }
      guard entries < nnz else {
        throw problem("has more entries than the \(nnz) declared on the size line (line \(sizeLine))",
                      fix: "correct NNZ on the size line or remove the extra entries")
      }
      let i = try index("row", limit: m)
      let j = try index("column", limit: n)
      for _ in 0..<valueCount { try numberToken() }
      try endOfLine("an entry must be 'i j' followed by \(valueCount) value(s) for this field type")
      rows.append(i - 1)
      columns.append(j - 1)
      if symmetry == .symmetric && i != j {
        rows.append(j - 1)
        columns.append(i - 1)
      }
      entries += 1
    }
    guard entries == nnz else {
      throw problem("has \(entries) entries but its size line (line \(sizeLine)) declares \(nnz)",
                    fix: "correct NNZ on the size line or add the missing entries (the file may be truncated)")
    }
    return MatrixMarketPattern(rowCount: m, columnCount: n, rows: rows, columns: columns)
  }

  /// Reads `%%MatrixMarket matrix coordinate <field> <symmetry>`; returns the number of value
  /// tokens per entry and whether entries are mirrored.
  private mutating func parseBanner() throws -> (Int, Symmetry) {
    let fix = "start the file with a banner such as '%%MatrixMarket matrix coordinate pattern general'"
    guard let first = word(), first.lowercased() == "%%matrixmarket" else {
      throw problem("does not start with the '%%MatrixMarket' banner", fix: fix)
    }
    guard let object = word()?.lowercased(), let format = word()?.lowercased(),
          let field = word()?.lowercased(), let symmetryWord = word()?.lowercased() else {
      throw problem("has an incomplete banner; it needs object, format, field and symmetry", fix: fix)
    }
    guard object == "matrix" else {
      throw problem("describes a '\(object)', not a matrix", fix: fix)
    }
    guard format == "coordinate" else {
      if format == "array" {
        throw problem("is a dense 'array' Matrix Market file; only sparse 'coordinate' files describe a graph",
                      fix: "convert it, e.g. scipy.io.mmwrite(path, scipy.sparse.coo_matrix(scipy.io.mmread(path)))")
      }
      throw problem("has unknown format '\(format)'", fix: fix)
    }
    let valueCount: Int
    switch field {
    case "pattern": valueCount = 0
    case "real", "double", "integer": valueCount = 1
    case "complex": valueCount = 2
    default: throw problem("has unknown field '\(field)'", fix: "use pattern, real, integer or complex")
    }
    let symmetry: Symmetry
    switch symmetryWord {
    case "general": symmetry = .general
    case "symmetric", "skew-symmetric", "hermitian": symmetry = .symmetric
    default: throw problem("has unknown symmetry '\(symmetryWord)'", fix: "use general, symmetric or skew-symmetric")
    }
    try endOfLine("the banner has extra words after the symmetry")
    return (valueCount, symmetry)
  }

  // MARK: - Lexing

  private func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D }

  private mutating func skipSpaces() {
    while position < text.count, isSpace(text[position]) { position += 1 }
  }

  /// Skips blank lines and lines whose first non-blank byte is '%'.
  private mutating func skipBlankAndCommentLines() {
    while true {
      skipSpaces()
      guard position < text.count else { return }
      let b = text[position]
      if b == 0x0A {
        position += 1
        line += 1
      } else if b == UInt8(ascii: "%") {
        while position < text.count, text[position] != 0x0A { position += 1 }
      } else {
        return
      }
    }
  }

  /// Accepts trailing blanks, then the end of the line (or file).
  private mutating func endOfLine(_ why: @autoclosure () -> String) throws {
    skipSpaces()
    guard position < text.count else { return }
    guard text[position] == 0x0A else {
      throw problem("has unexpected text '\(currentToken())'; \(why())", fix: "fix or remove that line")
    }
    position += 1
    line += 1
  }

  /// The next blank-separated word on the current line, or nil at the end of the line.
  private mutating func word() -> String? {
    skipSpaces()
    let start = position
    while position < text.count, !isSpace(text[position]), text[position] != 0x0A { position += 1 }
    guard position > start else { return nil }
    return String(decoding: UnsafeBufferPointer(rebasing: text[start..<position]), as: UTF8.self)
  }

  /// The token at the current position, for messages (at most 40 bytes).
  private func currentToken() -> String {
    var end = position
    while end < text.count, end - position < 40, !isSpace(text[end]), text[end] != 0x0A { end += 1 }
    if end == position { return "" }
    return String(decoding: UnsafeBufferPointer(rebasing: text[position..<end]), as: UTF8.self)
  }

  /// An unsigned decimal integer token; nil (position unchanged) if the token is not one.
  private mutating func unsignedToken() throws -> Int? {
    skipSpaces()
    var p = position
    if p < text.count, text[p] == UInt8(ascii: "+") { p += 1 }
    let digitsStart = p
    var value = 0
    var overflow = false
    while p < text.count {
      let d = text[p] &- UInt8(ascii: "0")
      guard d < 10 else { break }
      let (shifted, o1) = value.multipliedReportingOverflow(by: 10)
      let (added, o2) = shifted.addingReportingOverflow(Int(d))
      overflow = overflow || o1 || o2
      value = added
      p += 1
    }
    guard p > digitsStart, p == text.count || isSpace(text[p]) || text[p] == 0x0A else { return nil }
    if overflow {
      throw problem("has the number \(currentToken()), which is too large", fix: "check the file; indices and counts must fit in 64 bits")
    }
    position = p
    return value
  }

  private mutating func sizeField(_ what: String) throws -> Int {
    if let value = try unsignedToken() { return value }
    let token = currentToken()
    if token.isEmpty {
      throw problem("has a size line without the \(what)", fix: "the size line must be 'M N NNZ' with three non-negative integers")
    }
    if token.hasPrefix("-") {
      throw problem("has a negative \(what) '\(token)' on the size line", fix: "the size line must be 'M N NNZ' with three non-negative integers")
    }
    throw problem("has '\(token)' where the size line needs the \(what)", fix: "the size line must be 'M N NNZ' with three non-negative integers")
  }

  /// A 1-based index in `1...limit`.
  private mutating func index(_ what: String, limit: Int) throws -> Int64 {
    if let value = try unsignedToken() {
      guard value >= 1, value <= limit else {
        throw GraphAttentionError(
          .index, "\(path) line \(line): \(what) index \(value) is outside 1...\(limit) (Matrix Market indices are 1-based)",
          fix: "use 1-based indices within the size line's bounds; a 0 index usually means the file was written 0-based")
      }
      return Int64(value)
    }
    let token = currentToken()
    if token.isEmpty {
      throw problem("has an entry without a \(what) index", fix: "each entry line must be 'i j' (plus values unless the field is pattern)")
    }
    if token.hasPrefix("-"), token.dropFirst().allSatisfy({ $0.isASCII && $0.isNumber }) {
      throw GraphAttentionError(
        .index, "\(path) line \(line): \(what) index \(token) is negative",
        fix: "use 1-based indices within the size line's bounds")
    }
    throw problem("has '\(token)' where a \(what) index (a positive integer) belongs", fix: "fix the entry; indices must be integers")
  }

  /// A decimal number such as `3`, `-0.5`, `1e-3`, `inf` or `nan`; its value is not needed.
  private mutating func numberToken() throws {
    skipSpaces()
    let start = position
    var digits = 0
    var valid = true
    var p = position
    if p < text.count, text[p] == UInt8(ascii: "+") || text[p] == UInt8(ascii: "-") { p += 1 }
    while p < text.count, text[p] >= UInt8(ascii: "0") && text[p] <= UInt8(ascii: "9") { p += 1; digits += 1 }
    if p < text.count, text[p] == UInt8(ascii: ".") {
      p += 1
      while p < text.count, text[p] >= UInt8(ascii: "0") && text[p] <= UInt8(ascii: "9") { p += 1; digits += 1 }
    }
    if digits > 0, p < text.count, text[p] | 0x20 == UInt8(ascii: "e") {
      p += 1
      if p < text.count, text[p] == UInt8(ascii: "+") || text[p] == UInt8(ascii: "-") { p += 1 }
      var exponentDigits = 0
      while p < text.count, text[p] >= UInt8(ascii: "0") && text[p] <= UInt8(ascii: "9") { p += 1; exponentDigits += 1 }
      valid = exponentDigits > 0
    }
    if digits == 0 {
      // inf, infinity, nan (any case, optional sign).
      var q = p
      while q < text.count, !isSpace(text[q]), text[q] != 0x0A { q += 1 }
      let word = String(decoding: UnsafeBufferPointer(rebasing: text[p..<q]), as: UTF8.self).lowercased()
      valid = word == "inf" || word == "infinity" || word == "nan"
      p = q
    }
    guard valid, p > start, p == text.count || isSpace(text[p]) || text[p] == 0x0A else {
      let token = currentToken()
      if token.isEmpty {
        throw problem("has an entry without its value", fix: "each entry line must be 'i j value' for this field type, or change the field to pattern")
      }
      throw problem("has '\(token)' where a numeric value belongs", fix: "fix the entry; values must be decimal numbers")
    }
    position = p
  }

  private func problem(_ what: String, fix: String) -> GraphAttentionError {
    GraphAttentionError(.file, "\(path) line \(line): \(what)", fix: fix)
  }
}
