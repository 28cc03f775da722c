import GraphAttention
import XCTest

/// The graph layer against the definitions: runs, degrees and edge counts, row by row.
final class GraphTests: XCTestCase {
  /// Masks over `l` tokens covering every kind, their edge cases and overlapping unions.
  static func masks(tokens l: Int) -> [MaskCase] {
    var masks: [MaskCase] = [
      .full, .causal, .window(0), .window(1), .window(5), .window(l), .window(l + 100),
      .causalWindow(0), .causalWindow(3), .causalWindow(63), .causalWindow(l),
      .dilated(0, 0), .dilated(2, 1), .dilated(3, 2), .dilated(40, 3), .dilated(l, l),
      .blocked(1, 0), .blocked(7, 1), .blocked(8, 3), .blocked(16, 0), .blocked(l + 5, 2), .blocked(5, 9),
      .global([0]), .global([l - 1]), .global([0, l - 1]), .global([l / 2, 0, l / 2]),
      .random(0.1, seed: 3), .random(1, seed: 1), .random(0, seed: 1), .random(0.5, seed: 99),
      .window(4) + .global([0, l - 1]),
      .window(4) + .window(6),
      .window(8) + .global([0, l - 1]) + .random(0.05, seed: 7),
      .dilated(5, 1) + .window(3),
      .blocked(16, 1) + .causal,
      .dilated(3, 2) + .dilated(2, 1) + .global([l / 3]),
      .causalWindow(2) + .random(0.2, seed: 5),
      // Strided runs against contiguous ones: absorbed, partly outside, between intervals.
      .dilated(6, 2) + .window(1),
      .global([l / 2]) + .dilated(3, 1) + .blocked(8, 1),
      .blocked(8, 1) + .window(2) + .dilated(4, 3),
      .global([0]) + .dilated(2, 4) + .global([l - 1]),
    ]
    if l == 1 { masks.removeAll { $0.spec.contains("global") && $0.spec.contains(",") } }
    return masks
  }

  func testRunsDegreesAndCountsMatchTheDefinitions() throws {
    for l in [1, 2, 3, 7, 64, 65, 130] {
      for mask in GraphTests.masks(tokens: l) {
        let graph = try Graph(parsing: mask.spec)
        try graph.validate(queryCount: l, keyCount: l)
        var scratch = RowScratch()
        var total = 0
        for i in 0..<l {
          graph.neighbourhood(row: i, queryCount: l, keyCount: l, into: &scratch)
          var keys: [Int] = []
          var previousLast = -1
          for run in scratch.runs {
            XCTAssertGreaterThan(run.start, previousLast, "\(mask) L=\(l) row \(i): runs not sorted and disjoint: \(scratch.runs)")
            XCTAssertGreaterThanOrEqual(run.count, 1)
            previousLast = run.last
            var k = run.start
            for _ in 0..<run.count { keys.append(k); k += run.stride }
          }
          let expected = (0..<l).filter { mask.contains(i, $0, l, l) }
          XCTAssertEqual(keys, expected, "\(mask) L=\(l) row \(i)")
          XCTAssertEqual(graph.degree(row: i, queryCount: l, keyCount: l, scratch: &scratch), expected.count, "\(mask) L=\(l) row \(i)")
          for j in 0..<l {
            XCTAssertEqual(graph.contains(row: i, column: j, queryCount: l, keyCount: l), mask.contains(i, j, l, l),
                           "\(mask) L=\(l) (\(i), \(j))")
          }
          total += expected.count
        }
        XCTAssertEqual(graph.edgeCount(queryCount: l, keyCount: l), total, "\(mask) L=\(l)")
        XCTAssertEqual(graph.degreeStatistics(queryCount: l, keyCount: l).edges, total, "\(mask) L=\(l)")
      }
    }
  }

  func testClosedFormCountsAtLengthsThatWouldOverflowAMatrix() throws {
    let l = 160_000_000
    XCTAssertEqual(try Graph(parsing: "window:64").edgeCount(queryCount: l, keyCount: l), l * 129 - 64 * 65)
    XCTAssertEqual(try Graph(parsing: "window:64:causal").edgeCount(queryCount: l, keyCount: l), l * 65 - 64 * 65 / 2)
    XCTAssertEqual(try Graph(parsing: "global:0,5").edgeCount(queryCount: l, keyCount: l), 2 * 2 * l - 4)
    XCTAssertEqual(Graph.causal.edgeCount(queryCount: l, keyCount: l), l * (l + 1) / 2)
    // Dilated: residue classes of 3 tokens each with a 1-radius window: 8 classes of 3 tokens (7 edges each) for L = 24.
    XCTAssertEqual(try Graph(parsing: "dilated:1:7").edgeCount(queryCount: 24, keyCount: 24), 8 * 7)
    // Blocked with a partial block: L = 10, B = 4: two full blocks of 2x2 (D=1) and a partial block of 2 tokens (1x1).
    XCTAssertEqual(try Graph(parsing: "blocked:4:1").edgeCount(queryCount: 10, keyCount: 10), 2 * 4 + 1)
  }

  /// The estimate sizes work without a pass over the rows: exact for single implicit graphs, the sum of
  /// the parts for unions (over by shared edges only), unmoved by global rows that hold most edges.
  func testEstimatedEdgeCount() throws {
    for spec in ["window:64", "window:3:causal", "dilated:2:3", "blocked:16:1", "global:0,9", "causal", "full"] {
      let graph = try Graph(parsing: spec)
      XCTAssertEqual(graph.estimatedEdgeCount(queryCount: 1000, keyCount: 1000), graph.edgeCount(queryCount: 1000, keyCount: 1000), spec)
    }
    let bigBird = try Graph(parsing: "window:64+global:0,1+random:0.001:7")
    let l = 20_000
    let exact = Double(bigBird.edgeCount(queryCount: l, keyCount: l))
    let estimate = Double(bigBird.estimatedEdgeCount(queryCount: l, keyCount: l))
    XCTAssertGreaterThanOrEqual(estimate, exact * 0.99)
    XCTAssertLessThanOrEqual(estimate, exact * 1.02)
    XCTAssertEqual(try Graph(parsing: "window:10+window:10").estimatedEdgeCount(queryCount: 100, keyCount: 100),
                   2 * (try Graph.window(10)).edgeCount(queryCount: 100, keyCount: 100))
    XCTAssertEqual(try Graph(parsing: "full+full").estimatedEdgeCount(queryCount: 100, keyCount: 100), 100 * 100, "capped at L^2")
  }

  func testRandomGraphDensityIsRightAndSeedsDiffer() throws {
    let l = 2000, p = 0.01
    let a = try Graph(parsing: "random:\(p):1").edgeCount(queryCount: l, keyCount: l)
    let b = try Graph(parsing: "random:\(p):2").edgeCount(queryCount: l, keyCount: l)
    let mean = p * Double(l * l), sigma = (mean * (1 - p)).squareRoot()
    XCTAssertLessThan(abs(Double(a) - mean), 5 * sigma)
    XCTAssertLessThan(abs(Double(b) - mean), 5 * sigma)
    XCTAssertNotEqual(a, b)
    // Equal seeds give equal graphs, independently of anything else.
    XCTAssertEqual(a, try Graph.random(probability: p, seed: 1).edgeCount(queryCount: l, keyCount: l))
  }

  func testExplicitGraphsMergeDuplicatesAndKeepTrailingRowsEmpty() throws {
    // Row 0: {3, 1, 3} -> {1, 3}; row 1: {}; row 2: {0, 0, 2}; rows 3 and 4 empty (COO with 5 query tokens).
    let coo = try ExplicitGraph(rows: [2, 0, 0, 2, 0, 2], columns: [0, 3, 1, 0, 3, 2])
    let graph = Graph.explicit(coo)
    try graph.validate(queryCount: 5, keyCount: 4)
    XCTAssertEqual(graph.edgeCount(queryCount: 5, keyCount: 4), 4)
    var scratch = RowScratch()
    let expected: [[Int]] = [[1, 3], [], [0, 2], [], []]
    for (i, keys) in expected.enumerated() {
      graph.neighbourhood(row: i, queryCount: 5, keyCount: 4, into: &scratch)
      XCTAssertEqual(scratch.runs.flatMap { r in (0..<r.count).map { r.start + $0 * r.stride } }, keys, "row \(i)")
    }
    let csr = try ExplicitGraph(rowOffsets: [0, 3, 3, 6, 6, 6], columns: [3, 1, 3, 2, 0, 0])
    XCTAssertEqual(Graph.explicit(csr).edgeCount(queryCount: 5, keyCount: 4), 4)
    XCTAssertThrowsError(try Graph.explicit(csr).validate(queryCount: 4, keyCount: 4)) { error in
      XCTAssertEqual((error as? GraphAttentionError)?.kind, .shape)
    }
    XCTAssertThrowsError(try Graph.explicit(csr).validate(queryCount: 5, keyCount: 3)) { error in
      XCTAssertEqual((error as? GraphAttentionError)?.kind, .index)
    }
  }

  func testBadSpecificationsNameTheProblem() {
    let cases: [(String, String)] = [
      ("", "empty component"), ("window", "argument"), ("window:-3", "non-negative"), ("window:x", "not an integer"),
      ("window:3:sideways", "unknown window option"), ("dilated:3", "argument"), ("dilated:-1:2", ">= 0"),
      ("blocked:0:0", ">= 1"), ("blocked:4:-1", ">= 0"), ("global:", "not an integer"), ("global:-1", "negative"),
      ("random:1.5:3", "[0, 1]"), ("random:p:3", "not a number"), ("random:0.1:-3", "seed"), ("random:nan:3", "not a number"),
      ("banana:3", "unknown mask kind"), ("window:3++causal", "empty component"), ("csr:a.npy", "argument"),
      ("dilated:\(Int.max):3", "overflows"),
    ]
    for (spec, words) in cases {
      XCTAssertThrowsError(try Graph(parsing: spec), spec) { error in
        guard let e = error as? GraphAttentionError else { return XCTFail("\(spec): \(error)") }
        XCTAssertEqual(e.kind, .mask, spec)
        XCTAssertTrue(e.description.contains(words), "\(spec): '\(e)' should mention '\(words)'")
        XCTAssertTrue(e.description.contains("Fix:"), "\(spec): '\(e)' should say how to fix it")
      }
    }
  }

  func testValidationAgainstLengths() throws {
    XCTAssertThrowsError(try Graph(parsing: "global:0,10").validate(queryCount: 10, keyCount: 10)) { error in
      XCTAssertTrue("\(error)".contains("global token 10"), "\(error)")
    }
    XCTAssertThrowsError(try Graph(parsing: "window:3").validate(queryCount: 10, keyCount: 12)) { error in
      XCTAssertTrue("\(error)".contains("self-attention"), "\(error)")
    }
    XCTAssertNoThrow(try Graph.full.validate(queryCount: 10, keyCount: 12))
    XCTAssertNoThrow(try Graph(parsing: "random:0.3:1").validate(queryCount: 10, keyCount: 12))
  }

  func testDescriptionRoundTrips() throws {
    for spec in ["full", "causal", "window:5", "window:5:causal", "dilated:4:2", "blocked:8:1", "global:0,7", "random:0.25:9",
                 "window:64+global:0,9+random:0.001:7"] {
      XCTAssertEqual(try Graph(parsing: spec).description, spec)
    }
  }
}
