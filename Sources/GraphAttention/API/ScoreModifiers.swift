import _GraphAttentionKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// ALiBi (Press et al., 2022): a bias `-slope_h * |i + L_k - L_q - j|` added to each score of query head
/// `h`, penalising keys by their distance from the query (aligned bottom-right when `L_q != L_k`, as a
/// decoding query over a KV cache sits at the cache's end).
public enum ALiBi: Sendable, Equatable {
  /// The ALiBi paper's geometric slopes, `2^(-8 (h + 1) / H)` for query head `h` of `H`.
  case standard
  /// One slope per query head, finite.
  case slopes([Float])

  /// The slope of each of `queryHeads` heads.
  /// - Throws: `GraphAttentionError` (`.option`) when given slopes do not number `queryHeads` or are not finite.
  /// - Complexity: O(queryHeads).
  public func slopes(queryHeads: Int) throws -> [Float] {
    switch self {
    case .standard:
      return (0..<queryHeads).map { Float(exp2(-8 * Double($0 + 1) / Double(queryHeads))) }
    case let .slopes(values):
      guard values.count == queryHeads else {
        throw GraphAttentionError(.option, "\(values.count) ALiBi slope(s) were given for \(queryHeads) query head(s)",
                                  fix: "give one slope per query head, or use the standard slopes")
      }
      if let bad = values.firstIndex(where: { !$0.isFinite }) {
        throw GraphAttentionError(.option, "ALiBi slope \(bad) is \(values[bad])", fix: "give finite slopes")
      }
      return values
    }
  }
}

/// The score modifiers of one call (`AttentionOptions.softcap`, `.alibi`, `.sinks`), validated and resolved
/// for its query heads.
///
/// Order, per edge of query head `h`: `s = scale * q.k`, then `s <- C tanh(s / C)` (softcap), then
/// `s <- s - slope_h |i + L_k - L_q - j|` (ALiBi); the softmax of a row then runs over its edges' `s` and,
/// with sinks, the sink logit `sink_h`, which adds `e^(sink_h)` to the denominator and nothing to the
/// output. Softcap and ALiBi live in the kernels (per score); sinks only where a row is normalised.
struct ScoreModifiers: Sendable, Equatable {
  /// C > 0, or 0 for none.
  var softcap: Float = 0
  /// One ALiBi slope per query head, or nil.
  var slopes: [Float]?
  /// One sink logit per query head, or nil.
  var sinks: [Float]?
  /// `L_k - L_q`: ALiBi's alignment of query `i` with key `i + L_k - L_q`.
  var alignment = 0

  /// No modifiers.
  init() {}

  /// The options' modifiers for `shape`.
  /// - Throws: `GraphAttentionError` (`.option`) for a softcap that is not positive and finite, and
  ///   slopes or sinks that do not number the query heads or are not finite.
  init(options: AttentionOptions, shape: AttentionShape) throws {
    if let softcap = options.softcap {
      // A subnormal softcap would make the kernels' 1 / softcap infinite (and 0 * inf a NaN score).
      guard softcap.isNormal, softcap > 0 else {
        throw GraphAttentionError(.option, "softcap \(softcap) is not a positive finite number of normal size",
                                  fix: "pass a softcap above 0 (Gemma 2 uses 50 for attention logits; at least 1.2e-38), or none")
      }
      self.softcap = softcap
    }
    slopes = try options.alibi?.slopes(queryHeads: shape.queryHeads)
    if let sinks = options.sinks {
      guard sinks.count == shape.queryHeads else {
        throw GraphAttentionError(.option, "\(sinks.count) sink logit(s) were given for \(shape.queryHeads) query head(s)",
                                  fix: "give one sink logit per query head")
      }
      if let bad = sinks.firstIndex(where: { !$0.isFinite }) {
        throw GraphAttentionError(.option, "sink logit \(bad) is \(sinks[bad])", fix: "give finite sink logits")
      }
      self.sinks = sinks
    }
    alignment = shape.keyCount - shape.queryCount
  }

  /// Whether nothing is modified.
  var isIdentity: Bool { softcap == 0 && slopes == nil && sinks == nil }

  /// The kernels' modifiers of query head `head` (of `H_q`), for query rows against key columns or, with
  /// `keyRows`, key rows against query columns (the backward's second pass).
  func kernelModifiers(head: Int, keyRows: Bool = false) -> ga_score_mods {
    ga_score_mods(softcap: softcap, alibi_slope: slopes?[head] ?? 0,
                  alibi_offset: Int32(truncatingIfNeeded: keyRows ? -alignment : alignment))
  }
}

extension AttentionOptions {
  /// Checks the score modifiers (softcap, ALiBi slopes, sinks) for `queryHeads` query heads with the engine's one
  /// set of rules, the ones every call applies: for front ends that want the error before any work (the CLI
  /// before it creates an output).
  /// - Throws: `GraphAttentionError(.option)` naming the bad value and the fix.
  /// - Complexity: O(queryHeads).
  public func checkScoreModifiers(queryHeads: Int) throws {
    let heads = [max(1, queryHeads), 1, 1]
    _ = try ScoreModifiers(options: self, shape: AttentionShape(query: heads, key: heads, value: heads))
  }

  /// The score modifiers in words (exact values), "none" without any: what a streamed job's progress
  /// record compares so that a resume cannot mix outputs of different modifiers.
  var scoreModifierDescription: String {
    var parts: [String] = []
    if let softcap { parts.append("softcap \(softcap)") }
    switch alibi {
    case .standard?: parts.append("ALiBi standard slopes")
    case let .slopes(values)?: parts.append("ALiBi slopes \(values)")
    case nil: break
    }
    if let sinks { parts.append("sinks \(sinks)") }
    return parts.isEmpty ? "none" : parts.joined(separator: "; ")
  }
}
