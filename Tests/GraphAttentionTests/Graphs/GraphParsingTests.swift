import Foundation
import GraphAttention
import XCTest

/// The mask grammar's quoting and escaping, number limits, and explicit graphs loaded through the storage
/// layer with their indices checked against the lengths before anything is built.
final class GraphParsingTests: XCTestCase {
  private var scratch: StorageScratchDirectory!

  override func setUpWithError() throws { scratch = try StorageScratchDirectory() }
  override func tearDown() { scratch.remove() }

  private func npy(_ values: [Int64], _ name: String) throws -> String {
    let path = scratch.path(name)
    try NPYWriter.write(values, shape: [values.count], to: path)
    return path
  }

  private func expectMaskError(_ spec: String, _ words: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try Graph(parsing: spec), spec, file: file, line: line) { error in
      XCTAssertTrue("\(error)".contains(words), "\(spec): '\(error)' should mention '\(words)'", file: file, line: line)
    }
  }

  /// `csr:my+ptr.npy:...` could not be written: `+` and `:` split the mask. Quotes and backslashes now keep them.
  func testPathsWithPlusAndColonAreQuotedOrEscaped() throws {
    let indptr = try npy([0, 2, 3, 3], "my+ptr.npy")
    let indices = try npy([0, 2, 1], "in:dices.npy")
    let rows = try npy([0, 2], "r+o:ws.npy")
    let columns = try npy([1, 0], "cols.npy")
    func escaped(_ path: String) -> String { path.replacingOccurrences(of: "+", with: "\\+").replacingOccurrences(of: ":", with: "\\:") }
    let specs = [
      "csr:\"\(indptr)\":\"\(indices)\"",
      "csr:\(escaped(indptr)):\(escaped(indices))",
      " csr : \"\(indptr)\" :\(escaped(indices)) ",
    ]
    for spec in specs {
      let graph = try Graph(parsing: spec, queryCount: 3, keyCount: 3)
      try graph.validate(queryCount: 3, keyCount: 3)
      XCTAssertEqual(graph.edgeCount(queryCount: 3, keyCount: 3), 3, spec)
      XCTAssertTrue(graph.contains(row: 0, column: 2, queryCount: 3, keyCount: 3), spec)
      // The description keeps the quoting, so it parses back to the same graph.
      XCTAssertEqual(try Graph(parsing: graph.description).edgeCount(queryCount: 3, keyCount: 3), 3, spec)
    }
    let union = try Graph(parsing: "window:1+coo:\"\(rows)\":\(columns)+global:1")
    XCTAssertEqual(union.operands.count, 3)
    XCTAssertTrue(union.contains(row: 2, column: 0, queryCount: 3, keyCount: 3))
    XCTAssertEqual(union.operands.map(\.description)[0], "window:1")
    XCTAssertEqual(union.operands.map(\.description)[2], "global:1")
    // Inside quotes, \" and \\ stand for themselves.
    var seen: [ExplicitGraphSource] = []
    _ = try Graph(parsing: #"mtx:"a\"b\\c+d:e""#) { source, _ in
      seen.append(source)
      return try ExplicitGraph(rows: [], columns: [])
    }
    XCTAssertEqual(seen, [.matrixMarket(#"a"b\c+d:e"#)])
    expectMaskError("csr:\"a.npy", "unterminated quote")
    expectMaskError("csr:\"a\"x:b", "after a closing quote")
    expectMaskError("csr:a\"b\":c", "quote inside a field")
    expectMaskError("window:3\\", "lone backslash")
  }

  /// `window:99999999999999999999` was "not an integer".
  func testNumbersBeyondTheRangeAreTooLarge() {
    expectMaskError("window:99999999999999999999", "too large (at most 9223372036854775807)")
    expectMaskError("dilated:3:99999999999999999999", "too large")
    expectMaskError("global:0,99999999999999999999", "too large")
    expectMaskError("blocked:-99999999999999999999", "too small")
    expectMaskError("random:0.5:99999999999999999999", "too large (at most 18446744073709551615)")
    expectMaskError("window:12a", "not an integer")
  }

  /// COO rows holding Int64.max, 2^40 and 1e11, and .mtx size lines `9223372036854775807 9223372036854775807 1`,
  /// `4611686018427387904 64 1`, `100000000000 64 1`: clear errors, no trap, no huge allocation.
  func testExplicitFilesWithHugeIndicesOrSizes() throws {
    let columns = try npy([0], "c.npy")
    for (i, row) in [Int64.max, 1 << 40, 100_000_000_000].enumerated() {
      let rows = try npy([row], "r\(i).npy")
      XCTAssertThrowsError(try Graph(parsing: "coo:\(rows):\(columns)", queryCount: 4, keyCount: 4)) { error in
        XCTAssertEqual((error as? GraphAttentionError)?.kind, .index, "\(error)")
        XCTAssertTrue("\(error)".contains("0..<4"), "\(error)")
      }
      // Without the lengths the graph holds one entry, and validation names the mismatch.
      if row < Int64.max {
        let graph = try Graph(parsing: "coo:\(rows):\(columns)")
        XCTAssertThrowsError(try graph.validate(queryCount: 4, keyCount: 4)) { error in
          XCTAssertTrue("\(error)".contains("rows but the query has 4 tokens"), "\(error)")
        }
      }
    }
    for size in ["9223372036854775807 9223372036854775807 1", "4611686018427387904 64 1", "100000000000 64 1",
                 "1099511627776 1 0", "9223372036854775807 1 0"] {
      let entry = size.hasSuffix(" 0") ? "" : "1 1\n"
      let path = try scratch.write(Array("%%MatrixMarket matrix coordinate pattern general\n\(size)\n\(entry)".utf8), to: "m.mtx")
      XCTAssertThrowsError(try Graph(parsing: "mtx:\(path)", queryCount: 64, keyCount: 64), size) { error in
        XCTAssertEqual((error as? GraphAttentionError)?.kind, .shape, "\(error)")
        XCTAssertTrue("\(error)".contains("\(size.split(separator: " ")[0]) rows but the query has 64 tokens"), "\(error)")
      }
      let graph = try Graph(parsing: "mtx:\(path)")
      XCTAssertThrowsError(try graph.validate(queryCount: 64, keyCount: 64), size)
    }
    // A symmetric file mirrors a row index into a column: the real limit is 2^32 columns.
    let symmetric = try scratch.write(Array("""
      %%MatrixMarket matrix coordinate pattern symmetric
      9223372036854775807 9223372036854775807 1
      5000000000 1

      """.utf8), to: "s.mtx")
    XCTAssertThrowsError(try Graph(parsing: "mtx:\(symmetric)")) { error in
      XCTAssertTrue("\(error)".contains("out of range 0..<4294967296 (columns are stored in 32 bits)"), "\(error)")
    }
  }

  /// Found by the Matrix Market fuzzer: a symmetric 4 x 3 file mirrored entry (4, 1) into column 4 of 3.
  func testSymmetricMatrixMarketFilesMustBeSquare() {
    XCTAssertThrowsError(try MatrixMarketPattern(bytes: Array("%%MatrixMarket matrix coordinate real symmetric\n4 3 1\n4 1 0.5\n".utf8))) { error in
      XCTAssertTrue("\(error)".contains("line 2: is symmetric but not square (4 x 3)"), "\(error)")
    }
  }

  func testMatrixMarketParsesFromMemory() throws {
    let pattern = try MatrixMarketPattern(bytes: Array("%%MatrixMarket matrix coordinate real symmetric\n3 3 2\n2 1 0.5\n3 3 1\n".utf8))
    XCTAssertEqual(pattern.rows, [1, 0, 2])
    XCTAssertEqual(pattern.columns, [0, 1, 2])
    XCTAssertThrowsError(try MatrixMarketPattern(bytes: Array("%%MatrixMarket matrix coordinate pattern general\n2 2 1\n3 1\n".utf8))) { error in
      XCTAssertTrue("\(error)".contains("<Matrix Market text> line 3"), "\(error)")
    }
  }
}
