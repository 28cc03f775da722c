@testable import GraphAttention
import XCTest

/// The backward (`attentionGradients`) and the forward's log-sum-exp against the float64 analytic
/// backward on fresh random inputs (independent streams for Q, K, V and dO), gradients poisoned with NaN
/// before every run.
final class GradientTests: XCTestCase {
  private var seed: UInt64 = 5000

  struct Run {
    var gradQuery: [Float]
    var gradKey: [Float]
    var gradValue: [Float]
    var work: AttentionWork
  }

  /// Forward with LSE, then backward, through the view API; returns the gradients.
  static func gradients(q: Tensor, k: Tensor, v: Tensor, dO: Tensor, graph: Graph, options: AttentionOptions,
                        lseOut: UnsafeMutablePointer<[Float]>? = nil, storage: StorageType = .float32) throws -> Run {
    func view(_ t: Tensor) -> TensorView {
      guard storage != .float32 else { return TensorView(t) }
      let m = MutableTensorView(allocating: t.shape, type: storage)
      t.scalars.withUnsafeBufferPointer { m.store($0, at: 0) }
      return m.readOnly
    }
    let (qv, kv, vv, gv) = (view(q), view(k), view(v), view(dO))
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let o = MutableTensorView(allocating: shape.outputShape, type: .float32)
    let lse = MutableTensorView(allocating: Array(q.shape.dropLast()), type: .float32)
    poison(lse)
    try attention(query: qv, key: kv, value: vv, output: o, graph: graph, options: options, logSumExp: lse)
    lseOut?.pointee = (0..<lse.count).map { lse.element($0) }
    let dq = MutableTensorView(allocating: q.shape, type: .float32)
    let dk = MutableTensorView(allocating: k.shape, type: .float32)
    let dv = MutableTensorView(allocating: v.shape, type: .float32)
    for t in [dq, dk, dv] { poison(t) }
    let work = try attentionGradients(query: qv, key: kv, value: vv, output: o.readOnly, logSumExp: lse.readOnly,
                                      gradOutput: gv, gradQuery: dq, gradKey: dk, gradValue: dv, graph: graph,
                                      options: options)
    func floats(_ t: MutableTensorView) -> [Float] { (0..<t.count).map { t.element($0) } }
    return Run(gradQuery: floats(dq), gradKey: floats(dk), gradValue: floats(dv), work: work)
  }

  static func poison(_ t: MutableTensorView) {
    t.base.assumingMemoryBound(to: Float.self).update(repeating: .nan, count: t.count)
  }

  /// Checks LSE and the three gradients against the float64 reference; returns the worst relative error.
  @discardableResult
  private func check(_ mask: MaskCase, query: [Int], key: [Int], value: [Int], inputScale: Float = 1,
                     options: AttentionOptions = AttentionOptions(), graph: Graph? = nil, storage: StorageType = .float32,
                     file: StaticString = #filePath, line: UInt = #line) throws -> Double {
    seed += 4
    var q = Inputs.tensor(query, seed: seed, scale: inputScale)
    var k = Inputs.tensor(key, seed: seed + 1, scale: inputScale)
    var v = Inputs.tensor(value, seed: seed + 2)
    if storage != .float32 {  // the reference sees what the kernels read
      q.scalars = q.scalars.map { TensorView.rounded($0, to: storage) }
      k.scalars = k.scalars.map { TensorView.rounded($0, to: storage) }
      v.scalars = v.scalars.map { TensorView.rounded($0, to: storage) }
    }
    var dO = Inputs.tensor(Array(query.dropLast()) + [value.last!], seed: seed + 3)
    if storage != .float32 { dO.scalars = dO.scalars.map { TensorView.rounded($0, to: storage) } }
    let shape = try AttentionShape(query: query, key: key, value: value)
    let reference = GradientReference.gradients(query: q, key: k, value: v, gradOutput: dO, shape: shape, mask: mask,
                                                scale: options.scale.map(Double.init))
    let tolerance = inputScale == 1 ? 1e-5 : 1e-4
    var worst = 0.0
    // Every kernel this CPU runs (portable, AVX2, AVX-512) against the one reference.
    for kernel in CPUKernel.supported {
      var options = options
      options.kernel = kernel
      var lse: [Float] = []
      let run = try GradientTests.gradients(q: q, k: k, v: v, dO: dO, graph: graph ?? Graph(parsing: mask.spec),
                                            options: options, lseOut: &lse, storage: storage)
      let context = "\(mask) q\(query) k\(key) v\(value) kernel \(kernel)"
      for (row, expected) in reference.logSumExp.enumerated() {
        let x = Double(lse[row])
        if expected == -.infinity {
          XCTAssertEqual(lse[row], -.infinity, "LSE of empty row \(row), \(context)", file: file, line: line)
        } else if !(abs(x - expected) <= tolerance * max(1, abs(expected), reference.maxAbsLogit)) {
          XCTFail("LSE row \(row): \(x) vs \(expected), \(context)", file: file, line: line)
          break
        }
      }
      let emptyQueryRows = Set(reference.logSumExp.indices.filter { reference.logSumExp[$0] == -.infinity })
      run.gradQuery.withUnsafeBufferPointer {
        worst = max(worst, GradientReference.assertClose($0, reference.gradQuery, magnitude: reference.queryMagnitude, width: shape.keyDim,
                                                         tolerance: tolerance, nanRows: options.emptyRows == .nan ? emptyQueryRows : [],
                                                         "dQ \(context)", file: file, line: line))
      }
      run.gradKey.withUnsafeBufferPointer {
        worst = max(worst, GradientReference.assertClose($0, reference.gradKey, magnitude: reference.keyMagnitude, width: shape.keyDim,
                                                         tolerance: tolerance, "dK \(context)", file: file, line: line))
      }
      run.gradValue.withUnsafeBufferPointer {
        worst = max(worst, GradientReference.assertClose($0, reference.gradValue, magnitude: reference.valueMagnitude, width: shape.valueDim,
                                                         tolerance: tolerance, "dV \(context)", file: file, line: line))
      }
      let edges = Graph.edgeCountForTests(mask: mask, queryCount: shape.queryCount, keyCount: shape.keyCount)
      XCTAssertEqual(run.work.edges, edges * shape.batch * shape.queryHeads, "edges, \(context)", file: file, line: line)
    }
    return worst
  }

  /// Documents, intersections, prefixes and per-head random graphs' head patterns, on every kernel level.
  func testModelGraphs() throws {
    for l in [1, 2, 3, 10, 41] {
      for mask in ModelGraphTests.masks(tokens: l) {
        let d = [1, 3, 8, 17, 16, 64][l % 6]
        try check(mask, query: [2, l, d], key: [2, l, d], value: [2, l, d])
      }
    }
    let offsets = [0, 1, 70, 70, 200, 333, 334, 400]
    for mask in [MaskCase.documents(offsets) & .causal, .documents(offsets) & .causalWindow(32), .prefix(77) + .documents(offsets) & .window(3)] {
      try check(mask, query: [2, 4, 400, 32], key: [2, 2, 400, 32], value: [2, 2, 400, 24])
    }
    // One head's pattern of a per-head random graph.
    try check(.randomPerHead(0.3, seed: 3, head: 2) & .causal, query: [50, 8], key: [50, 8], value: [50, 8],
              graph: try Graph(parsing: "random:0.3:3:per-head&causal").forHead(2))
  }

  /// Decoding: a few queries over a long cache with bottom-right aligned causal kinds; more queries than keys.
  func testAlignedCausalKinds() throws {
    for lq in [1, 2, 5, 8] {
      for mask in [MaskCase.causal, .causalWindow(128), .prefix(100), .causalWindow(0) + .prefix(3)] {
        try check(mask, query: [2, lq, 16], key: [1, 4096, 16], value: [1, 4096, 8])
      }
    }
    for mask in [MaskCase.causal, .causalWindow(2), .prefix(3), .causal & .random(0.5, seed: 1)] {
      try check(mask, query: [2, 12, 8], key: [2, 5, 8], value: [2, 5, 8])
      try check(mask, query: [2, 5, 8], key: [2, 12, 8], value: [2, 12, 8])
    }
  }

  func testEveryKindAtManyLengthsOnEveryKernel() throws {
    let options = AttentionOptions()
    for l in [1, 2, 5, 17, 33, 64, 65, 130] {
      for mask in GraphTests.masks(tokens: l) {
        let d = [1, 3, 8, 17, 16, 64][l % 6]
        try check(mask, query: [2, l, d], key: [2, l, d], value: [2, l, d], options: options)
      }
    }
  }

  func testRowsLongerThanEveryTileAndWideHeads() throws {
    let options = AttentionOptions()
    for mask in [MaskCase.full, .causal, .window(150), .causalWindow(200), .dilated(70, 2), .blocked(256, 1),
                 .window(20) + .global([0, 299])] {
      try check(mask, query: [300, 16], key: [300, 16], value: [300, 16], options: options)
    }
    for d in [64, 96, 128] {
      try check(.window(40) + .global([3]), query: [90, d], key: [90, d], value: [90, d], options: options)
    }
  }

  func testGroupedQueriesValueWidthsAndBatches() throws {
    let mask = MaskCase.window(5) + .random(0.1, seed: 4)
    let options = AttentionOptions()
    try check(mask, query: [2, 4, 40, 8], key: [2, 2, 40, 8], value: [2, 2, 40, 8], options: options)   // GQA
    try check(mask, query: [2, 4, 40, 8], key: [2, 1, 40, 8], value: [2, 1, 40, 8], options: options)   // MQA
    try check(mask, query: [4, 40, 16], key: [2, 40, 16], value: [2, 40, 5], options: options)          // d_v != d_k
    try check(mask, query: [40, 3], key: [40, 3], value: [40, 70], options: options)
    try check(mask, query: [3, 2, 40, 19], key: [3, 2, 40, 19], value: [3, 2, 40, 33], options: options)
  }

  func testCrossAttentionEmptyRowsAndScale() throws {
    var pairs: [(Int, Int)] = []
    var rows: [Int64] = [], columns: [Int64] = []
    var state: UInt64 = 77
    for i in 0..<25 {
      for _ in 0..<(i % 6) {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        let j = Int(state >> 33) % 50
        pairs.append((i, j)); rows.append(Int64(i)); columns.append(Int64(j))
      }
    }
    let explicit = Graph.explicit(try ExplicitGraph(rows: rows, columns: columns, rowCount: 30))
    var options = AttentionOptions()
    for emptyRows in EmptyRowPolicy.allCases {
      options.emptyRows = emptyRows
      try check(.pairs(pairs), query: [2, 30, 8], key: [2, 50, 8], value: [2, 50, 4], options: options, graph: explicit)
    }
    options.emptyRows = .zero
    options.scale = 0.37
    try check(.full, query: [2, 7, 8], key: [2, 50, 8], value: [2, 50, 12], options: options)
    try check(.random(0.2, seed: 9), query: [20, 8], key: [70, 8], value: [70, 3], options: options)
  }

  func testLargeLogitsAndNarrowStorage() throws {
    let options = AttentionOptions()
    for mask in [MaskCase.window(7) + .global([0]), .causal, .random(0.3, seed: 2)] {
      try check(mask, query: [2, 60, 32], key: [2, 60, 32], value: [2, 60, 32], inputScale: 30, options: options)
    }
    for storage in [StorageType.float16, .bfloat16] {
      try check(.window(9) + .global([1]), query: [2, 70, 24], key: [2, 70, 24], value: [2, 70, 24], options: options,
                storage: storage)
    }
  }

  /// Banded graphs long enough that the single pass over key columns splits them into several items, so
  /// dQ is summed from several bands per row: against the float64 reference, and the same bytes for 1, 2
  /// and 3 threads on every kernel.
  func testSinglePassBandsOfManyItems() throws {
    for mask in [MaskCase.window(128), .causalWindow(300), .dilated(64, 2), .blocked(256, 1)] {
      try check(mask, query: [1600, 16], key: [1600, 16], value: [1600, 8], options: AttentionOptions())
    }
    let q = Inputs.tensor([1, 2, 1600, 16], seed: 11), k = Inputs.tensor([1, 1, 1600, 16], seed: 12)
    let v = Inputs.tensor([1, 1, 1600, 8], seed: 13), dO = Inputs.tensor([1, 2, 1600, 8], seed: 14)
    for spec in ["window:128", "dilated:64:2"] {
      try assertSameBytesForAnyThreadCount(q: q, k: k, v: v, dO: dO, spec: spec)
    }
  }

  /// Byte equality across thread counts (1, 2, 3) on every kernel.
  func testSameBytesForAnyThreadCount() throws {
    let q = Inputs.tensor([2, 2, 300, 24], seed: 1), k = Inputs.tensor([2, 1, 300, 24], seed: 2)
    let v = Inputs.tensor([2, 1, 300, 20], seed: 3), dO = Inputs.tensor([2, 2, 300, 20], seed: 4)
    for spec in ["window:33+global:5,200+random:0.01:3", "causal", "dilated:20:2+blocked:64:1"] {
      try assertSameBytesForAnyThreadCount(q: q, k: k, v: v, dO: dO, spec: spec)
    }
  }

  /// dQ, dK and dV of `spec` are the same bytes for 1, 2 and 3 threads, on every kernel this CPU runs.
  private func assertSameBytesForAnyThreadCount(q: Tensor, k: Tensor, v: Tensor, dO: Tensor, spec: String,
                                                file: StaticString = #filePath, line: UInt = #line) throws {
    for kernel in CPUKernel.supported {
      var runs: [Run] = []
      for threads in [1, 2, 3] {
        var options = AttentionOptions(threads: threads)
        options.kernel = kernel
        runs.append(try GradientTests.gradients(q: q, k: k, v: v, dO: dO, graph: try Graph(parsing: spec), options: options))
      }
      for run in runs.dropFirst() {
        XCTAssertEqual(run.gradQuery.map(\.bitPattern), runs[0].gradQuery.map(\.bitPattern), "dQ \(spec) kernel \(kernel)", file: file, line: line)
        XCTAssertEqual(run.gradKey.map(\.bitPattern), runs[0].gradKey.map(\.bitPattern), "dK \(spec) kernel \(kernel)", file: file, line: line)
        XCTAssertEqual(run.gradValue.map(\.bitPattern), runs[0].gradValue.map(\.bitPattern), "dV \(spec) kernel \(kernel)", file: file, line: line)
      }
    }
  }
}

extension Graph {
  /// The edge count from the independent mask definition.
  static func edgeCountForTests(mask: MaskCase, queryCount: Int, keyCount: Int) -> Int {
    var total = 0
    for i in 0..<queryCount { for j in 0..<keyCount where mask.contains(i, j, queryCount, keyCount) { total += 1 } }
    return total
  }
}

extension GradientTests {
  /// Central finite differences of `L = sum(dO * O)` (O from the float64 forward) against the float64
  /// analytic backward and the library's gradients, on small cases.
  func testFiniteDifferences() throws {
    for (mask, lq, lk) in [(MaskCase.window(2) + .global([0]), 9, 9), (.causalWindow(3), 8, 8), (.random(0.4, seed: 3), 6, 11),
                           (.dilated(2, 1) + .blocked(4, 1), 10, 10)] {
      let (kd, vd) = (3, 2)
      let q = Inputs.tensor([2, lq, kd], seed: 71), k = Inputs.tensor([1, lk, kd], seed: 72)
      let v = Inputs.tensor([1, lk, vd], seed: 73), dO = Inputs.tensor([2, lq, vd], seed: 74)
      let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
      func loss(_ q: Tensor, _ k: Tensor, _ v: Tensor) -> Double {
        let o = GradientReference.gradients(query: q, key: k, value: v, gradOutput: dO, shape: shape, mask: mask).output
        return zip(o, dO.scalars).reduce(0) { $0 + $1.0 * Double($1.1) }
      }
      let analytic = GradientReference.gradients(query: q, key: k, value: v, gradOutput: dO, shape: shape, mask: mask)
      let run = try GradientTests.gradients(q: q, k: k, v: v, dO: dO, graph: try Graph(parsing: mask.spec), options: AttentionOptions())
      // Perturb in Double through a Float tensor: h is a power of two, so q +- h is exact in fp32 near 1.
      let h: Float = 0x1p-10
      for (which, tensor, exact, computed) in [(0, q, analytic.gradQuery, run.gradQuery), (1, k, analytic.gradKey, run.gradKey),
                                               (2, v, analytic.gradValue, run.gradValue)] {
        for e in 0..<tensor.scalars.count {
          var plus = tensor, minus = tensor
          plus.scalars[e] += h
          minus.scalars[e] -= h
          let (lp, lm) = which == 0 ? (loss(plus, k, v), loss(minus, k, v))
            : which == 1 ? (loss(q, plus, v), loss(q, minus, v)) : (loss(q, k, plus), loss(q, k, minus))
          let difference = (lp - lm) / (Double(plus.scalars[e]) - Double(minus.scalars[e]))
          XCTAssertEqual(exact[e], difference, accuracy: 1e-4 * max(1, abs(difference)), "\(mask) tensor \(which) element \(e): analytic vs finite difference")
          XCTAssertEqual(Double(computed[e]), difference, accuracy: 1e-4 * max(1, abs(difference)), "\(mask) tensor \(which) element \(e): library vs finite difference")
        }
      }
    }
  }

  /// The composed state path: accumulating A then B and taking LSE = m + log(l) from the state gives the
  /// gradients of A + B, and `attentionGradients` over the union matches the float64 reference.
  func testGradientsThroughComposedState() throws {
    let mask = MaskCase.window(6) + .global([0, 50]) + .random(0.05, seed: 8)
    let q = Inputs.tensor([2, 64, 12], seed: 31), k = Inputs.tensor([2, 64, 12], seed: 32)
    let v = Inputs.tensor([2, 64, 10], seed: 33), dO = Inputs.tensor([2, 64, 10], seed: 34)
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    var state = try AttentionState(query: q, value: v)
    try state.accumulate(query: q, key: k, value: v, graph: try Graph(parsing: "window:6"))
    try state.accumulate(query: q, key: k, value: v, graph: try Graph(parsing: "global:0,50+random:0.05:8"))
    let o = state.output()
    let lse = state.logSumExp()
    let union = try Graph(parsing: mask.spec)
    let dq = MutableTensorView(allocating: q.shape, type: .float32), dk = MutableTensorView(allocating: k.shape, type: .float32)
    let dv = MutableTensorView(allocating: v.shape, type: .float32)
    for t in [dq, dk, dv] { GradientTests.poison(t) }
    try attentionGradients(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: TensorView(o),
                           logSumExp: TensorView(lse), gradOutput: TensorView(dO), gradQuery: dq, gradKey: dk, gradValue: dv,
                           graph: union)
    let reference = GradientReference.gradients(query: q, key: k, value: v, gradOutput: dO, shape: shape, mask: mask)
    func floats(_ t: MutableTensorView) -> [Float] { (0..<t.count).map { t.element($0) } }
    floats(dq).withUnsafeBufferPointer {
      GradientReference.assertClose($0, reference.gradQuery, magnitude: reference.queryMagnitude, width: 12, tolerance: 1e-5, "composed dQ")
    }
    floats(dk).withUnsafeBufferPointer {
      GradientReference.assertClose($0, reference.gradKey, magnitude: reference.keyMagnitude, width: 12, tolerance: 1e-5, "composed dK")
    }
    floats(dv).withUnsafeBufferPointer {
      GradientReference.assertClose($0, reference.gradValue, magnitude: reference.valueMagnitude, width: 10, tolerance: 1e-5, "composed dV")
    }
  }
}
