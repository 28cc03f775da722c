@testable import GraphAttention
import XCTest

/// `Graph.transposed` against the masks' independent definitions: column `j` of the transpose lists
/// exactly the rows `i` whose mask holds `(i, j)`, sorted, each once.
final class GraphTransposeTests: XCTestCase {
  func testTransposeListsExactlyTheAttendingRows() throws {
    for l in [1, 2, 3, 7, 64, 65, 130] {
      for mask in GraphTests.masks(tokens: l) {
        try checkTranspose(mask, graph: try Graph(parsing: mask.spec), queryCount: l, keyCount: l)
      }
    }
  }

  func testCrossAttentionTransposes() throws {
    var pairs: [(Int, Int)] = []
    for i in 0..<20 { for j in 0..<33 where (i * 7 + j * 3) % 5 == 0 { pairs.append((i, j)) } }
    let explicit = try ExplicitGraph(rows: pairs.map { Int64($0.0) }, columns: pairs.map { Int64($0.1) }, rowCount: 20)
    try checkTranspose(.pairs(pairs), graph: .explicit(explicit), queryCount: 20, keyCount: 33)
    try checkTranspose(.full, graph: .full, queryCount: 20, keyCount: 33)
    try checkTranspose(.random(0.3, seed: 4), graph: try .random(probability: 0.3, seed: 4), queryCount: 20, keyCount: 33)
    try checkTranspose(.pairs(pairs) + .random(0.1, seed: 2), graph: .explicit(explicit) + (try .random(probability: 0.1, seed: 2)),
                       queryCount: 20, keyCount: 33)
  }

  /// Documents (symmetric), intersections (term by term), prefixes and aligned causal kinds (implicit).
  func testModelGraphTransposes() throws {
    for l in [1, 2, 3, 10, 40, 65] {
      for mask in ModelGraphTests.masks(tokens: l) {
        try checkTranspose(mask, graph: try Graph(parsing: mask.spec), queryCount: l, keyCount: l)
      }
    }
    for (lq, lk) in [(1, 9), (3, 9), (9, 3), (9, 1), (20, 64), (64, 20), (8, 4096)] {
      let masks: [MaskCase] = [.causal, .causalWindow(0), .causalWindow(3), .causalWindow(100), .prefix(0), .prefix(2), .prefix(50),
                               .causal & .prefix(4), .causalWindow(5) + .prefix(1), .causal & .random(0.4, seed: 2), .full & .causal,
                               .causalWindow(2) & .random(0.5, seed: 8) + .full & .prefix(1)]
      for mask in masks {
        try checkTranspose(mask, graph: try Graph(parsing: mask.spec), queryCount: lq, keyCount: lk)
      }
    }
  }

  private func checkTranspose(_ mask: MaskCase, graph: Graph, queryCount lq: Int, keyCount lk: Int,
                              file: StaticString = #filePath, line: UInt = #line) throws {
    try graph.validate(queryCount: lq, keyCount: lk)
    let transposed = graph.transposed(queryCount: lq, keyCount: lk)
    var scratch = RowScratch()
    for j in 0..<lk {
      transposed.neighbourhood(column: j, into: &scratch)
      var rows: [Int] = []
      for run in scratch.runs {
        for t in 0..<run.count { rows.append(run.start + t * run.stride) }
      }
      let expected = (0..<lq).filter { mask.contains($0, j, lq, lk) }
      if rows != expected {
        XCTFail("\(mask) L=\(lq)x\(lk) column \(j): \(rows) vs \(expected)", file: file, line: line)
        return
      }
    }
  }
}
