import GraphAttention
import XCTest

/// The float64 dense reference: finds each row's keys from a `MaskCase` predicate (definitions written
/// independently of `Graph`), then computes the row with the library's one float64 softmax tail
/// (`ReferenceAttention.softmax`) and judges results with its one error metric
/// (`ReferenceAttention.relativeError`). O(L_q * L_k * d) per head: for small test sizes only.
enum DenseReference {
  struct Result {
    var rows: [ReferenceAttention.Row]   // [B*H_q*L_q]
    var maxAbsLogit = 0.0                // over all edges: fp32 scores carry about 2^-23 of it in rounding
  }

  static func attention(query: Tensor, key: Tensor, value: Tensor, shape: AttentionShape, mask: MaskCase,
                        scale: Double? = nil) -> Result {
    let s = scale ?? 1 / Double(shape.keyDim).squareRoot()
    var rows: [ReferenceAttention.Row] = []
    rows.reserveCapacity(shape.batch * shape.queryHeads * shape.queryCount)
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
        rows.append(ReferenceAttention.softmax(scores: logits, neighbours: keys, valueDim: shape.valueDim) { j, c in
          Double(value.scalars[(kv * shape.keyCount + j) * shape.valueDim + c])
        })
      }
    }
    return Result(rows: rows, maxAbsLogit: maxAbsLogit)
  }

  /// Asserts every row is within `tolerance` of `ReferenceAttention.relativeError` (normalised by the
  /// row's magnitude), empty rows are exactly zero (or NaN when `emptyIsNaN`), and nothing else is NaN.
  /// Returns the largest relative error seen.
  @discardableResult
  static func assertClose(_ computed: Tensor, _ reference: Result, valueDim: Int, tolerance: Double = 1e-5,
                          emptyIsNaN: Bool = false, _ context: @autoclosure () -> String,
                          file: StaticString = #filePath, line: UInt = #line) -> Double {
    var worst = 0.0
    XCTAssertEqual(computed.scalars.count, reference.rows.count * valueDim, "size, \(context())", file: file, line: line)
    guard computed.scalars.count == reference.rows.count * valueDim else { return .infinity }
    for (row, expected) in reference.rows.enumerated() {
      let slice = computed.scalars[(row * valueDim)..<((row + 1) * valueDim)]
      let error = ReferenceAttention.relativeError(computed: slice, reference: expected, expectNaN: emptyIsNaN)
      if !(error <= tolerance) {
        let what = expected.degree == 0 ? "empty row \(row) is \(Array(slice))" : "row \(row): \(Array(slice)) vs \(expected.output)"
        XCTFail("\(what) (relative error \(error)), \(context())", file: file, line: line)
        return .infinity
      }
      worst = max(worst, error)
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
