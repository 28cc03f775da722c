import Foundation
import GraphAttention

/// A mask written twice: as the library's specification, and as a plain predicate taken from the
/// definitions in the README, sharing no code with the library's run enumeration.
struct MaskCase: CustomStringConvertible, Sendable {
  var spec: String
  var contains: @Sendable (_ row: Int, _ column: Int, _ queryCount: Int, _ keyCount: Int) -> Bool

  var description: String { spec }

  static func + (lhs: MaskCase, rhs: MaskCase) -> MaskCase {
    MaskCase(spec: lhs.spec + "+" + rhs.spec) { i, j, lq, lk in lhs.contains(i, j, lq, lk) || rhs.contains(i, j, lq, lk) }
  }

  /// Intersection: an edge of both (`&` binds tighter than `+` in specifications, so `a & b + c` is right).
  static func & (lhs: MaskCase, rhs: MaskCase) -> MaskCase {
    MaskCase(spec: lhs.spec + "&" + rhs.spec) { i, j, lq, lk in lhs.contains(i, j, lq, lk) && rhs.contains(i, j, lq, lk) }
  }

  static let full = MaskCase(spec: "full") { _, _, _, _ in true }
  /// Bottom-right aligned (FlashAttention >= 2.1): query i sits at key position i + L_k - L_q.
  static let causal = MaskCase(spec: "causal") { i, j, lq, lk in j <= i + lk - lq }

  /// Bidirectional over the first P tokens, causal (aligned) after.
  static func prefix(_ p: Int) -> MaskCase {
    MaskCase(spec: "prefix:\(p)") { i, j, lq, lk in j < max(p, i + lk - lq + 1) }
  }

  /// Packed documents given by cumulative offsets; `inline: false` names the offsets file `path` instead.
  static func documents(_ offsets: [Int], path: String? = nil) -> MaskCase {
    let spec = path.map { "documents:\"\($0)\"" } ?? "documents:" + offsets.map(String.init).joined(separator: ",")
    return MaskCase(spec: spec) { i, j, _, _ in
      // Linear scan over the documents: the document holding i must hold j.
      for d in 0..<(offsets.count - 1) where offsets[d] <= i && i < offsets[d + 1] {
        return offsets[d] <= j && j < offsets[d + 1]
      }
      return false
    }
  }

  /// A per-head random graph as head `head` sees it: seed `SEED + head * 0x9E3779B97F4A7C15`.
  static func randomPerHead(_ p: Double, seed: UInt64, head: Int) -> MaskCase {
    let definition = random(p, seed: seed &+ UInt64(head) &* 0x9E37_79B9_7F4A_7C15)
    return MaskCase(spec: "random:\(p):\(seed):per-head", contains: definition.contains)
  }

  static func window(_ w: Int) -> MaskCase {
    MaskCase(spec: "window:\(w)") { i, j, _, l in max(0, i - w) <= j && j <= min(l - 1, i + w) }
  }

  static func causalWindow(_ w: Int) -> MaskCase {
    MaskCase(spec: "window:\(w):causal") { i, j, lq, lk in i + lk - lq - w <= j && j <= i + lk - lq }
  }

  static func dilated(_ w: Int, _ d: Int) -> MaskCase {
    MaskCase(spec: "dilated:\(w):\(d)") { i, j, _, l in
      j >= 0 && j < l && (i - j) % (d + 1) == 0 && abs(i - j) <= w * (d + 1)
    }
  }

  static func blocked(_ b: Int, _ d: Int) -> MaskCase {
    MaskCase(spec: "blocked:\(b):\(d)") { i, j, _, l in
      let base = (i / b) * b
      guard (i - base) % (d + 1) == 0 else { return false }
      for t in 0...((b - 1) / (d + 1)) where base + t * (d + 1) == j && j < l { return true }
      return false
    }
  }

  static func global(_ tokens: [Int]) -> MaskCase {
    MaskCase(spec: "global:" + tokens.map(String.init).joined(separator: ",")) { i, j, _, _ in
      tokens.contains(i) || tokens.contains(j)
    }
  }

  /// The random graph, re-implemented from its documented definition (`RandomGraph`'s doc comment).
  static func random(_ p: Double, seed: UInt64) -> MaskCase {
    @Sendable func mix(_ value: UInt64) -> UInt64 {
      var z = value
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
    @Sendable func log(_ x: Double) -> Double {
      var e = Int((x.bitPattern >> 52) & 0x7FF) - 1023
      var m = Double(bitPattern: (x.bitPattern & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000)
      if m > 2.0.squareRoot() { m /= 2; e += 1 }
      let s = (m - 1) / (m + 1)
      var series = 0.0
      for k in stride(from: 11, through: 0, by: -1) { series = series * (s * s) + 1.0 / Double(2 * k + 1) }
      return Double(e) * 0.6931471805599453 + 2 * s * series
    }
    let denominator = p >= 1 ? -Double.infinity : log(1 - p)
    let memo = RowMemo()
    return MaskCase(spec: "random:\(p):\(seed)") { i, j, _, l in
      let keys = memo.keys(row: i) {
        if p >= 1 { return Set(0..<l) }
        if denominator == 0 { return [] }  // documented: 1 - P rounds to 1, no edges
        var out = Set<Int>()
        var state = mix(seed ^ mix(UInt64(i) &+ 0x9E37_79B9_7F4A_7C15))
        var key = -1
        while true {
          state &+= 0x9E37_79B9_7F4A_7C15
          let u = Double((mix(state) >> 11) + 1) * 0x1p-53
          let skip = log(u) / denominator
          if !(skip < Double(l - 1 - key)) { break }
          key += 1 + Int(skip)
          out.insert(key)
        }
        return out
      }
      return keys.contains(j)
    }
  }

  /// An explicit pattern given as (row, column) pairs; `spec` is filled in when files are written.
  static func pairs(_ pairs: [(Int, Int)], spec: String = "explicit") -> MaskCase {
    let set = Set(pairs.map { $0.0 * 1_000_003 + $0.1 })
    return MaskCase(spec: spec) { i, j, _, _ in set.contains(i * 1_000_003 + j) }
  }
}

/// Caches generated random rows: the predicate is asked once per (row, column).
final class RowMemo: @unchecked Sendable {
  private var rows: [Int: Set<Int>] = [:]
  func keys(row: Int, _ make: () -> Set<Int>) -> Set<Int> {
    if let k = rows[row] { return k }
    let k = make()
    rows[row] = k
    return k
  }
}
