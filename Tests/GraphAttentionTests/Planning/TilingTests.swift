@testable import GraphAttention
import Foundation
import XCTest

/// The tilers' invariants on every graph kind, checked against the masks' independent definitions: every edge of
/// every row lies in exactly one of the row's tiles and every other key of a tile is masked out for the row; the
/// backward covers each row exactly once; shared tiles stay within their score budgets; no tile straddles a batch
/// of the row grouping both tilers share. Recorded fingerprints of the tiles hold them to the bytes the kernels
/// were measured with, so a change of tiling shows up here before it shows up as a changed output.
final class TilingTests: XCTestCase {
  // MARK: - Invariants on every graph kind

  func testForwardTilesPartitionEveryRowsEdges() throws {
    for l in [1, 2, 3, 7, 64, 65, 130] {
      for mask in TilingTests.masks(tokens: l) {
        let graph = try Graph(parsing: mask.spec)
        try graph.validate(queryCount: l, keyCount: l)
        for spans in [false, true] {
          try checkForward(graph, mask, lq: l, lk: l, rows: 0..<l, spans: spans)
        }
        if l > 4 { try checkForward(graph, mask, lq: l, lk: l, rows: 1..<(l - 2), spans: true) }
      }
    }
  }

  func testBackwardTilesCoverEveryRowOnce() throws {
    for l in [1, 2, 3, 7, 64, 65, 130] {
      for mask in TilingTests.masks(tokens: l) {
        let graph = try Graph(parsing: mask.spec)
        try graph.validate(queryCount: l, keyCount: l)
        try checkBackward(graph, mask, lq: l, lk: l, rows: 0..<l)
        if l > 4 { try checkBackward(graph, mask, lq: l, lk: l, rows: 3..<(l - 1)) }
      }
    }
  }

  /// Windows at least as long as the sequence, rows of one key, cross attention and a pattern with empty rows.
  func testEdgeShapes() throws {
    let shapes: [(MaskCase, Int, Int)] = [
      (.window(256), 300, 300), (.causalWindow(256), 300, 300), (.window(300), 300, 300), (.causalWindow(1000), 257, 257),
      (.window(0), 50, 50), (.causalWindow(0), 50, 50), (.window(256) + .global([0, 1, 2, 3]), 600, 600),
      (.dilated(128, 1), 600, 600), (.blocked(256, 1), 600, 600), (.blocked(1, 0), 40, 40),
      (.full, 20, 33), (.causal, 20, 33), (.causal, 33, 20), (.causalWindow(3), 20, 33), (.random(0.3, seed: 4), 20, 33),
      (.causal + .random(0.2, seed: 5), 40, 17),
    ]
    for (mask, lq, lk) in shapes {
      let graph = try Graph(parsing: mask.spec)
      try graph.validate(queryCount: lq, keyCount: lk)
      for spans in [false, true] { try checkForward(graph, mask, lq: lq, lk: lk, rows: 0..<lq, spans: spans) }
      try checkBackward(graph, mask, lq: lq, lk: lk, rows: 0..<lq)
    }
    // An explicit CSR pattern with empty rows (the first, the last and some between) and one full row.
    let (offsets, columns, pairs) = TilingTests.explicitPattern(rows: 70, keys: 90)
    let explicit = Graph.explicit(try ExplicitGraph(rowOffsets: offsets, columns: columns))
    for spans in [false, true] { try checkForward(explicit, .pairs(pairs), lq: 70, lk: 90, rows: 0..<70, spans: spans) }
    try checkBackward(explicit, .pairs(pairs), lq: 70, lk: 90, rows: 0..<70)
  }

  /// The state API's `excluding` graph and a streaming caller's near keys change which runs a row brings, never
  /// which edges it ends up with.
  func testExcludedEdgesAndFarKeys() throws {
    for l in [7, 65, 130] {
      for mask in TilingTests.masks(tokens: l) {
        let graph = try Graph(parsing: mask.spec)
        try graph.validate(queryCount: l, keyCount: l)
        let window = MaskCase.window(2)
        let excluded = try Graph(parsing: window.spec)
        let remaining = MaskCase(spec: mask.spec + " minus " + window.spec) { i, j, lq, lk in
          mask.contains(i, j, lq, lk) && !window.contains(i, j, lq, lk)
        }
        try checkForward(graph, remaining, lq: l, lk: l, rows: 0..<l, spans: true, excluding: excluded)
        let near = NearKeys(reach: 3, resident: [0])
        try checkForward(graph, mask, lq: l, lk: l, rows: 0..<l, spans: true, near: near)
        try checkForward(graph, mask, lq: l, lk: l, rows: 0..<l, spans: false, near: near)
      }
    }
  }

  /// Where rows of one run each share most of their keys (wide windows and blocks), the forward and the backward
  /// group the same rows into each shared tile; on other banded graphs the backward's full tiles are forward tiles
  /// too (the forward's tighter budget may cut the backward's tiles of four into single rows, never the reverse).
  func testForwardAndBackwardAgreeOnBandedRows() throws {
    let cases: [(MaskCase, Int, Bool)] = [
      (.window(256), 600, true), (.blocked(256, 1), 600, true), (.blocked(32, 1), 256, true),
      (.window(64), 400, false), (.causalWindow(256), 600, false), (.dilated(128, 1), 600, false), (.dilated(3, 1), 200, false),
    ]
    for (mask, l, identical) in cases {
      let graph = try Graph(parsing: mask.spec)
      try graph.validate(queryCount: l, keyCount: l)
      let forward = TilingTests.forwardTiles(graph, lq: l, lk: l, rows: 0..<l, spans: true).tiles
      let backward = TilingTests.backwardTiles(rowStride: graph.preferredRowStride, rows: 0..<l) { row, scratch in
        graph.neighbourhood(row: row, queryCount: l, keyCount: l, into: &scratch)
      }.tiles
      let forwardSets = Set(forward.filter { $0.rows.count > 1 }.map { $0.rows })
      let backwardSets = Set(backward.filter { $0.rows.count > 1 }.map { $0.rows })
      if identical {
        XCTAssertFalse(forwardSets.isEmpty, "\(mask) L=\(l): no shared tile")
        XCTAssertEqual(forwardSets, backwardSets, "\(mask) L=\(l): the tilers group rows differently")
      } else {
        let full = backwardSets.filter { $0.count == RowGrouper.maxRows }
        XCTAssert(full.isSubset(of: forwardSets), "\(mask) L=\(l): a full backward tile the forward splits")
      }
    }
  }

  /// The tiles (rows, keys, masks, spans, ranges) and score counts are the ones recorded before the tilers were
  /// merged into one family: the kernels see the same inputs, so outputs keep their bytes.
  func testTilesMatchRecordedFingerprints() throws {
    var mismatches: [String] = []
    for (name, digest) in try TilingTests.fingerprints() {
      let recorded = TilingTests.recordedFingerprints[name]
      if ProcessInfo.processInfo.environment["TILING_PRINT_FINGERPRINTS"] != nil {
        print("    \"\(name)\": 0x\(String(digest, radix: 16)),")
      }
      if recorded != digest { mismatches.append("\(name): recorded \(recorded.map { String($0, radix: 16) } ?? "none"), now \(String(digest, radix: 16))") }
    }
    XCTAssertEqual(mismatches, [], "tiles changed")
  }

  // MARK: - The shared row grouper

  /// `RowOrder` visits each row of the range once, residue by residue, as both tilers always have.
  func testRowOrderIsResidueMajor() {
    for lower in [0, 1, 5, 17] {
      for count in [0, 1, 2, 7, 40] {
        for stride in [1, 2, 3, 4, 9, 64] {
          let rows = lower..<(lower + count)
          XCTAssertEqual(Array(RowOrder(rows, rowStride: stride)), TilingTests.visitingOrder(rows, stride: stride),
                         "rows \(rows) stride \(stride)")
        }
      }
    }
  }

  /// The grouper's union holds every slot's keys (and on a lattice, only the hull's), sorted; the mask marks each
  /// row's keys and nothing else, in either layout; spans, where written, are the rows' keys.
  func testGrouperUnionsAndMasks() throws {
    for l in [7, 65] {
      for mask in TilingTests.masks(tokens: l) {
        let graph = try Graph(parsing: mask.spec)
        try graph.validate(queryCount: l, keyCount: l)
        var grouper = RowGrouper(rowStride: 1, keysCapacity: 4)
        defer { grouper.deallocate() }
        var first = 0
        while first < l {
          var rowKeys: [[Int]] = []
          for row in first..<min(l, first + 8) {
            let slot = grouper.nextSlot
            graph.neighbourhood(row: row, queryCount: l, keyCount: l, into: &grouper.scratch[slot])
            let keys = grouper.scratch[slot].runs.flatMap { run in (0..<run.count).map { run.start + $0 * run.stride } }
            guard !keys.isEmpty else { continue }
            rowKeys.append(keys)
            _ = grouper.append(row, degree: keys.count)
          }
          first += 8
          let slots = 0..<grouper.nextSlot
          defer { grouper.removeAll() }
          guard !slots.isEmpty else { continue }
          let exact = Set(rowKeys.flatMap { $0 }).sorted()
          // The forward takes unions of whole groups of four only.
          for (hull, groupRows, spans) in [(false, 4, false), (true, 1, false), (false, 4, true)] where slots.count % groupRows == 0 {
            let context = "\(mask) L=\(l) rows \(grouper.pending) hull \(hull) groups of \(groupRows) spans \(spans)"
            guard let n = grouper.unionSize(slots, limit: .max, contiguousHull: hull) else { XCTFail(context); continue }
            let wroteSpans = grouper.fillUnion(slots, count: n, maskGroupRows: groupRows, spans: spans)
            let union = (0..<n).map { Int(grouper.keys[$0]) }
            XCTAssert(zip(union, union.dropFirst()).allSatisfy { $0 < $1 }, "\(context): union not sorted")
            XCTAssert(Set(exact).isSubset(of: union), "\(context): union misses keys")
            if case .lattice = grouper.shape {} else { XCTAssertEqual(union, exact, "\(context): union holds extra keys") }
            for (r, keys) in rowKeys.enumerated() {
              let marked: [Int]
              if wroteSpans {
                marked = Array(union[grouper.tileSpans[r]])
              } else {
                marked = (0..<n).filter { grouper.mask[RowGrouper.maskIndex(row: r, key: $0, keys: n, groupRows: groupRows)] == 1 }
                  .map { union[$0] }
              }
              XCTAssertEqual(marked, keys, "\(context): row \(r)'s membership")
            }
          }
        }
      }
    }
  }

  // MARK: - Masks

  /// Every graph kind: the graph tests' masks (windows, causal windows, causal, full, dilated, blocked, global,
  /// random, their unions) and the model masks (documents and their intersections, prefixes).
  static func masks(tokens l: Int) -> [MaskCase] {
    GraphTests.masks(tokens: l) + ModelGraphTests.masks(tokens: l)
  }

  /// A CSR pattern over `rows x keys` with empty rows, runs, scattered keys and one full row.
  static func explicitPattern(rows: Int, keys: Int) -> (offsets: [Int64], columns: [Int64], pairs: [(Int, Int)]) {
    var offsets: [Int64] = [0], columns: [Int64] = [], pairs: [(Int, Int)] = []
    for i in 0..<rows {
      var row: [Int] = []
      if i == 0 || i == rows - 1 || i % 9 == 4 {
        row = []
      } else if i == 30 {
        row = Array(0..<keys)
      } else if i % 3 == 0 {
        row = Array(max(0, i - 10)..<min(keys, i + 12)) + [keys - 1]
      } else {
        row = (0..<keys).filter { ($0 * 7 + i * 13) % 11 == 0 }
      }
      row = Array(Set(row)).sorted()
      for j in row { columns.append(Int64(j)); pairs.append((i, j)) }
      offsets.append(Int64(columns.count))
    }
    return (offsets, columns, pairs)
  }

  // MARK: - Tiles as values

  /// A forward tile copied out of the callback.
  struct ForwardTile {
    var rows: [Int]
    var keys: [Int]
    var groupRanges: [Range<Int>]
    var mask: [UInt8]?
    var rowSpans: [Range<Int>]?
    var sharedKeys: Int
    var finishedKeys: Range<Int>?

    init(_ tile: QueryTiler.Tile) {
      rows = Array(tile.rows)
      keys = (0..<tile.keyCount).map { Int(tile.keys[$0]) }
      groupRanges = Array(tile.groupRanges)
      mask = tile.mask.map { Array(UnsafeBufferPointer(start: $0, count: tile.rows.count * tile.keyCount)) }
      rowSpans = tile.rowSpans.map { Array(UnsafeBufferPointer(start: $0, count: tile.rows.count)) }
      sharedKeys = tile.sharedKeys
      finishedKeys = tile.finishedKeys
    }

    /// The keys row `r` of the tile attends to: all of a single-row tile's, else those its mask byte or span admits.
    func attended(_ r: Int) -> [Int] {
      if rows.count == 1 { return keys }
      let group = QueryTiler.groupRows
      if let rowSpans { return Array(keys[0..<sharedKeys]) + Array(keys[rowSpans[r]]) }
      guard let mask else { return [] }
      return keys.indices.filter { mask[((r / group) * keys.count + $0) * group + r % group] == 1 }.map { keys[$0] }
    }

    /// The scores the kernel computes for the tile: each group's rows over the group's range.
    var scores: Int {
      rows.count == 1 ? keys.count : groupRanges.reduce(0) { $0 + QueryTiler.groupRows * $1.count }
    }
  }

  /// A backward tile copied out of the callback.
  struct BackwardTile {
    var rows: [Int]
    var columns: [Int]
    var mask: [UInt8]?

    init(_ tile: BackwardTiler.Tile) {
      rows = Array(tile.rows)
      columns = (0..<tile.columnCount).map { Int(tile.columns[$0]) }
      mask = tile.mask.map { Array(UnsafeBufferPointer(start: $0, count: tile.rows.count * tile.columnCount)) }
    }

    func attended(_ r: Int) -> [Int] {
      guard let mask else { return columns }
      return columns.indices.filter { mask[r * columns.count + $0] == 1 }.map { columns[$0] }
    }
  }

  static func forwardTiles(_ graph: Graph, lq: Int, lk: Int, rows: Range<Int>, spans: Bool, near: NearKeys? = nil,
                           excluding: Graph? = nil) -> (tiles: [ForwardTile], scores: Int, edges: Int) {
    var tiler = QueryTiler(graph: graph, excluding: excluding, queryCount: lq, keyCount: lk)
    defer { tiler.deallocate() }
    tiler.spansSuffice = spans
    tiler.nearKeys = near
    var tiles: [ForwardTile] = []
    tiler.forEachTile(rows: rows) { tiles.append(ForwardTile($0)) }
    return (tiles, tiler.scoresComputed, tiler.edgesVisited)
  }

  static func backwardTiles(rowStride: Int, rows: Range<Int>, rowRuns: @escaping (Int, inout RowScratch) -> Void)
    -> (tiles: [BackwardTile], empty: [Int], scores: Int, edges: Int) {
    var tiler = BackwardTiler(rowStride: rowStride, rowRuns: rowRuns)
    defer { tiler.deallocate() }
    var tiles: [BackwardTile] = [], empty: [Int] = []
    tiler.forEachTile(rows: rows, empty: { empty.append($0) }, tile: { tiles.append(BackwardTile($0)) })
    return (tiles, empty, tiler.scores, tiler.edges)
  }

  // MARK: - Checks

  /// The rows of `rows` in the order both tilers visit them: residue-major for a stride.
  static func visitingOrder(_ rows: Range<Int>, stride rowStride: Int) -> [Int] {
    let stride = min(rowStride, max(1, rows.count))
    var order: [Int] = []
    for residue in 0..<stride {
      var row = rows.lowerBound + ((residue - rows.lowerBound % stride) + stride) % stride
      while row < rows.upperBound { order.append(row); row += stride }
    }
    return order
  }

  /// Batch of each row: rows with keys in visiting order, cut every `maxRows` rows and, with `breaks`, before a row
  /// whose keys all lie past the previous row's (a document's first row).
  static func batches(_ order: [Int], keys: [Int: [Int]], breaks: Bool) -> [Int: Int] {
    var batch: [Int: Int] = [:]
    var current = 0, size = 0, previousLast: Int?
    for row in order {
      guard let k = keys[row], let first = k.first else { continue }
      if size == QueryTiler.maxRows || (breaks && size > 0 && previousLast.map { first > $0 } == true) {
        current += 1
        size = 0
      }
      batch[row] = current
      size += 1
      previousLast = k.last
    }
    return batch
  }

  func checkForward(_ graph: Graph, _ mask: MaskCase, lq: Int, lk: Int, rows: Range<Int>, spans: Bool, near: NearKeys? = nil,
                    excluding: Graph? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
    let context = "\(mask) \(lq)x\(lk) rows \(rows) spans \(spans) near \(near.map { "\($0.reach)" } ?? "-")"
    let (tiles, scores, edges) = TilingTests.forwardTiles(graph, lq: lq, lk: lk, rows: rows, spans: spans, near: near, excluding: excluding)
    var expected: [Int: [Int]] = [:]
    for i in rows {
      let keys = (0..<lk).filter { mask.contains(i, $0, lq, lk) }
      if !keys.isEmpty { expected[i] = keys }
    }
    var got: [Int: [Int]] = [:]
    var total = 0
    for tile in tiles {
      // `forEachTile` has run `_checkInvariants` on the tile (tests build in debug).
      var tileEdges = 0
      for (r, row) in tile.rows.enumerated() {
        XCTAssert(rows.contains(row), "\(context): tile row \(row) outside the rows asked for", file: file, line: line)
        let attended = tile.attended(r)
        XCTAssertFalse(attended.isEmpty, "\(context): row \(row) attends to nothing in its tile", file: file, line: line)
        got[row, default: []] += attended
        tileEdges += attended.count
        if let near, tile.rows.count > 1 {
          XCTAssert(attended.allSatisfy { !near.isFar($0, row: row) }, "\(context): far key of row \(row) in a shared tile", file: file, line: line)
        }
      }
      total += tile.scores
      if tile.rows.count > 1 {
        let groups = tile.rows.count / QueryTiler.groupRows
        let budget = Int(Double(tileEdges) * (1 + QueryTiler.maxOverhead)) + QueryTiler.slackPerGroup * groups
        XCTAssertLessThanOrEqual(tile.scores, budget, "\(context): tile of rows \(tile.rows) over its budget", file: file, line: line)
      }
    }
    for (row, keys) in got { got[row] = keys.sorted() }
    XCTAssertEqual(got, expected, "\(context): the tiles' edges are not the rows' edges, each once", file: file, line: line)
    XCTAssertEqual(scores, total, "\(context): scoresComputed", file: file, line: line)
    XCTAssertEqual(edges, expected.values.reduce(0) { $0 + $1.count }, "\(context): edgesVisited", file: file, line: line)
    // Shared tiles never straddle a batch of the row grouping (whose batches also end at a document's first row).
    guard near == nil else { return }
    let batch = TilingTests.batches(TilingTests.visitingOrder(rows, stride: graph.preferredRowStride), keys: expected, breaks: true)
    for tile in tiles where tile.rows.count > 1 {
      XCTAssertEqual(Set(tile.rows.map { batch[$0] }).count, 1, "\(context): tile \(tile.rows) straddles batches", file: file, line: line)
    }
  }

  func checkBackward(_ graph: Graph, _ mask: MaskCase, lq: Int, lk: Int, rows: Range<Int>,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    // Pass 1 over query rows (columns are keys), pass 2 over key columns through the transpose (columns are queries).
    let transposed = graph.transposed(queryCount: lq, keyCount: lk)
    let passes: [(String, Int, Range<Int>, (Int, Int) -> Bool, (Int, inout RowScratch) -> Void)] = [
      ("rows", graph.preferredRowStride, rows, { mask.contains($0, $1, lq, lk) },
       { graph.neighbourhood(row: $0, queryCount: lq, keyCount: lk, into: &$1) }),
      ("columns", transposed.preferredRowStride, 0..<lk, { mask.contains($1, $0, lq, lk) },
       { transposed.neighbourhood(column: $0, into: &$1) }),
    ]
    for (pass, stride, passRows, contains, rowRuns) in passes {
      let context = "\(mask) \(lq)x\(lk) backward over \(pass) \(passRows)"
      let width = pass == "rows" ? lk : lq
      let (tiles, empty, scores, edges) = TilingTests.backwardTiles(rowStride: stride, rows: passRows, rowRuns: rowRuns)
      var expected: [Int: [Int]] = [:]
      for i in passRows {
        let keys = (0..<width).filter { contains(i, $0) }
        if !keys.isEmpty { expected[i] = keys }
      }
      XCTAssertEqual(Set(empty), Set(passRows.filter { expected[$0] == nil }), "\(context): empty rows", file: file, line: line)
      XCTAssertEqual(empty.count, Set(empty).count, "\(context): an empty row reported twice", file: file, line: line)
      var got: [Int: [Int]] = [:]
      var total = 0
      for tile in tiles {
        XCTAssert(tile.rows.count >= 1 && tile.rows.count <= BackwardTiler.maxRows, "\(context): tile of \(tile.rows.count) rows", file: file, line: line)
        XCTAssert(zip(tile.columns, tile.columns.dropFirst()).allSatisfy { $0 < $1 } && tile.columns.allSatisfy { (0..<width).contains($0) },
                  "\(context): columns not sorted or out of range", file: file, line: line)
        var tileEdges = 0
        for (r, row) in tile.rows.enumerated() {
          XCTAssertNil(got[row], "\(context): row \(row) in two tiles", file: file, line: line)
          got[row] = tile.attended(r)
          tileEdges += got[row]!.count
        }
        total += tile.rows.count * tile.columns.count
        if tile.rows.count > 1 {
          let limit = Double(tileEdges) * (1 + BackwardTiler.maxOverhead) + Double(BackwardTiler.slackPerRow * tile.rows.count)
          XCTAssertLessThanOrEqual(Double(tile.rows.count * tile.columns.count), limit, "\(context): tile over its budget", file: file, line: line)
        }
      }
      XCTAssertEqual(got, expected, "\(context): the tiles' edges are not the rows' edges, each row once", file: file, line: line)
      XCTAssertEqual(scores, total, "\(context): scores", file: file, line: line)
      XCTAssertEqual(edges, expected.values.reduce(0) { $0 + $1.count }, "\(context): edges", file: file, line: line)
      let batch = TilingTests.batches(TilingTests.visitingOrder(passRows, stride: stride), keys: expected, breaks: false)
      for tile in tiles where tile.rows.count > 1 {
        XCTAssertEqual(Set(tile.rows.map { batch[$0] }).count, 1, "\(context): tile \(tile.rows) straddles batches", file: file, line: line)
      }
    }
  }

  // MARK: - Fingerprints

  /// FNV-1a over 64-bit words: stable across runs, unlike `Hasher`.
  struct Fingerprint {
    var value: UInt64 = 0xCBF2_9CE4_8422_2325
    mutating func add(_ x: Int) {
      var word = UInt64(bitPattern: Int64(x))
      for _ in 0..<8 {
        value = (value ^ (word & 0xFF)) &* 0x100_0000_01B3
        word >>= 8
      }
    }
    mutating func add(_ xs: [Int]) { add(xs.count); for x in xs { add(x) } }
  }

  /// The specifications the fingerprints cover, at a length (tokens named in them exist at that length).
  static func fingerprintSpecs(tokens l: Int) -> [String] {
    var specs = ["window:5", "window:256", "window:5:causal", "window:256:causal", "causal", "full", "dilated:3:1",
                 "dilated:128:1", "blocked:8:3", "blocked:256:1", "blocked:16:0", "global:0", "random:0.1:3",
                 "window:8+global:0+random:0.05:7", "dilated:5:1+window:3", "dilated:6:2+window:1", "blocked:16:1+causal",
                 "window:4&causal", "prefix:\(l / 2)", "window:2:causal+random:0.2:5"]
    if l >= 4 { specs += ["window:256+global:0,1,2,3", "window:4+global:0,\(l - 1)"] }
    if l >= 10 { specs += ["documents:0,3,4,9,\(l)&causal", "documents:0,3,4,9,\(l)&window:2:causal+global:0",
                           "documents:0,3,4,9,\(l)&random:0.3:5"] }
    return specs
  }

  /// One fingerprint per (specification, shape) over the forward's tiles in five configurations and both backward passes.
  static func fingerprints() throws -> [(String, UInt64)] {
    var cases: [(String, Graph, Int, Int)] = []
    for l in [1, 7, 64, 130, 300] {
      for spec in fingerprintSpecs(tokens: l) { cases.append(("\(spec) \(l)x\(l)", try Graph(parsing: spec), l, l)) }
    }
    for spec in ["full", "causal", "window:3:causal", "random:0.3:4"] {
      cases.append(("\(spec) 20x33", try Graph(parsing: spec), 20, 33))
      cases.append(("\(spec) 33x20", try Graph(parsing: spec), 33, 20))
    }
    let (offsets, columns, _) = explicitPattern(rows: 70, keys: 90)
    cases.append(("explicit 70x90", .explicit(try ExplicitGraph(rowOffsets: offsets, columns: columns)), 70, 90))
    let excluded = try Graph(parsing: "window:2")
    var out: [(String, UInt64)] = []
    for (name, graph, lq, lk) in cases {
      if ProcessInfo.processInfo.environment["TILING_DEBUG"] != nil { FileHandle.standardError.write(Data("case \(name)\n".utf8)) }
      try graph.validate(queryCount: lq, keyCount: lk)
      var f = Fingerprint()
      var configurations: [(Range<Int>, Bool, NearKeys?, Graph?)] = [
        (0..<lq, false, nil, nil), (0..<lq, true, nil, nil), (lq / 3..<lq, true, nil, nil),
        (0..<lq, true, NearKeys(reach: 3, resident: [0]), nil),
      ]
      // A window is defined for self-attention only.
      if lq == lk { configurations.append((0..<lq, true, nil, excluded)) }
      for (rows, spans, near, excluding) in configurations {
        let (tiles, scores, edges) = forwardTiles(graph, lq: lq, lk: lk, rows: rows, spans: spans, near: near, excluding: excluding)
        for tile in tiles {
          f.add(tile.rows)
          f.add(tile.keys)
          f.add(tile.groupRanges.flatMap { [$0.lowerBound, $0.upperBound] })
          f.add(tile.mask.map { $0.map(Int.init) } ?? [-1])
          f.add(tile.rowSpans.map { $0.flatMap { [$0.lowerBound, $0.upperBound] } } ?? [-1])
          f.add(tile.sharedKeys)
          f.add(tile.finishedKeys.map { [$0.lowerBound, $0.upperBound] } ?? [-1])
        }
        f.add([scores, edges])
      }
      let transposed = graph.transposed(queryCount: lq, keyCount: lk)
      let passes: [(Int, Range<Int>, (Int, inout RowScratch) -> Void)] = [
        (graph.preferredRowStride, 0..<lq, { graph.neighbourhood(row: $0, queryCount: lq, keyCount: lk, into: &$1) }),
        (transposed.preferredRowStride, 0..<lk, { transposed.neighbourhood(column: $0, into: &$1) }),
      ]
      for (stride, rows, rowRuns) in passes {
        let (tiles, empty, scores, edges) = backwardTiles(rowStride: stride, rows: rows, rowRuns: rowRuns)
        for tile in tiles {
          f.add(tile.rows)
          f.add(tile.columns)
          f.add(tile.mask.map { $0.map(Int.init) } ?? [-1])
        }
        f.add(empty)
        f.add([scores, edges])
      }
      out.append((name, f.value))
    }
    return out
  }

  /// Recorded with `TILING_PRINT_FINGERPRINTS=1 swift test --filter TilingTests/testTilesMatchRecordedFingerprints`.
  static let recordedFingerprints: [String: UInt64] = [
    "window:5 1x1": 0x8a9a660045062357,
    "window:256 1x1": 0x8a9a660045062357,
    "window:5:causal 1x1": 0x8a9a660045062357,
    "window:256:causal 1x1": 0x8a9a660045062357,
    "causal 1x1": 0x8a9a660045062357,
    "full 1x1": 0x8a9a660045062357,
    "dilated:3:1 1x1": 0x8a9a660045062357,
    "dilated:128:1 1x1": 0x8a9a660045062357,
    "blocked:8:3 1x1": 0x8a9a660045062357,
    "blocked:256:1 1x1": 0x8a9a660045062357,
    "blocked:16:0 1x1": 0x8a9a660045062357,
    "global:0 1x1": 0x8a9a660045062357,
    "random:0.1:3 1x1": 0x6d6ccbbaecc0cda7,
    "window:8+global:0+random:0.05:7 1x1": 0x8a9a660045062357,
    "dilated:5:1+window:3 1x1": 0x8a9a660045062357,
    "dilated:6:2+window:1 1x1": 0x8a9a660045062357,
    "blocked:16:1+causal 1x1": 0x8a9a660045062357,
    "window:4&causal 1x1": 0x8a9a660045062357,
    "prefix:0 1x1": 0x8a9a660045062357,
    "window:2:causal+random:0.2:5 1x1": 0x8a9a660045062357,
    "window:5 7x7": 0x7b806e19d724cc93,
    "window:256 7x7": 0x23cae7848f0d2682,
    "window:5:causal 7x7": 0xff43cc8071181d97,
    "window:256:causal 7x7": 0x645d858235ca1511,
    "causal 7x7": 0x645d858235ca1511,
    "full 7x7": 0x23cae7848f0d2682,
    "dilated:3:1 7x7": 0x9d706dd7845fbbd8,
    "dilated:128:1 7x7": 0x9d706dd7845fbbd8,
    "blocked:8:3 7x7": 0x31acabd6210a6029,
    "blocked:256:1 7x7": 0xf9e36cbb7b97d545,
    "blocked:16:0 7x7": 0x23cae7848f0d2682,
    "global:0 7x7": 0x8181572ecea8905b,
    "random:0.1:3 7x7": 0x5724632688b25547,
    "window:8+global:0+random:0.05:7 7x7": 0x23cae7848f0d2682,
    "dilated:5:1+window:3 7x7": 0xdd9241d1f432bc97,
    "dilated:6:2+window:1 7x7": 0x6aa1ed53f034c1bc,
    "blocked:16:1+causal 7x7": 0x89ee1aed67a743ff,
    "window:4&causal 7x7": 0xb516ccf7e27c7016,
    "prefix:3 7x7": 0x8ee735d34e0113d3,
    "window:2:causal+random:0.2:5 7x7": 0xb390aeaff268ef3a,
    "window:256+global:0,1,2,3 7x7": 0x23cae7848f0d2682,
    "window:4+global:0,6 7x7": 0x23cae7848f0d2682,
    "window:5 64x64": 0x259db1a496f0772,
    "window:256 64x64": 0x39cc540b58e5d768,
    "window:5:causal 64x64": 0x4900d5544bfb347f,
    "window:256:causal 64x64": 0xef76060c44f4c0d9,
    "causal 64x64": 0xef76060c44f4c0d9,
    "full 64x64": 0x39cc540b58e5d768,
    "dilated:3:1 64x64": 0xab47a3927cd0dc91,
    "dilated:128:1 64x64": 0x828749fe3a532fde,
    "blocked:8:3 64x64": 0x9d4e47ef0ee411c3,
    "blocked:256:1 64x64": 0xba848664bab12ab0,
    "blocked:16:0 64x64": 0xe008070ac7bc5e40,
    "global:0 64x64": 0xc9b2e69786ebb101,
    "random:0.1:3 64x64": 0xb90b1aa06921976c,
    "window:8+global:0+random:0.05:7 64x64": 0xf6382bb4ce85f209,
    "dilated:5:1+window:3 64x64": 0x2ac169443684c3bd,
    "dilated:6:2+window:1 64x64": 0x4eceab3ccd4d87c9,
    "blocked:16:1+causal 64x64": 0x8a20196f9dad147a,
    "window:4&causal 64x64": 0x4aabb57b9ae1b6e4,
    "prefix:32 64x64": 0x7b215fe7f7158687,
    "window:2:causal+random:0.2:5 64x64": 0x9871d1db1af6d0fb,
    "window:256+global:0,1,2,3 64x64": 0x39cc540b58e5d768,
    "window:4+global:0,63 64x64": 0xb2aa80600fa47465,
    "documents:0,3,4,9,64&causal 64x64": 0xb9e5ba90c1e65a09,
    "documents:0,3,4,9,64&window:2:causal+global:0 64x64": 0xaaf96930b8069d82,
    "documents:0,3,4,9,64&random:0.3:5 64x64": 0x4e8f8457708f96d7,
    "window:5 130x130": 0x4a2a9f3c6d30630f,
    "window:256 130x130": 0x13e748707ed25f7b,
    "window:5:causal 130x130": 0xbc64607343c46dfd,
    "window:256:causal 130x130": 0xb6c4f86871f36402,
    "causal 130x130": 0xb6c4f86871f36402,
    "full 130x130": 0x13e748707ed25f7b,
    "dilated:3:1 130x130": 0x736cdaa26c38d7db,
    "dilated:128:1 130x130": 0xa9ecacb9a387c1fd,
    "blocked:8:3 130x130": 0x7df29a0411e3c015,
    "blocked:256:1 130x130": 0xd004130f0ea4122,
    "blocked:16:0 130x130": 0x3d99358a6bb885ef,
    "global:0 130x130": 0x9f179f73fb0aab45,
    "random:0.1:3 130x130": 0xbd158757cb020d2,
    "window:8+global:0+random:0.05:7 130x130": 0x9804ec38589c3d35,
    "dilated:5:1+window:3 130x130": 0xfcb3688c3e21e577,
    "dilated:6:2+window:1 130x130": 0x33d1a4f7cae9033,
    "blocked:16:1+causal 130x130": 0x7802a10e84bdb9a3,
    "window:4&causal 130x130": 0xd4ab351bde5ef4d0,
    "prefix:65 130x130": 0x23ea5996eec8dd70,
    "window:2:causal+random:0.2:5 130x130": 0x62a6012f93258f40,
    "window:256+global:0,1,2,3 130x130": 0x13e748707ed25f7b,
    "window:4+global:0,129 130x130": 0xef63d7d4ba108ee4,
    "documents:0,3,4,9,130&causal 130x130": 0x986f498fe3d1d46b,
    "documents:0,3,4,9,130&window:2:causal+global:0 130x130": 0x7cb06021523ba41a,
    "documents:0,3,4,9,130&random:0.3:5 130x130": 0x6cd0df5d4e3b0793,
    "window:5 300x300": 0x7aeed870f3754ba4,
    "window:256 300x300": 0xfe41462397202d58,
    "window:5:causal 300x300": 0x2176350794f57369,
    "window:256:causal 300x300": 0x200e641cc87d7542,
    "causal 300x300": 0x178fbaf32f9c54be,
    "full 300x300": 0x8e92931a62cdf8be,
    "dilated:3:1 300x300": 0x485a33691c5ce3ea,
    "dilated:128:1 300x300": 0xb50dd31d27272b49,
    "blocked:8:3 300x300": 0x88346b37b5db05b9,
    "blocked:256:1 300x300": 0xff118234fb6866df,
    "blocked:16:0 300x300": 0xa92bfa102782f5b3,
    "global:0 300x300": 0x81fcc96d93fe24e4,
    "random:0.1:3 300x300": 0x8eb348b399ce3b1f,
    "window:8+global:0+random:0.05:7 300x300": 0x6b9de4b193a2d923,
    "dilated:5:1+window:3 300x300": 0x9283acaa2459279,
    "dilated:6:2+window:1 300x300": 0xc6eb33a4904dcbb1,
    "blocked:16:1+causal 300x300": 0x8967cfbc1fe15153,
    "window:4&causal 300x300": 0xa97a594a937bf8ce,
    "prefix:150 300x300": 0xfa40df9a7100ec5d,
    "window:2:causal+random:0.2:5 300x300": 0xc6b5b5cd028ae443,
    "window:256+global:0,1,2,3 300x300": 0xeb886b75cc5fbb1c,
    "window:4+global:0,299 300x300": 0x139e7c24f30f1c7a,
    "documents:0,3,4,9,300&causal 300x300": 0xed25f22c52f893d7,
    "documents:0,3,4,9,300&window:2:causal+global:0 300x300": 0xef55750bf72cbde1,
    "documents:0,3,4,9,300&random:0.3:5 300x300": 0x6616799ab3becc50,
    "full 20x33": 0xf93d92e5c35738b6,
    "full 33x20": 0xbcd1aadfe5afd236,
    "causal 20x33": 0x4b9d316b22af28e3,
    "causal 33x20": 0xd66d83ffb9559c41,
    "window:3:causal 20x33": 0xaba29c81576d403,
    "window:3:causal 33x20": 0x9f41c9e4308a53fe,
    "random:0.3:4 20x33": 0x430ec18e57ec36f8,
    "random:0.3:4 33x20": 0x1c8f1d9ce9e84735,
    "explicit 70x90": 0x47d3aa09d9ae1eff,
  ]
}
