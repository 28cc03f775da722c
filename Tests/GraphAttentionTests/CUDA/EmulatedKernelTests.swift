@testable import GraphAttention
import XCTest

/// The CUDA kernels' results, run in the CPU warp emulator through the real host path, against the
/// float64 reference: every graph kind, unions, the paper's failure cases, empty rows, GQA, batches,
/// d_v != d_k, fp16/bf16 storage and composition through the carried state.
///
/// Skipped (with the reason) only where no C++ compiler is found; a compiler that fails on the kernels
/// fails every test here, with its log. What this cannot show is listed in
/// `KernelEmulator`: the GPU's code generation, timing and memory ordering are checked by
/// scripts/gpu_check.sh on a GPU.
final class EmulatedKernelTests: XCTestCase {
  override func setUpWithError() throws {
    MockCUDA.reset()
    switch KernelEmulator.launch {
    case let .success(launch): mockCUDA.emulator = launch
    case let .failure(reason) where reason.noCompiler: throw XCTSkip("kernel emulator unavailable: \(reason)")
    case let .failure(reason): throw reason  // the kernels or the prelude do not compile: a failure, not a skip
    }
  }

  /// The tensor as the device stores it, read back as fp32 (the reference's input).
  private func stored(_ t: Tensor, _ storage: StorageType) throws -> Tensor {
    _ = try storage.encode(t, name: "input")  // throws where the device upload would
    return Tensor(shape: t.shape, scalars: t.scalars.map { TensorView.rounded($0, to: storage) })
  }

  /// Runs `graph` on the emulated GPU and checks every row against the float64 reference.
  private func check(_ graph: Graph, tokens: Int = 40, batch: Int = 1, heads: Int = 2, kvHeads: Int = 1,
                     keyDim: Int = 8, valueDim: Int = 5, storage: StorageType = .float32,
                     emptyRows: EmptyRowPolicy = .zero, scale: Float? = nil, seed: UInt64 = 1,
                     tensorCores: Bool = false, tolerance: Double = 1e-5,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let q = Tensor.random(shape: [batch, heads, tokens, keyDim], seed: seed)
    let k = Tensor.random(shape: [batch, kvHeads, tokens, keyDim], seed: seed + 1)
    let v = Tensor.random(shape: [batch, kvHeads, tokens, valueDim], seed: seed + 2)
    let options = AttentionOptions(scale: scale, emptyRows: emptyRows)
    let (o, work) = try cudaAttention(runtime: MockCUDA.runtime(), ordinal: 0, storage: storage, tensorCores: tensorCores,
                                      query: q, key: k, value: v, graph: graph, options: options)
    // The call reports its own work and kernel time (there is no process-wide "last call" state).
    XCTAssertEqual(work.edges, graph.edgeCount(queryCount: tokens, keyCount: tokens) * batch * heads, file: file, line: line)
    XCTAssertGreaterThanOrEqual(work.kernelSeconds ?? -1, 0, file: file, line: line)
    try assertMatchesReference(o, graph: graph, q: stored(q, storage), k: stored(k, storage), v: stored(v, storage),
                               scale: scale, emptyRows: emptyRows, tolerance: tolerance, file: file, line: line)
  }

  private func assertMatchesReference(_ o: Tensor, graph: Graph, q: Tensor, k: Tensor, v: Tensor, scale: Float?,
                                      emptyRows: EmptyRowPolicy, tolerance: Double = 1e-5,
                                      file: StaticString, line: UInt) throws {
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let s = Double(scale ?? 1 / Float(shape.keyDim).squareRoot())
    var worst = 0.0
    var worstAt = (0, 0)
    for head in 0..<(shape.batch * shape.queryHeads) {
      for row in 0..<shape.queryCount {
        let reference = ReferenceAttention.row(row, head: head, query: q, key: k, value: v, shape: shape, graph: graph, scale: s)
        let base = (head * shape.queryCount + row) * shape.valueDim
        let error = ReferenceAttention.relativeError(computed: o.scalars[base..<base + shape.valueDim], reference: reference,
                                                     expectNaN: emptyRows == .nan)
        if !(error <= worst) { worst = error; worstAt = (head, row) }
      }
    }
    XCTAssertLessThanOrEqual(worst, tolerance, "\(graph): head \(worstAt.0) row \(worstAt.1)", file: file, line: line)
  }

  func testEveryGraphKind() throws {
    for spec in ["full", "causal", "window:5", "window:5:causal", "dilated:3:2", "blocked:8:1", "blocked:7:0",
                 "global:0,17,39", "random:0.15:7", "random:1:3", "random:0:3", "window:0"] {
      try check(try Graph(parsing: spec))
    }
  }

  func testUnionsVisitSharedEdgesOnce() throws {
    for spec in ["window:3+global:0,39+random:0.1:3", "dilated:4:1+window:2", "blocked:16:0+causal",
                 "random:0.2:1+random:0.2:2+causal", "global:5+global:5,6+window:1:causal", "full+causal"] {
      try check(try Graph(parsing: spec))
    }
  }

  /// The paper's kernels drop a chunk when a degree is an exact multiple of the chunk size, and visit
  /// wrong keys when a dilated window spans several chunks; the warp's chunk is 32 keys.
  func testDegreesThatAreMultiplesOfTheChunkAndLongDilatedWindows() throws {
    try check(.full, tokens: 64)                                      // every degree 64 = 2 chunks
    try check(try .window(16), tokens: 64)                            // interior degree 33
    try check(try .blocked(block: 64, dilation: 1), tokens: 64)       // active degree 32
    try check(try .dilated(radius: 20, dilation: 1), tokens: 100, heads: 1)  // up to 41 keys, stride 2
  }

  func testExplicitGraphsWithEmptyRowsAndNaNPolicy() throws {
    // COO with empty trailing rows (rows 37..39 have no entries), and a CSR with empty middle rows.
    let rows: [Int64] = [0, 0, 3, 10, 36, 36, 36, 5]
    let cols: [Int64] = [1, 39, 3, 10, 0, 35, 36, 5]
    let coo = Graph.explicit(try ExplicitGraph(rows: rows, columns: cols, source: "coo:test"))
    try check(coo, emptyRows: .nan)
    try check(coo, emptyRows: .zero)
    var offsets: [Int64] = [0]
    var columns: [Int64] = []
    for r in 0..<40 {
      if r % 3 != 1 { for c in stride(from: r % 5, to: 40, by: 4) { columns.append(Int64(c)) } }
      offsets.append(Int64(columns.count))
    }
    let csr = Graph.explicit(try ExplicitGraph(rowOffsets: offsets, columns: columns, source: "csr:test"))
    try check(csr + .global([0]), emptyRows: .nan)
    // Global rows with no other edges, and blocked rows that are empty.
    try check(try .blocked(block: 6, dilation: 2), emptyRows: .nan)
  }

  func testBatchesGroupedQueryHeadsValueWidthsAndScale() throws {
    try check(try Graph(parsing: "window:4+global:0,29+random:0.1:5"), tokens: 30, batch: 2, heads: 4, kvHeads: 2,
              keyDim: 7, valueDim: 33, scale: 0.7)
    try check(try .window(3, causal: true), tokens: 20, batch: 1, heads: 3, kvHeads: 1, keyDim: 12, valueDim: 4)
  }

  func testHalfAndBFloat16Storage() throws {
    for storage in [StorageType.float16, .bfloat16] {
      try check(try Graph(parsing: "window:3+random:0.1:2"), storage: storage)
    }
  }

  func testStateCompositionEqualsTheUnion() throws {
    let q = Tensor.random(shape: [2, 36, 8], seed: 4)
    let k = Tensor.random(shape: [2, 36, 8], seed: 5)
    let v = Tensor.random(shape: [2, 36, 8], seed: 6)
    let parts = ["window:3", "global:0,35", "random:0.1:9", "causal"]
    var state = try AttentionState(query: q, value: v)
    for spec in parts {
      try state.cudaAccumulate(runtime: MockCUDA.runtime(), ordinal: 0, storage: .float32, query: q, key: k, value: v,
                               graph: try Graph(parsing: spec), options: AttentionOptions())
    }
    let union = try Graph(parsing: parts.joined(separator: "+"))
    try assertMatchesReference(state.output(), graph: union, q: q, k: k, v: v, scale: nil, emptyRows: .zero,
                               file: #filePath, line: #line)
    let cpu = try attention(query: q, key: k, value: v, graph: union)
    for (a, b) in zip(state.output().scalars, cpu.scalars) { XCTAssertEqual(a, b, accuracy: 2e-6) }
  }

  // MARK: - Tensor cores

  /// The tile kernel (mma.sync, P rounded to the storage type) on contiguous graphs, alone and handing
  /// its state to the row kernel for the rest of a union. Tolerances: the rounding of P, about 2^-9
  /// relative for bf16 and 2^-12 for fp16, on top of the inputs' own rounding (in the reference).
  func testTensorCoreTilesForContiguousGraphsAndTheirUnions() throws {
    for (storage, tolerance) in [(StorageType.bfloat16, 1e-2), (.float16, 2e-3)] {
      for spec in ["window:5", "causal", "window:9:causal", "blocked:16:0", "dilated:3:0", "full+window:2",
                   "window:4+global:0,39+random:0.1:5", "blocked:8:0+dilated:2:1+csr", "causal+random:0.2:4"] {
        var graph = try Graph(parsing: spec.replacingOccurrences(of: "+csr", with: ""))
        if spec.hasSuffix("+csr") {
          graph = graph + .explicit(try ExplicitGraph(rows: [3, 3, 39], columns: [0, 30, 2], rowCount: 40, source: "coo:t"))
        }
        MockCUDA.reset()
        mockCUDA.emulator = try KernelEmulator.launch.get()
        try check(graph, keyDim: 32, valueDim: 32, storage: storage, tensorCores: true, tolerance: tolerance)
        let type = storage == .float16 ? "f16" : "bf16"
        XCTAssertTrue(mockCUDA.functionNames.contains("ga_tile_\(type)_d32"), "\(spec): \(mockCUDA.functionNames)")
        XCTAssertEqual(mockCUDA.functionNames.contains("ga_rows_\(type)"), spec.contains("+") && !spec.hasPrefix("full"),
                       "\(spec): the row kernel runs only for non-contiguous components")
      }
    }
    // Empty rows with NaN, grouped-query heads, a batch, rows not a multiple of the 16-row tile.
    try check(try Graph(parsing: "window:3+global:7"), tokens: 37, batch: 2, heads: 4, kvHeads: 2, keyDim: 64, valueDim: 64,
              storage: .bfloat16, emptyRows: .nan, tensorCores: true, tolerance: 1e-2)
    try check(try .blocked(block: 16, dilation: 0) + .window(1), tokens: 21, keyDim: 32, valueDim: 32,
              storage: .float16, emptyRows: .nan, tensorCores: true, tolerance: 2e-3)
  }

  func testTensorCoreStateCompositionEqualsTheUnion() throws {
    let q = Tensor.random(shape: [1, 35, 32], seed: 7)
    let k = Tensor.random(shape: [1, 35, 32], seed: 8)
    let v = Tensor.random(shape: [1, 35, 32], seed: 9)
    let parts = ["global:3", "window:2", "causal+random:0.1:2"]
    var state = try AttentionState(query: q, value: v)
    for spec in parts {
      try state.cudaAccumulate(runtime: MockCUDA.runtime(), ordinal: 0, storage: .bfloat16, tensorCores: true, query: q,
                               key: k, value: v, graph: try Graph(parsing: spec), options: AttentionOptions())
    }
    XCTAssertTrue(mockCUDA.functionNames.contains("ga_tile_bf16_d32"))
    let union = try Graph(parsing: parts.joined(separator: "+"))
    try assertMatchesReference(state.output(), graph: union, q: stored(q, .bfloat16), k: stored(k, .bfloat16),
                               v: stored(v, .bfloat16), scale: nil, emptyRows: .zero, tolerance: 1e-2,
                               file: #filePath, line: #line)
  }
}
