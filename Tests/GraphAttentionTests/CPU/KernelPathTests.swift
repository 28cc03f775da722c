import GraphAttention
import XCTest

/// Every CPU kernel this machine runs (portable, AVX2, AVX-512), forced one at a time, against the float64
/// reference and against each other. The whole suite also runs once per path with `GRAPH_ATTENTION_KERNEL`
/// (see .ci/run); these tests cover the paths in one run and check that they agree.
final class KernelPathTests: XCTestCase {
  /// The largest difference between two outputs, relative to the largest magnitude of `b` (at least 1e-3,
  /// so a near-zero output does not make the ratio meaningless). NaN where one is NaN and the other not.
  private func relativeDifference(_ a: Tensor, _ b: Tensor) -> Double {
    var worst = 0.0, scale = 1e-3
    for y in b.scalars where y.isFinite { scale = max(scale, Double(abs(y))) }
    for (x, y) in zip(a.scalars, b.scalars) {
      if x.isNaN != y.isNaN { return .nan }
      if x.isNaN { continue }
      worst = max(worst, Double(abs(x - y)))
    }
    return worst / scale
  }

  private func check(_ mask: MaskCase, tokens l: Int, keyDim d: Int, valueDim dv: Int, heads: Int = 1, seed: UInt64,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let q = Inputs.tensor([heads, l, d], seed: seed), k = Inputs.tensor([heads, l, d], seed: seed + 1)
    let v = Inputs.tensor([heads, l, dv], seed: seed + 2)
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let reference = DenseReference.attention(query: q, key: k, value: v, shape: shape, mask: mask)
    let graph = try Graph(parsing: mask.spec)
    let baseline = try attention(query: q, key: k, value: v, graph: graph, options: AttentionOptions(kernel: .portable))
    for kernel in CPUKernel.supported {
      let o = try attention(query: q, key: k, value: v, graph: graph, options: AttentionOptions(kernel: kernel))
      DenseReference.assertClose(o, reference, valueDim: dv, "\(kernel) \(mask) L=\(l) d=\(d) dv=\(dv)", file: file, line: line)
      let difference = relativeDifference(o, baseline)
      XCTAssertLessThanOrEqual(difference, 1e-6, "\(kernel) against portable: \(mask) L=\(l) d=\(d) dv=\(dv)", file: file, line: line)
    }
  }

  /// Every combinatorial mask at lengths around the packed kernel's 16-key columns and 64-key blocks, with
  /// head dimensions that are and are not multiples of 16.
  func testEveryPathOnEveryMask() throws {
    var seed: UInt64 = 7000
    for l in [1, 5, 17, 64, 130] {
      for mask in GraphTests.masks(tokens: l) {
        seed += 3
        let (d, dv) = [(1, 1), (3, 17), (16, 16), (17, 33), (64, 70)][Int(seed / 3) % 5]
        try check(mask, tokens: l, keyDim: d, valueDim: dv, seed: seed)
      }
    }
  }

  /// Long windows, causal windows, blocked and dilated graphs: tiles of 16 rows over many 64-key softmax
  /// blocks, at common head dimensions.
  func testEveryPathOnLongRunsAcrossPackedChunks() throws {
    var seed: UInt64 = 8000
    let dims = [(64, 64), (128, 128), (96, 40)]
    for (i, (mask, l)) in [(MaskCase.window(300), 450), (.causalWindow(300), 450), (.blocked(256, 0), 512), (.blocked(128, 1), 512),
                           (.dilated(200, 1), 450), (.window(40) + .global([0, 5]) + .random(0.01, seed: 2), 400), (.causal, 400),
                           (.window(100), 333)].enumerated() {
      seed += 3
      try check(mask, tokens: l, keyDim: dims[i % 3].0, valueDim: dims[i % 3].1, seed: seed)
    }
  }

  /// Global columns under a window (Longformer) run as one tile per 16 rows, the shared keys first and each row a
  /// span after them: one global column and several, runs of them with gaps, globals the window of the first rows
  /// covers, causal and dilated windows, globals above the window (two tiles, as before), ALiBi and softcap (which
  /// read the shared keys' positions), at head dimensions that are and are not multiples of 16.
  func testEveryPathOnGlobalColumnsSharedByWindowTiles() throws {
    var seed: UInt64 = 8300
    let cases: [(MaskCase, Int, Int, Int)] = [
      (.window(64) + .global([0, 1, 2, 3]), 600, 64, 64),
      (.window(100) + .global([0]), 517, 128, 128),
      (.window(30) + .global([0, 1, 7, 8, 9]), 300, 17, 33),
      (.causalWindow(80) + .global([2, 3]), 400, 40, 24),
      (.dilated(50, 1) + .global([0, 1]), 450, 64, 64),
      (.window(40) + .global([299]), 300, 16, 16),
      (.window(300) + .global([0, 1]), 333, 64, 64),
    ]
    for (mask, l, d, dv) in cases {
      seed += 3
      try check(mask, tokens: l, keyDim: d, valueDim: dv, seed: seed)
    }
    // Score modifiers read each shared key's position from the tile's key list.
    let l = 500, d = 32
    let graph = try Graph(parsing: "window:48+global:0,1,2")
    let q = Inputs.tensor([1, l, d], seed: 8390), k = Inputs.tensor([1, l, d], seed: 8391), v = Inputs.tensor([1, l, d], seed: 8392)
    let baseline = try attention(query: q, key: k, value: v, graph: graph,
                                 options: AttentionOptions(kernel: .portable, softcap: 5, alibi: .slopes([0.03])))
    for kernel in CPUKernel.supported {
      let o = try attention(query: q, key: k, value: v, graph: graph,
                            options: AttentionOptions(kernel: kernel, softcap: 5, alibi: .slopes([0.03])))
      XCTAssertLessThanOrEqual(relativeDifference(o, baseline), 1e-6, "\(kernel) with softcap and ALiBi against portable")
    }
  }

  /// fp16 and bf16 keys and values (widened while packing) on every path, against the reference of the
  /// rounded values.
  func testEveryPathWithNarrowKeysAndValues() throws {
    let l = 400, d = 40, dv = 24
    let graph = try Graph(parsing: "window:90+global:0")
    let mask = MaskCase.window(90) + .global([0])
    for type in [StorageType.float16, .bfloat16] {
      let q = Inputs.tensor([2, l, d], seed: 91), k = Inputs.tensor([2, l, d], seed: 92), v = Inputs.tensor([2, l, dv], seed: 93)
      let narrowK = MutableTensorView(allocating: k.shape, type: type), narrowV = MutableTensorView(allocating: v.shape, type: type)
      for i in k.scalars.indices { narrowK.setElement(i, k.scalars[i]) }
      for i in v.scalars.indices { narrowV.setElement(i, v.scalars[i]) }
      let roundedK = Tensor(narrowK.readOnly), roundedV = Tensor(narrowV.readOnly)
      let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
      let reference = DenseReference.attention(query: q, key: roundedK, value: roundedV, shape: shape, mask: mask)
      var outputs: [Tensor] = []
      for kernel in CPUKernel.supported {
        let out = MutableTensorView(allocating: [2, l, dv], type: .float32)
        for i in 0..<out.count { out.setElement(i, .nan) }
        _ = try attention(query: TensorView(q), key: narrowK.readOnly, value: narrowV.readOnly, output: out, graph: graph,
                          options: AttentionOptions(kernel: kernel))
        let o = Tensor(out.readOnly)
        DenseReference.assertClose(o, reference, valueDim: dv, "\(kernel) \(type)")
        outputs.append(o)
      }
      for (kernel, o) in zip(CPUKernel.supported, outputs) {
        XCTAssertLessThanOrEqual(relativeDifference(o, outputs[0]), 1e-6, "\(kernel) \(type) against portable")
      }
    }
  }

  /// Stored patterns (CSR, COO) are gathered by key blocks (`ga_gather_rows`): rows of hundreds of scattered keys
  /// over several blocks of keys and several items, empty rows, duplicate and unsorted entries, missing last rows, head dimensions that
  /// are and are not multiples of 16, on every path against the float64 reference, outputs poisoned first.
  func testEveryPathOnStoredPatternsGatheredByKeyBlocks() throws {
    var seed: UInt64 = 8500
    for (l, density, d, dv) in [(2200, 0.05, 64, 64), (1600, 0.2, 128, 128), (1300, 0.08, 17, 33), (700, 0.5, 16, 8), (1, 1.0, 8, 8)] {
      seed += 5
      var rows: [Int64] = [], columns: [Int64] = [], pairs: [(Int, Int)] = []
      var state = seed
      // Every 13th row empty, and the last quarter: the COO pattern then ends before the queries do (its missing
      // rows are empty), and at L = 700 whole work items lie past its last row.
      for i in 0..<(l - l / 4) where i % 13 != 5 || l == 1 {
        for j in 0..<l {
          state = state &* 6364136223846793005 &+ 1442695040888963407
          guard Double(state >> 11) * 0x1p-53 < density else { continue }
          pairs.append((i, j))
          rows.append(Int64(i)); columns.append(Int64(j))
          if j % 7 == 0 { rows.append(Int64(i)); columns.append(Int64(j)) }  // a duplicate, merged
        }
      }
      // COO in reverse order: the pattern sorts each row once when it is built.
      let graph = Graph.explicit(try ExplicitGraph(rows: rows.reversed(), columns: columns.reversed(), columnCount: l))
      let q = Inputs.tensor([2, l, d], seed: seed), k = Inputs.tensor([2, l, d], seed: seed + 1)
      let v = Inputs.tensor([2, l, dv], seed: seed + 2)
      let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
      let reference = DenseReference.attention(query: q, key: k, value: v, shape: shape, mask: .pairs(pairs))
      var outputs: [Tensor] = []
      for kernel in CPUKernel.supported {
        let out = MutableTensorView(allocating: shape.outputShape, type: .float32)
        for i in 0..<out.count { out.setElement(i, .nan) }
        try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: out, graph: graph,
                      options: AttentionOptions(kernel: kernel))
        let o = Tensor(out.readOnly)
        DenseReference.assertClose(o, reference, valueDim: dv, "stored pattern \(kernel) L=\(l) p=\(density) d=\(d) dv=\(dv)")
        outputs.append(o)
      }
      // Rows of hundreds of random terms average to outputs ~30x smaller than their terms, so paths are compared as
      // the reference is, relative to each row's terms (sum_j p_j |v_j|): the gathered AVX-512 kernel lands closer to
      // float64 than the portable one (1.6e-7 against 2.5e-7 at L = 3000, d = 64), but 1.1e-6 apart relative to max |o|.
      for (kernel, o) in zip(CPUKernel.supported, outputs) {
        var worst = 0.0
        for (row, expected) in reference.rows.enumerated() where expected.degree > 0 {
          let scale = expected.magnitude.max() ?? 1
          for c in 0..<dv { worst = max(worst, Double(abs(o.scalars[row * dv + c] - outputs[0].scalars[row * dv + c])) / scale) }
        }
        XCTAssertLessThanOrEqual(worst, 1e-6, "stored pattern \(kernel) against portable, L=\(l)")
      }
    }
  }

  /// A gathered pattern with fp16 and bf16 keys and values, with softcap and ALiBi, with rows longer than a piece of
  /// the narrower kernels, and carried in a state, gives
  /// what the same edges give as an implicit random graph through the tiled path (itself checked against float64).
  func testGatheredPatternsAgreeWithTheTiledPathOnNarrowTypesModifiersAndStates() throws {
    let l = 2500, d = 64
    let random = try Graph(parsing: "random:0.06:5")
    let stored = Graph.explicit(try ExplicitGraph(materializing: random, queryCount: l, keyCount: l))
    let q = Inputs.tensor([2, l, d], seed: 61), k = Inputs.tensor([2, l, d], seed: 62), v = Inputs.tensor([2, l, d], seed: 63)
    for type in [StorageType.float32, .float16, .bfloat16] {
      let narrowK = MutableTensorView(allocating: k.shape, type: type), narrowV = MutableTensorView(allocating: v.shape, type: type)
      for i in k.scalars.indices { narrowK.setElement(i, k.scalars[i]) }
      for i in v.scalars.indices { narrowV.setElement(i, v.scalars[i]) }
      for kernel in CPUKernel.supported {
        let options = AttentionOptions(kernel: kernel, softcap: type == .float32 ? nil : 4, alibi: type == .bfloat16 ? .standard : nil)
        var results: [Tensor] = []
        for graph in [random, stored] {
          let out = MutableTensorView(allocating: [2, l, d], type: .float32)
          for i in 0..<out.count { out.setElement(i, .nan) }
          try attention(query: TensorView(q), key: narrowK.readOnly, value: narrowV.readOnly, output: out, graph: graph, options: options)
          results.append(Tensor(out.readOnly))
        }
        XCTAssertLessThanOrEqual(relativeDifference(results[1], results[0]), 1e-5, "\(type) \(kernel): gathered against tiled")
        XCTAssertFalse(results[1].scalars.contains { $0.isNaN }, "\(type) \(kernel): an output left unwritten")
      }
    }
    // Rows of more than `CPUExecutor.gatherPieceKeys` (4,096) keys, in a pattern sparse enough to be gathered row by
    // row (one key per row but three full rows), reach the narrower kernels in pieces. The same pattern in a union
    // with itself runs through the tiled path.
    let long = 4300
    var rows: [Int64] = [], columns: [Int64] = []
    for i in 0..<long {
      for j in ([10, 2000, 4000].contains(i) ? Array(0..<long) : [(i * 7) % long]) { rows.append(Int64(i)); columns.append(Int64(j)) }
    }
    let sparse = Graph.explicit(try ExplicitGraph(rows: rows, columns: columns, rowCount: long, columnCount: long))
    let lq = Inputs.tensor([1, long, 16], seed: 64), lk = Inputs.tensor([1, long, 16], seed: 65), lv = Inputs.tensor([1, long, 16], seed: 66)
    for kernel in CPUKernel.supported {
      let tiled = try attention(query: lq, key: lk, value: lv, graph: sparse + sparse, options: AttentionOptions(kernel: kernel))
      let gathered = try attention(query: lq, key: lk, value: lv, graph: sparse, options: AttentionOptions(kernel: kernel))
      XCTAssertLessThanOrEqual(relativeDifference(gathered, tiled), 1e-5, "\(kernel): rows of \(long) keys gathered row by row")
    }
    // Through a state: the stored pattern first (gathered into the state), then a window (tiled, minus the pattern).
    var state = try AttentionState(query: q, value: v)
    try state.accumulate(query: q, key: k, value: v, graph: stored)
    try state.accumulate(query: q, key: k, value: v, graph: try Graph(parsing: "window:3"))
    let union = try attention(query: q, key: k, value: v, graph: try Graph(parsing: "random:0.06:5+window:3"))
    XCTAssertLessThanOrEqual(relativeDifference(state.output(), union), 1e-5, "state: stored pattern then window")
  }

  /// A kernel this CPU does not run, or an unknown name, is an option error, not a crash.
  func testUnsupportedKernelsAreOptionErrors() throws {
    let q = Inputs.tensor([8, 4], seed: 1)
    for kernel in CPUKernel.allCases where !kernel.isSupported {
      XCTAssertThrowsError(try attention(query: q, key: q, value: q, graph: try Graph(parsing: "causal"),
                                         options: AttentionOptions(kernel: kernel))) { error in
        XCTAssertEqual((error as? GraphAttentionError)?.kind, .option)
      }
    }
    XCTAssertTrue(CPUKernel.supported.contains(.portable))
    XCTAssertTrue(CPUKernel.widest.isSupported)
  }

  /// `GRAPH_ATTENTION_KERNEL` steers `.automatic` only; an unknown name is an option error naming the variable.
  func testEnvironmentVariableChoosesTheAutomaticKernel() throws {
    let name = CPUKernel.environmentVariable
    let saved = getenv(name).map { String(cString: $0) }
    defer { if let saved { setenv(name, saved, 1) } else { unsetenv(name) } }
    setenv(name, "portable", 1)
    XCTAssertEqual(try CPUKernel.automatic.resolved(), .portable)
    XCTAssertEqual(try CPUKernel.widest.resolved(), CPUKernel.widest, "an explicit kernel ignores the variable")
    setenv(name, "fastest-please", 1)
    XCTAssertThrowsError(try CPUKernel.automatic.resolved()) { error in
      XCTAssertEqual((error as? GraphAttentionError)?.kind, .option)
      XCTAssertTrue("\(error)".contains(name), "\(error)")
    }
    unsetenv(name)
    XCTAssertEqual(try CPUKernel.automatic.resolved(), CPUKernel.widest)
  }

  /// `GRAPH_ATTENTION_MAX_KERNEL` lowers the widest kernel of a whole process (it is read once, so each
  /// cap runs in its own process): `.automatic` runs the cap, a wider `--kernel` is an option error that
  /// names the cap, and a name that is no kernel is refused.
  func testMaxKernelCapsEveryChoiceInAProcess() throws {
    let probe = ["verify", "--mask", "window:5+global:0", "--tokens", "70", "--dim", "19"]
    let order: [CPUKernel] = [.portable, .avx2, .avx512]
    for cap in order {
      let environment = [CPUKernel.capEnvironmentVariable: cap.rawValue, CPUKernel.environmentVariable: "automatic"]
      let run = try CommandLineRunner.run(probe, environment: environment)
      XCTAssertEqual(run.status, 0, run.stderr)
      // The child's cap replaces this process's: what the hardware runs decides, not `isSupported` here.
      let hardware = order.firstIndex(of: CPUKernel.detectedWidest)!
      let expected = order[min(hardware, order.firstIndex(of: cap)!)]
      XCTAssertTrue(run.stdout.hasPrefix("PASS") && run.stdout.contains("; \(expected.rawValue) kernel)"), "cap \(cap): \(run.stdout)")
      for wider in order.suffix(from: order.firstIndex(of: cap)! + 1) {
        let refused = try CommandLineRunner.run(probe + ["--kernel", wider.rawValue], environment: environment)
        XCTAssertEqual(refused.status, 1, "cap \(cap), --kernel \(wider): \(refused.stderr)")
        XCTAssertTrue(refused.stderr.contains("does not run on this CPU"), refused.stderr)
      }
    }
    let unknown = try CommandLineRunner.run(probe, environment: [CPUKernel.capEnvironmentVariable: "avx1024"])
    XCTAssertEqual(unknown.status, 1)
    XCTAssertTrue(unknown.stderr.contains(CPUKernel.capEnvironmentVariable), unknown.stderr)
  }
}
