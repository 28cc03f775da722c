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
}
