/// What each rank of a sequence-parallel attention job must fetch from each other rank, computed from
/// the graph: the exchange behind `graph_attention.distributed.attention` and, through the C ABI, any
/// other transport (MPI, NCCL).
///
/// The sequence of `tokens` tokens is split into contiguous shards in rank order; rank `r` holds the query,
/// key and value rows of `shards[r]` (self-attention). Its rows are of two kinds:
/// - *ordinary rows* attend to keys the plan lists: `needs[r][s]`, the runs of global keys rank `r`
///   fetches from rank `s` (`s != r`; its own keys it has). Structured components give them in closed
///   form, without looking at rows: a window's halo is one range, `window:W:causal` the `W` keys before the
///   shard, `dilated` and `blocked` their (strided) halos, `documents` the parts of the documents that
///   straddle the shard's ends, `prefix` the prefix, global tokens (as keys) their rows, once. Random and
///   explicit components enumerate the shard's keys into index lists (compressed into runs).
/// - *global rows* (the graph's global tokens as queries, which attend to every key) are not given keys:
///   every rank computes them against its own keys and returns the partial softmax state `(o, lse)` to
///   the owner, which merges them with log-sum-exp. Their query rows travel instead of all keys.
///
/// Exactness: every key a row attends to is listed, and for every kind but intersections nothing more;
/// an intersection lists the intersection of its operands' reaches, split by document when one operand
/// is `documents` (exact for `documents&causal`, `documents&window:W[:causal]`, `documents&prefix:P`;
/// a superset, never a subset, for intersections of two other structured kinds such as `window&dilated`).
///
/// Dense graphs (`full`, `causal`) are planned as every needed shard whole (an all-gather of the earlier
/// shards for `causal`), with no ring schedule and no zigzag placement.
public struct ExchangePlan: Sendable {
  /// The sequence length.
  public let tokens: Int
  /// Each rank's token range, in rank order, covering `0..<tokens`.
  public let shards: [Range<Int>]
  /// `needs[r][s]`: the global keys rank `r` fetches from rank `s`, as sorted runs with disjoint spans inside
  /// `shards[s]`; empty for `s == r`.
  public let needs: [[[KeyRun]]]
  /// The rows merged from partial states (global tokens as queries), sorted.
  public let globalRows: [Int]

  /// The number of ranks.
  public var worldSize: Int { shards.count }

  /// The number of keys rank `receiver` fetches from rank `sender`. O(runs).
  public func keyCount(receiver: Int, sender: Int) -> Int {
    needs[receiver][sender].reduce(0) { $0 + $1.count }
  }

  /// The rank holding token `token` (`0 <= token < tokens`). O(log ranks).
  public func owner(of token: Int) -> Int {
    var lo = 0, hi = shards.count - 1  // the first shard ending after the token holds it
    while lo < hi {
      let mid = (lo + hi) / 2
      if shards[mid].upperBound > token { hi = mid } else { lo = mid + 1 }
    }
    return lo
  }

  /// The global rows rank `rank` owns. O(global rows).
  public func globalRows(ofRank rank: Int) -> [Int] {
    globalRows.filter { shards[rank].contains($0) }
  }

  /// The sizes of one token's rows in each message, for `bytesSent`; all counts in bytes.
  public struct RowBytes: Sendable, Equatable {
    /// Forward: one key's K and V rows over every key/value head and batch element.
    public var keyValue: Int
    /// Forward: one global row's Q over every query head and batch element.
    public var query: Int
    /// Forward: one global row's partial state (output and log-sum-exp) over every query head and batch element.
    public var partialState: Int
    /// Backward: one fetched key's dK and dV partial sums, returned to its owner.
    public var gradKeyValue: Int
    /// Backward: one global row's O, log-sum-exp and dO, sent to every other rank.
    public var globalRowState: Int
    /// Backward: one global row's partial dQ, returned to its owner.
    public var gradQuery: Int

    /// The sizes for a `[B, H_q, L, d_k]` query with `H_kv` key/value heads, `d_v`, inputs of `elementBytes`
    /// bytes and fp32 partial states and gradients (what `graph_attention.distributed` sends).
    public init(batch: Int, queryHeads: Int, keyValueHeads: Int, keyDim: Int, valueDim: Int, elementBytes: Int) {
      keyValue = batch * keyValueHeads * (keyDim + valueDim) * elementBytes
      query = batch * queryHeads * keyDim * elementBytes
      partialState = batch * queryHeads * (valueDim + 1) * 4
      gradKeyValue = batch * keyValueHeads * (keyDim + valueDim) * 4
      globalRowState = batch * queryHeads * (2 * valueDim + 1) * 4
      gradQuery = batch * queryHeads * keyDim * 4
    }
  }

  /// Bytes rank `rank` sends in one forward (`backward == false`) or one backward pass.
  ///
  /// Forward: the K and V rows other ranks fetch from it, its global rows' Q to every other rank, and its
  /// partial states of the other ranks' global rows. Backward: dK and dV partial sums of the keys it fetched,
  /// its global rows' O, LSE and dO to every other rank, and partial dQ of the others' global rows.
  /// - Complexity: O(ranks * runs + global rows).
  public func bytesSent(rank: Int, rowBytes b: RowBytes, backward: Bool = false) -> Int {
    let p = worldSize
    var keys = 0
    for s in 0..<p where s != rank {
      keys += backward ? keyCount(receiver: rank, sender: s) : keyCount(receiver: s, sender: rank)
    }
    // Global rows go to, and partial states come from, the ranks that hold keys (every rank with tokens).
    let own = globalRows(ofRank: rank).count
    let others = shards[rank].isEmpty ? 0 : globalRows.count - own
    let peers = shards.indices.filter { $0 != rank && !shards[$0].isEmpty }.count
    if backward {
      return keys * b.gradKeyValue + own * peers * b.globalRowState + others * b.gradQuery
    }
    return keys * b.keyValue + own * peers * b.query + others * b.partialState
  }

  /// Shard sizes as `torch.tensor_split(x, worldSize)` makes them: the first `tokens % worldSize` shards one
  /// token longer. O(ranks).
  public static func evenShardSizes(tokens: Int, worldSize: Int) -> [Int] {
    (0..<worldSize).map { tokens / worldSize + ($0 < tokens % worldSize ? 1 : 0) }
  }
}

extension ExchangePlan {
  /// The plan for `graphs` (one per query head, each specialised with `forHead(h)`, or one for all) over
  /// `tokens` tokens in shards of `shardSizes` tokens (rank order; zeros allowed): the union of the heads'
  /// needs, and the union of their global rows.
  ///
  /// - Throws: `GraphAttentionError` (`.shape`) for shard sizes that are negative or do not sum to `tokens`,
  ///   (`.mask`) for a graph that does not fit `tokens` x `tokens` or is a view.
  /// - Complexity: for structured components O(ranks^2 * (1 + global rows per shard)) runs, independent of
  ///   `tokens`; for random and explicit ones, one pass over their edges.
  public init(graphs: [Graph], tokens: Int, shardSizes: [Int]) throws {
    guard !graphs.isEmpty else {
      throw GraphAttentionError(.mask, "an exchange plan needs at least one graph", fix: "pass the mask of the attention")
    }
    guard !shardSizes.isEmpty, shardSizes.allSatisfy({ $0 >= 0 }), shardSizes.reduce(0, +) == tokens else {
      throw GraphAttentionError(.shape, "shard sizes \(shardSizes) do not split \(tokens) tokens",
                                fix: "give one non-negative size per rank, summing to the sequence length")
    }
    if graphs.count == 1, graphs[0].variesPerHead {
      throw GraphAttentionError(.mask, "\(graphs[0]) varies per head, so one graph does not say which keys each head needs",
                                fix: "pass the graph once per query head")
    }
    let graphs = graphs.count == 1 ? graphs : graphs.enumerated().map { $1.forHead($0) }
    for graph in graphs {
      try graph.validate(queryCount: tokens, keyCount: tokens)
      if graph.components.contains(where: { if case .view = $0 { return true } else { return false } }) {
        throw GraphAttentionError(.mask, "an exchange plan is made for a whole graph, not a view",
                                  fix: "plan with the global mask")
      }
    }
    var shards: [Range<Int>] = []
    var start = 0
    for size in shardSizes {
      shards.append(start..<start + size)
      start += size
    }
    let globalRows = Array(Set(graphs.flatMap(\.globalTokens))).sorted()
    let p = shards.count
    var needs = [[[KeyRun]]](repeating: [[KeyRun]](repeating: [], count: p), count: p)
    for r in 0..<p where !shards[r].isEmpty {
      // The ordinary rows: the shard split at its global rows.
      var pieces: [Range<Int>] = []
      var a = shards[r].lowerBound
      for g in globalRows where shards[r].contains(g) {
        if g > a { pieces.append(a..<g) }
        a = g + 1
      }
      if a < shards[r].upperBound { pieces.append(a..<shards[r].upperBound) }
      if pieces.isEmpty { continue }
      var perSender = [[KeyRun]](repeating: [], count: p)
      for graph in graphs {
        for (c, component) in graph.components.enumerated() {
          // Scattered components: their keys once for the whole shard, then split by sender.
          if Reach.isScattered(component) {
            let keys = Reach.enumerate(graph.components[c], pieces: pieces, tokens: tokens)
            for s in 0..<p where s != r && !shards[s].isEmpty {
              let lo = lowerBound(keys, shards[s].lowerBound), hi = lowerBound(keys, shards[s].upperBound)
              if lo < hi { Graph.compress(sortedKeys: keys[lo..<hi], to: &perSender[s]) }
            }
            continue
          }
          for s in 0..<p where s != r && !shards[s].isEmpty {
            for piece in pieces {
              perSender[s] += Reach.runs(component, rows: piece, keys: shards[s], tokens: tokens)
            }
          }
        }
      }
      var keys: [Int] = [], intervals: [KeyRun] = []
      for s in 0..<p where s != r && !perSender[s].isEmpty {
        var united: [KeyRun] = []
        Graph.unite(&perSender[s], into: &united, keys: &keys, intervals: &intervals)
        needs[r][s] = Reach.joinProgressions(united)
      }
    }
    self.tokens = tokens
    self.shards = shards
    self.needs = needs
    self.globalRows = globalRows
  }
}

/// The first index of `sorted` whose value is at least `value`.
private func lowerBound(_ sorted: [Int], _ value: Int) -> Int {
  var lo = 0, hi = sorted.count
  while lo < hi {
    let mid = (lo + hi) / 2
    if sorted[mid] < value { lo = mid + 1 } else { hi = mid }
  }
  return lo
}

/// The keys a range of query rows reaches through one component, in closed form per kind.
enum Reach {
  /// Whether the component's keys are found by enumerating its rows (random and explicit operands).
  static func isScattered(_ component: Graph.Component) -> Bool {
    component.intersectionAtoms.contains {
      switch $0 {
      case .random, .explicit: return true
      default: return false
      }
    }
  }

  /// Every key the rows of `pieces` attend to through `component`, sorted and unique: O(their edges).
  static func enumerate(_ component: Graph.Component, pieces: [Range<Int>], tokens n: Int) -> [Int] {
    var keys: [Int] = [], runs: [KeyRun] = [], scratch = IntersectionScratch()
    for piece in pieces {
      for row in piece {
        runs.removeAll(keepingCapacity: true)
        component.appendRuns(row: row, queryCount: n, keyCount: n, to: &runs, scratch: &scratch)
        for run in runs { for t in 0..<run.count { keys.append(run.start + t * run.stride) } }
      }
    }
    keys.sort()
    var unique: [Int] = []
    unique.reserveCapacity(keys.count)
    for k in keys where unique.last != k { unique.append(k) }
    return unique
  }

  /// The keys in `keys` that rows `rows` (non-empty) attend to through `component` (not scattered), as sorted
  /// runs with disjoint spans. Square graphs over `tokens` tokens.
  /// - Complexity: O(1) runs for every kind but `blocked` (one run per block meeting both ranges, at most one
  ///   when they are disjoint) and `dilated` over fewer rows than its step (O(those rows' edges)).
  static func runs(_ component: Graph.Component, rows: Range<Int>, keys: Range<Int>, tokens n: Int) -> [KeyRun] {
    let a = rows.lowerBound, b = rows.upperBound - 1  // first and last row
    func clipped(_ lo: Int, _ hi: Int) -> [KeyRun] {  // lo...hi within keys
      let l = max(lo, keys.lowerBound), h = min(hi, keys.upperBound - 1)
      return l <= h ? [KeyRun(start: l, count: h - l + 1)] : []
    }
    switch component {
    case .full:
      return clipped(0, n - 1)
    case .causal:
      return clipped(0, b)
    case let .window(radius, causal):
      let lo = a >= radius ? a - radius : 0
      let hi = causal ? b : (radius >= n - 1 - b ? n - 1 : b + radius)
      return clipped(lo, hi)
    case let .prefix(length):
      return clipped(0, max(min(length, n), b + 1) - 1)
    case let .documents(documents):
      return clipped(documents.document(of: a).start, documents.document(of: b).end - 1)
    case let .dilated(radius, dilation):
      let s = dilation + 1
      let span = radius.multipliedReportingOverflow(by: s).partialValue
      if rows.count >= s {  // every residue: one range (see the plan's documentation)
        let lo = a >= span ? a - span : 0
        let hi = span >= n - 1 - b ? n - 1 : b + span
        return clipped(lo, hi)
      }
      var found: [Int] = []
      var scratch = IntersectionScratch(), runs: [KeyRun] = []
      for row in rows {
        runs.removeAll(keepingCapacity: true)
        component.appendRuns(row: row, queryCount: n, keyCount: n, to: &runs, scratch: &scratch)
        for run in runs { for t in 0..<run.count where keys.contains(run.start + t * run.stride) { found.append(run.start + t * run.stride) } }
      }
      found.sort()
      var out: [KeyRun] = []
      Graph.compress(sortedKeys: found[...], to: &out)
      return out
    case let .blocked(block, dilation):
      let s = dilation + 1
      // Blocks meeting both the rows and the keys.
      let firstBlock = max(a / block, keys.lowerBound / block), lastBlock = min(b / block, (keys.upperBound - 1) / block)
      guard firstBlock <= lastBlock else { return [] }
      var out: [KeyRun] = []
      for k in firstBlock...lastBlock {
        let base = k * block
        // An active row (base + t*s) among the rows?
        let from = max(a, base)
        let active = base + (from - base + s - 1) / s * s
        guard active <= b, active < base + block else { continue }
        let count = Graph.Component.blockedDegree(base: base, block: block, step: s, keyCount: n)
        let lattice = KeyRun(start: base, count: count, stride: count == 1 ? 1 : s)
        out += clip(lattice, to: keys)
      }
      return joinProgressions(out)
    case let .global(tokens):
      if tokens.contains(where: { rows.contains($0) }) { return clipped(0, n - 1) }
      var out: [KeyRun] = []
      for t in tokens where keys.contains(t) { Graph.appendMerging(KeyRun(start: t, count: 1), to: &out) }
      return out
    case let .intersection(atoms):
      return intersectionRuns(atoms, rows: rows, keys: keys, tokens: n)
    case .random, .explicit, .view:
      preconditionFailure("scattered components and views are enumerated, not reached")
    }
  }

  /// An intersection's reach: split by document when an operand is `documents` (only the documents holding
  /// the first and the last row reach outside the rows), the other operands' reaches intersected.
  static func intersectionRuns(_ atoms: [Graph.Component], rows: Range<Int>, keys: Range<Int>, tokens n: Int) -> [KeyRun] {
    if let d = atoms.firstIndex(where: { if case .documents = $0 { return true } else { return false } }),
       case let .documents(documents) = atoms[d] {
      var rest = atoms
      rest.remove(at: d)
      var pieces: [(Range<Int>, Range<Int>)] = []  // (rows, the document's keys)
      let first = documents.document(of: rows.lowerBound), last = documents.document(of: rows.upperBound - 1)
      if first == last {
        pieces.append((rows, first.start..<first.end))
      } else {
        pieces.append((rows.lowerBound..<first.end, first.start..<first.end))
        if first.end < last.start { pieces.append((first.end..<last.start, first.end..<last.start)) }  // whole documents
        pieces.append((last.start..<rows.upperBound, last.start..<last.end))
      }
      var out: [KeyRun] = []
      for (pieceRows, document) in pieces {
        let lo = max(document.lowerBound, keys.lowerBound), hi = min(document.upperBound, keys.upperBound)
        guard lo < hi else { continue }
        let window = lo..<hi
        if rest.isEmpty {
          out.append(KeyRun(start: window.lowerBound, count: window.count))
        } else {
          out += intersectionRuns(rest, rows: pieceRows, keys: window, tokens: n)
        }
      }
      var united: [KeyRun] = [], scratchKeys: [Int] = [], intervals: [KeyRun] = []
      Graph.unite(&out, into: &united, keys: &scratchKeys, intervals: &intervals)
      return united
    }
    var accumulated = runs(atoms[0], rows: rows, keys: keys, tokens: n)
    var scratchKeys: [Int] = []
    for atom in atoms.dropFirst() {
      if accumulated.isEmpty { break }
      var result: [KeyRun] = []
      IntersectionScratch.intersect(accumulated, runs(atom, rows: rows, keys: keys, tokens: n), into: &result, keys: &scratchKeys)
      accumulated = result
    }
    return accumulated
  }

  /// The keys of `run` inside `keys`, as one run (or none).
  static func clip(_ run: KeyRun, to keys: Range<Int>) -> [KeyRun] {
    let a = max(run.start, keys.lowerBound), b = min(run.last, keys.upperBound - 1)
    guard a <= b else { return [] }
    let first = run.start + (a - run.start + run.stride - 1) / run.stride * run.stride
    guard first <= b else { return [] }
    let count = (b - first) / run.stride + 1
    return [KeyRun(start: first, count: count, stride: count == 1 ? 1 : run.stride)]
  }

  /// Sorted, disjoint runs with consecutive progressions of one stride joined (blocked lattices that
  /// continue across blocks).
  static func joinProgressions(_ runs: [KeyRun]) -> [KeyRun] {
    var out: [KeyRun] = []
    for run in runs {
      if let previous = out.last {
        let step = previous.count == 1 ? run.start - previous.last : previous.stride
        let runStep = run.count == 1 ? step : run.stride
        if step == runStep, step >= 1, previous.last + step == run.start {
          out[out.count - 1] = KeyRun(start: previous.start, count: previous.count + run.count, stride: step)
          continue
        }
      }
      out.append(run)
    }
    return out
  }
}
