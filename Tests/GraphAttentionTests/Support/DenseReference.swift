import GraphAttention
import XCTest

/// The float64 dense reference: builds each row's mask from a `MaskCase` predicate and computes
/// softmax attention in two passes in Double. O(L_q * L_k * d) per head: for small test sizes only.
enum DenseReference {
  struct Result {
    var output: [Double]      // [B*H_q*L_q, d_v]
    var magnitude: [Double]   // per row: max_c sum_j p_j |v_jc|
    var empty: [Bool]         // per row
    var maxAbsLogit = 0.0     // over all edges: fp32 scores carry about 2^-23 of it in rounding
  }

  static func attention(query: Tensor, key: Tensor, value: Tensor, shape: AttentionShape, mask: MaskCase,
                        scale: Double? = nil) -> Result {
    let s = scale ?? 1 / Double(shape.keyDim).squareRoot()
    let rows = shape.batch * shape.queryHeads * shape.queryCount
    var output = [Double](repeating: 0, count: rows * shape.valueDim)
    var magnitude = [Double](repeating: 0, count: rows)
    var empty = [Bool](repeating: false, count: rows)
    var maxAbsLogit = 0.0
    let group = shape.queryHeads / shape.keyValueHeads
    for head in 0..<(shape.batch * shape.queryHeads) {
      let kv = (head / shape.queryHeads) * shape.keyValueHeads + (head % shape.queryHeads) / group
      for i in 0..<shape.queryCount {
        let row = head * shape.queryCount + i
        var keys: [Int] = []
        var logits: [Double] = []
        for j in 0..<shape.keyCount where mask.contains(i, j, shape.queryCount, shape.keyCount) {
          var dot = 0.0
          for c in 0..<shape.keyDim {
            dot += Double(query.scalars[row * shape.keyDim + c]) * Double(key.scalars[(kv * shape.keyCount + j) * shape.keyDim + c])
          }
          keys.append(j)
          logits.append(dot * s)
          maxAbsLogit = max(maxAbsLogit, abs(dot * s))
        }
        guard let m = logits.max() else { empty[row] = true; continue }
        let weights = logits.map { Foundation.exp($0 - m) }
        let total = weights.reduce(0, +)
        var size = [Double](repeating: 0, count: shape.valueDim)
        for (t, j) in keys.enumerated() {
          let p = weights[t] / total
          for c in 0..<shape.valueDim {
            let v = Double(value.scalars[(kv * shape.keyCount + j) * shape.valueDim + c])
            output[row * shape.valueDim + c] += p * v
            size[c] += p * abs(v)
          }
        }
        magnitude[row] = size.max() ?? 0
      }
    }
    return Result(output: output, magnitude: magnitude, empty: empty, maxAbsLogit: maxAbsLogit)
  }

  /// Asserts every row is within `tolerance` relative error (normalised by the row's magnitude),
  /// empty rows are exactly zero (or NaN when `emptyIsNaN`), and nothing else is NaN.
  /// Returns the largest relative error seen.
  @discardableResult
  static func assertClose(_ computed: Tensor, _ reference: Result, valueDim: Int, tolerance: Double = 1e-5,
                          emptyIsNaN: Bool = false, _ context: @autoclosure () -> String,
                          file: StaticString = #filePath, line: UInt = #line) -> Double {
    var worst = 0.0
    XCTAssertEqual(computed.scalars.count, reference.output.count, "size, \(context())", file: file, line: line)
    guard computed.scalars.count == reference.output.count else { return .infinity }
    for row in 0..<reference.empty.count {
      for c in 0..<valueDim {
        let x = computed.scalars[row * valueDim + c]
        if reference.empty[row] {
          let ok = emptyIsNaN ? x.isNaN : x == 0
          if !ok {
            XCTFail("empty row \(row) column \(c) is \(x), \(context())", file: file, line: line)
            return .infinity
          }
          continue
        }
        let error = abs(Double(x) - reference.output[row * valueDim + c]) / max(reference.magnitude[row], 1e-300)
        if !(error <= tolerance) {
          XCTFail("row \(row) column \(c): \(x) vs \(reference.output[row * valueDim + c]) (relative error \(error)), \(context())",
                  file: file, line: line)
          return .infinity
        }
        worst = max(worst, error)
      }
    }
    return worst
  }
}

/// Seeded random test inputs: standard-normal-ish values, never zeros or ones.
enum Inputs {
  static func tensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var t = Tensor.random(shape: shape, seed: seed)
    if scale != 1 { t.scalars = t.scalars.map { $0 * scale } }
    return t
  }
}
