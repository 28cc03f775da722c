import Foundation
import GraphAttention
import XCTest

final class MatrixMarketTests: XCTestCase {
  private var scratch: StorageScratchDirectory!

  override func setUpWithError() throws {
    scratch = try StorageScratchDirectory()
  }

  override func tearDown() {
    scratch.remove()
  }

  private func file(_ text: String, _ name: String = "m.mtx") throws -> String {
    try scratch.write(Array(text.utf8), to: name)
  }

  private func pairs(_ pattern: MatrixMarketPattern) -> [[Int64]] {
    zip(pattern.rows, pattern.columns).map { [$0, $1] }
  }

  func testGeneralPattern() throws {
    let path = try file("""
      %%MatrixMarket matrix coordinate pattern general
      3 4 3
      1 1
      3 4
      2 3

      """)
    let pattern = try MatrixMarketPattern(contentsOf: path)
    XCTAssertEqual(pattern.rowCount, 3)
    XCTAssertEqual(pattern.columnCount, 4)
    XCTAssertEqual(pairs(pattern), [[0, 0], [2, 3], [1, 2]])
  }

  func testRealValuesAreIgnored() throws {
    let path = try file("""
      %%MatrixMarket matrix coordinate real general
      2 2 3
      1 2 0.5
      2 1 -1.25e-3
      2 2 +7
      """)
    let pattern = try MatrixMarketPattern(contentsOf: path)
    XCTAssertEqual(pairs(pattern), [[0, 1], [1, 0], [1, 1]])
  }

  func testIntegerAndDoubleFields() throws {
    let integer = try file("%%MatrixMarket matrix coordinate integer general\n2 2 2\n1 1 5\n2 2 -3\n", "i.mtx")
    XCTAssertEqual(pairs(try MatrixMarketPattern(contentsOf: integer)), [[0, 0], [1, 1]])
    let double = try file("%%MatrixMarket matrix coordinate double general\n1 1 1\n1 1 1.0E+2\n", "d.mtx")
    XCTAssertEqual(pairs(try MatrixMarketPattern(contentsOf: double)), [[0, 0]])
  }

  func testComplexFieldAcceptsTwoValues() throws {
    let path = try file("%%MatrixMarket matrix coordinate complex general\n2 2 1\n2 1 1.0 -2.0\n")
    XCTAssertEqual(pairs(try MatrixMarketPattern(contentsOf: path)), [[1, 0]])
  }

  func testSymmetricExpansionKeepsDiagonalOnce() throws {
    let path = try file("""
      %%MatrixMarket matrix coordinate real symmetric
      3 3 3
      1 1 1.0
      3 1 2.0
      3 2 3.0
      """)
    let pattern = try MatrixMarketPattern(contentsOf: path)
    XCTAssertEqual(pairs(pattern), [[0, 0], [2, 0], [0, 2], [2, 1], [1, 2]])
  }

  func testSkewSymmetricPattern() throws {
    let path = try file("%%MatrixMarket matrix coordinate pattern skew-symmetric\n2 2 1\n2 1\n")
    XCTAssertEqual(pairs(try MatrixMarketPattern(contentsOf: path)), [[1, 0], [0, 1]])
  }

  func testCommentsBlankLinesCaseAndCRLF() throws {
    let path = try file(
      "%%matrixmarket MATRIX Coordinate PATTERN General\r\n% a comment\r\n\r\n%another\r\n  2 2 2  \r\n\r\n1 2\r\n% in between\r\n\t2   1\t\r\n\r\n")
    let pattern = try MatrixMarketPattern(contentsOf: path)
    XCTAssertEqual(pattern.rowCount, 2)
    XCTAssertEqual(pairs(pattern), [[0, 1], [1, 0]])
  }

  func testEmptyMatrix() throws {
    let path = try file("%%MatrixMarket matrix coordinate pattern general\n5 6 0\n")
    let pattern = try MatrixMarketPattern(contentsOf: path)
    XCTAssertEqual(pattern.rowCount, 5)
    XCTAssertEqual(pattern.columnCount, 6)
    XCTAssertEqual(pattern.rows, [])
    XCTAssertEqual(pattern.columns, [])
  }

  func testMemberwiseInit() {
    let pattern = MatrixMarketPattern(rowCount: 2, columnCount: 3, rows: [0, 1], columns: [2, 0])
    XCTAssertEqual(pattern.rows, [0, 1])
    XCTAssertEqual(pattern.columns, [2, 0])
  }

  // MARK: - Rejections

  func testZeroIndexIsAnIndexErrorWithLineNumber() throws {
    let path = try file("%%MatrixMarket matrix coordinate pattern general\n% c\n3 3 2\n1 1\n0 2\n")
    assertStorageError(.index, mentions: [path, "line 5", "row index 0", "1-based"]) {
      _ = try MatrixMarketPattern(contentsOf: path)
    }
  }

  func testOutOfRangeIndices() throws {
    let row = try file("%%MatrixMarket matrix coordinate pattern general\n3 4 1\n4 1\n", "row.mtx")
    assertStorageError(.index, mentions: [row, "line 3", "row index 4", "1...3"]) { _ = try MatrixMarketPattern(contentsOf: row) }
    let column = try file("%%MatrixMarket matrix coordinate pattern general\n3 4 1\n1 5\n", "col.mtx")
    assertStorageError(.index, mentions: [column, "line 3", "column index 5", "1...4"]) {
      _ = try MatrixMarketPattern(contentsOf: column)
    }
    let negative = try file("%%MatrixMarket matrix coordinate pattern general\n3 4 1\n-1 2\n", "neg.mtx")
    assertStorageError(.index, mentions: [negative, "line 3", "-1"]) { _ = try MatrixMarketPattern(contentsOf: negative) }
  }

  func testFewerEntriesThanDeclared() throws {
    let path = try file("%%MatrixMarket matrix coordinate pattern general\n3 3 3\n1 1\n2 2\n")
    assertStorageError(.file, mentions: [path, "has 2 entries", "declares 3", "line 2"]) {
      _ = try MatrixMarketPattern(contentsOf: path)
    }
  }

  func testMoreEntriesThanDeclared() throws {
    let path = try file("%%MatrixMarket matrix coordinate pattern general\n3 3 1\n1 1\n2 2\n")
    assertStorageError(.file, mentions: [path, "line 4", "more entries", "1 declared"]) {
      _ = try MatrixMarketPattern(contentsOf: path)
    }
  }

  func testRejectsArrayFormat() throws {
    let path = try file("%%MatrixMarket matrix array real general\n2 2\n1.0\n2.0\n3.0\n4.0\n")
    assertStorageError(.file, mentions: [path, "line 1", "array", "coordinate"]) { _ = try MatrixMarketPattern(contentsOf: path) }
  }

  func testRejectsMissingOrBrokenBanner() throws {
    let missing = try file("3 3 1\n1 1\n", "nobanner.mtx")
    assertStorageError(.file, mentions: [missing, "line 1", "%%MatrixMarket"]) { _ = try MatrixMarketPattern(contentsOf: missing) }
    let short = try file("%%MatrixMarket matrix coordinate\n3 3 1\n1 1\n", "short.mtx")
    assertStorageError(.file, mentions: [short, "banner"]) { _ = try MatrixMarketPattern(contentsOf: short) }
    let field = try file("%%MatrixMarket matrix coordinate quaternion general\n1 1 0\n", "field.mtx")
    assertStorageError(.file, mentions: [field, "quaternion"]) { _ = try MatrixMarketPattern(contentsOf: field) }
    let empty = try file("", "empty.mtx")
    assertStorageError(.file, mentions: [empty, "banner"]) { _ = try MatrixMarketPattern(contentsOf: empty) }
  }

  func testRejectsBadSizeLines() throws {
    let negative = try file("%%MatrixMarket matrix coordinate pattern general\n3 -3 1\n1 1\n", "neg.mtx")
    assertStorageError(.file, mentions: [negative, "line 2", "negative", "column count"]) {
      _ = try MatrixMarketPattern(contentsOf: negative)
    }
    let twoFields = try file("%%MatrixMarket matrix coordinate pattern general\n3 3\n1 1\n", "two.mtx")
    assertStorageError(.file, mentions: [twoFields, "line 2", "entry count"]) { _ = try MatrixMarketPattern(contentsOf: twoFields) }
    let missing = try file("%%MatrixMarket matrix coordinate pattern general\n% only comments\n", "nosize.mtx")
    assertStorageError(.file, mentions: [missing, "size line"]) { _ = try MatrixMarketPattern(contentsOf: missing) }
    let huge = try file("%%MatrixMarket matrix coordinate pattern general\n99999999999999999999 3 1\n1 1\n", "huge.mtx")
    assertStorageError(.file, mentions: [huge, "line 2", "too large"]) { _ = try MatrixMarketPattern(contentsOf: huge) }
  }

  func testRejectsNonNumericTokens() throws {
    let index = try file("%%MatrixMarket matrix coordinate pattern general\n3 3 2\n1 1\n2 x\n", "index.mtx")
    assertStorageError(.file, mentions: [index, "line 4", "'x'"]) { _ = try MatrixMarketPattern(contentsOf: index) }
    let value = try file("%%MatrixMarket matrix coordinate real general\n3 3 1\n1 1 abc\n", "value.mtx")
    assertStorageError(.file, mentions: [value, "line 3", "'abc'", "numeric"]) { _ = try MatrixMarketPattern(contentsOf: value) }
    let fractional = try file("%%MatrixMarket matrix coordinate pattern general\n3 3 1\n1.5 1\n", "frac.mtx")
    assertStorageError(.file, mentions: [fractional, "line 3", "'1.5'"]) { _ = try MatrixMarketPattern(contentsOf: fractional) }
    let missingValue = try file("%%MatrixMarket matrix coordinate real general\n3 3 1\n1 1\n", "novalue.mtx")
    assertStorageError(.file, mentions: [missingValue, "line 3", "value"]) { _ = try MatrixMarketPattern(contentsOf: missingValue) }
    let extra = try file("%%MatrixMarket matrix coordinate pattern general\n3 3 1\n1 1 2.0\n", "extra.mtx")
    assertStorageError(.file, mentions: [extra, "line 3", "'2.0'"]) { _ = try MatrixMarketPattern(contentsOf: extra) }
  }

  func testAcceptsSpecialFloatValues() throws {
    let path = try file("%%MatrixMarket matrix coordinate real general\n2 2 3\n1 1 nan\n1 2 -Inf\n2 2 .5\n")
    XCTAssertEqual(pairs(try MatrixMarketPattern(contentsOf: path)), [[0, 0], [0, 1], [1, 1]])
  }

  func testMissingFile() throws {
    let path = scratch.path("absent.mtx")
    assertStorageError(.file, mentions: [path, "No such file or directory"]) { _ = try MatrixMarketPattern(contentsOf: path) }
  }
}
