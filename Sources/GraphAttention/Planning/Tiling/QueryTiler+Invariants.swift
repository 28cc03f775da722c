/// Structural checks of the tiles `QueryTiler` hands out, run in debug builds before a tile's indices
/// reach the C kernel (as swift-collections' `Heap+Invariants.swift` checks a heap): a wrong index
/// there is an out-of-bounds read in C, not a Swift trap, so it is caught here first.
extension QueryTiler.Tile {
  /// Traps unless the tile is well formed for a graph over `queryCount` query rows and `keyCount` keys
  /// (`forEachTile` calls it on every tile in debug builds only):
  /// - 1 row, or a multiple of `groupRows` up to `maxRows`, every row in `0 ..< queryCount`, rows distinct;
  /// - keys strictly increasing and in `0 ..< keyCount`, at least one;
  /// - a multi-row tile has one group range per group, each inside `0 ..< keyCount` of the tile, and a
  ///   mask (`groups * keys * groupRows` bytes, each 0 or 1) in which every row attends to at least one
  ///   key of its group's range and to none outside it; a single-row tile has no mask and no ranges.
  ///
  /// The mask is read in full for tiles of up to `fullMaskCheckBytes` bytes, and outside each group's
  /// range otherwise (debug-build tests would slow down several times for no extra coverage: the
  /// small tiles exercise the same code).
  /// - Complexity: O(keys + min(mask bytes, fullMaskCheckBytes)).
  func _checkInvariants(queryCount: Int, keyCount: Int) {
    let rowCount = rows.count
    precondition(rowCount == 1 || (rowCount % QueryTiler.groupRows == 0 && rowCount <= QueryTiler.maxRows),
                 "tile of \(rowCount) rows")
    precondition(rows.allSatisfy { (0..<queryCount).contains($0) }, "tile row out of 0..<\(queryCount): \(Array(rows))")
    precondition(Set(rows).count == rowCount, "tile repeats a row: \(Array(rows))")
    precondition(self.keyCount > 0, "tile without keys")
    var previous = Int64(-1)
    for position in 0..<self.keyCount {
      let key = keys[position]
      precondition(key > previous, "tile keys not strictly increasing at position \(position): \(previous), \(key)")
      precondition(key < Int64(keyCount), "tile key \(key) out of 0..<\(keyCount)")
      previous = key
    }
    if rowCount == 1 {
      precondition(mask == nil && rowSpans == nil && groupRanges.isEmpty, "a single-row tile with a mask, spans or group ranges")
      return
    }
    let groups = rowCount / QueryTiler.groupRows
    precondition(groupRanges.count == groups, "\(groupRanges.count) group ranges for \(groups) groups")
    precondition(sharedKeys == 0 || (rowSpans != nil && groupRanges.allSatisfy { $0.lowerBound == 0 }),
                 "\(sharedKeys) shared keys without row spans, or outside a group's range")
    if let rowSpans {
      precondition(mask == nil, "a tile with both row spans and a mask")
      for row in 0..<rowCount {
        let span = rowSpans[row], range = groupRanges[row / QueryTiler.groupRows]
        precondition(!span.isEmpty && span.lowerBound >= range.lowerBound && span.upperBound <= range.upperBound,
                     "row \(row)'s key positions \(span) outside its group's range \(range)")
        precondition(span.lowerBound >= sharedKeys, "row \(row)'s key positions \(span) overlap the \(sharedKeys) shared keys")
      }
      return
    }
    guard let mask else { preconditionFailure("a tile of \(rowCount) rows without a mask or row spans") }
    let full = groups * self.keyCount * QueryTiler.groupRows <= QueryTiler.Tile.fullMaskCheckBytes
    for (group, range) in groupRanges.enumerated() {
      precondition(range.lowerBound >= 0 && range.upperBound <= self.keyCount && !range.isEmpty,
                   "group \(group) range \(range) outside the tile's \(self.keyCount) keys")
      for member in 0..<QueryTiler.groupRows {
        var attends = full ? 0 : 1
        let positions = full ? Array(0..<self.keyCount) : Array(0..<range.lowerBound) + Array(range.upperBound..<self.keyCount)
        for position in positions {
          let byte = mask[(group * self.keyCount + position) * QueryTiler.groupRows + member]
          precondition(byte <= 1, "mask byte \(byte) is neither 0 nor 1")
          if byte == 1 {
            precondition(range.contains(position), "row \(member) of group \(group) attends to key position \(position) outside its range \(range)")
            attends += 1
          }
        }
        precondition(attends > 0, "row \(member) of group \(group) attends to no key of the tile")
      }
    }
  }

  /// Mask bytes up to which `_checkInvariants` reads the whole mask.
  static let fullMaskCheckBytes = 1 << 14
}
