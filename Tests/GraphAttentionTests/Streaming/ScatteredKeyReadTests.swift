import Foundation
@testable import GraphAttention
import XCTest

/// Far keys read from the files (`ScatteredKeyAccess.read`, read ahead or one `pread` each) must match the
/// float64 reference and the mapped path, count edges exactly, and turn read failures into errors.
final class ScatteredKeyReadTests: XCTestCase {
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws { directory = try StorageScratchDirectory() }
  override func tearDown() { directory.remove() }

  /// Writes `tensor` as a one-tensor safetensors file of `type` and opens it mapped.
  private func mapped(_ tensor: Tensor, type: StorageType, name: String) throws -> TensorView {
    let path = directory.path("\(name)-\(type).safetensors")
    let file = try TensorFile.create(path, shape: tensor.shape, type: type, name: name)
    tensor.scalars.withUnsafeBufferPointer { file.view.store($0, at: 0) }
    try file.commit()
    return try TensorFile.open(path, name: name)
  }

  private func run(_ q: TensorView, _ k: TensorView, _ v: TensorView, graph: Graph, access: ScatteredKeyAccess,
                   readAhead: Bool = true, rows: Range<Int>? = nil) throws -> (Tensor, AttentionWork) {
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let out = MutableTensorView(allocating: shape.outputShape, type: .float32)
    let poison = [Float](repeating: .nan, count: out.count)
    poison.withUnsafeBufferPointer { out.store($0, at: 0) }
    var streaming = StreamingKeys(access: access)
    if !readAhead { streaming.readAheadBytes = 0 }
    let work = try viewAttention(query: q, key: k, value: v, output: out, graph: graph, options: AttentionOptions(), rows: rows,
                                 streaming: streaming)
    return (Tensor(out.readOnly), work)
  }

  func testReadKeysEqualMappedKeysAndTheReference() throws {
    // Made per case: the random predicates memoise rows for one length.
    let masks: () -> [(String, MaskCase)] = { [
      ("window:3+global:0,17+random:0.05:3", .window(3) + .global([0, 17]) + .random(0.05, seed: 3)),
      ("random:0.2:1", .random(0.2, seed: 1)),
      // Dense random rows: over 256 keys (several gathered pieces) and long runs of consecutive keys.
      ("random:0.9:4", .random(0.9, seed: 4)),
      ("window:2:causal+random:0.3:5", .causalWindow(2) + .random(0.3, seed: 5)),
      ("dilated:2:1+random:0.02:6", .dilated(2, 1) + .random(0.02, seed: 6)),
      ("full", .full),
    ] }
    for (length, type) in [(1, StorageType.float32), (37, .float16), (300, .bfloat16), (300, .float32)] {
      for (spec, mask) in masks() where !(spec.contains("global:0,17") && length <= 17) {
        let graph = try Graph(parsing: spec)
        let q = Inputs.tensor([2, length, 8], seed: 11)
        let k = Inputs.tensor([1, length, 8], seed: 12)
        let v = Inputs.tensor([1, length, 5], seed: 13)
        let (kf, vf) = (try mapped(k, type: type, name: "k"), try mapped(v, type: type, name: "v"))
        let qv = TensorView(q)
        let (read, readWork) = try run(qv, kf, vf, graph: graph, access: .read)
        let (eachRead, _) = try run(qv, kf, vf, graph: graph, access: .read, readAhead: false)
        let (viaMap, mapWork) = try run(qv, kf, vf, graph: graph, access: .mapped)
        let context = "\(spec) L=\(length) \(type)"
        // Read ahead or one by one, the same rows and tiles: the same bytes. Against the mapping, far keys
        // are folded in their own tiles (another summation order), so only the reference decides.
        XCTAssertEqual(read.scalars.map(\.bitPattern), eachRead.scalars.map(\.bitPattern), "one pread per key, " + context)
        XCTAssertEqual(readWork.edges, mapWork.edges, context)
        XCTAssertGreaterThanOrEqual(readWork.scoresComputed, readWork.edges, context)
        XCTAssertEqual(readWork.edges, 2 * graph.edgeCount(queryCount: length, keyCount: length), context)
        let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
        let reference = DenseReference.attention(query: q, key: Tensor(kf), value: Tensor(vf), shape: shape, mask: mask)
        DenseReference.assertClose(read, reference, valueDim: 5, context)
        DenseReference.assertClose(viaMap, reference, valueDim: 5, "mapped, " + context)
      }
    }
  }

  /// Rows computed in chunks with far keys read ahead give the result of one call over every row with
  /// one `pread` per far key.
  func testChunkedRowsWithReadKeys() throws {
    let graph = try Graph(parsing: "window:4+global:1+random:0.03:9")
    let length = 500
    let q = TensorView(Inputs.tensor([1, length, 16], seed: 21))
    let k = try mapped(Inputs.tensor([1, length, 16], seed: 22), type: .float16, name: "k")
    let v = try mapped(Inputs.tensor([1, length, 16], seed: 23), type: .float16, name: "v")
    let (whole, _) = try run(q, k, v, graph: graph, access: .read, readAhead: false)
    let out = MutableTensorView(allocating: [1, length, 16], type: .float32)
    var edges = 0
    for start in stride(from: 0, to: length, by: 77) {
      edges += try viewAttention(query: q, key: k, value: v, output: out, graph: graph, options: AttentionOptions(),
                                 rows: start..<min(length, start + 77), streaming: StreamingKeys(access: .read)).edges
    }
    // Chunks change how rows group into tiles (the summation order), so agreement is to fp32 rounding.
    let chunked = Tensor(out.readOnly).scalars
    XCTAssertFalse(chunked.contains { $0.isNaN })
    let difference = zip(chunked, whole.scalars).map { abs($0 - $1) }.max() ?? .infinity
    XCTAssertLessThanOrEqual(difference, 1e-6)
    XCTAssertEqual(edges, graph.edgeCount(queryCount: length, keyCount: length))
  }

  /// A key file cut short after it was opened: the far rows cannot be read, and the call says so
  /// instead of computing with garbage or crashing.
  func testShortKeyFileIsAFileError() throws {
    let length = 64
    let k = try mapped(Inputs.tensor([1, length, 4], seed: 31), type: .float32, name: "k")
    let v = try mapped(Inputs.tensor([1, length, 4], seed: 32), type: .float32, name: "v")
    let q = TensorView(Inputs.tensor([1, length, 4], seed: 33))
    // Only the header and the first few rows remain; a random graph (no local reach) reads every key
    // with pread, so the mapping's missing pages are never touched.
    XCTAssertEqual(truncate(k.mappedFile!.path, off_t(k.base - UnsafeRawPointer(k.mappedFile!.base) + 4 * 16)), 0)
    // No read-ahead: it sweeps the mapping, and a cut mapping raises SIGBUS.
    let streaming = StreamingKeys(access: .read, readAheadBytes: 0)
    let out = MutableTensorView(allocating: [1, length, 4], type: .float32)
    XCTAssertThrowsError(try viewAttention(query: q, key: k, value: v, output: out, graph: try Graph(parsing: "random:0.5:2"),
                                           options: AttentionOptions(checksFiniteInputs: false), rows: nil,
                                           streaming: streaming)) { error in
      let error = error as? GraphAttentionError
      XCTAssertEqual(error?.kind, .file)
      XCTAssertTrue(error?.problem.contains("k-float32.safetensors") ?? false, "\(String(describing: error))")
    }
  }
}
