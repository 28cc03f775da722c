import Foundation
@testable import GraphAttention
import XCTest

/// Sizes a user can pass that once trapped or allocated far more than the input justified: huge indices
/// and declared sizes in explicit graphs, counts beyond Int64, full rows united with strided runs.
final class GraphLimitsTests: XCTestCase {
  private func expectError(_ kind: GraphAttentionError.Kind, mentioning words: String..., body: () throws -> Void,
                           file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
      guard let e = error as? GraphAttentionError else { return XCTFail("\(error)", file: file, line: line) }
      XCTAssertEqual(e.kind, kind, "\(e)", file: file, line: line)
      for w in words { XCTAssertTrue(e.description.contains(w), "'\(e)' should mention '\(w)'", file: file, line: line) }
    }
  }

  /// COO rows holding Int64.max once trapped in `maxRow + 1`; 2^40 asked for 8 TiB of row offsets; 2^28 for
  /// 2 GiB before the row count was compared with the query length.
  func testCOORowIndicesAreCheckedBeforeAnythingIsAllocated() throws {
    expectError(.index, mentioning: "9223372036854775807") {
      _ = try ExplicitGraph(rows: [Int64.max], columns: [0])
    }
    expectError(.index, mentioning: "1099511627776", "0..<4") {
      _ = try ExplicitGraph(rows: [1 << 40], columns: [0], queryCount: 4, keyCount: 4)
    }
    expectError(.index, mentioning: "column", "0..<4") {
      _ = try ExplicitGraph(rows: [0], columns: [7], queryCount: 4, keyCount: 4)
    }
    // Without the lengths, memory follows the entries: the row count is only a number until validation.
    for row: Int64 in [1 << 28, 1 << 40, Int64.max - 1] {
      let graph = try ExplicitGraph(rows: [row, 0], columns: [3, 1])
      XCTAssertNotNil(graph.storage.rowIDs, "stored sparsely")
      XCTAssertEqual(graph.storage.rowOffsets.count, 3)
      XCTAssertEqual(graph.rowCount, Int(row) + 1)
      XCTAssertEqual(Array(graph.columns(ofRow: Int(row))), [3])
      XCTAssertEqual(Array(graph.columns(ofRow: 0)), [1])
      XCTAssertEqual(Array(graph.columns(ofRow: 1)), [])
      expectError(.shape, mentioning: "\(Int(row) + 1) rows", "4 tokens") {
        try Graph.explicit(graph).validate(queryCount: 4, keyCount: 4)
      }
    }
  }

  /// Matrix Market size lines `9223372036854775807 1 0` (overflow trap), `1099511627776 1 0` and
  /// `100000000000 64 1` (huge allocations): clear errors against the lengths, with or without them given.
  func testHugeDeclaredSizesAreRefusedWithoutAllocating() throws {
    for m in [Int.max, 1 << 40, 100_000_000_000, 4_611_686_018_427_387_904] {
      let graph = try ExplicitGraph(rows: [0], columns: [0], rowCount: m, columnCount: 64)
      XCTAssertNotNil(graph.storage.rowIDs)
      expectError(.shape, mentioning: "\(m) rows") { try Graph.explicit(graph).validate(queryCount: 64, keyCount: 64) }
      expectError(.shape, mentioning: "\(m) rows", "64 tokens") {
        _ = try ExplicitGraph(rows: [0], columns: [0], rowCount: m, columnCount: 64, queryCount: 64, keyCount: 64)
      }
    }
    expectError(.shape, mentioning: "9223372036854775807 columns") {
      _ = try ExplicitGraph(rows: [0], columns: [0], rowCount: 4, columnCount: Int.max, queryCount: 4, keyCount: 4)
    }
    // A sparse pattern with the exact row count still runs: its rows are found by search.
    let sparse = try ExplicitGraph(rows: [9000, 3, 9000], columns: [2, 1, 0], rowCount: 10_000, columnCount: 4)
    XCTAssertNotNil(sparse.storage.rowIDs)
    let graph = Graph.explicit(sparse)
    try graph.validate(queryCount: 10_000, keyCount: 4)
    XCTAssertEqual(graph.edgeCount(queryCount: 10_000, keyCount: 4), 3)
    XCTAssertEqual(sparse.denseRowOffsets.count, 10_001)
    XCTAssertEqual(sparse.denseRowOffsets[9000], 1)
    XCTAssertEqual(sparse.denseRowOffsets[9001], 3)
    let stats = graph.degreeStatistics(queryCount: 10_000, keyCount: 4)
    XCTAssertEqual(stats.min, 0)
    XCTAssertEqual(stats.max, 2)
    XCTAssertEqual(stats.emptyRows, 9998)
    XCTAssertEqual(stats.edges, 3)
  }

  /// A symmetric file mirrors a row index into a column: the limit that applies is 2^32 (32-bit columns),
  /// not the declared N = 2^63 - 1.
  func testColumnLimitNamesTheRealBound() throws {
    expectError(.index, mentioning: "0..<4294967296", "32 bits") {
      _ = try ExplicitGraph(rows: [0, 5_000_000_000], columns: [5_000_000_000, 0], rowCount: Int.max, columnCount: Int.max)
    }
    expectError(.index, mentioning: "0..<10") {
      _ = try ExplicitGraph(rows: [0], columns: [5_000_000_000], rowCount: 1, columnCount: 10)
    }
  }

  /// `full` at 2^40 x 2^40 trapped in `queryCount * keyCount`; `inspect --mask full --tokens 1e12` (and causal)
  /// trapped in the closed form.
  func testCountsThatOverflowAreAnErrorNotATrap() throws {
    let big = 1 << 40
    XCTAssertEqual(Graph.full.estimatedEdgeCount(queryCount: big, keyCount: big), 9_000_000_000_000_000_000)
    XCTAssertEqual(Graph.causal.estimatedEdgeCount(queryCount: big, keyCount: big), 9_000_000_000_000_000_000)
    XCTAssertEqual(try Graph(parsing: "window:64+full").estimatedEdgeCount(queryCount: big, keyCount: big), 9_000_000_000_000_000_000)
    XCTAssertEqual(try Graph(parsing: "window:3").estimatedEdgeCount(queryCount: big, keyCount: big), 7 * big - 12)
    // Found by the mask fuzzer: the dilated closed form took q + 1 of q = Int.max residue-class members.
    for spec in ["dilated:3:0", "dilated:1:2", "blocked:\(1 << 40):0", "window:5:causal", "global:0"] {
      XCTAssertGreaterThan(try Graph(parsing: spec).estimatedEdgeCount(queryCount: Int.max, keyCount: Int.max), 0, spec)
    }
    let trillion = 1_000_000_000_000
    for spec in ["full", "causal", "window:4+full", "random:0.5:1", "window:\(Int.max)", "dilated:\(trillion):0",
                 "global:0,1,2+window:\(trillion / 2)"] {
      expectError(.shape, mentioning: "edges") { try Graph(parsing: spec).validate(queryCount: trillion, keyCount: trillion) }
    }
    // Sparse graphs at the same length count exactly.
    let window = try Graph(parsing: "window:4:causal")
    try window.validate(queryCount: trillion, keyCount: trillion)
    XCTAssertEqual(window.edgeCount(queryCount: trillion, keyCount: trillion), 5 * trillion - 10)
    XCTAssertNoThrow(try Graph.full.validate(queryCount: 3_000_000_000, keyCount: 3_000_000_000))
    XCTAssertEqual(Graph.causal.edgeCount(queryCount: 4_000_000_000, keyCount: 4_000_000_000), 2_000_000_000 * 4_000_000_001, "n(n+1) overflows before the halving")
  }

  /// `inspect --mask window:4:causal --tokens 1e12` walked every row: closed forms answer at once.
  func testDegreeStatisticsOfImplicitGraphsAreClosedForms() throws {
    let trillion = 1_000_000_000_000
    let cases: [(String, min: Int, max: Int, empty: Int, edges: Int)] = [
      ("window:4:causal", 1, 5, 0, 5 * trillion - 10),
      ("window:4", 5, 9, 0, 9 * trillion - 20),
      ("global:0,7", 2, trillion, 0, 2 * 2 * trillion - 4),
      ("blocked:4:1", 0, 2, trillion / 2, trillion),
      ("dilated:2:1", 3, 5, 0, 2 * (5 * (trillion / 2) - 6)),
    ]
    for c in cases {
      let graph = try Graph(parsing: c.0)
      var calls = 0
      let stats = graph.degreeStatistics(queryCount: trillion, keyCount: trillion) { _ in calls += 1 }
      XCTAssertEqual(calls, 0, c.0)
      XCTAssertEqual(stats.min, c.min, c.0)
      XCTAssertEqual(stats.max, c.max, c.0)
      XCTAssertEqual(stats.emptyRows, c.empty, c.0)
      XCTAssertEqual(stats.edges, c.edges, c.0)
    }
  }

  /// Closed-form statistics against row-by-row degrees for every mask kind and small length; unions report
  /// progress as they go.
  func testDegreeStatisticsMatchRowByRow() throws {
    for l in [1, 2, 3, 7, 64, 65, 130] {
      for mask in GraphTests.masks(tokens: l) {
        let graph = try Graph(parsing: mask.spec)
        try graph.validate(queryCount: l, keyCount: l)
        var degrees: [Int] = []
        var scratch = RowScratch()
        for i in 0..<l {
          graph.neighbourhood(row: i, queryCount: l, keyCount: l, into: &scratch)
          degrees.append(scratch.degree)
        }
        let stats = graph.degreeStatistics(queryCount: l, keyCount: l)
        XCTAssertEqual(stats.min, degrees.min(), "\(mask) L=\(l)")
        XCTAssertEqual(stats.max, degrees.max(), "\(mask) L=\(l)")
        XCTAssertEqual(stats.emptyRows, degrees.filter { $0 == 0 }.count, "\(mask) L=\(l)")
        XCTAssertEqual(stats.edges, degrees.reduce(0, +), "\(mask) L=\(l)")
        XCTAssertEqual(stats.mean, Double(degrees.reduce(0, +)) / Double(l), accuracy: 1e-12, "\(mask) L=\(l)")
      }
    }
    var seen: [Int] = []
    _ = try Graph(parsing: "window:2+global:0").degreeStatistics(queryCount: 200_000, keyCount: 200_000) { seen.append($0) }
    XCTAssertEqual(seen, [65_536, 131_072, 196_608, 200_000])
  }

  /// A global token's full row united with strided runs (`dilated`, `blocked` with D > 0) once expanded
  /// into every key: 2 GiB per worker at 2^30 tokens. The full row now absorbs them.
  func testAFullRowAbsorbsStridedRunsWithoutExpandingThem() throws {
    let l = 1 << 24
    for spec in ["global:0+dilated:3:1", "global:0+blocked:8:1", "dilated:5:2+global:0+blocked:16:3"] {
      let graph = try Graph(parsing: spec)
      try graph.validate(queryCount: l, keyCount: l)
      var scratch = RowScratch()
      graph.neighbourhood(row: 0, queryCount: l, keyCount: l, into: &scratch)
      XCTAssertEqual(scratch.runs, [KeyRun(start: 0, count: l)], spec)
      XCTAssertLessThan(scratch.keys.capacity, 1024, "\(spec): the full row was expanded key by key")
    }
    // A strided run reaching past a contiguous run is expanded only outside it.
    var scratch = RowScratch()
    let graph = try Graph(parsing: "window:2+dilated:3:1")
    graph.neighbourhood(row: 10, queryCount: 100, keyCount: 100, into: &scratch)
    XCTAssertEqual(scratch.runs, [KeyRun(start: 4, count: 2, stride: 2), KeyRun(start: 8, count: 5), KeyRun(start: 14, count: 2, stride: 2)])
  }

  /// Materialising refuses a row count it could not hold instead of trapping in the allocation.
  func testMaterialisingRefusesHugeLengths() {
    expectError(.resource, mentioning: "row offsets") {
      _ = try ExplicitGraph(materializing: Graph.full, queryCount: 1 << 40, keyCount: 4)
    }
  }
}
