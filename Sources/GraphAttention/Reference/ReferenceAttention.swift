/// A plain float64 implementation of graph attention, for checking the engine (tests, `verify`, the demo).
///
/// It shares nothing with the kernels: membership comes from `Graph.contains` (the definitions,
/// not the run enumeration), every key of the row is tested, and the softmax is computed in two
/// passes in `Double`. It is slow on purpose.
public enum ReferenceAttention {
  /// One row's exact result.
  public struct Row: Sendable {
    /// `o_i` in float64, `d_v` values; zeros for an empty row.
    public var output: [Double]
    /// `sum_j p_ij |v_jc|` per column: the size of the terms summed, the natural scale for errors.
    public var magnitude: [Double]
    /// The number of keys the row attends to.
    public var degree: Int

    /// A row from its parts (`softmax(scores:neighbours:valueDim:value:)` computes them).
    public init(output: [Double], magnitude: [Double], degree: Int) {
      self.output = output
      self.magnitude = magnitude
      self.degree = degree
    }
  }

  /// Computes row `row` of flattened head `head` (`batch * H_q + h`) exactly, with `options`' score
  /// modifiers (softcap, ALiBi, sinks; their formulas are spelled out here again, in Double, apart from the
  /// kernels'; a modifier the options cannot resolve for this shape is left out, as the engine refuses it).
  /// - Complexity: O(L_k * cost of `contains` + degree * (d_k + d_v)).
  public static func row(_ row: Int, head: Int, query: Tensor, key: Tensor, value: Tensor,
                         shape: AttentionShape, graph: Graph, scale: Double,
                         options: AttentionOptions = AttentionOptions()) -> Row {
    let modifiers = ReferenceModifiers(options: options, head: head, shape: shape)
    let kvHead = shape.keyValueHead(ofQueryHead: head)
    let qBase = (head * shape.queryCount + row) * shape.keyDim
    var neighbours: [Int] = []
    var scores: [Double] = []
    for j in 0..<shape.keyCount where graph.contains(row: row, column: j, queryCount: shape.queryCount, keyCount: shape.keyCount) {
      let kBase = (kvHead * shape.keyCount + j) * shape.keyDim
      var s = 0.0
      for c in 0..<shape.keyDim { s += Double(query.scalars[qBase + c]) * Double(key.scalars[kBase + c]) }
      neighbours.append(j)
      scores.append(modifiers.score(s * scale, row: row, key: j, shape: shape))
    }
    return softmax(scores: scores, neighbours: neighbours, valueDim: shape.valueDim, sink: modifiers.sink) { j, c in
      Double(value.scalars[(kvHead * shape.keyCount + j) * shape.valueDim + c])
    }
  }

  /// The float64 softmax of `scores` (already scaled) over `neighbours` and the weighted sum of their
  /// values (`value(j, c)`), with the magnitudes `sum p |v|`: the one softmax tail of every float64
  /// reference (this type's rows, `verify`, and the tests' dense reference, which finds a row's keys
  /// from its own mask definitions).
  ///
  /// Two passes in `Double`: the maximum score first, then `exp(s - max)`. No scores give an empty row
  /// (zeros, degree 0). A `sink` logit joins the denominator (`e^sink`) and adds no value.
  /// - Complexity: O(`scores.count` * `valueDim`).
  public static func softmax(scores: [Double], neighbours: [Int], valueDim: Int, sink: Double? = nil,
                             value: (Int, Int) -> Double) -> Row {
    var output = [Double](repeating: 0, count: valueDim)
    var magnitude = [Double](repeating: 0, count: valueDim)
    guard let top = scores.max() else { return Row(output: output, magnitude: magnitude, degree: 0) }
    let m = max(top, sink ?? top)
    let weights = scores.map { libmExp($0 - m) }
    let total = weights.reduce(0, +) + (sink.map { libmExp($0 - m) } ?? 0)
    for (t, j) in neighbours.enumerated() {
      let p = weights[t] / total
      for c in 0..<valueDim {
        let v = value(j, c)
        output[c] += p * v
        magnitude[c] += p * abs(v)
      }
    }
    return Row(output: output, magnitude: magnitude, degree: neighbours.count)
  }

  /// The relative error of a computed row: `max_c |o_c - r_c| / max_c magnitude_c`.
  ///
  /// Normalising by the magnitude of the summed terms (not by `|r|`, which can cancel to nearly 0)
  /// makes the bound meaningful for every `d`, including `d = 1`. Empty rows must be exactly 0 (or
  /// NaN when `expectNaN`); anything else is infinite error. NaN never passes otherwise.
  public static func relativeError(computed: ArraySlice<Float>, reference: Row, expectNaN: Bool = false) -> Double {
    if reference.degree == 0 {
      let ok = computed.allSatisfy { expectNaN ? $0.isNaN : $0 == 0 }
      return ok ? 0 : .infinity
    }
    let scale = reference.magnitude.max() ?? 0
    var worst = 0.0
    for (c, x) in computed.enumerated() {
      let difference = abs(Double(x) - reference.output[c])
      if difference.isNaN { return .infinity }
      worst = max(worst, difference)
    }
    return scale > 0 ? worst / scale : (worst == 0 ? 0 : .infinity)
  }
}

/// One head's score modifiers in Double, from `AttentionOptions`, for the reference rows: the formulas of
/// softcap and ALiBi written out again, apart from the kernels' (`ga_score_mods`).
struct ReferenceModifiers {
  var softcap: Double?
  var slope: Double?
  var sink: Double?

  /// The modifiers of flattened head `head`; one the options cannot resolve for `shape` is left out (the
  /// engine refuses it).
  init(options: AttentionOptions, head: Int, shape: AttentionShape) {
    let h = head % shape.queryHeads
    softcap = options.softcap.map(Double.init)
    slope = (try? options.alibi?.slopes(queryHeads: shape.queryHeads)).flatMap { $0.map { Double($0[h]) } }
    sink = options.sinks.flatMap { $0.count == shape.queryHeads ? Double($0[h]) : nil }
  }

  /// The modified score of query `row` and key `key`, from the scaled `q.k`.
  func score(_ scaled: Double, row: Int, key: Int, shape: AttentionShape) -> Double {
    var z = scaled
    if let softcap { z = softcap * tanh(z / softcap) }
    if let slope { z -= slope * Double(abs(row + shape.keyCount - shape.queryCount - key)) }
    return z
  }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

@inline(__always)
func libmExp(_ x: Double) -> Double { exp(x) }
