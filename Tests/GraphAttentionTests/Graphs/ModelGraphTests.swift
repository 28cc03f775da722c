import Foundation
import GraphAttention
import XCTest

/// The graphs today's models use (packed documents, intersections, prefix-LM, bottom-right aligned
/// causal kinds, per-head random patterns) against their definitions: runs, `contains`, degrees,
/// counts and degree statistics, brute force over every pair; and their parsing errors.
final class ModelGraphTests: XCTestCase {
  private var scratch: StorageScratchDirectory!

  override func setUpWithError() throws { scratch = try StorageScratchDirectory() }
  override func tearDown() { scratch.remove() }

  /// Document offsets over `l` tokens: one document, all length-1 documents, empty documents
  /// (repeated offsets, at the start, middle and end) and irregular lengths.
  static func documentOffsets(tokens l: Int) -> [[Int]] {
    var cases: [[Int]] = [[0, l], Array(0...l), [0, 0, l, l]]
    if l >= 3 { cases.append([0, 1, 1, l / 2, l / 2, l - 1, l]) }
    if l >= 10 { cases.append([0, 3, 4, 9, l]) }
    if l >= 40 { cases.append(stride(from: 0, to: l, by: 13).map { $0 } + [l]) }
    return cases
  }

  /// Masks over `l` tokens (square) exercising documents, intersections and prefixes.
  static func masks(tokens l: Int) -> [MaskCase] {
    var masks: [MaskCase] = [.prefix(0), .prefix(1), .prefix(l / 2), .prefix(l), .prefix(l + 7)]
    for offsets in documentOffsets(tokens: l) {
      let d = MaskCase.documents(offsets)
      masks += [d, d & .causal, d & .causalWindow(2), d & .window(3), d & .full, .causal & d, d & .prefix(l / 3),
                d & .causalWindow(2) + .global([0]), d & .dilated(2, 1), d & .random(0.3, seed: 5)]
    }
    masks += [
      .window(4) & .causal, .dilated(3, 1) & .dilated(2, 2), .dilated(4, 1) & .window(3), .blocked(8, 1) & .dilated(3, 2),
      .random(0.5, seed: 3) & .random(0.5, seed: 4), .global([0, l - 1]) & .window(2), .global([l / 2]) & .dilated(5, 1),
      .causal & .causalWindow(3) & .prefix(2), .window(2) & .causal + .prefix(3) & .window(1),
      .random(0.2, seed: 9) & .causal + .global([l / 2]),
    ]
    if l == 1 { masks.removeAll { $0.spec.contains("global:0,0") } }
    return masks
  }

  /// Checks the graph against the mask over `lq x lk`: runs sorted and disjoint with the defined keys,
  /// degree, `contains` on every pair, edge count and degree statistics.
  private func check(_ graph: Graph, _ mask: MaskCase, _ lq: Int, _ lk: Int, file: StaticString = #filePath, line: UInt = #line) throws {
    try graph.validate(queryCount: lq, keyCount: lk)
    var scratch = RowScratch()
    var total = 0, lo = Int.max, hi = 0, empty = 0
    for i in 0..<lq {
      graph.neighbourhood(row: i, queryCount: lq, keyCount: lk, into: &scratch)
      var keys: [Int] = []
      var previousLast = -1
      for run in scratch.runs {
        XCTAssertGreaterThan(run.start, previousLast, "\(mask) \(lq)x\(lk) row \(i): \(scratch.runs)", file: file, line: line)
        previousLast = run.last
        var k = run.start
        for _ in 0..<run.count { keys.append(k); k += run.stride }
      }
      let expected = (0..<lk).filter { mask.contains(i, $0, lq, lk) }
      XCTAssertEqual(keys, expected, "\(mask) \(lq)x\(lk) row \(i)", file: file, line: line)
      XCTAssertEqual(graph.degree(row: i, queryCount: lq, keyCount: lk, scratch: &scratch), expected.count,
                     "\(mask) \(lq)x\(lk) row \(i)", file: file, line: line)
      for j in 0..<lk where graph.contains(row: i, column: j, queryCount: lq, keyCount: lk) != mask.contains(i, j, lq, lk) {
        XCTFail("\(mask) \(lq)x\(lk) contains(\(i), \(j))", file: file, line: line)
        break
      }
      total += expected.count
      lo = min(lo, expected.count)
      hi = max(hi, expected.count)
      if expected.isEmpty { empty += 1 }
    }
    XCTAssertEqual(graph.edgeCount(queryCount: lq, keyCount: lk), total, "\(mask) \(lq)x\(lk)", file: file, line: line)
    let stats = graph.degreeStatistics(queryCount: lq, keyCount: lk)
    XCTAssertEqual(stats.edges, total, "\(mask) \(lq)x\(lk)", file: file, line: line)
    XCTAssertEqual(stats.min, lo, "\(mask) \(lq)x\(lk) min degree", file: file, line: line)
    XCTAssertEqual(stats.max, hi, "\(mask) \(lq)x\(lk) max degree", file: file, line: line)
    XCTAssertEqual(stats.emptyRows, empty, "\(mask) \(lq)x\(lk) empty rows", file: file, line: line)
  }

  func testDocumentsIntersectionsAndPrefixesMatchTheDefinitions() throws {
    for l in [1, 2, 3, 10, 40, 65, 131] {
      for mask in ModelGraphTests.masks(tokens: l) {
        try check(try Graph(parsing: mask.spec), mask, l, l)
      }
    }
  }

  /// Causal kinds with L_q != L_k align bottom-right; rows before the diagonal are empty when L_q > L_k.
  func testAlignedCausalKindsMatchTheDefinitions() throws {
    for (lq, lk) in [(1, 1), (1, 9), (3, 9), (8, 9), (9, 3), (9, 1), (20, 64), (64, 20), (1, 4096), (8, 4096)] {
      // Built per shape: the random definition caches rows for one key count.
      let masks: [MaskCase] = [.causal, .causalWindow(0), .causalWindow(3), .causalWindow(100), .prefix(0), .prefix(2), .prefix(50),
                               .causal & .prefix(4), .causalWindow(5) + .prefix(1), .causal & .random(0.4, seed: 2), .full & .causal]
      for mask in masks {
        try check(try Graph(parsing: mask.spec), mask, lq, lk)
      }
    }
    // L_q == L_k keeps the old meaning exactly.
    XCTAssertEqual(Graph.causal.edgeCount(queryCount: 5, keyCount: 5), 15)
    // Non-causal windows, documents and the other square kinds still refuse L_q != L_k.
    for spec in ["window:3", "documents:0,4&causal", "dilated:1:1", "global:0", "causal&window:2"] {
      XCTAssertThrowsError(try Graph(parsing: spec).validate(queryCount: 2, keyCount: 4), spec) { error in
        XCTAssertTrue("\(error)".contains("self-attention"), "\(spec): \(error)")
      }
    }
  }

  /// Closed forms at lengths where nothing row by row would finish: 2,000 documents over 1M tokens.
  func testDocumentCountsAreClosedForms() throws {
    let l = 1 << 20, count = 2000
    var offsets = [0]
    var state: UInt64 = 11
    for d in 1..<count {
      state = state &* 6364136223846793005 &+ 1442695040888963407
      offsets.append(min(l, d * (l / count) + Int(state >> 55)))
    }
    offsets.append(l)
    let lengths = zip(offsets.dropFirst(), offsets).map { $0 - $1 }
    let documents = try Graph.documents(offsets: offsets)
    XCTAssertEqual(documents.edgeCount(queryCount: l, keyCount: l), lengths.reduce(0) { $0 + $1 * $1 })
    XCTAssertEqual((documents & .causal).edgeCount(queryCount: l, keyCount: l), lengths.reduce(0) { $0 + $1 * ($1 + 1) / 2 })
    let w = 128
    let causalWindow = lengths.reduce(0) { total, n in total + (0..<n).reduce(0) { $0 + min(w, $1) + 1 } }
    XCTAssertEqual((documents & (try .window(w, causal: true))).edgeCount(queryCount: l, keyCount: l), causalWindow)
    let stats = (documents & .causal).degreeStatistics(queryCount: l, keyCount: l)
    XCTAssertEqual(stats.max, lengths.max())
    XCTAssertEqual(stats.min, 1)
    XCTAssertEqual(try Graph.prefix(100).edgeCount(queryCount: 160_000_000, keyCount: 160_000_000),
                   100 * 100 + (160_000_000 * 160_000_001 / 2 - 100 * 101 / 2))
    XCTAssertEqual(documents.estimatedEdgeCount(queryCount: l, keyCount: l), documents.edgeCount(queryCount: l, keyCount: l))
  }

  func testIntersectionBindsTighterThanUnionAndPrintsBack() throws {
    let graph = try Graph(parsing: "documents:0,3,7&causal+global:0")
    XCTAssertEqual(graph.operands.count, 2)
    XCTAssertEqual(graph.description, "documents:0,3,7&causal+global:0")
    XCTAssertTrue(graph.contains(row: 5, column: 0, queryCount: 7, keyCount: 7))   // global key
    XCTAssertFalse(graph.contains(row: 5, column: 6, queryCount: 7, keyCount: 7))  // not causal
    XCTAssertFalse(graph.contains(row: 5, column: 2, queryCount: 7, keyCount: 7))  // other document
    // (A + B) & C distributes in Swift: A&C + B&C.
    let distributed = (Graph.causal + (try .prefix(2))) & (try .window(1))
    XCTAssertEqual(distributed.description, "causal&window:1+prefix:2&window:1")
    for spec in ["random:0.5:7:per-head", "prefix:4", "window:2:causal&documents:0,2,5", "docs:0,5"] {
      let parsed = try Graph(parsing: spec)
      XCTAssertEqual(try Graph(parsing: parsed.description).description, parsed.description, spec)
    }
    // A path may hold '&' when quoted or escaped.
    let cu = scratch.path("a&b.npy")
    try NPYWriter.write([0, 2, 5] as [Int64], shape: [3], to: cu)
    XCTAssertEqual(try Graph(parsing: "documents:\"\(cu)\"").edgeCount(queryCount: 5, keyCount: 5), 4 + 9)
    XCTAssertEqual(try Graph(parsing: "documents:" + cu.replacingOccurrences(of: "&", with: "\\&") + "&causal")
      .edgeCount(queryCount: 5, keyCount: 5), 3 + 6)
  }

  /// Offsets from int32 and int64 `.npy` files, read through the storage layer.
  func testDocumentOffsetsFromFiles() throws {
    let int64 = scratch.path("cu64.npy")
    try NPYWriter.write([0, 1, 4, 4, 9] as [Int64], shape: [5], to: int64)
    let int32 = scratch.path("cu32.npy")
    try ModelGraphTests.writeInt32NPY([0, 1, 4, 4, 9], to: int32)
    let mask = MaskCase.documents([0, 1, 4, 4, 9])
    for path in [int64, int32] {
      try check(try Graph(parsing: "documents:\(path)&causal"), mask & .causal, 9, 9)
      try check(try Graph(parsing: "documents:\(path)"), mask, 9, 9)
    }
    let matrix = scratch.path("cu2d.npy")
    try NPYWriter.write([0, 1, 2, 3] as [Int64], shape: [2, 2], to: matrix)
    XCTAssertThrowsError(try Graph(parsing: "documents:\(matrix)")) { XCTAssertTrue("\($0)".contains("one dimension"), "\($0)") }
    let floats = scratch.path("cuf.npy")
    try NPYWriter.write([0, 1, 2] as [Float], shape: [3], to: floats)
    XCTAssertThrowsError(try Graph(parsing: "documents:\(floats)")) { XCTAssertTrue("\($0)".contains("integers"), "\($0)") }
    XCTAssertThrowsError(try Graph(parsing: "documents:\(scratch.path("missing.npy"))"))
    // The file-free parser refuses a path instead of reading it.
    XCTAssertThrowsError(try Graph(parsing: "documents:\(int64)", explicit: { _, _ in try ExplicitGraph(rows: [], columns: []) })) {
      XCTAssertTrue("\($0)".contains("reads no files"), "\($0)")
    }
  }

  func testParsingAndValidationErrorsNameTheProblem() throws {
    let cases: [(String, String)] = [
      ("documents:1,5", "first offset is 1"),
      ("documents:0,5,3", "below offset"),
      ("documents:0", "at least two"),
      ("documents:0,,5", "not an integer"),
      ("documents:0,5:7", "argument"),
      ("documents", "argument"),
      ("prefix:-1", "prefix length must be >= 0"),
      ("prefix", "argument"),
      ("prefix:x", "not an integer"),
      ("random:0.1:3:each", "unknown random option"),
      ("causal&", "empty component"),
      ("&causal", "empty component"),
      ("causal&&window:2", "empty component"),
      ("documents:0,99999999999999999999", "too large"),
    ]
    for (spec, words) in cases {
      XCTAssertThrowsError(try Graph(parsing: spec), spec) { error in
        XCTAssertTrue("\(error)".contains(words), "\(spec): '\(error)' should mention '\(words)'")
      }
    }
    // Offsets must end at the sequence length.
    for (spec, l) in [("documents:0,4,8", 9), ("documents:0,4,8&causal", 7), ("causal&documents:0,4,8+full", 10)] {
      XCTAssertThrowsError(try Graph(parsing: spec).validate(queryCount: l, keyCount: l), spec) { error in
        XCTAssertTrue("\(error)".contains("covers 8 tokens"), "\(spec): \(error)")
      }
    }
    // Sums of squares beyond Int are refused when the graph is built, not when it is counted.
    XCTAssertThrowsError(try Graph.documents(offsets: [0, Int.max / 2, Int.max])) { XCTAssertTrue("\($0)".contains("edges"), "\($0)") }
  }

  func testPerHeadRandomGraphsDifferPerHeadOnlyWhenAsked() throws {
    let l = 50
    let shared = try Graph(parsing: "random:0.3:5")
    let perHead = try Graph(parsing: "random:0.3:5:per-head&causal")
    XCTAssertFalse(shared.variesPerHead)
    XCTAssertTrue(perHead.variesPerHead)
    XCTAssertEqual(shared.forHead(3).description, shared.description)
    XCTAssertFalse(perHead.forHead(1).variesPerHead)
    for head in 0..<4 {
      try check(perHead.forHead(head), .randomPerHead(0.3, seed: 5, head: head) & .causal, l, l)
    }
    XCTAssertNotEqual(perHead.forHead(0).edgeCount(queryCount: l, keyCount: l), perHead.forHead(1).edgeCount(queryCount: l, keyCount: l))
    // Head 0 keeps the seed.
    XCTAssertEqual(perHead.forHead(0).edgeCount(queryCount: l, keyCount: l),
                   try Graph(parsing: "random:0.3:5&causal").edgeCount(queryCount: l, keyCount: l))
  }

  /// Estimates and validation at lengths near Int.max neither trap nor walk the rows (as the fuzz oracle asks).
  func testHugeLengthsNeitherTrapNorEnumerate() throws {
    let specs = ["prefix:0", "prefix:9223372036854775807", "prefix:5", "causal", "window:5:causal", "window:9223372036854775807:causal",
                 "documents:0,5&causal", "causal&random:0.1:1", "prefix:3&window:2:causal", "random:0.5:1:per-head&documents:0,1"]
    for spec in specs {
      let graph = try Graph(parsing: spec)
      for (q, k) in [(1 << 40, 1 << 40), (Int.max, Int.max), (1 << 62, 3), (3, 1 << 62), (0, Int.max), (3_000_000_000, 3_000_000_000)] {
        let estimate = graph.estimatedEdgeCount(queryCount: q, keyCount: k)
        XCTAssertGreaterThanOrEqual(estimate, 0, "\(spec) \(q)x\(k)")
        if q > 0, (try? graph.validate(queryCount: q, keyCount: k)) != nil, !spec.contains("&") {
          let stats = graph.degreeStatistics(queryCount: q, keyCount: k)
          XCTAssertLessThanOrEqual(stats.min, stats.max, "\(spec) \(q)x\(k)")
        }
      }
    }
    XCTAssertEqual(try Graph.prefix(5).edgeCount(queryCount: 1 << 60, keyCount: 3), (1 << 60) * 3)
    XCTAssertEqual(Graph.causal.edgeCount(queryCount: 3, keyCount: 1 << 40), 3 * (1 << 40) - 3)
  }

  /// A 1-D int32 `.npy` file (NPYWriter writes int64 only).
  static func writeInt32NPY(_ values: [Int32], to path: String) throws {
    var header = "{'descr': '<i4', 'fortran_order': False, 'shape': (\(values.count),), }"
    while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
    header += "\n"
    var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)])
    data.append(contentsOf: Array(header.utf8))
    for v in values { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
    try data.write(to: URL(fileURLWithPath: path))
  }
}
