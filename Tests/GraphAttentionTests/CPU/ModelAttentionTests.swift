import GraphAttention
import XCTest

/// The engine on the graphs today's models use, against the float64 dense reference on fresh random
/// inputs (independent streams for Q, K and V, outputs poisoned with NaN by the engine's allocation):
/// documents, intersections, prefixes, decoding with aligned causal kinds, and per-head graphs.
final class ModelAttentionTests: XCTestCase {
  private var seed: UInt64 = 7000

  private func inputs(_ query: [Int], _ key: [Int], _ value: [Int]) -> (Tensor, Tensor, Tensor) {
    seed += 3
    return (Inputs.tensor(query, seed: seed), Inputs.tensor(key, seed: seed + 1), Inputs.tensor(value, seed: seed + 2))
  }

  private func run(_ mask: MaskCase, query: [Int], key: [Int], value: [Int], kernel: CPUKernel = .automatic,
                   file: StaticString = #filePath, line: UInt = #line) throws {
    let (q, k, v) = inputs(query, key, value)
    let shape = try AttentionShape(query: query, key: key, value: value)
    let o = try attention(query: q, key: k, value: v, graph: try Graph(parsing: mask.spec), options: AttentionOptions(kernel: kernel))
    let reference = DenseReference.attention(query: q, key: k, value: v, shape: shape, mask: mask)
    DenseReference.assertClose(o, reference, valueDim: shape.valueDim, "\(mask) q\(query) k\(key) \(kernel)", file: file, line: line)
    // The view form writes into caller memory poisoned with NaN: every element must be written.
    let output = MutableTensorView(allocating: shape.outputShape, type: .float32)
    for index in 0..<output.count { output.setElement(index, .nan) }
    try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: output,
                  graph: try Graph(parsing: mask.spec), options: AttentionOptions(kernel: kernel))
    DenseReference.assertClose(Tensor(output.readOnly), reference, valueDim: shape.valueDim, "view \(mask) q\(query)", file: file, line: line)
  }

  func testDocumentsIntersectionsAndPrefixesAtManyLengths() throws {
    for l in [1, 2, 3, 10, 40, 65, 131] {
      for mask in ModelGraphTests.masks(tokens: l) {
        let d = [1, 3, 8, 17][l % 4]
        try run(mask, query: [2, l, d], key: [2, l, d], value: [2, l, d])
      }
    }
    // Both CPU paths on long documents, GQA and d_v != d_k.
    let offsets = [0, 1, 70, 70, 200, 333, 334, 400]
    for kernel in CPUKernel.supported {
      for mask in [MaskCase.documents(offsets) & .causal, .documents(offsets) & .causalWindow(32), .documents(offsets), .prefix(77)] {
        try run(mask, query: [2, 4, 400, 32], key: [2, 2, 400, 32], value: [2, 2, 400, 24], kernel: kernel)
      }
    }
  }

  /// Decoding: L_q = 1...8 queries over a 4096-key cache attend to the newest keys.
  func testDecodingWithAlignedCausalKinds() throws {
    for lq in 1...8 {
      for mask in [MaskCase.causal, .causalWindow(128), .causalWindow(0), .prefix(100), .causalWindow(64) + .prefix(2)] {
        try run(mask, query: [2, lq, 16], key: [1, 4096, 16], value: [1, 4096, 8])
      }
    }
    // More queries than keys: the first L_q - L_k rows are empty (zeros).
    try run(.causal, query: [2, 12, 8], key: [2, 5, 8], value: [2, 5, 8])
    try run(.causalWindow(2), query: [12, 8], key: [5, 8], value: [5, 8])
    try run(.prefix(3), query: [12, 8], key: [5, 8], value: [5, 8])
  }

  /// The reference for per-head graphs: each (batch, head) slice against its own mask.
  private func perHeadReference(_ q: Tensor, _ k: Tensor, _ v: Tensor, shape: AttentionShape, masks: [MaskCase]) -> DenseReference.Result {
    var result = DenseReference.Result(rows: [])
    let group = shape.queryHeads / shape.keyValueHeads
    func slice(_ t: Tensor, _ index: Int, _ rows: Int, _ width: Int) -> Tensor {
      Tensor(shape: [rows, width], scalars: Array(t.scalars[(index * rows * width)..<((index + 1) * rows * width)]))
    }
    for b in 0..<shape.batch {
      for h in 0..<shape.queryHeads {
        let kv = b * shape.keyValueHeads + h / group
        let one = try! AttentionShape(query: [shape.queryCount, shape.keyDim], key: [shape.keyCount, shape.keyDim],
                                      value: [shape.keyCount, shape.valueDim])
        let r = DenseReference.attention(query: slice(q, b * shape.queryHeads + h, shape.queryCount, shape.keyDim),
                                         key: slice(k, kv, shape.keyCount, shape.keyDim), value: slice(v, kv, shape.keyCount, shape.valueDim),
                                         shape: one, mask: masks[h])
        result.rows += r.rows
        result.maxAbsLogit = max(result.maxAbsLogit, r.maxAbsLogit)
      }
    }
    return result
  }

  func testPerHeadGraphs() throws {
    let l = 70
    let masks: [MaskCase] = [.causalWindow(8), .causal, .documents([0, 30, 31, 70]) & .causal, .window(5) + .global([0]),
                             .prefix(20), .randomPerHead(0.2, seed: 4, head: 5) & .causal]
    for (query, key) in [([6, l, 16], [6, l, 16]), ([2, 6, l, 16], [2, 3, l, 16]), ([2, 6, l, 16], [2, 1, l, 16])] {
      let value = key.dropLast() + [12]
      let (q, k, v) = inputs(query, key, Array(value))
      let shape = try AttentionShape(query: query, key: key, value: Array(value))
      // The per-head random graph written with its head's seed: head 5 of random:0.2:4:per-head.
      let graphs = try masks.enumerated().map { h, mask in
        h == 5 ? try Graph(parsing: "random:0.2:4:per-head&causal") : try Graph(parsing: mask.spec)
      }
      let o = try attention(query: q, key: k, value: v, graphs: graphs)
      let reference = perHeadReference(q, k, v, shape: shape, masks: masks)
      DenseReference.assertClose(o, reference, valueDim: 12, "per-head q\(query) k\(key)")
      let output = MutableTensorView(allocating: shape.outputShape, type: .float32)
      for index in 0..<output.count { output.setElement(index, .nan) }
      let work = try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: output, graphs: graphs)
      DenseReference.assertClose(Tensor(output.readOnly), reference, valueDim: 12, "per-head view q\(query)")
      let edges = graphs.enumerated().reduce(0) { $0 + $1.1.forHead($1.0).edgeCount(queryCount: l, keyCount: l) } * shape.batch
      XCTAssertEqual(work.edges, edges)
    }
    // Decoding with per-head windows over a cache.
    let (q, k, v) = inputs([4, 3, 8], [2, 300, 8], [2, 300, 8])
    let decodeMasks: [MaskCase] = [.causalWindow(16), .causal, .prefix(10), .causalWindow(0)]
    let o = try attention(query: q, key: k, value: v, graphs: decodeMasks.map { try Graph(parsing: $0.spec) })
    let shape = try AttentionShape(query: [4, 3, 8], key: [2, 300, 8], value: [2, 300, 8])
    DenseReference.assertClose(o, perHeadReference(q, k, v, shape: shape, masks: decodeMasks), valueDim: 8, "per-head decoding")
  }

  /// One graph with a per-head random component gives each head its pattern; other paths refuse it.
  func testOneGraphVaryingPerHead() throws {
    let (q, k, v) = inputs([2, 3, 40, 8], [2, 3, 40, 8], [2, 3, 40, 8])
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let graph = try Graph(parsing: "random:0.25:9:per-head+window:1")
    let masks = (0..<3).map { MaskCase.randomPerHead(0.25, seed: 9, head: $0) + .window(1) }
    let reference = perHeadReference(q, k, v, shape: shape, masks: masks)
    DenseReference.assertClose(try attention(query: q, key: k, value: v, graph: graph), reference, valueDim: 8, "one per-head graph")
    let output = MutableTensorView(allocating: shape.outputShape, type: .float32)
    try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: output, graph: graph)
    DenseReference.assertClose(Tensor(output.readOnly), reference, valueDim: 8, "one per-head graph, views")
    var state = try AttentionState(query: q, value: v)
    XCTAssertThrowsError(try state.accumulate(query: q, key: k, value: v, graph: graph)) { XCTAssertTrue("\($0)".contains("per head"), "\($0)") }
  }

  /// Per-head gradients (with grouped-query heads, whose dK and dV sum their query heads) against the
  /// float64 analytic backward of each head with its own mask; gradients and LSE poisoned first.
  func testPerHeadGradients() throws {
    let (b, h, hkv, l, d, dv) = (2, 4, 2, 30, 8, 6)
    let (q, k, v) = inputs([b, h, l, d], [b, hkv, l, d], [b, hkv, l, dv])
    let dO = Inputs.tensor([b, h, l, dv], seed: seed + 9)
    let masks: [MaskCase] = [.causalWindow(4), .causal, .documents([0, 10, 11, 30]) & .causal, .randomPerHead(0.3, seed: 2, head: 3) + .prefix(7)]
    let graphs = try masks.enumerated().map { i, mask in i == 3 ? try Graph(parsing: "random:0.3:2:per-head+prefix:7") : try Graph(parsing: mask.spec) }
    let o = MutableTensorView(allocating: [b, h, l, dv], type: .float32)
    let lse = MutableTensorView(allocating: [b, h, l], type: .float32)
    GradientTests.poison(lse)
    try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o, graphs: graphs, logSumExp: lse)
    let dq = MutableTensorView(allocating: q.shape, type: .float32)
    let dk = MutableTensorView(allocating: k.shape, type: .float32)
    let dvv = MutableTensorView(allocating: v.shape, type: .float32)
    for t in [dq, dk, dvv] { GradientTests.poison(t) }
    try attentionGradients(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o.readOnly, logSumExp: lse.readOnly,
                           gradOutput: TensorView(dO), gradQuery: dq, gradKey: dk, gradValue: dvv, graphs: graphs)
    // The reference, head by head; a key/value head's gradients and magnitudes summed over its query heads.
    var refQ: [Double] = [], magQ: [Double] = [], refLSE: [Double] = []
    var refK = [Double](repeating: 0, count: b * hkv * l * d), magK = [Double](repeating: 0, count: b * hkv * l)
    var refV = [Double](repeating: 0, count: b * hkv * l * dv), magV = [Double](repeating: 0, count: b * hkv * l)
    func slice(_ t: Tensor, _ index: Int, _ width: Int) -> Tensor {
      Tensor(shape: [l, width], scalars: Array(t.scalars[(index * l * width)..<((index + 1) * l * width)]))
    }
    let one = try AttentionShape(query: [l, d], key: [l, d], value: [l, dv])
    for call in 0..<(b * h) {
      let kv = (call / h) * hkv + (call % h) / (h / hkv)
      let r = GradientReference.gradients(query: slice(q, call, d), key: slice(k, kv, d), value: slice(v, kv, dv),
                                          gradOutput: slice(dO, call, dv), shape: one, mask: masks[call % h])
      refQ += r.gradQuery; magQ += r.queryMagnitude; refLSE += r.logSumExp
      for e in 0..<(l * d) { refK[kv * l * d + e] += r.gradKey[e] }
      for e in 0..<(l * dv) { refV[kv * l * dv + e] += r.gradValue[e] }
      for row in 0..<l { magK[kv * l + row] += r.keyMagnitude[row]; magV[kv * l + row] += r.valueMagnitude[row] }
    }
    func floats(_ t: MutableTensorView) -> [Float] { (0..<t.count).map { t.element($0) } }
    for (name, computed, reference, magnitude, width) in [("dQ", floats(dq), refQ, magQ, d), ("dK", floats(dk), refK, magK, d),
                                                          ("dV", floats(dvv), refV, magV, dv)] {
      computed.withUnsafeBufferPointer {
        _ = GradientReference.assertClose($0, reference, magnitude: magnitude, width: width, tolerance: 1e-5, "per-head \(name)")
      }
    }
    for (row, expected) in refLSE.enumerated() {
      XCTAssertEqual(Double(lse.element(row)), expected, accuracy: 1e-5 * max(1, abs(expected)), "LSE row \(row)")
    }
    // One per-head random graph given as a single graph takes the same path.
    XCTAssertThrowsError(try attentionGradients(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o.readOnly,
                                                logSumExp: lse.readOnly, gradOutput: TensorView(dO), gradQuery: dq, gradKey: dk,
                                                gradValue: dvv, graphs: [.causal]))
  }

  func testPerHeadGraphCountMustMatchTheHeads() throws {
    let (q, k, v) = inputs([3, 10, 4], [3, 10, 4], [3, 10, 4])
    XCTAssertThrowsError(try attention(query: q, key: k, value: v, graphs: [.causal, .causal])) {
      XCTAssertTrue("\($0)".contains("2 graph(s) were given for 3 query head(s)"), "\($0)")
    }
    XCTAssertThrowsError(try attention(query: q, key: k, value: v, graphs: [.causal, .causal, try .documents(offsets: [0, 4, 9])])) {
      XCTAssertTrue("\($0)".contains("head 2"), "\($0)")
    }
  }
}
