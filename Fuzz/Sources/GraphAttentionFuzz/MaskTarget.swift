import GraphAttention

/// Mask specifications: the bytes as UTF-8 text. Explicit components get a small pattern derived from their
/// path text (no file is read), so unions with explicit graphs are exercised too.
enum MaskTarget {
  static func run(_ data: UnsafeRawBufferPointer) {
    guard data.count <= 512 else { return }
    let text = String(decoding: data, as: UTF8.self)
    let graph: Graph
    do {
      graph = try Graph(parsing: text) { source, _ in
        let name: String
        switch source {
        case let .csr(a, b), let .coo(a, b): name = a + b
        case let .matrixMarket(a): name = a
        }
        let bytes = Array(name.utf8)
        let pairs = bytes.count / 2
        return try ExplicitGraph(rows: (0..<pairs).map { Int64(bytes[2 * $0] % 16) },
                                 columns: (0..<pairs).map { Int64(bytes[2 * $0 + 1] % 16) })
      }
    } catch is GraphAttentionError {
      return
    } catch {
      fatalError("non-GraphAttentionError \(error) for \(text)")
    }
    GraphOracle.checkHugeLengths(graph)
    // The description parses back to the same graph (explicit components are re-derived from their text).
    if let again = try? Graph(parsing: graph.description, explicit: { _, _ in try ExplicitGraph(rows: [], columns: []) }) {
      _ = again.description
    }
    let length = 1 + Int(data.reduce(0) { ($0 &* 31 &+ Int($1)) & 0xFFFF } % 40)
    for (q, k) in [(length, length), (length, length + 3), (16, 16)] {
      guard (try? graph.validate(queryCount: q, keyCount: k)) != nil else { continue }
      GraphOracle.check(graph, queryCount: q, keyCount: k, what: "\(text) L_q=\(q) L_k=\(k)")
    }
  }
}
