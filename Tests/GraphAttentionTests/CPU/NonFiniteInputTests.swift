@testable import GraphAttention
import XCTest

/// Unchecked non-finite inputs (`checksFiniteInputs: false`): a NaN or infinity reaches exactly the rows
/// whose edges touch it, as the float64 formula (and SDPA with a boolean mask) gives, on every kernel
/// this CPU runs, forward and backward. Rows the element does not reach must equal the finite reference;
/// reached elements must be NaN exactly where the reference is NaN.
final class NonFiniteInputTests: XCTestCase {
  private static let masks: [MaskCase] = [
    .causal, .window(3), .causalWindow(4), .window(3) + .global([0]), .dilated(2, 1), .blocked(5, 1),
    .documents([0, 7, 7, 20, 33]) & .causal, .full,
  ]

  /// Where the non-finite element goes: (tensor, head of that tensor, row, column, value).
  private struct Poison: CustomStringConvertible {
    var tensor: String
    var head: Int
    var row: Int
    var column: Int
    var value: Float
    var description: String { "\(tensor)[\(head), \(row), \(column)] = \(value)" }
  }

  private static let poisons: [Poison] = [
    Poison(tensor: "query", head: 1, row: 5, column: 2, value: .nan),
    Poison(tensor: "key", head: 0, row: 3, column: 0, value: .nan),
    Poison(tensor: "value", head: 0, row: 3, column: 4, value: .nan),
    Poison(tensor: "value", head: 0, row: 30, column: 1, value: .infinity),
    Poison(tensor: "key", head: 0, row: 12, column: 5, value: -.infinity),
    Poison(tensor: "gradOutput", head: 0, row: 9, column: 3, value: .nan),
  ]

  private func inputs(_ poison: Poison, shape: AttentionShape, seed: UInt64) -> (Tensor, Tensor, Tensor, Tensor) {
    let (b, h, hk, l, d, dv) = (shape.batch, shape.queryHeads, shape.keyValueHeads, shape.queryCount, shape.keyDim, shape.valueDim)
    var q = Inputs.tensor([b, h, l, d], seed: seed)
    var k = Inputs.tensor([b, hk, l, d], seed: seed + 1)
    var v = Inputs.tensor([b, hk, l, dv], seed: seed + 2)
    var dO = Inputs.tensor([b, h, l, dv], seed: seed + 3)
    switch poison.tensor {
    case "query": q.scalars[(poison.head * l + poison.row) * d + poison.column] = poison.value
    case "key": k.scalars[(poison.head * l + poison.row) * d + poison.column] = poison.value
    case "value": v.scalars[(poison.head * l + poison.row) * dv + poison.column] = poison.value
    default: dO.scalars[(poison.head * l + poison.row) * dv + poison.column] = poison.value
    }
    return (q, k, v, dO)
  }

  /// Element-wise: NaN exactly where the reference is NaN, the same infinity where it is infinite, else
  /// within `tolerance` of the row's `magnitude`.
  private func assertMatches(_ computed: [Float], _ reference: [Double], magnitude: [Double], width: Int,
                             tolerance: Double, _ context: String, file: StaticString = #filePath, line: UInt = #line) {
    for (e, expected) in reference.enumerated() {
      let x = Double(computed[e])
      let ok: Bool
      if expected.isNaN {
        ok = x.isNaN
      } else if expected.isInfinite {
        ok = x == expected
      } else {
        let size = magnitude[e / width].isFinite ? max(magnitude[e / width], 1e-30) : 1
        ok = abs(x - expected) <= tolerance * max(size, abs(expected))
      }
      if !ok {
        XCTFail("\(context): element \(e) (row \(e / width)) is \(x), reference \(expected)", file: file, line: line)
        return
      }
    }
  }

  func testNonFiniteInputsReachExactlyTheRowsWhoseEdgesTouchThem() throws {
    let shape = try AttentionShape(query: [1, 2, 33, 6], key: [1, 1, 33, 6], value: [1, 1, 33, 5])
    var seed: UInt64 = 9100
    var partlyReached = 0  // cases where some rows are reached and others not: what the test is about
    for mask in NonFiniteInputTests.masks {
      for poison in NonFiniteInputTests.poisons {
        seed += 4
        let (q, k, v, dO) = inputs(poison, shape: shape, seed: seed)
        let reference = GradientReference.gradients(query: q, key: k, value: v, gradOutput: dO, shape: shape, mask: mask)
        let reached = reference.gradQuery.contains { !$0.isFinite }
        if reached && reference.gradQuery.contains(where: \.isFinite) { partlyReached += 1 }
        for kernel in CPUKernel.supported {
          let options = AttentionOptions(checksFiniteInputs: false, kernel: kernel)
          let run = try GradientTests.gradients(q: q, k: k, v: v, dO: dO, graph: Graph(parsing: mask.spec), options: options)
          let o = try attention(query: q, key: k, value: v, graph: Graph(parsing: mask.spec), options: options)
          let context = "\(mask) \(poison) kernel \(kernel)"
          assertMatches(o.scalars, reference.output, magnitude: reference.outputMagnitude, width: shape.valueDim,
                        tolerance: 1e-5, "O \(context)")
          assertMatches(run.gradQuery, reference.gradQuery, magnitude: reference.queryMagnitude, width: shape.keyDim,
                        tolerance: 1e-5, "dQ \(context)")
          assertMatches(run.gradKey, reference.gradKey, magnitude: reference.keyMagnitude, width: shape.keyDim,
                        tolerance: 1e-5, "dK \(context)")
          assertMatches(run.gradValue, reference.gradValue, magnitude: reference.valueMagnitude, width: shape.valueDim,
                        tolerance: 1e-5, "dV \(context)")
        }
      }
    }
    XCTAssertGreaterThanOrEqual(partlyReached, NonFiniteInputTests.masks.count * 3)
  }

  /// The same on the view form with fp16 keys and values, an fp16 output, score modifiers, and only some rows.
  func testNonFiniteInputsWithModifiersNarrowTypesAndRowRanges() throws {
    let (l, d) = (40, 8)
    var q = Inputs.tensor([2, l, d], seed: 9300)
    var k = Inputs.tensor([1, l, d], seed: 9301)
    let v = Inputs.tensor([1, l, d], seed: 9302)
    k.scalars = k.scalars.map { TensorView.rounded($0, to: .float16) }
    q.scalars[(1 * l + 20) * d + 1] = .nan
    k.scalars[7 * d + 3] = .nan
    let vHalf = MutableTensorView(allocating: v.shape, type: .float16)
    var vWithNaN = v
    vWithNaN.scalars = v.scalars.map { TensorView.rounded($0, to: .float16) }
    vWithNaN.scalars[30 * d + 2] = .nan
    vWithNaN.scalars.withUnsafeBufferPointer { vHalf.store($0, at: 0) }
    let kHalf = MutableTensorView(allocating: k.shape, type: .float16)
    k.scalars.withUnsafeBufferPointer { kHalf.store($0, at: 0) }
    let graph = try Graph(parsing: "window:4+global:0")
    let mask = MaskCase.window(4) + .global([0])
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let reference = GradientReference.gradients(query: q, key: k, value: vWithNaN, gradOutput: Inputs.tensor([2, l, d], seed: 1),
                                                shape: shape, mask: mask,
                                                modifiers: .init(softcap: 5, slopes: [0.25, 0.5], sinks: [0.3, -0.2]))
    for kernel in CPUKernel.supported {
      let output = MutableTensorView(allocating: shape.outputShape, type: .float16)
      output.base.assumingMemoryBound(to: UInt16.self).update(repeating: 0x7E00, count: output.count)  // NaN
      let options = AttentionOptions(checksFiniteInputs: false, kernel: kernel, softcap: 5, alibi: .slopes([0.25, 0.5]),
                                     sinks: [0.3, -0.2])
      try attention(query: TensorView(q), key: kHalf.readOnly, value: vHalf.readOnly, output: output, graph: graph,
                    options: options, rows: 10..<35)
      var computed = [Float](repeating: 0, count: output.count)
      for e in 0..<output.count { computed[e] = output.element(e) }
      for head in 0..<2 {
        for row in 10..<35 {
          let first = (head * l + row) * d
          let expected = reference.output[first..<first + d].map { $0.isFinite ? Double(TensorView.rounded(Float($0), to: .float16)) : $0 }
          assertMatches(Array(computed[first..<first + d]), expected, magnitude: [reference.outputMagnitude[head * l + row]],
                        width: d, tolerance: 2e-3, "head \(head) row \(row) kernel \(kernel)")
        }
        // Rows outside the range are left as they were.
        XCTAssertTrue(computed[(head * l + 5) * d].isNaN && computed[(head * l + 36) * d].isNaN)
      }
    }
  }

  /// Checked inputs still fail before any work, naming the element.
  func testCheckedInputsStillRefuseNonFiniteValues() throws {
    var q = Inputs.tensor([1, 8, 4], seed: 9400)
    q.scalars[13] = .nan
    XCTAssertThrowsError(try attention(query: q, key: q, value: q, graph: Graph(parsing: "causal"))) { error in
      XCTAssertEqual((error as? GraphAttentionError)?.kind, .value)
      XCTAssertTrue("\(error)".contains("query[0, 3, 1] is nan"), "\(error)")
    }
  }
}
