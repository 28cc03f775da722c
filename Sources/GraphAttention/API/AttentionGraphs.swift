/// The graphs of one attention call: one graph for every head, or one per query head (models that mix
/// windowed and full heads in a layer).
///
/// The core entries (`attention(query:key:value:output:graphs:options:rows:logSumExp:)` and
/// `attentionGradients(query:key:value:output:logSumExp:gradOutput:gradQuery:gradKey:gradValue:graphs:options:gradSinks:)`)
/// take this one value and resolve it once: a shared graph that varies per head (`random:P:S:per-head`) runs
/// as one graph per head, and per-head lists are checked against the query heads, each graph validated and
/// specialised for its head (`Graph.forHead`).
///
/// ```swift
/// let o = MutableTensorView(allocating: [1, 4, 4096, 64], type: .float32)
/// try attention(query: q, key: k, value: v, output: o,
///               graphs: .perHead([.window(128, causal: true), .causal, .window(128, causal: true), .causal]))
/// ```
public enum AttentionGraphs: Sendable {
  /// One graph for every query head.
  case shared(Graph)
  /// One graph per query head (`count == H_q`); query head `h` reads key/value head `h / (H_q / H_kv)`.
  case perHead([Graph])

  /// What a call runs: one graph for all heads, or exactly `H_q` graphs specialised for their heads.
  enum Resolved {
    case shared(Graph)
    case perHead([Graph])
  }

  /// Validates the graphs for `shape` and resolves them (see the type's discussion).
  /// - Throws: `GraphAttentionError(.mask)` for a per-head list of the wrong length, and whatever
  ///   `Graph.validate` throws, naming the head of a per-head graph.
  /// - Complexity: O(graphs) validations.
  func resolved(shape: AttentionShape) throws -> Resolved {
    switch self {
    case let .shared(graph) where graph.variesPerHead && shape.queryHeads > 1:
      return try AttentionGraphs.perHead(Array(repeating: graph, count: shape.queryHeads)).resolved(shape: shape)
    case let .shared(graph):
      try graph.validate(queryCount: shape.queryCount, keyCount: shape.keyCount)
      return .shared(graph)
    case let .perHead(graphs):
      guard graphs.count == shape.queryHeads else {
        throw GraphAttentionError(.mask, "\(graphs.count) graph(s) were given for \(shape.queryHeads) query head(s)",
                                  fix: "give exactly one graph per query head (or one graph for every head)")
      }
      for (h, graph) in graphs.enumerated() {
        do { try graph.validate(queryCount: shape.queryCount, keyCount: shape.keyCount) } catch let error as GraphAttentionError {
          throw GraphAttentionError(error.kind, "head \(h): \(error.problem)", fix: error.fix)
        }
      }
      return .perHead(graphs.enumerated().map { $1.forHead($0) })
    }
  }
}
