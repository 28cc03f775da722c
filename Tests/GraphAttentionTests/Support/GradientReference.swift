import Foundation
import GraphAttention
import XCTest

/// The float64 analytic backward of attention, from the masks' independent definitions (`MaskCase`):
/// a dense softmax per row in Double, then FlashAttention-2's formulas. O(L_q * L_k * d) per head:
/// for small test sizes only.
enum GradientReference {
  struct Result {
    var output: [Double]       // [B*H_q*L_q, d_v]
    var logSumExp: [Double]    // [B*H_q*L_q], -inf for empty rows
    var gradQuery: [Double]    // like query
    var gradKey: [Double]      // like key
    var gradValue: [Double]    // like value
    /// Per gradient row: a bound on the size of the terms summed (sums of absolute values), the
    /// denominator of the relative error, so cancellation in `dP - D` is not mistaken for error.
    var queryMagnitude: [Double]
    var keyMagnitude: [Double]
    var valueMagnitude: [Double]
    var maxAbsLogit = 0.0
    /// dL/dsink per query head (summed over batch elements) and the size of its terms; empty without sinks.
    var gradSinks: [Double] = []
    /// Per output row, `max_c sum_j p_ij |v_jc|` (0 for rows without edges), as `ReferenceAttention` measures.
    var outputMagnitude: [Double] = []
    var sinkMagnitude: [Double] = []
  }

  /// Score modifiers, defined here from their formulas (not the library's): per edge `z = scale * q.k`,
  /// `z <- C tanh(z / C)`, `z <- z - slope_h |i + L_k - L_q - j|`; a sink `s_h` adds `e^(s_h)` to each
  /// row's denominator.
  struct Modifiers {
    var softcap: Double? = nil
    var slopes: [Double]? = nil
    var sinks: [Double]? = nil
  }

  static func gradients(query: Tensor, key: Tensor, value: Tensor, gradOutput: Tensor, shape: AttentionShape,
                        mask: MaskCase, scale: Double? = nil, modifiers: Modifiers = Modifiers(),
                        headMasks: [MaskCase]? = nil) -> Result {
    let s = scale ?? 1 / Double(shape.keyDim).squareRoot()
    let (lq, lk, kd, vd) = (shape.queryCount, shape.keyCount, shape.keyDim, shape.valueDim)
    let rows = shape.batch * shape.queryHeads * lq
    let kvRows = shape.batch * shape.keyValueHeads * lk
    var r = Result(output: .init(repeating: 0, count: rows * vd), logSumExp: .init(repeating: -.infinity, count: rows),
                   gradQuery: .init(repeating: 0, count: rows * kd), gradKey: .init(repeating: 0, count: kvRows * kd),
                   gradValue: .init(repeating: 0, count: kvRows * vd), queryMagnitude: .init(repeating: 0, count: rows),
                   keyMagnitude: .init(repeating: 0, count: kvRows), valueMagnitude: .init(repeating: 0, count: kvRows))
    let group = shape.queryHeads / shape.keyValueHeads
    r.outputMagnitude = .init(repeating: 0, count: rows)
    if modifiers.sinks != nil {
      r.gradSinks = .init(repeating: 0, count: shape.queryHeads)
      r.sinkMagnitude = .init(repeating: 0, count: shape.queryHeads)
    }
    func q(_ row: Int, _ c: Int) -> Double { Double(query.scalars[row * kd + c]) }
    func k(_ row: Int, _ c: Int) -> Double { Double(key.scalars[row * kd + c]) }
    func v(_ row: Int, _ c: Int) -> Double { Double(value.scalars[row * vd + c]) }
    func g(_ row: Int, _ c: Int) -> Double { Double(gradOutput.scalars[row * vd + c]) }
    for head in 0..<(shape.batch * shape.queryHeads) {
      let kv = (head / shape.queryHeads) * shape.keyValueHeads + (head % shape.queryHeads) / group
      for i in 0..<lq {
        let row = head * lq + i
        var keys: [Int] = [], logits: [Double] = [], slopes: [Double] = []
        let h = head % shape.queryHeads
        for j in 0..<lk where (headMasks?[h] ?? mask).contains(i, j, lq, lk) {
          var dot = 0.0
          for c in 0..<kd { dot += q(row, c) * k(kv * lk + j, c) }
          var z = dot * s, slope = 1.0
          if let cap = modifiers.softcap {
            let t = Foundation.tanh(z / cap)
            z = cap * t
            slope = 1 - t * t
          }
          if let alibi = modifiers.slopes { z -= alibi[h] * Double(abs(i + lk - lq - j)) }
          keys.append(j)
          logits.append(z)
          slopes.append(slope)
          r.maxAbsLogit = max(r.maxAbsLogit, abs(z))
        }
        let sink = modifiers.sinks?[h]
        guard let m = (logits + (sink.map { [$0] } ?? [])).max() else { continue }
        let weights = logits.map { Foundation.exp($0 - m) }
        let total = weights.reduce(0, +) + (sink.map { Foundation.exp($0 - m) } ?? 0)
        r.logSumExp[row] = m + Foundation.log(total)
        let p = weights.map { $0 / total }
        var magnitude = [Double](repeating: 0, count: vd)
        for (t, j) in keys.enumerated() {
          for c in 0..<vd {
            r.output[row * vd + c] += p[t] * v(kv * lk + j, c)
            magnitude[c] += p[t] * abs(v(kv * lk + j, c))
          }
        }
        r.outputMagnitude[row] = magnitude.max() ?? 0
        var d = 0.0, dAbs = 0.0
        for c in 0..<vd {
          d += g(row, c) * r.output[row * vd + c]
          dAbs += abs(g(row, c) * r.output[row * vd + c])
        }
        let qMax = (0..<kd).map { abs(q(row, $0)) }.max()!
        let gMax = (0..<vd).map { abs(g(row, $0)) }.max()!
        for (t, j) in keys.enumerated() {
          let key = kv * lk + j
          var dp = 0.0, dpAbs = 0.0
          for c in 0..<vd {
            dp += g(row, c) * v(key, c)
            dpAbs += abs(g(row, c) * v(key, c))
          }
          let ds = p[t] * (dp - d) * slopes[t]
          // Size of ds's terms, widened by the logit's size: P carries about |s| ulps of error.
          let dsAbs = p[t] * (dpAbs + dAbs) * (1 + abs(logits[t]))
          let kMax = (0..<kd).map { abs(k(key, $0)) }.max()!
          for c in 0..<kd {
            r.gradQuery[row * kd + c] += s * ds * k(key, c)
            r.gradKey[key * kd + c] += s * ds * q(row, c)
          }
          for c in 0..<vd { r.gradValue[key * vd + c] += p[t] * g(row, c) }
          r.queryMagnitude[row] += s * dsAbs * kMax
          r.keyMagnitude[key] += s * dsAbs * qMax
          r.valueMagnitude[key] += p[t] * (1 + abs(logits[t])) * gMax
        }
        if let sink {
          let pSink = Foundation.exp(sink - r.logSumExp[row])
          r.gradSinks[h] -= pSink * d
          r.sinkMagnitude[h] += pSink * dAbs * (1 + abs(sink))
        }
      }
    }
    return r
  }

  /// Asserts each element of `computed` is within `tolerance` of `reference`, relative to its row's magnitude
  /// (rows with magnitude 0 must be exactly 0, or NaN where `nanRows` says); returns the largest error.
  @discardableResult
  static func assertClose(_ computed: UnsafeBufferPointer<Float>, _ reference: [Double], magnitude: [Double], width: Int,
                          tolerance: Double, nanRows: Set<Int> = [], _ context: @autoclosure () -> String,
                          file: StaticString = #filePath, line: UInt = #line) -> Double {
    XCTAssertEqual(computed.count, reference.count, "size, \(context())", file: file, line: line)
    guard computed.count == reference.count else { return .infinity }
    var worst = 0.0
    for row in 0..<magnitude.count {
      for c in 0..<width {
        let x = computed[row * width + c]
        if nanRows.contains(row) {
          if !x.isNaN { XCTFail("row \(row) column \(c) is \(x), expected NaN, \(context())", file: file, line: line); return .infinity }
          continue
        }
        if magnitude[row] == 0 {
          if x != 0 { XCTFail("row \(row) column \(c) is \(x), expected 0 (no edges), \(context())", file: file, line: line); return .infinity }
          continue
        }
        // Terms below fp32's range (P under 2^-126 at huge logits) underflow to 0: a floor of 1e-30.
        let error = abs(Double(x) - reference[row * width + c]) / max(magnitude[row], 1e-30)
        if !(error <= tolerance) {
          XCTFail("row \(row) column \(c): \(x) vs \(reference[row * width + c]) (relative error \(error)), \(context())",
                  file: file, line: line)
          return .infinity
        }
        worst = max(worst, error)
      }
    }
    return worst
  }
}
