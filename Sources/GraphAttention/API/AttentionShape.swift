/// The dimensions of one attention problem, resolved from the query, key and value shapes.
///
/// Accepted layouts (all three tensors of the same rank): `[L, d]`, `[H, L, d]`, `[B, H, L, d]`.
/// Keys and values may have fewer heads than queries when that number divides the query heads
/// (grouped-query and multi-query attention): query head `h` reads key/value head
/// `h / (queryHeads / keyValueHeads)`.
public struct AttentionShape: Equatable, Sendable {
  /// Batch size `B` (1 for rank 2 and 3).
  public var batch: Int
  /// Query heads `H_q` (1 for rank 2).
  public var queryHeads: Int
  /// Key and value heads `H_kv`, a divisor of `queryHeads`.
  public var keyValueHeads: Int
  /// Query tokens `L_q`.
  public var queryCount: Int
  /// Key and value tokens `L_k`.
  public var keyCount: Int
  /// Query and key head dimension `d_k`.
  public var keyDim: Int
  /// Value and output head dimension `d_v`.
  public var valueDim: Int
  /// The rank of the input tensors (2, 3 or 4); the output has the same rank.
  public var rank: Int

  /// Creates a shape directly; dimensions must be positive and `keyValueHeads` must divide `queryHeads`.
  public init(batch: Int = 1, queryHeads: Int = 1, keyValueHeads: Int? = nil, queryCount: Int, keyCount: Int,
              keyDim: Int, valueDim: Int, rank: Int = 4) {
    self.batch = batch
    self.queryHeads = queryHeads
    self.keyValueHeads = keyValueHeads ?? queryHeads
    self.queryCount = queryCount
    self.keyCount = keyCount
    self.keyDim = keyDim
    self.valueDim = valueDim
    self.rank = rank
    precondition(batch >= 1 && queryHeads >= 1 && self.keyValueHeads >= 1 && queryHeads % self.keyValueHeads == 0)
    precondition(queryCount >= 1 && keyCount >= 1 && keyDim >= 1 && valueDim >= 1 && (2...4).contains(rank))
  }

  /// Resolves and checks the shapes of query, key and value.
  /// - Throws: `GraphAttentionError` (`.shape`) naming the mismatch and the expected layout.
  public init(query: [Int], key: [Int], value: [Int]) throws {
    let layouts = "[L, d], [H, L, d] or [B, H, L, d]"
    for (name, s) in [("query", query), ("key", key), ("value", value)] {
      guard (2...4).contains(s.count) else {
        throw GraphAttentionError(.shape, "\(name) has rank \(s.count) (shape \(s))", fix: "use a tensor of shape \(layouts)")
      }
      if let zero = s.firstIndex(where: { $0 < 1 }) {
        throw GraphAttentionError(.shape, "\(name) has an empty dimension \(zero) (shape \(s))", fix: "every dimension must be at least 1")
      }
    }
    guard query.count == key.count, key.count == value.count else {
      throw GraphAttentionError(.shape, "query, key and value have ranks \(query.count), \(key.count), \(value.count)",
                                fix: "give all three the same layout, \(layouts)")
    }
    let rank = query.count
    func padded(_ s: [Int]) -> [Int] { Array(repeating: 1, count: 4 - s.count) + s }
    let q = padded(query), k = padded(key), v = padded(value)
    guard q[0] == k[0], k[0] == v[0] else {
      throw GraphAttentionError(.shape, "batch sizes differ: query \(q[0]), key \(k[0]), value \(v[0])", fix: "use the same batch size B for all three")
    }
    guard k[1] == v[1] else {
      throw GraphAttentionError(.shape, "key has \(k[1]) heads but value has \(v[1])", fix: "give key and value the same number of heads")
    }
    guard q[1] % k[1] == 0 else {
      throw GraphAttentionError(.shape, "query has \(q[1]) heads, which is not a multiple of the \(k[1]) key/value heads",
                                fix: "for grouped-query attention the key/value heads must divide the query heads")
    }
    guard k[2] == v[2] else {
      throw GraphAttentionError(.shape, "key has \(k[2]) tokens but value has \(v[2])", fix: "key and value need the same number of tokens")
    }
    guard q[3] == k[3] else {
      throw GraphAttentionError(.shape, "query head dimension \(q[3]) differs from key head dimension \(k[3])",
                                fix: "query and key need the same last dimension d_k")
    }
    self.init(batch: q[0], queryHeads: q[1], keyValueHeads: k[1], queryCount: q[2], keyCount: k[2],
              keyDim: q[3], valueDim: v[3], rank: rank)
  }

  /// The output shape: the query's leading dimensions with the value's last dimension.
  public var outputShape: [Int] {
    Array([batch, queryHeads, queryCount, valueDim].suffix(rank))
  }

  /// Query heads that share one key/value head.
  public var groupSize: Int { queryHeads / keyValueHeads }

  /// The key/value head query head `head` reads, both counted over every batch element (`b * H_q + h` in,
  /// `b * H_kv + h / groupSize` out): grouped-query attention's one mapping, used by every path.
  /// - Complexity: O(1).
  @inlinable
  public func keyValueHead(ofQueryHead head: Int) -> Int {
    let (b, h) = head.quotientAndRemainder(dividingBy: queryHeads)
    return b * keyValueHeads + h / groupSize
  }

  /// The query heads (counted over every batch element) that read key/value head `keyValueHead`.
  /// - Complexity: O(1).
  @inlinable
  public func queryHeads(ofKeyValueHead keyValueHead: Int) -> Range<Int> {
    let (b, g) = keyValueHead.quotientAndRemainder(dividingBy: keyValueHeads)
    let first = b * queryHeads + g * groupSize
    return first..<(first + groupSize)
  }

  /// Useful floating-point work of a forward pass over `edges` graph edges (per head):
  /// `2 * edges * (d_k + d_v)` per query head (`4 * edges * d` when `d_k == d_v`), over all heads and batches.
  public func usefulFlops(edges: Int) -> Double {
    2 * Double(edges) * Double(keyDim + valueDim) * Double(batch * queryHeads)
  }
}
