extension Graph {
  /// Whether the graph's pattern differs per query head: it holds a per-head random component
  /// (`random:P:SEED:per-head`). `attention` then runs it head by head, each head with `forHead(h)`.
  /// - Complexity: O(components).
  public var variesPerHead: Bool {
    components.contains { component in
      component.intersectionAtoms.contains {
        if case let .random(random) = $0 { return random.perHead }
        if case let .view(view) = $0 { return Graph(components: [view.base]).variesPerHead }
        return false
      }
    }
  }

  /// The graph query head `head` uses: each per-head random component re-seeded with
  /// `seed &+ UInt64(head) &* 0x9E3779B97F4A7C15` (head 0 keeps the seed), everything else unchanged.
  ///
  /// A graph that does not vary per head is returned as is. `head` counts query heads within one
  /// batch element (`0..<H`): every batch element sees the same graphs.
  /// - Precondition: `head >= 0`.
  /// - Complexity: O(components).
  public func forHead(_ head: Int) -> Graph {
    precondition(head >= 0, "head \(head) is negative")
    guard variesPerHead else { return self }
    func reseeded(_ c: Component) -> Component {
      switch c {
      case let .random(random) where random.perHead:
        let seed = random.seed &+ UInt64(head) &* 0x9E37_79B9_7F4A_7C15
        return .random(RandomGraph(probability: random.probability, seed: seed))
      case let .intersection(atoms):
        return .intersection(atoms.map(reseeded))
      case let .view(view):
        return .view(view.with(base: reseeded(view.base)))
      default:
        return c
      }
    }
    return Graph(components: components.map(reseeded))
  }
}

extension Graph {
  /// Parses one mask specification per query head from text with one specification a line (a mask
  /// file), reading explicit graphs and document offsets from their files.
  ///
  /// Blank lines and lines starting with `#` are skipped; every other line is one head's graph, in
  /// head order. Each graph is specialised for its head (`forHead(_:)`).
  /// - Parameters:
  ///   - text: the lines.
  ///   - heads: the number of query heads, which must equal the number of specifications.
  ///   - queryCount, keyCount: the lengths, if known, to check explicit graphs against while loading.
  /// - Throws: `GraphAttentionError` (`.mask`) naming the line of a bad specification, or a count that
  ///   is not `heads`.
  /// - Complexity: O(length of the text) plus the loads.
  public static func perHead(parsing text: String, heads: Int, queryCount: Int? = nil, keyCount: Int? = nil) throws -> [Graph] {
    var graphs: [Graph] = []
    for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let spec = line.trimmingWhitespace()
      if spec.isEmpty || spec.hasPrefix("#") { continue }
      do {
        graphs.append(try Graph(parsing: spec, queryCount: queryCount, keyCount: keyCount).forHead(graphs.count))
      } catch let error as GraphAttentionError {
        throw GraphAttentionError(error.kind, "line \(number + 1): \(error.problem)", fix: error.fix)
      }
    }
    guard graphs.count == heads else {
      throw GraphAttentionError(.mask, "the mask file has \(graphs.count) specification(s) for \(heads) query head(s)",
                                fix: "write one mask specification a line, one line per query head")
    }
    return graphs
  }
}
