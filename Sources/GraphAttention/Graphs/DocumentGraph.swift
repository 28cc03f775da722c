/// The packed-documents graph `documents:CU`: token `i` attends to token `j` when both lie in the same
/// document.
///
/// The documents are given by cumulative offsets `o_0 = 0 <= o_1 <= ... <= o_D = L` (FlashAttention's
/// `cu_seqlens`): document `d` holds tokens `o_d ..< o_{d+1}`. Offsets may repeat (an empty document
/// holds no token and adds no edge). Row `i`'s keys are the one run of its document, found by binary
/// search, so nothing of size `L x L` or `edges` is ever held: memory is O(documents).
///
/// - Complexity: O(log documents) per row; counts in closed form (the edge count is the sum of the
///   squared document lengths, computed once at construction).
public struct DocumentGraph: Sendable, Equatable {
  /// The cumulative offsets: first 0, non-decreasing, last the sequence length.
  public let offsets: [Int]
  /// How the graph was written (`documents:0,3,7` or `documents:CU.npy`), for messages and `description`.
  public let source: String
  /// The number of edges, `sum (o_{d+1} - o_d)^2`.
  public let edgeCount: Int
  /// The number of edges of `documents & causal`, `sum n_d (n_d + 1) / 2`.
  public let causalEdgeCount: Int
  /// The shortest and the longest non-empty document (0 when every document is empty).
  public let shortest: Int, longest: Int

  /// The sequence length the offsets describe (their last entry).
  public var tokenCount: Int { offsets.last ?? 0 }

  /// Validates the offsets and computes the counts.
  /// - Throws: `GraphAttentionError` (`.mask`) if there are fewer than two offsets, the first is not 0,
  ///   an offset decreases, or the edge count does not fit in `Int`.
  /// - Complexity: O(documents).
  public init<Offsets: Collection>(offsets: Offsets, source: String? = nil) throws where Offsets.Element: BinaryInteger {
    let values = offsets.map { Int(clamping: $0) }
    let name = source ?? "documents:" + values.map(String.init).joined(separator: ",")
    let form = "give cumulative document offsets starting at 0 and ending at the sequence length, e.g. documents:0,100,250"
    guard values.count >= 2 else {
      throw GraphAttentionError(.mask, "\(name) has \(values.count) offset(s); at least two are needed (0 and the length)", fix: form)
    }
    guard values[0] == 0 else {
      throw GraphAttentionError(.mask, "\(name): the first offset is \(values[0]), not 0", fix: form)
    }
    var edges = 0, causal = 0, shortest = Int.max, longest = 0
    for d in 1..<values.count {
      let n = values[d] &- values[d - 1]
      guard values[d] >= values[d - 1] else {
        throw GraphAttentionError(.mask, "\(name): offset \(d) (\(values[d])) is below offset \(d - 1) (\(values[d - 1]))",
                                  fix: "list non-decreasing offsets (" + form + ")")
      }
      guard n > 0 else { continue }
      do {
        edges = try EdgeCountOverflow.sum(edges, EdgeCountOverflow.product(n, n))
        causal = try EdgeCountOverflow.sum(causal, Graph.Component.triangle(n))
      } catch {
        throw GraphAttentionError(.mask, "\(name) has more than \(Int.max) edges, which no count can hold",
                                  fix: "use shorter documents")
      }
      shortest = min(shortest, n)
      longest = max(longest, n)
    }
    self.offsets = values
    self.source = name
    self.edgeCount = edges
    self.causalEdgeCount = causal
    self.shortest = longest == 0 ? 0 : shortest
    self.longest = longest
  }

  /// The document holding token `i`: the last `d` with `offsets[d] <= i` (empty documents skipped).
  /// - Precondition: `0 <= i < tokenCount`.
  /// - Complexity: O(log documents).
  @inline(__always)
  func document(of i: Int) -> (start: Int, end: Int) {
    // The first offset above i, found by binary search; its predecessor starts i's document.
    var lo = 1, hi = offsets.count - 1
    while lo < hi {
      let mid = (lo + hi) / 2
      if offsets[mid] <= i { lo = mid + 1 } else { hi = mid }
    }
    return (offsets[lo - 1], offsets[lo])
  }

  /// Equal offsets (the source text aside).
  public static func == (lhs: DocumentGraph, rhs: DocumentGraph) -> Bool { lhs.offsets == rhs.offsets }
}
