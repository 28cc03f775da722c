extension Graph {
  /// How far behind its own index a query row may look, in keys: rows at or after `r` never need keys
  /// below `r - backwardReach`, except global tokens (a few keys, cheap to fault back in). `keyCount` for
  /// graphs whose rows reach arbitrarily far back (full, causal, random, explicit).
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
      case .global: continue
      case .full, .causal, .random, .explicit: return keyCount
      }
    }
    return min(reach, keyCount)
  }
}
