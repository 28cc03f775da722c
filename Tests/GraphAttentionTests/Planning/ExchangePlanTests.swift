@testable import GraphAttention
import XCTest

/// `Graph.view` and `ExchangePlan` against brute force over small graphs: a view's rows and columns hold
/// exactly the global graph's edges between its rows and keys, attention over views merged by log-sum-exp
/// is attention over the whole graph, and the plan lists exactly the keys each rank's rows attend to.
final class ExchangePlanTests: XCTestCase {
  static func specs(tokens l: Int) -> [String] {
    let cut1 = l / 3, cut2 = (2 * l) / 3
    return ["full", "causal", "window:3", "window:0", "window:2:causal", "window:\(l + 5)", "dilated:2:1", "dilated:1:3",
            "blocked:5:1", "blocked:4:0", "blocked:7:2", "global:0,\(l - 1)", "random:0.2:3", "prefix:4",
            "documents:0,\(cut1),\(cut2),\(l)", "documents:0,\(cut1),\(cut2),\(l)&causal",
            "documents:0,\(cut1),\(cut1),\(l)&window:2:causal", "documents:0,\(cut2),\(l)&prefix:3",
            "window:3+global:\(l / 2)+random:0.1:1", "dilated:3:2&window:4", "blocked:6:1+window:1:causal",
            "causal&random:0.3:5", "global:1&documents:0,\(cut2),\(l)"]
  }

  private func keys(_ runs: [KeyRun]) -> [Int] {
    runs.flatMap { r in (0..<r.count).map { r.start + $0 * r.stride } }
  }

  // MARK: - Views

  func testViewRowsAndColumnsHoldExactlyTheGlobalEdges() throws {
    let l = 23
    let rowChoices: [[KeyRun]] = [[KeyRun(start: 0, count: l)], [KeyRun(start: 5, count: 9)],
                                  [KeyRun(start: 1, count: 3), KeyRun(start: 9, count: 4, stride: 3)], [KeyRun(start: 22, count: 1)]]
    let keyChoices: [[KeyRun]] = [[KeyRun(start: 0, count: l)], [KeyRun(start: 2, count: 6), KeyRun(start: 14, count: 9)],
                                  [KeyRun(start: 0, count: 8, stride: 3), KeyRun(start: 22, count: 1)], [KeyRun(start: 11, count: 1)]]
    for spec in Self.specs(tokens: l) {
      let graph = try Graph(parsing: spec)
      for rows in rowChoices {
        for keyRuns in keyChoices {
          for excluded in [[], [5, 10, 22]] {
            let view = try graph.view(queryCount: l, keyCount: l, rows: rows, keys: keyRuns, excludingRows: excluded)
            let globalRows = keys(rows), globalKeys = keys(keyRuns)
            try view.validate(queryCount: globalRows.count, keyCount: globalKeys.count)
            var expected = [[Int]](repeating: [], count: globalRows.count)
            for (i, g) in globalRows.enumerated() where !excluded.contains(g) {
              expected[i] = globalKeys.indices.filter { graph.contains(row: g, column: globalKeys[$0], queryCount: l, keyCount: l) }
            }
            var scratch = RowScratch()
            for i in 0..<globalRows.count {
              view.neighbourhood(row: i, queryCount: globalRows.count, keyCount: globalKeys.count, into: &scratch)
              XCTAssertEqual(keys(scratch.runs), expected[i], "\(spec) rows \(rows) keys \(keyRuns) row \(i)")
              for (a, b) in zip(scratch.runs, scratch.runs.dropFirst()) { XCTAssertLessThan(a.last, b.start, "\(spec): sorted runs") }
              for j in 0..<globalKeys.count {
                XCTAssertEqual(view.contains(row: i, column: j, queryCount: globalRows.count, keyCount: globalKeys.count),
                               expected[i].contains(j), "\(spec) contains \(i), \(j)")
              }
            }
            let transposed = view.transposed(queryCount: globalRows.count, keyCount: globalKeys.count)
            for j in 0..<globalKeys.count {
              transposed.neighbourhood(column: j, into: &scratch)
              XCTAssertEqual(keys(scratch.runs), (0..<globalRows.count).filter { expected[$0].contains(j) },
                             "\(spec) rows \(rows) keys \(keyRuns) column \(j)")
            }
          }
        }
      }
    }
  }

  func testViewsRefuseWhatTheyCannotMap() throws {
    let graph = try Graph.window(2)
    XCTAssertThrowsError(try graph.view(queryCount: 10, keyCount: 10, rows: [KeyRun(start: 8, count: 3)], keys: [KeyRun(start: 0, count: 2)]))
    XCTAssertThrowsError(try graph.view(queryCount: 10, keyCount: 10, rows: [KeyRun(start: 4, count: 3), KeyRun(start: 5, count: 1)],
                                        keys: [KeyRun(start: 0, count: 2)]))
    XCTAssertThrowsError(try graph.view(queryCount: 10, keyCount: 10, rows: [], keys: [KeyRun(start: 0, count: 2)]))
    let view = try graph.view(queryCount: 10, keyCount: 10, rows: [KeyRun(start: 0, count: 4)], keys: [KeyRun(start: 0, count: 2)])
    XCTAssertThrowsError(try view.validate(queryCount: 4, keyCount: 3))
  }

  /// Attention of a shard's rows over two disjoint key sets, merged with log-sum-exp, equals the rows of
  /// attention over the whole graph (softcap and, on contiguous views, ALiBi included).
  func testAttentionOverViewsMergesToTheGlobalAttention() throws {
    let l = 37, d = 8, heads = 2
    let q = Tensor.random(shape: [heads, l, d], seed: 11), k = Tensor.random(shape: [heads, l, d], seed: 12)
    let v = Tensor.random(shape: [heads, l, d], seed: 13)
    for spec in ["window:4+global:3", "dilated:2:1", "blocked:6:1", "random:0.3:9+causal", "documents:0,10,30,37&causal"] {
      for alibi in [false, true] {
        let graph = try Graph(parsing: spec)
        let options = AttentionOptions(softcap: 5, alibi: alibi ? .standard : nil)
        let full = MutableTensorView(allocating: [heads, l, d], type: .float32)
        try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: full, graph: graph, options: options)
        let rows = 12..<25
        // Keys split at 20: below and above, as two contiguous views.
        let parts = [0..<20, 20..<l]
        var outputs: [[Float]] = [], lses: [[Float]] = []
        for part in parts {
          let view = try graph.view(queryCount: l, keyCount: l, rows: [KeyRun(start: rows.lowerBound, count: rows.count)],
                                    keys: [KeyRun(start: part.lowerBound, count: part.count)])
          let qv = slice(q, rows), kv = slice(k, part), vv = slice(v, part)
          let o = MutableTensorView(allocating: [heads, rows.count, d], type: .float32)
          let lse = MutableTensorView(allocating: [heads, rows.count], type: .float32)
          try attention(query: TensorView(qv), key: TensorView(kv), value: TensorView(vv), output: o, graph: view, options: options,
                        logSumExp: lse)
          outputs.append(Array(UnsafeBufferPointer(start: o.base.assumingMemoryBound(to: Float.self), count: o.count)))
          lses.append(Array(UnsafeBufferPointer(start: lse.base.assumingMemoryBound(to: Float.self), count: lse.count)))
        }
        let expected = full.base.assumingMemoryBound(to: Float.self)
        for h in 0..<heads {
          for (r, row) in rows.enumerated() {
            let a = lses[0][h * rows.count + r], b = lses[1][h * rows.count + r]
            let m = max(a, b)
            let total = m == -.infinity ? m : m + log(exp(a - m) + exp(b - m))
            for c in 0..<d {
              var merged: Float = 0
              for (p, lse) in [a, b].enumerated() where lse > -.infinity {
                merged += exp(lse - total) * outputs[p][(h * rows.count + r) * d + c]
              }
              XCTAssertEqual(merged, expected[(h * l + row) * d + c], accuracy: 2e-6, "\(spec) alibi \(alibi) head \(h) row \(row)")
            }
          }
        }
      }
    }
  }

  private func slice(_ t: Tensor, _ rows: Range<Int>) -> Tensor {
    let (heads, l, d) = (t.shape[0], t.shape[1], t.shape[2])
    var values: [Float] = []
    for h in 0..<heads { for r in rows { for c in 0..<d { values.append(t.scalars[h * l * d + r * d + c]) } } }
    return Tensor(shape: [heads, rows.count, d], scalars: values)
  }

  func testALiBiRefusesViewsWithoutOneAlignment() throws {
    let view = try Graph.window(2).view(queryCount: 10, keyCount: 10, rows: [KeyRun(start: 0, count: 4)],
                                        keys: [KeyRun(start: 0, count: 2), KeyRun(start: 5, count: 2)])
    let q = Tensor.random(shape: [4, 8], seed: 1), k = Tensor.random(shape: [4, 8], seed: 2)
    XCTAssertThrowsError(try attention(query: q, key: k, value: k, graph: view, options: AttentionOptions(alibi: .standard)))
    XCTAssertNoThrow(try attention(query: q, key: k, value: k, graph: view))
  }

  // MARK: - Plans

  func testPlansListExactlyTheKeysEachRankAttendsTo() throws {
    for l in [1, 2, 7, 31, 50] {
      for sizes in shardChoices(tokens: l) {
        for spec in Self.specs(tokens: l) {
          let graph = try Graph(parsing: spec)
          if (try? graph.validate(queryCount: l, keyCount: l)) == nil { continue }  // e.g. global:1 over 1 token
          let plan = try ExchangePlan(graphs: [graph], tokens: l, shardSizes: sizes)
          let superset = spec.contains("dilated:3:2&window")  // an intersection of two non-document kinds
          for r in 0..<sizes.count {
            let rows = plan.shards[r].filter { !plan.globalRows.contains($0) }
            for s in 0..<sizes.count {
              let listed = keys(plan.needs[r][s])
              XCTAssertEqual(listed, listed.sorted(), "\(spec) sorted")
              XCTAssertEqual(Set(listed).count, listed.count, "\(spec) unique")
              if r == s { XCTAssertEqual(listed, []); continue }
              let expected = plan.shards[s].filter { j in rows.contains { graph.contains(row: $0, column: j, queryCount: l, keyCount: l) } }
              if superset {
                XCTAssertTrue(Set(expected).isSubset(of: Set(listed)), "\(spec) L=\(l) shards \(sizes) \(r)<-\(s)")
                XCTAssertTrue(listed.allSatisfy { plan.shards[s].contains($0) })
              } else {
                XCTAssertEqual(listed, expected, "\(spec) L=\(l) shards \(sizes) \(r)<-\(s)")
              }
              XCTAssertEqual(plan.keyCount(receiver: r, sender: s), listed.count)
            }
          }
          for t in 0..<l { XCTAssertTrue(plan.shards[plan.owner(of: t)].contains(t)) }
        }
      }
    }
  }

  private func shardChoices(tokens l: Int) -> [[Int]] {
    var choices = [[l], ExchangePlan.evenShardSizes(tokens: l, worldSize: 2), ExchangePlan.evenShardSizes(tokens: l, worldSize: 3),
                   ExchangePlan.evenShardSizes(tokens: l, worldSize: 4)]
    if l >= 7 { choices += [[1, l - 1], [l - 3, 0, 1, 2], [2, l - 6, 3, 1]] }
    return choices
  }

  func testPerHeadPlansAreTheUnionOfTheHeads() throws {
    let l = 40
    let graphs = [try Graph(parsing: "window:2"), try Graph(parsing: "window:5:causal+global:7")]
    let sizes = [9, 14, 17]
    let plan = try ExchangePlan(graphs: graphs, tokens: l, shardSizes: sizes)
    XCTAssertEqual(plan.globalRows, [7])
    for r in 0..<3 {
      for s in 0..<3 where s != r {
        let rows = plan.shards[r].filter { $0 != 7 }
        let expected = plan.shards[s].filter { j in
          rows.contains { i in graphs.contains { $0.contains(row: i, column: j, queryCount: l, keyCount: l) } }
        }
        XCTAssertEqual(keys(plan.needs[r][s]), expected)
      }
    }
  }

  func testHalosAreClosedFormsAtAnyLength() throws {
    // 2^30 tokens over 1024 ranks: structured plans never look at rows.
    let l = 1 << 30, p = 1024
    let sizes = ExchangePlan.evenShardSizes(tokens: l, worldSize: p)
    let plan = try ExchangePlan(graphs: [try Graph(parsing: "window:4096+global:0,17")], tokens: l, shardSizes: sizes)
    XCTAssertEqual(plan.keyCount(receiver: 5, sender: 4), 4096)
    XCTAssertEqual(plan.keyCount(receiver: 5, sender: 6), 4096)
    XCTAssertEqual(plan.keyCount(receiver: 5, sender: 0), 2)  // the global keys, once
    XCTAssertEqual(plan.keyCount(receiver: 5, sender: 7), 0)
    let bytes = ExchangePlan.RowBytes(batch: 1, queryHeads: 8, keyValueHeads: 8, keyDim: 64, valueDim: 64, elementBytes: 2)
    XCTAssertEqual(plan.bytesSent(rank: 5, rowBytes: bytes), 2 * 4096 * bytes.keyValue + 2 * bytes.partialState)
    XCTAssertEqual(plan.bytesSent(rank: 0, rowBytes: bytes),
                   (4096 + 2 * (p - 1)) * bytes.keyValue + 2 * (p - 1) * bytes.query)
  }

  func testPlansRefuseBadShards() {
    XCTAssertThrowsError(try ExchangePlan(graphs: [.causal], tokens: 10, shardSizes: [5, 4]))
    XCTAssertThrowsError(try ExchangePlan(graphs: [.causal], tokens: 10, shardSizes: [11, -1]))
    XCTAssertThrowsError(try ExchangePlan(graphs: [try .global([12])], tokens: 10, shardSizes: [5, 5]))
  }
}
