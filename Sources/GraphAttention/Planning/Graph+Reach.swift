extension Graph {
  /// How far behind its own index a query row looks for the bulk of its keys: rows at or after `r` need
  /// few keys below `r - backwardReach` — only scattered ones (global tokens, random and explicit edges),
  /// cheap to fault back in after their pages were released. `keyCount` for full and causal graphs,
  /// whose rows need every earlier key.
  ///
  /// Streaming uses this to release the pages of keys and values no later chunk needs. With
  /// `queryCount != keyCount`, aligned causal windows reach `|L_k - L_q|` further.
  /// - Complexity: O(components).
  public func backwardReach(keyCount: Int, queryCount: Int? = nil) -> Int {
    let shift = abs(keyCount - (queryCount ?? keyCount))
    var reach = 0
    for component in components {
      guard let r = component.localReach(keyCount: keyCount, shift: shift) else { continue }
      if r >= keyCount { return keyCount }
      reach = max(reach, r)
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

extension Graph.Component {
  /// How far from its row a component's keys lie, or nil for scattered kinds (global, random, explicit);
  /// `keyCount` when they may lie anywhere before it (full, causal, prefix). An intersection reaches no
  /// further than its nearest operand.
  func localReach(keyCount: Int, shift: Int) -> Int? {
    switch self {
    case let .window(radius, causal): return causal ? radius.addingReportingOverflow(shift).partialValue : radius
    case let .dilated(radius, dilation): return radius.multipliedReportingOverflow(by: dilation + 1).partialValue
    case let .blocked(block, _): return block
    case let .documents(documents): return documents.longest
    case .global, .random, .explicit, .view: return nil
    case .full, .causal, .prefix: return keyCount
    case let .intersection(atoms): return atoms.compactMap { $0.localReach(keyCount: keyCount, shift: shift) }.min()
    }
  }
}

extension Graph {
  /// The components whose keys lie anywhere in the key range (random and explicit graphs, and
  /// intersections of scattered kinds only), as a graph, or nil if there are none.
  var scatteredComponents: Graph? {
    let parts = components.filter {
      switch $0 {
      case .random, .explicit: return true
      case .intersection: return $0.localReach(keyCount: Int.max, shift: 0) == nil
      default: return false
      }
    }
    return parts.isEmpty ? nil : Graph(components: parts)
  }
}
