/// How many query rows (of every head at once) a streamed job computes per chunk: the one chunk model
/// shared by `StreamingAttention` (which runs it) and `ContextPlan` (which predicts its memory).
///
/// A chunk is rows `r..<r+R` of every batch and head: the kernels split it across threads by edge
/// count, and the pages behind it are released when it is done. `R` is the smallest of:
/// - work: about `targetEdges` (2^26) edges over all heads, seconds of work, so the per-chunk costs
///   (prefetch advice, page release, a checkpoint) stay small next to the work;
/// - bytes: at most `targetQueryBytes` (32 MiB) of query rows, so what a chunk holds resident stays small
///   next to the 512 MiB budget of a streamed implicit graph;
/// - scattered keys through the mapping: each far key faults in up to 64 KiB (Linux fault-around) of K
///   and of V, kept under `mappedScatterBytes` (512 MiB) per chunk;
/// - scattered keys read ahead (`.read`): their rows fit in `ScatteredKeyAccess.readAheadBytes`;
/// and at least `minimumRows` (1024) rows. With far keys read ahead, the work and byte limits are
/// widened `readAheadWidening` (8) times: the read-ahead sweeps K and V once per chunk at about one fault
/// per 64 KiB however few keys there are, and larger chunks amortise that sweep.
struct StreamingChunkPolicy {
  /// Edges (over all heads) a chunk aims for.
  static let targetEdges = 1 << 26
  /// Bytes of query rows (over all heads) a chunk holds at most.
  static let targetQueryBytes = 32 << 20
  /// Bytes of K and V pages the far keys of one chunk may fault in through the mapping.
  static let mappedScatterBytes = 512 << 20
  /// Bytes Linux maps around one faulting page of a file mapping (16 pages of 4 KiB).
  static let faultAroundBytes = 65_536
  /// The smallest chunk, in rows.
  static let minimumRows = 1024
  /// How much larger chunks are when far keys are read ahead.
  static let readAheadWidening = 8

  /// Query rows per chunk for a job of `shape` over `graph`.
  ///
  /// - Parameters:
  ///   - queryBytes, keyBytes: the element sizes of Q and of K/V.
  ///   - access: how far keys are read; `inMemory` when K and V are heap copies (no faults to bound).
  /// - Complexity: O(components of the graph).
  static func rows(shape: AttentionShape, graph: Graph, queryBytes: Int, keyBytes: Int, access: ScatteredKeyAccess,
                   inMemory: Bool = false) -> Int {
    let heads = shape.batch * shape.queryHeads
    let estimatedEdges = graph.estimatedEdgeCount(queryCount: shape.queryCount, keyCount: shape.keyCount)
    let scattered = graph.scatteredKeysPerRow(queryCount: shape.queryCount, keyCount: shape.keyCount)
      * Double(shape.batch * shape.keyValueHeads)
    let readsAhead = scattered > 0 && access == .read && !inMemory
    let widen = readsAhead ? readAheadWidening : 1
    let degree = max(1, estimatedEdges / max(1, shape.queryCount))
    let rowsByWork = widen * targetEdges / degree / heads + 1
    let rowsByBytes = widen * targetQueryBytes / max(1, heads * shape.keyDim * queryBytes)
    let rowsByScatter: Int
    if scattered > 0 && access == .mapped && !inMemory {
      rowsByScatter = Int(Double(mappedScatterBytes) / (scattered * 2 * Double(faultAroundBytes)))
    } else if readsAhead {
      rowsByScatter = Int(Double(ScatteredKeyAccess.readAheadBytes) / (scattered * Double((shape.keyDim + shape.valueDim) * keyBytes)))
    } else {
      rowsByScatter = Int.max
    }
    return max(minimumRows, min(max(1, shape.queryCount), rowsByWork, rowsByBytes, rowsByScatter))
  }
}
