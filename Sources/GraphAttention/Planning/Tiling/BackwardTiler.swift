/// Groups the rows of one backward pass into tiles that share their columns, like `QueryTiler` does for
/// the forward and on the same `RowGrouper`, but over any row source: the graph's rows (pass 1, columns are
/// keys) or the transposed graph's rows (pass 2, columns are queries).
///
/// Rows are visited in residue-major order for strided graphs, collected sixteen at a time, and become
/// one tile over the union of their columns with a `[row][column]` mask when that costs at most
/// `maxOverhead` extra scores; otherwise groups of four are tried, then single rows over exactly their
/// columns. Every row appears in exactly one tile, so a row's gradient is accumulated by one tile, in
/// one order: the pass is deterministic. Memory: O(widest tile) columns and mask bytes, per worker.
struct BackwardTiler {
  /// A tile: rows and their shared columns; pointers are valid only during the callback.
  struct Tile {
    var rows: UnsafeBufferPointer<Int>
    var columns: UnsafePointer<Int64>
    var columnCount: Int
    /// `rows.count x columnCount` bytes, 1 where the row has the column; nil when every row has every column.
    var mask: UnsafePointer<UInt8>?
  }

  /// Rows of a tile at most: the grouper's, so a full batch is one tile when its union fits.
  static let maxRows = RowGrouper.maxRows
  /// Extra scores a shared tile may compute, relative to its rows' edges (the masked ones are wasted).
  static let maxOverhead = 0.05
  static let slackPerRow = 4
  /// Rows tried together once a full tile's union is over the budget.
  static let fallbackRows = 4

  /// Fills the runs of a row into the scratch (sorted, disjoint).
  let rowRuns: (_ row: Int, _ scratch: inout RowScratch) -> Void
  var rowStride: Int { grouper.rowStride }

  /// The pending rows, their runs, the union and its mask.
  private var grouper: RowGrouper
  /// Edges of the rows tiled so far and scores the tiles compute.
  private(set) var edges = 0
  private(set) var scores = 0

  init(rowStride: Int, rowRuns: @escaping (_ row: Int, _ scratch: inout RowScratch) -> Void) {
    self.rowRuns = rowRuns
    grouper = RowGrouper(rowStride: rowStride, keysCapacity: 1024)
  }

  /// Frees the buffers; the tiler must not be used afterwards.
  func deallocate() {
    grouper.deallocate()
  }

  /// Calls `empty(row)` for each row of `rows` without columns and `tile` for each tile.
  mutating func forEachTile(rows: Range<Int>, empty: (Int) -> Void, tile: (Tile) -> Void) {
    grouper.removeAll()
    for row in RowOrder(rows, rowStride: grouper.rowStride) {
      let slot = grouper.nextSlot
      rowRuns(row, &grouper.scratch[slot])
      let degree = grouper.scratch[slot].degree
      edges += degree
      if degree == 0 {
        empty(row)
      } else if grouper.append(row, degree: degree) {
        emit(slots: 0..<BackwardTiler.maxRows, tile: tile)
        grouper.removeAll()
      }
    }
    if grouper.nextSlot > 0 { emit(slots: 0..<grouper.nextSlot, tile: tile) }
    grouper.removeAll()
  }

  /// Emits `slots` as one shared tile if their union is cheap enough, else as groups of four, else singly.
  private mutating func emit(slots: Range<Int>, tile: (Tile) -> Void) {
    if slots.count > 1, let n = union(slots) {
      grouper.setTileRows(slots)
      scores += slots.count * n
      tile(Tile(rows: UnsafeBufferPointer(start: grouper.tileRows, count: slots.count), columns: grouper.keys, columnCount: n,
                mask: grouper.mask))
      return
    }
    if slots.count > BackwardTiler.fallbackRows {
      var first = slots.lowerBound
      while first < slots.upperBound {
        emit(slots: first..<min(first + BackwardTiler.fallbackRows, slots.upperBound), tile: tile)
        first += BackwardTiler.fallbackRows
      }
      return
    }
    for slot in slots {
      let n = grouper.expand(grouper.scratch[slot].runs)
      grouper.tileRows[0] = grouper.pending[slot]
      scores += n
      tile(Tile(rows: UnsafeBufferPointer(start: grouper.tileRows, count: 1), columns: grouper.keys, columnCount: n, mask: nil))
    }
  }

  /// The size of the slots' union, with its columns and `[row][column]` mask written, if `rows x union` is within
  /// the overhead, else nil. Rows of one run on a common lattice take the lattice's span (its gaps are masked
  /// and counted by the overhead test) without merging keys.
  private mutating func union(_ slots: Range<Int>) -> Int? {
    var total = 0
    for slot in slots { total += grouper.degrees[slot] }
    guard let n = grouper.unionSize(slots, limit: .max, contiguousHull: true) else { return nil }
    let limit = Double(total) * (1 + BackwardTiler.maxOverhead) + Double(BackwardTiler.slackPerRow * slots.count)
    guard Double(n * slots.count) <= limit else { return nil }
    _ = grouper.fillUnion(slots, count: n, maskGroupRows: 1, spans: false)
    return n
  }
}
