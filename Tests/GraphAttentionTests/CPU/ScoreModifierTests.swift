@testable import GraphAttention
import Foundation
import XCTest

/// Softcap, ALiBi and sinks, forward (output and log-sum-exp) and backward (dQ, dK, dV, dsinks), on every
/// kernel this CPU runs, against the float64 reference built from the modifiers' formulas
/// (`GradientReference.Modifiers`) on fresh random inputs; outputs and gradients poisoned with NaN first.
final class ScoreModifierTests: XCTestCase {
  private var seed: UInt64 = 9000

  /// The test's own reading of ALiBi's standard slopes, `2^(-8 (h + 1) / H)`.
  private static func standardSlopes(_ heads: Int) -> [Double] {
    (0..<heads).map { Foundation.pow(2, -8 * Double($0 + 1) / Double(heads)) }
  }

  private func sinks(_ heads: Int) -> [Float] {
    seed += 1
    return Inputs.tensor([heads], seed: seed, scale: 2).scalars
  }

  /// Runs forward and backward with `options`' modifiers on every supported kernel and checks all results.
  @discardableResult
  private func check(_ mask: MaskCase, query: [Int], key: [Int], value: [Int], softcap: Float? = nil, alibi: ALiBi? = nil,
                     sinks: [Float]? = nil, inputScale: Float = 1, headMasks: [MaskCase]? = nil, emptyRows: EmptyRowPolicy = .zero,
                     file: StaticString = #filePath, line: UInt = #line) throws -> Double {
    seed += 4
    let q = Inputs.tensor(query, seed: seed, scale: inputScale), k = Inputs.tensor(key, seed: seed + 1, scale: inputScale)
    let v = Inputs.tensor(value, seed: seed + 2)
    let dO = Inputs.tensor(Array(query.dropLast()) + [value.last!], seed: seed + 3)
    let shape = try AttentionShape(query: query, key: key, value: value)
    var slopes: [Double]?
    switch alibi {
    case .standard: slopes = ScoreModifierTests.standardSlopes(shape.queryHeads)
    case let .slopes(given): slopes = given.map(Double.init)
    case nil: slopes = nil
    }
    let modifiers = GradientReference.Modifiers(softcap: softcap.map(Double.init), slopes: slopes, sinks: sinks?.map(Double.init))
    let reference = GradientReference.gradients(query: q, key: k, value: v, gradOutput: dO, shape: shape, mask: mask,
                                                modifiers: modifiers, headMasks: headMasks)
    let tolerance = inputScale == 1 ? 1e-5 : 1e-4
    let graphs = try (headMasks ?? [mask]).map { try Graph(parsing: $0.spec) }
    var worst = 0.0
    for kernel in CPUKernel.supported {
      let options = AttentionOptions(emptyRows: emptyRows, kernel: kernel, softcap: softcap, alibi: alibi, sinks: sinks)
      let context = "\(headMasks.map { "\($0)" } ?? "\(mask)") q\(query) k\(key) v\(value) softcap \(softcap as Any) alibi \(alibi as Any) sinks \(sinks as Any) kernel \(kernel)"
      let o = MutableTensorView(allocating: shape.outputShape, type: .float32)
      let lse = MutableTensorView(allocating: Array(query.dropLast()), type: .float32)
      for t in [o, lse] { GradientTests.poison(t) }
      if headMasks != nil {
        try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o, graphs: graphs, options: options,
                      logSumExp: lse)
      } else {
        try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o, graph: graphs[0], options: options,
                      logSumExp: lse)
      }
      // Output rows, relative to the size of their terms; rows without terms must be exactly 0 (NaN only
      // where the policy asks for it and no sink makes the row non-empty).
      let nanRows = emptyRows == .nan && sinks == nil
      for row in 0..<reference.outputMagnitude.count {
        for c in 0..<shape.valueDim {
          let x = o.element(row * shape.valueDim + c)
          let magnitude = reference.outputMagnitude[row]
          if magnitude == 0 && reference.logSumExp[row] == -.infinity && nanRows {
            XCTAssertTrue(x.isNaN, "empty row \(row) is \(x), \(context)", file: file, line: line)
            continue
          }
          let error = magnitude == 0 ? (x == 0 ? 0 : .infinity) : abs(Double(x) - reference.output[row * shape.valueDim + c]) / magnitude
          if !(error <= tolerance) {
            XCTFail("output row \(row) column \(c): \(x) vs \(reference.output[row * shape.valueDim + c]) (error \(error)), \(context)",
                    file: file, line: line)
            return .infinity
          }
          worst = max(worst, error)
        }
      }
      for (row, expected) in reference.logSumExp.enumerated() {
        let x = lse.element(row)
        if expected == -.infinity {
          XCTAssertEqual(x, -.infinity, "LSE of empty row \(row), \(context)", file: file, line: line)
        } else if !(abs(Double(x) - expected) <= tolerance * max(1, abs(expected), reference.maxAbsLogit)) {
          XCTFail("LSE row \(row): \(x) vs \(expected), \(context)", file: file, line: line)
          return .infinity
        }
      }
      // Backward.
      let dq = MutableTensorView(allocating: q.shape, type: .float32), dk = MutableTensorView(allocating: k.shape, type: .float32)
      let dv = MutableTensorView(allocating: v.shape, type: .float32)
      let dsinks = sinks == nil ? nil : MutableTensorView(allocating: [shape.queryHeads], type: .float32)
      for t in [dq, dk, dv] + (dsinks.map { [$0] } ?? []) { GradientTests.poison(t) }
      if headMasks != nil {
        try attentionGradients(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o.readOnly, logSumExp: lse.readOnly,
                               gradOutput: TensorView(dO), gradQuery: dq, gradKey: dk, gradValue: dv, graphs: graphs, options: options,
                               gradSinks: dsinks)
      } else {
        try attentionGradients(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o.readOnly, logSumExp: lse.readOnly,
                               gradOutput: TensorView(dO), gradQuery: dq, gradKey: dk, gradValue: dv, graph: graphs[0], options: options,
                               gradSinks: dsinks)
      }
      func floats(_ t: MutableTensorView) -> [Float] { (0..<t.count).map { t.element($0) } }
      let emptyQueryRows = Set(reference.logSumExp.indices.filter { reference.logSumExp[$0] == -.infinity })
      for (name, computed, expected, magnitude, width, nan) in [
        ("dQ", floats(dq), reference.gradQuery, reference.queryMagnitude, shape.keyDim, nanRows ? emptyQueryRows : []),
        ("dK", floats(dk), reference.gradKey, reference.keyMagnitude, shape.keyDim, []),
        ("dV", floats(dv), reference.gradValue, reference.valueMagnitude, shape.valueDim, []),
      ] {
        computed.withUnsafeBufferPointer {
          worst = max(worst, GradientReference.assertClose($0, expected, magnitude: magnitude, width: width, tolerance: tolerance,
                                                           nanRows: nan, "\(name) \(context)", file: file, line: line))
        }
      }
      if let dsinks {
        for h in 0..<shape.queryHeads {
          let x = Double(dsinks.element(h)), expected = reference.gradSinks[h]
          let error = abs(x - expected) / max(reference.sinkMagnitude[h], 1e-30)
          XCTAssertTrue(error <= tolerance, "dsink \(h): \(x) vs \(expected) (error \(error)), \(context)", file: file, line: line)
        }
      }
    }
    return worst
  }

  private func masks(tokens l: Int) -> [MaskCase] {
    [.window(3), .causal, .causalWindow(5), .dilated(3, 2), .window(2) + .global([0, l / 2]), .random(0.2, seed: 3),
     .documents([0, l / 3, l / 3, l]) & .causal]
  }

  func testEachModifierAloneAndTogetherOnEveryKindAndKernel() throws {
    for l in [1, 2, 17, 40, 130] {
      let d = [3, 8, 16, 17, 32][l % 5]
      for mask in masks(tokens: l) {
        let shape = [2, l, d]
        try check(mask, query: shape, key: shape, value: shape, softcap: 5)
        try check(mask, query: shape, key: shape, value: shape, alibi: .standard)
        try check(mask, query: shape, key: shape, value: shape, sinks: sinks(2))
        try check(mask, query: shape, key: shape, value: shape, softcap: 3, alibi: .slopes([0.25, 0.75]), sinks: sinks(2))
      }
    }
  }

  /// Rows longer than every tile and key block, grouped-query heads, batches and d_v != d_k: the paths where
  /// kernels split rows and the backward's second pass walks query heads per key/value head.
  func testLongRowsGroupedQueriesAndWidths() throws {
    for mask in [MaskCase.window(100), .causal, .documents([0, 90, 300]) & .causalWindow(70)] {
      try check(mask, query: [2, 4, 300, 32], key: [2, 2, 300, 32], value: [2, 2, 300, 24], softcap: 10, alibi: .standard,
                sinks: sinks(4))
    }
  }

  /// Decoding: L_q = 1...8 queries over a 4096-key cache; ALiBi's distances are bottom-right aligned like the mask.
  func testDecodingOverAKeyValueCache() throws {
    for lq in 1...8 {
      for mask in [MaskCase.causal, .causalWindow(128)] {
        try check(mask, query: [2, lq, 16], key: [1, 4096, 16], value: [1, 4096, 8], softcap: 30, alibi: .standard, sinks: sinks(2))
      }
    }
  }

  /// Logits of ~30x the usual size: the softcap saturates (tanh near 1, its derivative near 0).
  func testLargeLogitsUnderASoftcap() throws {
    try check(.window(20), query: [2, 64, 16], key: [2, 64, 16], value: [2, 64, 16], softcap: 20, inputScale: 30)
    try check(.causal, query: [2, 64, 16], key: [2, 64, 16], value: [2, 64, 16], softcap: 50, alibi: .standard,
              sinks: [3, -2], inputScale: 30)
  }

  /// Rows without edges: zeros with a sink (whatever the empty-row policy), NaN without one under `.nan`;
  /// their log-sum-exp is the sink logit.
  func testEmptyRowsWithAndWithoutSinks() throws {
    // More queries than keys: causal's first L_q - L_k rows are empty.
    try check(.causal, query: [2, 12, 8], key: [2, 5, 8], value: [2, 5, 8], sinks: [0.5, -1], emptyRows: .nan)
    try check(.causal, query: [2, 12, 8], key: [2, 5, 8], value: [2, 5, 8], softcap: 4, alibi: .standard, emptyRows: .nan)
    let q = Inputs.tensor([12, 8], seed: 1), k = Inputs.tensor([5, 8], seed: 2), v = Inputs.tensor([5, 8], seed: 3)
    let lse = MutableTensorView(allocating: [12], type: .float32)
    let o = MutableTensorView(allocating: [12, 8], type: .float32)
    try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o, graph: .causal,
                  options: AttentionOptions(emptyRows: .nan, sinks: [1.5]), logSumExp: lse)
    for row in 0..<7 {
      XCTAssertEqual(lse.element(row), 1.5, "the LSE of an empty row is its sink")
      for c in 0..<8 { XCTAssertEqual(o.element(row * 8 + c), 0, "an empty row with a sink gives zeros") }
    }
  }

  /// Per-head mixtures of windowed and causal heads (GPT-OSS alternates them), with every modifier.
  func testPerHeadGraphsWithModifiers() throws {
    let heads: [MaskCase] = [.causalWindow(4), .causal, .causalWindow(4), .documents([0, 10, 11, 30]) & .causal]
    try check(.causal, query: [2, 4, 30, 8], key: [2, 2, 30, 8], value: [2, 2, 30, 6], softcap: 5, alibi: .standard,
              sinks: sinks(4), headMasks: heads)
    try check(.causal, query: [4, 30, 8], key: [4, 30, 8], value: [4, 30, 8], sinks: sinks(4), headMasks: heads)
  }

  /// The composed state: softcap and ALiBi apply per accumulation, the sink joins once at normalisation;
  /// A then B equals A + B forward, and the gradients of the union with the same options match.
  func testComposedStateWithModifiers() throws {
    let mask = MaskCase.window(6) + .global([0, 50])
    let q = Inputs.tensor([2, 64, 12], seed: 41), k = Inputs.tensor([2, 64, 12], seed: 42)
    let v = Inputs.tensor([2, 64, 10], seed: 43), dO = Inputs.tensor([2, 64, 10], seed: 44)
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let sinks: [Float] = [0.7, -0.4]
    var options = AttentionOptions(softcap: 6, alibi: .standard)
    var state = try AttentionState(query: q, value: v)
    try state.accumulate(query: q, key: k, value: v, graph: try Graph(parsing: "window:6"), options: options)
    try state.accumulate(query: q, key: k, value: v, graph: try Graph(parsing: "global:0,50"), options: options)
    let o = try state.output(sinks: sinks), lse = try state.logSumExp(sinks: sinks)
    let reference = GradientReference.gradients(
      query: q, key: k, value: v, gradOutput: dO, shape: shape, mask: mask,
      modifiers: .init(softcap: 6, slopes: ScoreModifierTests.standardSlopes(2), sinks: sinks.map(Double.init)))
    for row in 0..<reference.outputMagnitude.count {
      for c in 0..<10 {
        XCTAssertEqual(Double(o.scalars[row * 10 + c]), reference.output[row * 10 + c], accuracy: 1e-5 * reference.outputMagnitude[row],
                       "composed output row \(row)")
      }
      XCTAssertEqual(Double(lse.scalars[row]), reference.logSumExp[row], accuracy: 1e-5 * max(1, abs(reference.logSumExp[row])))
    }
    options.sinks = sinks
    let dq = MutableTensorView(allocating: q.shape, type: .float32), dk = MutableTensorView(allocating: k.shape, type: .float32)
    let dv = MutableTensorView(allocating: v.shape, type: .float32), ds = MutableTensorView(allocating: [2], type: .float32)
    try attentionGradients(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: TensorView(o), logSumExp: TensorView(lse),
                           gradOutput: TensorView(dO), gradQuery: dq, gradKey: dk, gradValue: dv, graph: try Graph(parsing: mask.spec),
                           options: options, gradSinks: ds)
    func floats(_ t: MutableTensorView) -> [Float] { (0..<t.count).map { t.element($0) } }
    floats(dq).withUnsafeBufferPointer {
      GradientReference.assertClose($0, reference.gradQuery, magnitude: reference.queryMagnitude, width: 12, tolerance: 1e-5, "composed dQ")
    }
    floats(dk).withUnsafeBufferPointer {
      GradientReference.assertClose($0, reference.gradKey, magnitude: reference.keyMagnitude, width: 12, tolerance: 1e-5, "composed dK")
    }
    for h in 0..<2 {
      XCTAssertEqual(Double(ds.element(h)), reference.gradSinks[h], accuracy: 1e-5 * reference.sinkMagnitude[h], "composed dsink \(h)")
    }
    XCTAssertThrowsError(try state.accumulate(query: q, key: k, value: v, graph: .causal, options: options)) {
      XCTAssertTrue("\($0)".contains("output(sinks:)"), "\($0)")
    }
  }

  /// The same bytes for any thread count, with every modifier (the backward's determinism holds for them too).
  func testGradientsWithModifiersAreTheSameBytesForAnyThreadCount() throws {
    let q = Inputs.tensor([2, 4, 200, 16], seed: 51), k = Inputs.tensor([2, 2, 200, 16], seed: 52)
    let v = Inputs.tensor([2, 2, 200, 16], seed: 53), dO = Inputs.tensor([2, 4, 200, 16], seed: 54)
    var runs: [[Float]] = []
    for threads in [1, 2, 3] {
      let options = AttentionOptions(threads: threads, softcap: 8, alibi: .standard, sinks: [0.1, 0.2, 0.3, 0.4])
      let run = try GradientTests.gradients(q: q, k: k, v: v, dO: dO, graph: try Graph(parsing: "window:20+global:0,7"), options: options)
      runs.append(run.gradQuery + run.gradKey + run.gradValue)
    }
    XCTAssertEqual(runs[0], runs[1])
    XCTAssertEqual(runs[0], runs[2])
  }

  func testStandardSlopesFollowThePaper() throws {
    XCTAssertEqual(try ALiBi.standard.slopes(queryHeads: 8), [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625])
    let twelve = try ALiBi.standard.slopes(queryHeads: 12)
    for (h, slope) in twelve.enumerated() {
      XCTAssertEqual(Double(slope), ScoreModifierTests.standardSlopes(12)[h], accuracy: 1e-7)
    }
  }

  func testBadModifiersAreErrorsNamingTheFix() throws {
    let q = Inputs.tensor([2, 10, 4], seed: 61), k = Inputs.tensor([2, 10, 4], seed: 62), v = Inputs.tensor([2, 10, 4], seed: 63)
    for (options, expected) in [
      (AttentionOptions(softcap: 0), "softcap 0.0 is not a positive finite number"),
      (AttentionOptions(softcap: -3), "softcap -3.0"),
      (AttentionOptions(softcap: .infinity), "softcap inf"),
      (AttentionOptions(softcap: 1e-45), "not a positive finite number of normal size"),
      (AttentionOptions(alibi: .slopes([1])), "1 ALiBi slope(s) were given for 2 query head(s)"),
      (AttentionOptions(alibi: .slopes([1, .nan])), "ALiBi slope 1 is nan"),
      (AttentionOptions(sinks: [1, 2, 3]), "3 sink logit(s) were given for 2 query head(s)"),
      (AttentionOptions(sinks: [1, -.infinity]), "sink logit 1 is -inf"),
    ] {
      XCTAssertThrowsError(try attention(query: q, key: k, value: v, graph: .causal, options: options)) {
        XCTAssertTrue("\($0)".contains(expected), "\($0) should say \(expected)")
      }
    }
    let o = MutableTensorView(allocating: [2, 10, 4], type: .float32), lse = MutableTensorView(allocating: [2, 10], type: .float32)
    try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o, graph: .causal,
                  options: AttentionOptions(sinks: [0, 0]), logSumExp: lse)
    let g = [q.shape, k.shape, v.shape].map { MutableTensorView(allocating: $0, type: .float32) }
    XCTAssertThrowsError(try attentionGradients(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o.readOnly,
                                                logSumExp: lse.readOnly, gradOutput: o.readOnly, gradQuery: g[0], gradKey: g[1],
                                                gradValue: g[2], graph: .causal, options: AttentionOptions(sinks: [0, 0]),
                                                gradSinks: MutableTensorView(allocating: [3], type: .float32))) {
      XCTAssertTrue("\($0)".contains("one element per query head"), "\($0)")
    }
  }
}
