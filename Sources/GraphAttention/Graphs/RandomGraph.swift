/// The Bernoulli random graph `random:P:SEED`, generated row by row and identical on every platform.
///
/// ## The generator (a stable definition: changing it changes users' graphs)
/// Row `i` has its own SplitMix64 stream whose state starts at
/// `mix64(seed ^ mix64(UInt64(i) &+ 0x9E3779B97F4A7C15))`; each draw adds `0x9E3779B97F4A7C15` to the
/// state and returns `mix64(state)`. A draw `x` gives `u = ((x >> 11) + 1) * 2^-53`, uniform in (0, 1].
/// Edges are found by geometric skipping: starting from `j = -1`, the next key is
/// `j + 1 + floor(log(u) / log(1 - P))`, until it reaches the key count. The logarithm is computed
/// with IEEE-754 `+ - * /` only (`stableLog`), never libm, so rounding cannot differ across platforms.
/// `P == 1` gives every key; a `P` so small that `1 - P` rounds to 1 gives no edges.
///
/// - Complexity: a row costs O(its degree) time and O(1) memory; the whole graph is never held.
public struct RandomGraph: Sendable, Equatable {
  /// The probability of each edge, in [0, 1].
  public let probability: Double
  /// The seed: graphs with equal seeds and probabilities are equal.
  public let seed: UInt64
  /// Whether each query head gets its own pattern (`random:P:SEED:per-head`); see `Graph.forHead(_:)`.
  public let perHead: Bool
  /// `log(1 - probability)`, the denominator of the geometric skip (0 when no edges can occur).
  @usableFromInline let logOneMinusP: Double

  /// Creates the graph; `0 <= probability <= 1` (checked by `Graph.random`).
  public init(probability: Double, seed: UInt64, perHead: Bool = false) {
    self.probability = probability
    self.seed = seed
    self.perHead = perHead
    self.logOneMinusP = probability >= 1 ? -.infinity : RandomGraph.stableLog(1 - probability)
  }

  /// The SplitMix64 output function.
  @inlinable @inline(__always)
  static func mix64(_ value: UInt64) -> UInt64 {
    var z = value
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// Calls `body` with each key of `row` in increasing order, stopping early when it returns false.
  /// - Complexity: O(degree of the row).
  @inlinable
  func forEachKey(row: Int, keyCount: Int, _ body: (Int) -> Bool) {
    if probability >= 1 {
      for key in 0..<keyCount where !body(key) { return }
      return
    }
    guard logOneMinusP < 0, keyCount > 0 else { return }
    let golden: UInt64 = 0x9E37_79B9_7F4A_7C15
    var state = RandomGraph.mix64(seed ^ RandomGraph.mix64(UInt64(truncatingIfNeeded: row) &+ golden))
    var key = -1
    while true {
      state &+= golden
      let draw = RandomGraph.mix64(state)
      let u = Double((draw >> 11) &+ 1) * 0x1p-53
      let skip = RandomGraph.stableLog(u) / logOneMinusP
      // Compare in floating point first: a huge skip must not overflow the Int conversion.
      guard skip < Double(keyCount - 1 - key) else { return }
      key += 1 + Int(skip)
      if key >= keyCount || !body(key) { return }
    }
  }

  /// Natural logarithm of a positive, finite, normal `x`, using only correctly rounded IEEE operations.
  ///
  /// `x = m * 2^e` with `m` in `[sqrt(1/2), sqrt(2))`; `log(m) = 2 atanh(s)`, `s = (m-1)/(m+1)`, from its
  /// series to 12 terms (|s| <= 0.1716, so the truncation error is below 1e-17). Error about 1 ulp.
  @inlinable
  static func stableLog(_ x: Double) -> Double {
    let bits = x.bitPattern
    var exponent = Int((bits >> 52) & 0x7FF) - 1023
    var m = Double(bitPattern: (bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000)
    if m > 1.4142135623730951 {
      m *= 0.5
      exponent += 1
    }
    let s = (m - 1) / (m + 1)
    let s2 = s * s
    var series = 1.0 / 23.0
    series = series * s2 + 1.0 / 21.0
    series = series * s2 + 1.0 / 19.0
    series = series * s2 + 1.0 / 17.0
    series = series * s2 + 1.0 / 15.0
    series = series * s2 + 1.0 / 13.0
    series = series * s2 + 1.0 / 11.0
    series = series * s2 + 1.0 / 9.0
    series = series * s2 + 1.0 / 7.0
    series = series * s2 + 1.0 / 5.0
    series = series * s2 + 1.0 / 3.0
    series = series * s2 + 1.0
    return Double(exponent) * 0.6931471805599453 + 2 * s * series
  }
}
