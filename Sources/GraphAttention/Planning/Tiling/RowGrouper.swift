import _GraphAttentionKernels

/// The rows of a tiler's range in the order both tilers visit them: residue-major for a row stride `s > 1`
/// (rows `r, r+s, r+2s, ...` of a dilated or blocked graph attend to one lattice of keys, so they are the rows
/// worth grouping), else ascending.
struct RowOrder: Sequence, IteratorProtocol {
  private let rows: Range<Int>
  private let stride: Int
  private var residue = 0
  private var row: Int

  /// The rows of `rows` for a graph whose rows share keys at step `rowStride`.
  init(_ rows: Range<Int>, rowStride: Int) {
    self.rows = rows
    // A stride past the range would visit one row per residue; the order is then the same as ascending.
    stride = Swift.min(Swift.max(1, rowStride), Swift.max(1, rows.count))
    row = RowOrder.first(of: 0, in: rows, stride: stride)
  }

  /// The first row of `rows` whose index is `residue` modulo `stride`.
  private static func first(of residue: Int, in rows: Range<Int>, stride: Int) -> Int {
    rows.lowerBound + ((residue - rows.lowerBound % stride) + stride) % stride
  }

  /// The next row, or nil after the last residue's last row.
  mutating func next() -> Int? {
    while residue < stride {
      if row < rows.upperBound {
        defer { row += stride }
        return row
      }
      residue += 1
      row = RowOrder.first(of: residue, in: rows, stride: stride)
    }
    return nil
  }
}

/// The one row grouper both tilers build their tiles on: the rows pending for a tile (each in a *slot* holding
/// its key runs and degree), the union of a group of slots' keys, and each row's membership of that union as a
/// mask or as a span of positions.
///
/// A union takes one of three shapes (`Shape`): a lattice `start + t * stride` when every row is one run on a
/// common lattice (windows, causal, dilated, blocked; the union is then the runs' hull and its gaps, if any, are
/// masked and paid for by the caller's budget), sorted disjoint intervals when every run is contiguous (unions
/// with global tokens, random rows), and otherwise a key-by-key merge. Counting a union never writes it, so a
/// caller tests its budget before paying O(union) for the keys.
///
/// Masks are laid out `[group][position][row of group]` for groups of `maskGroupRows` rows: the forward's
/// kernels take groups of four (`GA_GROUP_ROWS`), the backward's one row per group (`[row][position]`).
///
/// Memory: O(widest union) keys and `rows x union` mask bytes, grown on demand and kept for the next tile.
struct RowGrouper {
  /// Rows of a tile at most: the C kernels' `GA_MAX_ROWS`.
  static let maxRows = Int(GA_MAX_ROWS)

  /// How the current union is laid out; set by `unionSize` and read by `fillUnion` and `position(of:)`.
  enum Shape {
    /// One lattice `start + t * stride`.
    case lattice(start: Int, stride: Int)
    /// Sorted, disjoint intervals (`intervals`).
    case intervals
    /// Anything else: merged key by key.
    case general
  }

  /// Row step at which the rows share keys (`Graph.preferredRowStride`).
  let rowStride: Int
  /// Per slot, the row's key runs (sorted, disjoint); the tilers may edit them before a union is taken.
  var scratch = [RowScratch](repeating: RowScratch(), count: RowGrouper.maxRows)
  /// Per slot, the row's degree as the tile will count it.
  var degrees = [Int](repeating: 0, count: RowGrouper.maxRows)
  /// The rows pending, in slot order.
  private(set) var pending: [Int] = []
  /// The union's sorted keys (after `fillUnion`), or a single row's (after `expand`); capacity grows to the
  /// widest tile.
  private(set) var keys: UnsafeMutablePointer<Int64>
  private var keysCapacity: Int
  /// The union's mask bytes (after `fillUnion` returned no spans).
  private(set) var mask: UnsafeMutablePointer<UInt8>
  private var maskCapacity: Int
  /// A tile's rows, handed to the tilers' callbacks without allocating.
  let tileRows = UnsafeMutablePointer<Int>.allocate(capacity: RowGrouper.maxRows)
  /// Per row of the union, its span of union positions (after `fillUnion` returned spans).
  let tileSpans = UnsafeMutablePointer<Range<Int>>.allocate(capacity: RowGrouper.maxRows)
  private(set) var shape = Shape.general
  private var intervals: [(start: Int, last: Int)] = []
  private var intervalOffsets: [Int] = []

  /// An empty grouper for rows sharing keys at step `rowStride`, with room for `keysCapacity` union keys to start.
  init(rowStride: Int, keysCapacity: Int) {
    self.rowStride = max(1, rowStride)
    self.keysCapacity = keysCapacity
    keys = .allocate(capacity: keysCapacity)
    maskCapacity = 4096
    mask = .allocate(capacity: maskCapacity)
    pending.reserveCapacity(RowGrouper.maxRows)
  }

  /// Frees the buffers; the grouper must not be used afterwards.
  func deallocate() {
    keys.deallocate()
    mask.deallocate()
    tileRows.deallocate()
    tileSpans.deallocate()
  }

  // MARK: Pending rows

  /// The slot the next row's runs go to.
  var nextSlot: Int { pending.count }

  /// Adds `row`, whose runs and `degree` are in slot `nextSlot`; returns whether the pending rows now fill a tile.
  mutating func append(_ row: Int, degree: Int) -> Bool {
    degrees[pending.count] = degree
    pending.append(row)
    return pending.count == RowGrouper.maxRows
  }

  /// Forgets the pending rows (their slots are reused by the next rows).
  mutating func removeAll() {
    pending.removeAll(keepingCapacity: true)
  }

  /// Whether the row in `slot` shares nothing with the row pending before it: its keys all lie past that row's
  /// (the first row of a document, or of a block).
  func startsAfterPrevious(_ slot: Int) -> Bool {
    guard slot > 0, let first = scratch[slot].runs.first?.start, let previous = scratch[slot - 1].runs.last?.last else {
      return false
    }
    return first > previous
  }

  /// Forgets the pending rows and moves the runs in `slot` to slot 0, where the next row appended starts afresh.
  mutating func restart(from slot: Int) {
    pending.removeAll(keepingCapacity: true)
    scratch.swapAt(0, slot)
  }

  /// Copies the pending rows of `slots` to `tileRows`, in order.
  func setTileRows(_ slots: Range<Int>) {
    for (i, slot) in slots.enumerated() { tileRows[i] = pending[slot] }
  }

  // MARK: Unions

  /// The smallest run covering the slots' keys when each slot is one run and all runs of several keys share one
  /// stride and residue (single keys fit any stride; all single keys give stride 1).
  func latticeHull(_ slots: Range<Int>) -> KeyRun? {
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

  /// The number of keys in the union of the slots' keys, or nil once it exceeds `limit`; sets `shape` for
  /// `fillUnion`.
  ///
  /// - Parameter contiguousHull: whether rows of one contiguous run each take their hull (a lattice of stride 1,
  ///   gaps between rows included) rather than their exact interval union. The backward takes the hull, whose
  ///   mask is one fill per row; the forward the intervals, whose spans its kernels read instead of a mask.
  /// - Complexity: O(rows) for a lattice, O(runs log runs) for intervals, O(degree x rows) merged.
  mutating func unionSize(_ slots: Range<Int>, limit: Int, contiguousHull: Bool) -> Int? {
    var contiguous = true
    for slot in slots {
      for run in scratch[slot].runs where run.count > 1 && run.stride != 1 { contiguous = false }
    }
    if let hull = latticeHull(slots), contiguousHull || !contiguous {
      shape = .lattice(start: hull.start, stride: hull.stride)
      return hull.count <= limit ? hull.count : nil
    }
    if contiguous {
      // Interval union of all rows' runs: O(runs log runs), independent of the degree.
      intervals.removeAll(keepingCapacity: true)
      for slot in slots {
        for run in scratch[slot].runs { intervals.append((run.start, run.last)) }
      }
      intervals.sort { $0.start < $1.start }
      var merged = 0
      for i in 1..<intervals.count {
        if intervals[i].start <= intervals[merged].last + 1 {
          intervals[merged].last = max(intervals[merged].last, intervals[i].last)
        } else {
          merged += 1
          intervals[merged] = intervals[i]
        }
      }
      intervals.removeLast(intervals.count - merged - 1)
      shape = .intervals
      var n = 0
      for interval in intervals {
        n += interval.last - interval.start + 1
        if n > limit { return nil }
      }
      return n
    }
    shape = .general
    return mergedKeys(slots, limit: limit, fill: false)
  }

  /// Whether two slots' keys have a union of at most `limit` keys: O(1) for two runs on one lattice (windows,
  /// causal, blocked, dilated rows), else an O(degree) merge. Leaves `shape` as it was.
  mutating func pairFits(_ a: Int, _ b: Int, limit: Int) -> Bool {
    let ra = scratch[a].runs, rb = scratch[b].runs
    if ra.count == 1, rb.count == 1 {
      let x = ra[0], y = rb[0]
      let stride = max(x.count == 1 ? 1 : x.stride, y.count == 1 ? 1 : y.stride)
      if x.count == 1 || x.stride == stride, y.count == 1 || y.stride == stride, (x.start - y.start) % stride == 0 {
        // Two runs on one lattice: their hull where they overlap or touch, else both.
        let touching = max(x.start, y.start) <= min(x.last, y.last) + stride
        let n = touching ? (max(x.last, y.last) - min(x.start, y.start)) / stride + 1 : x.count + y.count
        return n <= limit
      }
    }
    return mergedKeys(a..<b + 1, limit: limit, fill: false) != nil
  }

  /// Writes the union's `count` sorted keys to `keys` and each slot's membership: with `spans`, when every slot
  /// is one run and the union is a lattice or intervals, each row's span of union positions (`tileSpans`);
  /// otherwise mask bytes in groups of `maskGroupRows` rows. Returns whether it wrote spans.
  mutating func fillUnion(_ slots: Range<Int>, count: Int, maskGroupRows: Int, spans: Bool) -> Bool {
    reserveKeys(count)
    let rows = slots.count
    if case .general = shape {
      growMask(rows * count)
      mask.update(repeating: 0, count: rows * count)
      _ = mergedKeys(slots, limit: count, fill: true, count: count, maskGroupRows: maskGroupRows)
      return false
    }
    switch shape {
    case let .lattice(start, stride):
      for n in 0..<count { keys[n] = Int64(start + n * stride) }
    default:
      var n = 0
      intervalOffsets.removeAll(keepingCapacity: true)
      for interval in intervals {
        intervalOffsets.append(n)
        for key in interval.start...interval.last { keys[n] = Int64(key); n &+= 1 }
      }
    }
    // The position in the union of a run's first key; `u` walks the intervals, as a row's runs are sorted.
    func position(_ run: KeyRun, _ u: inout Int) -> Int {
      if case let .lattice(start, stride) = shape { return (run.start - start) / stride }
      while intervals[u].last < run.start { u += 1 }
      return intervalOffsets[u] + run.start - intervals[u].start
    }
    if spans, count < Int(Int32.max), slots.allSatisfy({ scratch[$0].runs.count == 1 }) {
      for (r, slot) in slots.enumerated() {
        var u = 0
        let run = scratch[slot].runs[0]
        let first = position(run, &u)
        tileSpans[r] = first..<first + run.count
      }
      return true
    }
    growMask(rows * count)
    mask.update(repeating: 0, count: rows * count)
    // A run's keys are every `step`-th union position: the union's stride divides a lattice row's stride, and an
    // interval holds a contiguous run whole.
    var unionStride = 1
    if case let .lattice(_, stride) = shape { unionStride = stride }
    for (r, slot) in slots.enumerated() {
      var u = 0
      for run in scratch[slot].runs {
        let step = run.count == 1 ? 1 : run.stride / unionStride
        markMask(row: r, from: position(run, &u), count: run.count, step: step, keys: count, groupRows: maskGroupRows)
      }
    }
    return false
  }

  /// The position of `key` (which is in the union) among the union's `count` sorted keys.
  func position(of key: Int, count: Int) -> Int {
    if case let .lattice(start, stride) = shape { return (key - start) / stride }
    var lo = 0, hi = count
    while lo < hi {
      let mid = (lo + hi) / 2
      if Int(keys[mid]) < key { lo = mid + 1 } else { hi = mid }
    }
    return lo
  }

  /// Writes the keys of `runs` to `keys`; returns their count.
  mutating func expand(_ runs: [KeyRun]) -> Int {
    var n = 0
    for run in runs { n += run.count }
    reserveKeys(n)
    var i = 0
    for run in runs {
      var key = run.start
      for _ in 0..<run.count {
        keys[i] = Int64(key)
        key += run.stride
        i += 1
      }
    }
    return n
  }

  /// Makes room for `count` keys (the old ones are lost).
  mutating func reserveKeys(_ count: Int) {
    guard keysCapacity < count else { return }
    keys.deallocate()
    keysCapacity = max(count, 2 * keysCapacity)
    keys = .allocate(capacity: keysCapacity)
  }

  /// Where row `r`'s byte for union position `key` lives in a mask of groups of `groupRows` rows.
  @inline(__always)
  static func maskIndex(row r: Int, key: Int, keys: Int, groupRows: Int) -> Int {
    (r / groupRows) * keys * groupRows + key * groupRows + r % groupRows
  }

  // MARK: Private

  /// Merges the slots' keys one by one: counts distinct keys (nil past `limit`), and with `fill` writes them and
  /// the mask. O(degree) per row; used only when strided runs of differing shapes meet.
  private mutating func mergedKeys(_ slots: Range<Int>, limit: Int, fill: Bool, count total: Int = 0,
                                   maskGroupRows: Int = 1) -> Int? {
    var cursors = [(run: Int, step: Int)](repeating: (0, 0), count: slots.count)
    var n = 0
    while true {
      var best = Int.max
      for (r, slot) in slots.enumerated() {
        let (run, step) = cursors[r]
        let runs = scratch[slot].runs
        if run < runs.count { best = min(best, runs[run].start + step * runs[run].stride) }
      }
      if best == Int.max { return n }
      if n >= limit { return nil }
      if fill { keys[n] = Int64(best) }
      for (r, slot) in slots.enumerated() {
        let (run, step) = cursors[r]
        let runs = scratch[slot].runs
        if run < runs.count, runs[run].start + step * runs[run].stride == best {
          if fill { mask[RowGrouper.maskIndex(row: r, key: n, keys: total, groupRows: maskGroupRows)] = 1 }
          cursors[r] = step + 1 == runs[run].count ? (run + 1, 0) : (run, step + 1)
        }
      }
      n += 1
    }
  }

  private func markMask(row r: Int, from first: Int, count: Int, step: Int, keys: Int, groupRows: Int) {
    let index = RowGrouper.maskIndex(row: r, key: first, keys: keys, groupRows: groupRows)
    if groupRows == 1, step == 1 {
      (mask + index).update(repeating: 1, count: count)
      return
    }
    var i = index
    let advance = step * groupRows
    for _ in 0..<count {
      mask[i] = 1
      i &+= advance
    }
  }

  private mutating func growMask(_ bytes: Int) {
    guard maskCapacity < bytes else { return }
    mask.deallocate()
    maskCapacity = max(bytes, 2 * maskCapacity)
    mask = .allocate(capacity: maskCapacity)
  }
}

extension Graph {
  /// The row step at which consecutive rows share keys: `D+1` for a graph with a dilated or blocked
  /// component of dilation `D`, else 1.
  var preferredRowStride: Int {
    for component in components {
      switch component {
      case let .dilated(_, dilation) where dilation > 0: return dilation + 1
      case let .blocked(_, dilation) where dilation > 0: return dilation + 1
      default: continue
      }
    }
    return 1
  }
}
