extension Graph {
  /// How far behind its own index a query row looks for the bulk of its keys: rows at or after `r` need
  /// few keys below `r - backwardReach` — only scattered ones (global tokens, random and explicit edges),
  /// cheap to fault back in after their pages were released. `keyCount` for full and causal graphs,
  /// whose rows need every earlier key.
  ///
  /// Streaming uses this to release the pages of keys and values no later chunk needs.
  /// - Complexity: O(components).
  public func backwardReach(keyCount: Int) -> Int {
    var reach = 0
    for component in components {
      switch component {
      case let .window(radius, _): reach = max(reach, radius)
      case let .dilated(radius, dilation): reach = max(reach, radius.multipliedReportingOverflow(by: dilation + 1).partialValue)
      case let .blocked(block, _): reach = max(reach, block)
      case .global, .random, .explicit: continue
      case .full, .causal: return keyCount
      }
    }
    return min(reach, keyCount)
  }

  /// The expected number of a row's keys that lie outside its local reach and anywhere in the key
  /// range (random and explicit edges; global keys are excluded, being the same few keys for every row).
  ///
  /// Each such key touches its own page of keys and values, so streaming sizes its chunks by it.
  /// - Complexity: O(components).
  public func scatteredKeysPerRow(queryCount: Int, keyCount: Int) -> Double {
    var total = 0.0
    for component in components {
      switch component {
      case let .random(graph): total += graph.probability * Double(keyCount)
      case let .explicit(graph): total += Double(graph.edgeCount) / Double(max(1, queryCount))
      default: continue
      }
    }
    return total
  }
}

extension Graph {
  /// The global tokens of every global component: keys every row attends to (and rows that attend to
  /// every key), so their key and value rows are worth keeping resident when streaming.
  /// - Complexity: O(global tokens).
  public var globalTokens: [Int] {
    var tokens: [Int] = []
    for case let .global(list) in components { tokens += list }
    return Array(Set(tokens)).sorted()
  }
}

extension Graph {
  /// The components whose keys lie anywhere in the key range (random and explicit graphs), as a graph,
  /// or nil if there are none.
  var scatteredComponents: Graph? {
    let parts = components.filter {
      switch $0 {
      case .random, .explicit: return true
      default: return false
      }
    }
    return parts.isEmpty ? nil : Graph(components: parts)
  }
}
