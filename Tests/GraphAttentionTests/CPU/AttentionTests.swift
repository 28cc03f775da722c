import GraphAttention
import XCTest

/// The CPU engine against the float64 dense reference on fresh random inputs.
final class AttentionTests: XCTestCase {
  private var seed: UInt64 = 1000

  private func run(_ mask: MaskCase, query: [Int], key: [Int], value: [Int], inputScale: Float = 1,
                   tolerance: Double = 1e-5, options: AttentionOptions = AttentionOptions(), file: StaticString = #filePath, line: UInt = #line) throws {
    seed += 3
    let q = Inputs.tensor(query, seed: seed, scale: inputScale)
    let k = Inputs.tensor(key, seed: seed + 1, scale: inputScale)
    let v = Inputs.tensor(value, seed: seed + 2)
    let graph = try Graph(parsing: mask.spec)
    let shape = try AttentionShape(query: query, key: key, value: value)
    let o = try attention(query: q, key: k, value: v, graph: graph, options: options)
    XCTAssertEqual(o.shape, shape.outputShape, file: file, line: line)
    let reference = DenseReference.attention(query: q, key: k, value: v, shape: shape, mask: mask,
                                             scale: options.scale.map(Double.init))
    // Large logits: allow two fp32 ulps of the largest logit when that exceeds the stated tolerance.
    let bound = inputScale == 1 ? tolerance : max(tolerance, 2 * 0x1p-23 * reference.maxAbsLogit)
    DenseReference.assertClose(o, reference, valueDim: shape.valueDim, tolerance: bound, emptyIsNaN: options.emptyRows == .nan,
                               "\(mask) q\(query) k\(key) v\(value)", file: file, line: line)
  }

  func testEveryKindAtManyLengths() throws {
    for l in [1, 2, 5, 33, 64, 65, 129] {
      for mask in GraphTests.masks(tokens: l) {
        let d = [1, 3, 8, 17][l % 4]
        try run(mask, query: [2, l, d], key: [2, l, d], value: [2, l, d])
      }
    }
  }

  func testHeadDimensions() throws {
    let mask = MaskCase.window(9) + .global([0, 99])
    for d in [1, 3, 64, 96, 128, 256] {
      try run(mask, query: [100, d], key: [100, d], value: [100, d])
    }
  }

  /// Row degrees that are exact multiples of the kernel's key block (`GA_KEY_BLOCK`, 32 keys: where the paper's
  /// kernels drop a chunk), and windows and dilated spans much longer than a block.
  func testDegreesAtChunkMultiplesAndLongSpans() throws {
    for mask in [MaskCase.causalWindow(31), .causalWindow(63), .causalWindow(127), .window(32), .blocked(128, 0), .blocked(256, 1), .full,
                 .dilated(100, 2), .dilated(64, 1), .window(300)] {
      try run(mask, query: [300, 16], key: [300, 16], value: [300, 16])
    }
  }

  func testLayoutsGroupedQueriesAndValueWidths() throws {
    let mask = MaskCase.window(5) + .random(0.1, seed: 4)
    try run(mask, query: [40, 8], key: [40, 8], value: [40, 8])
    try run(mask, query: [3, 40, 8], key: [3, 40, 8], value: [3, 40, 8])
    try run(mask, query: [2, 3, 40, 8], key: [2, 3, 40, 8], value: [2, 3, 40, 8])
    try run(mask, query: [2, 4, 40, 8], key: [2, 2, 40, 8], value: [2, 2, 40, 8])   // GQA
    try run(mask, query: [2, 4, 40, 8], key: [2, 1, 40, 8], value: [2, 1, 40, 8])   // MQA
    try run(mask, query: [4, 40, 16], key: [2, 40, 16], value: [2, 40, 5])          // d_v != d_k
    try run(mask, query: [40, 3], key: [40, 3], value: [40, 70])
  }

  func testCrossAttentionWithExplicitAndFullGraphs() throws {
    // 30 queries, 50 keys; rows 25..29 empty.
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
    let explicit = try ExplicitGraph(rows: rows, columns: columns)
    let q = Inputs.tensor([2, 30, 8], seed: 5), k = Inputs.tensor([2, 50, 8], seed: 6), v = Inputs.tensor([2, 50, 4], seed: 7)
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    for emptyRows in EmptyRowPolicy.allCases {
      let o = try attention(query: q, key: k, value: v, graph: .explicit(explicit), options: AttentionOptions(emptyRows: emptyRows))
      let reference = DenseReference.attention(query: q, key: k, value: v, shape: shape, mask: .pairs(pairs))
      DenseReference.assertClose(o, reference, valueDim: 4, emptyIsNaN: emptyRows == .nan, "cross-attention coo \(emptyRows)")
    }
    try run(.full, query: [30, 8], key: [50, 8], value: [50, 4])
    try run(.random(0.2, seed: 3), query: [30, 8], key: [50, 8], value: [50, 4])
  }

  /// Inputs x30 give logits of several hundred: a softmax without the running maximum overflows.
  /// The tolerance is 1e-4 there (or two fp32 ulps of the largest logit, if larger), not 1e-5, because
  /// rounding the fp32 score itself (ulp(300) = 3e-5) already moves the weights by more than 1e-5: NumPy's
  /// float32 attention on such inputs is off by 2.6e-5 against float64. Ordinary logits are held to 1e-5.
  func testLargeLogitsEmptyRowsAndScale() throws {
    try run(.window(7) + .global([0]), query: [2, 80, 32], key: [2, 80, 32], value: [2, 80, 32], inputScale: 30, tolerance: 1e-4)
    try run(.full, query: [64, 64], key: [64, 64], value: [64, 64], inputScale: 30, tolerance: 1e-4)
    try run(.window(7) + .global([0]), query: [2, 80, 32], key: [2, 80, 32], value: [2, 80, 32], inputScale: 3)
    try run(.blocked(8, 1), query: [50, 8], key: [50, 8], value: [50, 8], options: AttentionOptions(emptyRows: .nan))
    try run(.blocked(8, 1), query: [50, 8], key: [50, 8], value: [50, 8], options: AttentionOptions(emptyRows: .zero))
    try run(.window(4), query: [50, 8], key: [50, 8], value: [50, 8], options: AttentionOptions(scale: 0.77))
    try run(.window(4), query: [50, 8], key: [50, 8], value: [50, 8], options: AttentionOptions(scale: -2))
  }

  func testResultDoesNotDependOnThreadCount() throws {
    let q = Inputs.tensor([3, 500, 24], seed: 1), k = Inputs.tensor([3, 500, 24], seed: 2), v = Inputs.tensor([3, 500, 24], seed: 3)
    let graph = try Graph(parsing: "window:20+global:0,499+random:0.01:5")
    let one = try attention(query: q, key: k, value: v, graph: graph, options: AttentionOptions(threads: 1))
    let many = try attention(query: q, key: k, value: v, graph: graph, options: AttentionOptions(threads: 7))
    XCTAssertEqual(one, many)
  }

  func testBadInputsAreErrorsNotTraps() throws {
    let q = Inputs.tensor([2, 10, 4], seed: 1), k = Inputs.tensor([2, 10, 4], seed: 2), v = Inputs.tensor([2, 10, 4], seed: 3)
    let window = try Graph.window(2)
    func expect(_ kind: GraphAttentionError.Kind, _ words: String, _ body: () throws -> Void, line: UInt = #line) {
      XCTAssertThrowsError(try body(), line: line) { error in
        XCTAssertEqual((error as? GraphAttentionError)?.kind, kind, "\(error)", line: line)
        XCTAssertTrue("\(error)".contains(words), "'\(error)' should mention '\(words)'", line: line)
      }
    }
    var nan = q
    nan.scalars[2 * 4 + 3] = .nan
    expect(.value, "query[0, 2, 3] is nan") { _ = try attention(query: nan, key: k, value: v, graph: window) }
    var inf = v
    inf.scalars[inf.scalars.count - 1] = -.infinity
    expect(.value, "value[1, 9, 3] is -inf") { _ = try attention(query: q, key: k, value: inf, graph: window) }
    expect(.shape, "ranks") { _ = try attention(query: Tensor(shape: [10, 4], repeating: 0.5), key: k, value: v, graph: window) }
    expect(.shape, "head dimension") { _ = try attention(query: Inputs.tensor([2, 10, 5], seed: 1), key: k, value: v, graph: window) }
    expect(.shape, "not a multiple") { _ = try attention(query: Inputs.tensor([3, 10, 4], seed: 1), key: k, value: v, graph: window) }
    expect(.shape, "tokens but value") { _ = try attention(query: q, key: k, value: Inputs.tensor([2, 11, 4], seed: 1), graph: window) }
    expect(.shape, "self-attention") { _ = try attention(query: Inputs.tensor([2, 9, 4], seed: 1), key: k, value: v, graph: window) }
    expect(.shape, "rank") { _ = try attention(query: Tensor(shape: [4], repeating: 0.5), key: k, value: v, graph: window) }
    expect(.shape, "empty dimension") { _ = try attention(query: Tensor(shape: [2, 0, 4], repeating: 0.5), key: k, value: v, graph: window) }
    expect(.option, "thread") { _ = try attention(query: q, key: k, value: v, graph: window, options: AttentionOptions(threads: 0)) }
    expect(.option, "scale") { _ = try attention(query: q, key: k, value: v, graph: window, options: AttentionOptions(scale: .infinity)) }
    expect(.mask, "global token 10") { _ = try attention(query: q, key: k, value: v, graph: try .global([10])) }
  }
}

/// The two CPU kernels, the tiling and the work counter.
final class KernelTests: XCTestCase {
  /// The portable kernel against the reference, on the same combinatorial masks as the dispatched one.
  func testPortableKernelAgreesWithTheReference() throws {
    for l in [5, 64, 129] {
      for mask in GraphTests.masks(tokens: l) {
        let d = [3, 8, 17][l % 3]
        let q = Inputs.tensor([2, l, d], seed: 41), k = Inputs.tensor([2, l, d], seed: 42), v = Inputs.tensor([2, l, d], seed: 43)
        let o = try attention(query: q, key: k, value: v, graph: try Graph(parsing: mask.spec),
                              options: AttentionOptions(kernel: .portable))
        let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
        DenseReference.assertClose(o, DenseReference.attention(query: q, key: k, value: v, shape: shape, mask: mask),
                                   valueDim: d, "portable \(mask) L=\(l)")
      }
    }
  }

  /// BigBird rows (a shared window plus scattered random keys) are tiled in two passes: the windows of
  /// 16 rows together, then each row's scattered keys alone, carried in one softmax state.
  func testSharedAndScatteredKeysOfARowCombine() throws {
    let l = 1500
    let mask = MaskCase.window(40) + .global([0, 1]) + .random(0.004, seed: 9)
    let q = Inputs.tensor([2, l, 8], seed: 51), k = Inputs.tensor([1, l, 8], seed: 52), v = Inputs.tensor([1, l, 5], seed: 53)
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let reference = DenseReference.attention(query: q, key: k, value: v, shape: shape, mask: mask)
    for kernel in [CPUKernel.automatic] + CPUKernel.supported {
      let o = try attention(query: q, key: k, value: v, graph: try Graph(parsing: mask.spec), options: AttentionOptions(kernel: kernel))
      DenseReference.assertClose(o, reference, valueDim: 5, "bigbird \(kernel)")
    }
    var state = try AttentionState(query: q, value: v)
    try state.accumulate(query: q, key: k, value: v, graph: try Graph(parsing: mask.spec))
    DenseReference.assertClose(state.output(), reference, valueDim: 5, "bigbird through the state")
  }

  /// Implicit graphs compute at most 3% more scores than they have edges, plus a few per group of short rows,
  /// plus, on the kernels with a tile's 16 rows in vector lanes, the lanes a tile's rows do not use at the two
  /// ends of their shared key range (at most 16 x 16 per tile of 16 rows).
  func testScoresComputedStayWithinThreePercentOfEdgesPlusUnusedLanes() throws {
    let l = 4096
    for spec in ["window:256", "window:256:causal", "blocked:256:0", "blocked:512:1", "dilated:128:1", "causal",
                 "window:128+global:0,4095"] {
      let graph = try Graph(parsing: spec)
      let q = Inputs.tensor([l, 8], seed: 1), k = Inputs.tensor([l, 8], seed: 2), v = Inputs.tensor([l, 8], seed: 3)
      let output = MutableTensorView(allocating: [l, 8], type: .float32)
      let work = try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: output, graph: graph)
      let o = Tensor(output.readOnly)
      let scores = work.scoresComputed
      let edges = graph.edgeCount(queryCount: l, keyCount: l)
      XCTAssertEqual(work.edges, edges, spec)
      XCTAssertNil(work.kernelSeconds, "no GPU time on the CPU")
      let idle = try XCTUnwrap(work.idleThreadFraction, "a CPU call measures its threads' idle share")
      XCTAssertTrue((0...1).contains(idle), "\(spec): idle share \(idle)")
      XCTAssertEqual(o, try attention(query: q, key: k, value: v, graph: graph), "the core entry and the tensor form compute the same output")
      XCTAssertGreaterThanOrEqual(scores, edges, spec)
      let unusedLanes = CPUKernel.widest == .portable ? 0 : l / 16 * 16 * 16
      XCTAssertLessThanOrEqual(Double(scores), Double(edges) * 1.03 + Double(l / 4 * 8 + unusedLanes),
                               "\(spec): \(scores) scores for \(edges) edges")
    }
  }
}
