/// Groups the rows of one backward pass into tiles that share their columns, like `QueryTiler` does for
/// the forward, but over any row source: the graph's rows (pass 1, columns are keys) or the transposed
/// graph's rows (pass 2, columns are queries).
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

  static let maxRows = 16
  /// Extra scores a shared tile may compute, relative to its rows' edges (the masked ones are wasted).
  static let maxOverhead = 0.05
  static let slackPerRow = 4

  /// Fills the runs of a row into the scratch (sorted, disjoint).
  let rowRuns: (_ row: Int, _ scratch: inout RowScratch) -> Void
  let rowStride: Int

  private var scratch = [RowScratch](repeating: RowScratch(), count: BackwardTiler.maxRows)
  private var degrees = [Int](repeating: 0, count: BackwardTiler.maxRows)
  private var unionOperands: [KeyRun] = []
  private var unionRuns: [KeyRun] = []
  private var unionKeys: [Int] = []
  private var unionIntervals: [KeyRun] = []
  private let tileRows = UnsafeMutablePointer<Int>.allocate(capacity: BackwardTiler.maxRows)
  private var columns: UnsafeMutablePointer<Int64>
  private var columnsCapacity = 0
  private var mask: UnsafeMutablePointer<UInt8>
  private var maskCapacity = 0
  /// Edges of the rows tiled so far and scores the tiles compute.
  private(set) var edges = 0
  private(set) var scores = 0

  init(rowStride: Int, rowRuns: @escaping (_ row: Int, _ scratch: inout RowScratch) -> Void) {
    self.rowRuns = rowRuns
    self.rowStride = max(1, rowStride)
    columnsCapacity = 1024
    columns = .allocate(capacity: columnsCapacity)
    maskCapacity = 4096
    mask = .allocate(capacity: maskCapacity)
  }

  /// Frees the buffers; the tiler must not be used afterwards.
  func deallocate() {
    tileRows.deallocate()
    columns.deallocate()
    mask.deallocate()
  }

  /// Calls `empty(row)` for each row of `rows` without columns and `tile` for each tile.
  mutating func forEachTile(rows: Range<Int>, empty: (Int) -> Void, tile: (Tile) -> Void) {
    var pending: [Int] = []
    pending.reserveCapacity(BackwardTiler.maxRows)
    let stride = min(rowStride, max(1, rows.count))
    for residue in 0..<stride {
      var row = rows.lowerBound + ((residue - rows.lowerBound % stride) + stride) % stride
      while row < rows.upperBound {
        let slot = pending.count
        rowRuns(row, &scratch[slot])
        let degree = scratch[slot].degree
        edges += degree
        if degree == 0 {
          empty(row)
        } else {
          degrees[slot] = degree
          pending.append(row)
          if pending.count == BackwardTiler.maxRows {
            emit(pending, slots: 0..<pending.count, tile: tile)
            pending.removeAll(keepingCapacity: true)
          }
        }
        row += stride
      }
    }
    if !pending.isEmpty { emit(pending, slots: 0..<pending.count, tile: tile) }
  }

  /// Emits `slots` as one shared tile if their union is cheap enough, else as groups of four, else singly.
  private mutating func emit(_ rows: [Int], slots: Range<Int>, tile: (Tile) -> Void) {
    if slots.count > 1, let n = union(slots: slots) {
      // Mask: walk each row's columns against the union.
      ensureMask(slots.count * n)
      mask.update(repeating: 0, count: slots.count * n)
      // A lattice union `first + t * step` (windows, causal, dilated, blocked): a key's position is
      // `(key - first) / step`, and a run of the same step is one memset.
      let first = Int(columns[0])
      let lattice = unionRuns.count == 1
      let step = lattice ? unionRuns[0].stride : 1
      for (r, slot) in slots.enumerated() {
        var position = 0
        let rowMask = mask + r * n
        if lattice {
          for run in scratch[slot].runs {
            let offset = (run.start - first) / step
            if run.stride == step || run.count == 1 {
              (rowMask + offset).update(repeating: 1, count: run.count)
            } else {
              for t in 0..<run.count { rowMask[offset + t * (run.stride / step)] = 1 }
            }
          }
          continue
        }
        for run in scratch[slot].runs {
          var key = run.start
          for _ in 0..<run.count {
            while columns[position] != Int64(key) { position += 1 }
            rowMask[position] = 1
            key += run.stride
          }
        }
      }
      for (r, slot) in slots.enumerated() { tileRows[r] = rows[slot] }
      scores += slots.count * n
      tile(Tile(rows: UnsafeBufferPointer(start: tileRows, count: slots.count), columns: columns, columnCount: n,
                mask: mask))
      return
    }
    if slots.count > 4 {
      var first = slots.lowerBound
      while first < slots.upperBound {
        emit(rows, slots: first..<min(first + 4, slots.upperBound), tile: tile)
        first += 4
      }
      return
    }
    for slot in slots {
      let n = expand(scratch[slot].runs)
      tileRows[0] = rows[slot]
      scores += n
      tile(Tile(rows: UnsafeBufferPointer(start: tileRows, count: 1), columns: columns, columnCount: n, mask: nil))
    }
  }

  /// The union of the slots' columns in `columns` if `rows x union` is within the overhead, else nil.
  private mutating func union(slots: Range<Int>) -> Int? {
    var total = 0
    for slot in slots { total += degrees[slot] }
    unionRuns.removeAll(keepingCapacity: true)
    if let lattice = latticeUnion(slots: slots) {
      // Rows of one run each on a common lattice (dilated, blocked): the union's span of that lattice,
      // without merging keys (the gaps it may hold are masked and counted by the overhead test).
      unionRuns.append(lattice)
    } else {
      unionOperands.removeAll(keepingCapacity: true)
      for slot in slots { unionOperands.append(contentsOf: scratch[slot].runs) }
      Graph.unite(&unionOperands, into: &unionRuns, keys: &unionKeys, intervals: &unionIntervals)
    }
    var n = 0
    for run in unionRuns { n += run.count }
    let limit = Double(total) * (1 + BackwardTiler.maxOverhead) + Double(BackwardTiler.slackPerRow * slots.count)
    guard Double(n * slots.count) <= limit else { return nil }
    return expand(unionRuns)
  }

  /// The smallest run covering the slots' keys when each slot is one run with the same stride and residue.
  private func latticeUnion(slots: Range<Int>) -> KeyRun? {
    var stride = 0, lo = Int.max, hi = Int.min
    for slot in slots {
      guard scratch[slot].runs.count == 1 else { return nil }
      let run = scratch[slot].runs[0]
      if run.count > 1 {
        if stride == 0 { stride = run.stride } else if stride != run.stride { return nil }
      }
      lo = min(lo, run.start)
      hi = max(hi, run.last)
    }
    if stride == 0 { stride = 1 }
    for slot in slots where (scratch[slot].runs[0].start - lo) % stride != 0 { return nil }
    return KeyRun(start: lo, count: (hi - lo) / stride + 1, stride: stride)
  }

  /// Writes the runs' keys into `columns`; returns their count.
  private mutating func expand(_ runs: [KeyRun]) -> Int {
    var n = 0
    for run in runs { n += run.count }
    if n > columnsCapacity {
      columns.deallocate()
      columnsCapacity = max(n, 2 * columnsCapacity)
      columns = .allocate(capacity: columnsCapacity)
    }
    var i = 0
    for run in runs {
      var key = run.start
      for _ in 0..<run.count {
        columns[i] = Int64(key)
        key += run.stride
        i += 1
      }
    }
    return n
  }

  private mutating func ensureMask(_ count: Int) {
    if count > maskCapacity {
      mask.deallocate()
      maskCapacity = max(count, 2 * maskCapacity)
      mask = .allocate(capacity: maskCapacity)
    }
  }
}
