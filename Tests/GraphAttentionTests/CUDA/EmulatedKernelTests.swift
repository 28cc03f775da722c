@testable import GraphAttention
import XCTest

/// The CUDA kernels' results, run in the CPU warp emulator through the real host path, against the
/// float64 reference: every graph kind, unions, the paper's failure cases, empty rows, GQA, batches,
/// d_v != d_k, fp16/bf16 storage and composition through the carried state.
///
/// Skipped (with the reason) where no C++ compiler is found. What this cannot show is listed in
/// `KernelEmulator`: the GPU's code generation, timing and memory ordering are checked by
/// scripts/gpu_check.sh on a GPU.
final class EmulatedKernelTests: XCTestCase {
  override func setUpWithError() throws {
    MockCUDA.reset()
    switch KernelEmulator.launch {
    case let .success(launch): mockCUDA.emulator = launch
    case let .failure(reason): throw XCTSkip("kernel emulator unavailable: \(reason)")
    }
  }

  /// The tensor as the device stores it, read back as fp32 (the reference's input).
  private func stored(_ t: Tensor, _ storage: DeviceStorage) throws -> Tensor {
    let bytes = try DeviceStorage.encode(t, as: storage, name: "input")
    switch storage {
    case .float32: return t
    case .float16:
      let bits = bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
      return Tensor(shape: t.shape, scalars: bits.map { Float(Float16(bitPattern: $0)) })
    case .bfloat16:
      let bits = bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
      return Tensor(shape: t.shape, scalars: bits.map { DeviceStorage.float(bfloat16: $0) })
    }
  }

  /// Runs `graph` on the emulated GPU and checks every row against the float64 reference.
  private func check(_ graph: Graph, tokens: Int = 40, batch: Int = 1, heads: Int = 2, kvHeads: Int = 1,
                     keyDim: Int = 8, valueDim: Int = 5, storage: DeviceStorage = .float32,
                     emptyRows: EmptyRowPolicy = .zero, scale: Float? = nil, seed: UInt64 = 1,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let q = Tensor.random(shape: [batch, heads, tokens, keyDim], seed: seed)
    let k = Tensor.random(shape: [batch, kvHeads, tokens, keyDim], seed: seed + 1)
    let v = Tensor.random(shape: [batch, kvHeads, tokens, valueDim], seed: seed + 2)
    let options = AttentionOptions(scale: scale, emptyRows: emptyRows)
    let o = try cudaAttention(runtime: MockCUDA.runtime(), ordinal: 0, storage: storage, query: q, key: k, value: v,
                              graph: graph, options: options)
    try assertMatchesReference(o, graph: graph, q: stored(q, storage), k: stored(k, storage), v: stored(v, storage),
                               scale: scale, emptyRows: emptyRows, file: file, line: line)
  }

  private func assertMatchesReference(_ o: Tensor, graph: Graph, q: Tensor, k: Tensor, v: Tensor, scale: Float?,
                                      emptyRows: EmptyRowPolicy, file: StaticString, line: UInt) throws {
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
    XCTAssertLessThanOrEqual(worst, 1e-5, "\(graph): head \(worstAt.0) row \(worstAt.1)", file: file, line: line)
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
    for storage in [DeviceStorage.float16, .bfloat16] {
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
}
