import _GraphAttentionKernels

/// The C tile kernel (`ga_tile_attend`), seen from Swift.
///
/// Ownership: every pointer belongs to the caller and must stay valid for the call; the kernel keeps none.
enum TileKernel {
  /// Rows a tile may hold.
  static let maxRows = Int(GA_MAX_ROWS)
  /// Rows of a group (the register block); tiles of several rows hold whole groups.
  static let groupRows = Int(GA_GROUP_ROWS)
  /// Floats of score scratch a tile needs (32-byte aligned).
  static let scratchFloats = Int(GA_GROUP_ROWS) * Int(GA_KEY_BLOCK)

  /// Whether the AVX2/FMA kernel runs on this CPU (else the portable one).
  static var usesAVX2: Bool { ga_uses_avx2() != 0 }

  /// Row pointers of one tile, in `rows.count` slots.
  struct Rows {
    var query: [UnsafePointer<Float>] = []
    var maxima: [UnsafeMutablePointer<Float>] = []
    var sums: [UnsafeMutablePointer<Float>] = []
    var accumulators: [UnsafeMutablePointer<Float>] = []
  }

  /// Folds `keyCount` keys into the tile's rows' `(m, l, acc)`.
  /// - Parameter groupRanges: for tiles of several rows, each group of 4 rows' key positions.
  static func attend(rows: Rows, groupRanges: [Range<Int>], key: UnsafePointer<Float>, value: UnsafePointer<Float>,
                     keyDim: Int, valueDim: Int, scale: Float, keys: UnsafePointer<Int64>, keyCount: Int,
                     mask: UnsafePointer<UInt8>?, scratch: UnsafeMutablePointer<Float>, portable: Bool) {
    var tile = ga_tile()
    tile.force_portable = portable ? 1 : 0
    withUnsafeMutableBytes(of: &tile.group_begin) { slots in
      for (g, range) in groupRanges.enumerated() { slots.storeBytes(of: Int64(range.lowerBound), toByteOffset: g * 8, as: Int64.self) }
    }
    withUnsafeMutableBytes(of: &tile.group_end) { slots in
      for (g, range) in groupRanges.enumerated() { slots.storeBytes(of: Int64(range.upperBound), toByteOffset: g * 8, as: Int64.self) }
    }
    tile.rows = Int32(rows.query.count)
    tile.key = key
    tile.value = value
    tile.key_dim = Int32(keyDim)
    tile.value_dim = Int32(valueDim)
    tile.scale = scale
    tile.keys = keys
    tile.n = Int64(keyCount)
    tile.mask = mask
    tile.scratch = scratch
    withUnsafeMutableBytes(of: &tile.query) { slots in
      for (r, p) in rows.query.enumerated() { slots.storeBytes(of: p, toByteOffset: r * MemoryLayout<UnsafePointer<Float>>.stride, as: UnsafePointer<Float>.self) }
    }
    withUnsafeMutableBytes(of: &tile.m) { slots in
      for (r, p) in rows.maxima.enumerated() { slots.storeBytes(of: p, toByteOffset: r * MemoryLayout<UnsafeMutablePointer<Float>>.stride, as: UnsafeMutablePointer<Float>.self) }
    }
    withUnsafeMutableBytes(of: &tile.l) { slots in
      for (r, p) in rows.sums.enumerated() { slots.storeBytes(of: p, toByteOffset: r * MemoryLayout<UnsafeMutablePointer<Float>>.stride, as: UnsafeMutablePointer<Float>.self) }
    }
    withUnsafeMutableBytes(of: &tile.acc) { slots in
      for (r, p) in rows.accumulators.enumerated() { slots.storeBytes(of: p, toByteOffset: r * MemoryLayout<UnsafeMutablePointer<Float>>.stride, as: UnsafeMutablePointer<Float>.self) }
    }
    ga_tile_attend(&tile)
  }
}
