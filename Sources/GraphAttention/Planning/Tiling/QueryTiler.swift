import _GraphAttentionKernels

/// Groups query rows into tiles that share their keys, so one pass over a key serves several rows.
///
/// Rows are visited in residue-major order for graphs with a stride (dilated and blocked graphs with
/// `D > 0`, whose rows `i, i+s, i+2s, ...` attend to the same lattice of keys); rows without keys are
/// reported at once; the others are collected sixteen at a time. Sixteen rows become one tile over the
/// union of their keys, in four groups of four rows, each group visiting only the span of the union its
/// rows use (with a per-row mask inside it), when that costs at most 3% extra scores. Otherwise the
/// rows are tried as tiles of four, and rows that still do not fit become single-row tiles over exactly
/// their keys. Every score the tiles compute is counted in `scoresComputed`: "work optimal" is measured
/// by it.
struct QueryTiler {
  /// A tile: rows that share `keys`, and for a tile of several rows, one mask byte per (row, key).
  struct Tile {
    /// 1, 4, 8, 12 or 16 query rows; valid only during the callback.
    var rows: UnsafeBufferPointer<Int>
    /// For tiles of several rows, the key positions each group of 4 rows visits; valid only during the callback.
    var groupRanges: UnsafeBufferPointer<Range<Int>>
    /// The tile's sorted keys; valid only during the callback.
    var keys: UnsafePointer<Int64>
    var keyCount: Int
    /// Bytes laid out `[group][key][row of group]`, 1 where the row attends to the key; nil for single-row tiles
    /// and for tiles with `rowSpans`.
    var mask: UnsafePointer<UInt8>?
    /// With `spansSuffice`, for tiles of several rows that are each one run: row i attends to exactly the key
    /// positions `rowSpans[i]` (and `mask` is nil); valid only during the callback.
    var rowSpans: UnsafePointer<Range<Int>>? = nil
    /// With `rowSpans`: the first `sharedKeys` key positions, which every row attends to as well as its span
    /// (global columns below a window); every group's range then starts at 0.
    var sharedKeys = 0
    /// For one segment of a very long row: the key span this tile finishes, whose pages may be released.
    var finishedKeys: Range<Int>? = nil
  }

  /// Keys per tile of a single very long row (a global token's row): the row is split into segments so a
  /// caller streaming keys from disk can release each segment's pages before the next.
  static let segmentKeys = 1 << 22

  /// Extra scores a shared tile may compute, relative to its rows' edges (3%), plus a small constant
  /// per group for short rows whose union is a few keys wider.
  static let maxOverhead = 0.03
  static let slackPerGroup = 8
  /// Rows of a tile and of a group within it: the C kernel's `GA_MAX_ROWS` and `GA_GROUP_ROWS` (a group
  /// fills the 4 rows of a register block; see TileKernelAVX2.h).
  static let maxRows = Int(GA_MAX_ROWS)
  static let groupRows = Int(GA_GROUP_ROWS)
  /// Runs shorter than this are "scattered" keys (random or explicit edges) rather than a shared span:
  /// a run of 8 keys fills one AVX2 vector of scores, below that the tile's mask work dominates.
  static let longRun = 8
  /// Scattered keys are split off only while they are at most 1 / `scatteredShare` of the rows' keys;
  /// more, and the rows are better tiled alone.
  static let scatteredShare = 4

  let graph: Graph
  let excluding: Graph?
  let queryCount: Int
  let keyCount: Int
  let rowStride: Int

  private var scratch = [RowScratch](repeating: RowScratch(), count: QueryTiler.maxRows)
  private var degrees = [Int](repeating: 0, count: QueryTiler.maxRows)
  /// The current tile's rows and group ranges, handed to the callback without allocating.
  private let tileRows = UnsafeMutablePointer<Int>.allocate(capacity: QueryTiler.maxRows)
  private let tileRanges = UnsafeMutablePointer<Range<Int>>.allocate(capacity: QueryTiler.maxRows / QueryTiler.groupRows)
  /// Short runs set aside by `splitScatteredKeys`, per slot.
  private var scattered = [[KeyRun]](repeating: [], count: QueryTiler.maxRows)
  /// The runs every row of a tile shares below its own (`emitSharedPrefix`).
  private var sharedRuns: [KeyRun] = []
  /// Whether a tile of single-run rows may describe its rows by position spans instead of a mask (the kernels
  /// with rows in the lanes, AVX2 and AVX-512, read spans; the others need the mask). Saves writing rows x
  /// keys mask bytes per tile.
  var spansSuffice = false
  private let tileSpans = UnsafeMutablePointer<Range<Int>>.allocate(capacity: QueryTiler.maxRows)
  /// When set, each row's runs with far keys become a single-row tile of their own, emitted before the row
  /// joins a shared tile: a tile of several rows then never holds a far key, so a streaming caller can read
  /// far keys from the file (single-row tiles) and never fault their pages in.
  var nearKeys: NearKeys?
  private var farRuns: [KeyRun] = []
  /// Key indices of the current tile (capacity grows to the widest tile: O(L) at most).
  private var keys: UnsafeMutablePointer<Int64>
  private var keysCapacity: Int
  /// `rows x keyCount` mask bytes of the current shared tile.
  private var mask: UnsafeMutablePointer<UInt8>
  private var maskCapacity: Int
  private var shape = UnionShape.general
  private var intervals: [(start: Int, last: Int)] = []
  private var intervalOffsets: [Int] = []
  /// Scores computed by the tiles built so far.
  private(set) var scoresComputed = 0
  /// Edges of the rows tiled so far (each row's degree, less the excluded graph's edges).
  private(set) var edgesVisited = 0

  /// How the current union is laid out, decided by `unionSize` and used by `fillUnion`.
  private enum UnionShape {
    /// One lattice `start + t * stride` (single-run rows with a common stride: windows, causal, dilated, blocked).
    case lattice(start: Int, stride: Int)
    /// Sorted, disjoint intervals (rows of contiguous runs and single keys: unions with global tokens).
    case intervals
    /// Anything else: merged key by key.
    case general
  }

  init(graph: Graph, excluding: Graph?, queryCount: Int, keyCount: Int) {
    self.graph = graph
    self.excluding = excluding
    self.queryCount = queryCount
    self.keyCount = keyCount
    self.rowStride = graph.preferredRowStride
    keysCapacity = 256
    keys = .allocate(capacity: keysCapacity)
    maskCapacity = 4096
    mask = .allocate(capacity: maskCapacity)
  }

  /// Frees the buffers; the tiler must not be used afterwards.
  func deallocate() {
    keys.deallocate()
    mask.deallocate()
    tileRows.deallocate()
    tileRanges.deallocate()
    tileSpans.deallocate()
  }

  /// Calls `tile(tile)` for each tile of `rows`; rows without keys produce no tile (their output is
  /// the empty-row value, which the caller writes from the untouched row state).
  mutating func forEachTile(rows: Range<Int>, tile: (Tile) -> Void) {
    #if DEBUG
    // Debug builds check every tile before its indices reach C (QueryTiler+Invariants.swift).
    let queryCount = self.queryCount, keyCount = self.keyCount
    tiles(rows: rows) { checked in
      checked._checkInvariants(queryCount: queryCount, keyCount: keyCount)
      tile(checked)
    }
    #else
    tiles(rows: rows, tile: tile)
    #endif
  }

  private mutating func tiles(rows: Range<Int>, tile: (Tile) -> Void) {
    var pending: [Int] = []
    pending.reserveCapacity(QueryTiler.maxRows)
    let stride = min(rowStride, max(1, rows.count))
    for residue in 0..<stride {
      var row = rows.lowerBound + ((residue - rows.lowerBound % stride) + stride) % stride
      while row < rows.upperBound {
        let slot = pending.count
        graph.neighbourhood(row: row, queryCount: queryCount, keyCount: keyCount, excluding: excluding, into: &scratch[slot])
        var degree = scratch[slot].degree
        edgesVisited += degree
        if degree > 0, let near = nearKeys, splitFarRuns(slot: slot, row: row, near: near) {
          emitSingle(row, runs: farRuns, tile: tile)
          degree = scratch[slot].degree
          if degree == 0 {
            row += stride
            continue
          }
        }
        if degree > 0 {
          var slot = slot
          // A row whose keys all lie past the previous row's (the first row of a document, or of a block)
          // shares nothing with the rows pending: tile those alone, so no tile straddles the break.
          if slot > 0, let first = scratch[slot].runs.first?.start, let previous = scratch[slot - 1].runs.last?.last,
             first > previous {
            flush(pending, tile: tile)
            pending.removeAll(keepingCapacity: true)
            scratch.swapAt(0, slot)
            slot = 0
          }
          degrees[slot] = degree
          pending.append(row)
          if pending.count == QueryTiler.maxRows {
            emit(pending, slots: 0..<QueryTiler.maxRows, tile: tile)
            pending.removeAll(keepingCapacity: true)
          }
        }
        row += stride
      }
    }
    flush(pending, tile: tile)
  }

  /// Emits fewer than `maxRows` pending rows: their groups of four as one tile, the rest singly.
  private mutating func flush(_ pending: [Int], tile: (Tile) -> Void) {
    let grouped = pending.count / QueryTiler.groupRows * QueryTiler.groupRows
    if grouped > 0 { emit(pending, slots: 0..<grouped, tile: tile) }
    for slot in grouped..<pending.count { emitSingle(pending[slot], slot: slot, tile: tile) }
  }

  /// The slots of group `g` of `slots`.
  private func groupSlots(_ g: Int, of slots: Range<Int>) -> Range<Int> {
    let first = slots.lowerBound + g * QueryTiler.groupRows
    return first..<first + QueryTiler.groupRows
  }

  /// Emits rows `slots` (a multiple of `groupRows`) as one tile if their union is cheap enough, else in smaller tiles.
  ///
  /// Rows made of a long shared run plus scattered private keys (BigBird: window + random) fail the
  /// union test as a whole; then the long runs are tiled together and each row's scattered keys follow
  /// as a single-row tile. The carried (m, l, acc) state makes the two passes one softmax.
  private mutating func emit(_ rows: [Int], slots: Range<Int>, allowSplit: Bool = true, tile: (Tile) -> Void) {
    let a = slots.lowerBound, b = slots.lowerBound + 1
    // Rows of one run each plus the same runs below it (a window with global columns: Longformer) are one tile
    // of spans after the shared keys; rows of one long run plus scattered short ones, two tiles whose rows are
    // spans. Both are cheaper than one tile with a mask byte per row and key (and than the merges of rows of
    // several runs below).
    if allowSplit, spansSuffice, scratch[a].runs.count > 1 {
      if emitSharedPrefix(rows, slots: slots, tile: tile) { return }
      if slots.allSatisfy({ longRuns(scratch[$0].runs) == 1 }), splitScatteredKeys(slots) {
        emitSplit(rows, slots: slots, tile: tile)
        return
      }
    }
    // Rows that do not share keys (random and scattered explicit rows) show it in their first two rows:
    // an O(degree) merge of those two saves the union attempts, which sort all the rows' runs.
    // The union of two rows of a group may be up to `groupRows` times the overhead wider than either.
    let pairLimit = Int(Double(max(degrees[a], degrees[b])) * (1 + Double(QueryTiler.groupRows) * QueryTiler.maxOverhead))
      + QueryTiler.slackPerGroup
    if !pairFits(a, b, limit: pairLimit) {
      for slot in slots { emitSingle(rows[slot], slot: slot, tile: tile) }
      return
    }
    let groups = slots.count / QueryTiler.groupRows
    var edges = 0
    for slot in slots { edges += degrees[slot] }
    let budget = Int(Double(edges) * (1 + QueryTiler.maxOverhead)) + QueryTiler.slackPerGroup * groups
    // Every union key lies in some group's span, so a union wider than budget / groupRows cannot fit.
    if let union = unionSize(slots: slots, limit: budget / QueryTiler.groupRows) {
      let spans = fillUnion(slots: slots, count: union)
      var cost = 0
      for g in 0..<groups {
        var lo = Int.max, hi = 0
        for slot in groupSlots(g, of: slots) {
          let runs = scratch[slot].runs
          lo = min(lo, position(of: runs[0].start, count: union))
          hi = max(hi, position(of: runs[runs.count - 1].last, count: union) + 1)
        }
        tileRanges[g] = lo..<hi
        cost += QueryTiler.groupRows * (hi - lo)
      }
      if cost <= budget {
        scoresComputed += cost
        for (i, slot) in slots.enumerated() { tileRows[i] = rows[slot] }
        tile(Tile(rows: UnsafeBufferPointer(start: tileRows, count: slots.count),
                  groupRanges: UnsafeBufferPointer(start: tileRanges, count: groups), keys: keys, keyCount: union,
                  mask: spans ? nil : UnsafePointer(mask), rowSpans: spans ? UnsafePointer(tileSpans) : nil))
        return
      }
    }
    if allowSplit, splitScatteredKeys(slots) {
      emitSplit(rows, slots: slots, tile: tile)
      return
    }
    if groups > 1 {
      for g in 0..<groups {
        emit(rows, slots: groupSlots(g, of: slots), allowSplit: allowSplit, tile: tile)
      }
    } else {
      for slot in slots { emitSingle(rows[slot], slot: slot, tile: tile) }
    }
  }

  /// Emits rows that each attend to the same runs of keys below one run of their own (Longformer's global
  /// columns under a window) as one tile: the shared keys first, then the union of the rows' own runs, each row a
  /// span after them (`Tile.sharedKeys`). Returns false, with the rows' runs as they were, for other rows or a
  /// union over the budget.
  ///
  /// One tile instead of `emitSplit`'s two saves a Q pack and a state round trip per tile and the split's array
  /// work: with two, `window:256+global:0,1,2,3` at 16K tokens took 22% longer than `window:256` for 1.5% more edges.
  private mutating func emitSharedPrefix(_ rows: [Int], slots: Range<Int>, tile: (Tile) -> Void) -> Bool {
    let first = slots.lowerBound
    let prefix = scratch[first].runs.count - 1
    guard prefix >= 1 else { return false }
    for slot in slots {
      guard scratch[slot].runs.count == prefix + 1 else { return false }
      for i in 0..<prefix where scratch[slot].runs[i] != scratch[first].runs[i] { return false }
    }
    sharedRuns.removeAll(keepingCapacity: true)
    sharedRuns.append(contentsOf: scratch[first].runs[0..<prefix])
    var shared = 0, edges = 0
    for run in sharedRuns { shared += run.count }
    for slot in slots {
      edges += degrees[slot]
      scratch[slot].runs.removeFirst(prefix)
    }
    let groups = slots.count / QueryTiler.groupRows
    let budget = Int(Double(edges) * (1 + QueryTiler.maxOverhead)) + QueryTiler.slackPerGroup * groups
    if let union = unionSize(slots: slots, limit: budget / QueryTiler.groupRows - shared), shared + union < Int(Int32.max) {
      reserveKeys(shared + union)
      if fillUnion(slots: slots, count: union) {
        var cost = 0
        for g in 0..<groups {
          var end = 0
          for r in QueryTiler.groupRows * g..<QueryTiler.groupRows * (g + 1) {
            tileSpans[r] = shared + tileSpans[r].lowerBound..<shared + tileSpans[r].upperBound
            end = max(end, tileSpans[r].upperBound)
          }
          tileRanges[g] = 0..<end
          cost += QueryTiler.groupRows * end
        }
        if cost <= budget {
          // The union's keys move up behind the shared ones.
          for n in Swift.stride(from: union - 1, through: 0, by: -1) { keys[shared + n] = keys[n] }
          var n = 0
          for run in sharedRuns {
            var key = run.start
            for _ in 0..<run.count {
              keys[n] = Int64(key)
              n += 1
              key += run.stride
            }
          }
          scoresComputed += cost
          for (i, slot) in slots.enumerated() { tileRows[i] = rows[slot] }
          tile(Tile(rows: UnsafeBufferPointer(start: tileRows, count: slots.count),
                    groupRanges: UnsafeBufferPointer(start: tileRanges, count: groups), keys: keys, keyCount: shared + union,
                    mask: nil, rowSpans: UnsafePointer(tileSpans), sharedKeys: shared))
          return true
        }
      }
    }
    for slot in slots { scratch[slot].runs.insert(contentsOf: sharedRuns, at: 0) }
    return false
  }

  /// Emits rows split by `splitScatteredKeys`: their long runs as one tile, then their scattered keys, as a
  /// shared tile when the first two rows' scattered keys are the same (Longformer's global columns), else row
  /// by row.
  private mutating func emitSplit(_ rows: [Int], slots: Range<Int>, tile: (Tile) -> Void) {
    emit(rows, slots: slots, allowSplit: false, tile: tile)
    let first = slots.lowerBound
    if slots.allSatisfy({ !scattered[$0].isEmpty }), scattered[first] == scattered[first + 1] {
      for slot in slots {
        swap(&scratch[slot].runs, &scattered[slot])
        degrees[slot] = scratch[slot].degree
      }
      emit(rows, slots: slots, allowSplit: false, tile: tile)
      return
    }
    for slot in slots where !scattered[slot].isEmpty {
      emitSingle(rows[slot], runs: scattered[slot], tile: tile)
    }
  }

  /// The runs of `longRun` keys or more among `runs`.
  private func longRuns(_ runs: [KeyRun]) -> Int {
    var count = 0
    for run in runs where run.count >= QueryTiler.longRun { count += 1 }
    return count
  }

  /// Whether two rows' keys have a union of at most `limit` keys: O(1) for two runs on one lattice (windows,
  /// causal, blocked, dilated rows), else an O(degree) merge.
  private mutating func pairFits(_ a: Int, _ b: Int, limit: Int) -> Bool {
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
    return mergedKeys(slots: a..<b + 1, limit: limit, fill: false) != nil
  }

  /// Moves each row's short runs (fewer than `longRun` keys) to `scattered`, keeping its long runs, when
  /// every row has long runs and the short ones are at most 1 / `scatteredShare` of the keys. Returns
  /// whether it split.
  private mutating func splitScatteredKeys(_ slots: Range<Int>) -> Bool {
    let longRun = QueryTiler.longRun
    var total = 0, short = 0
    for slot in slots {
      var hasLong = false
      for run in scratch[slot].runs {
        total += run.count
        if run.count >= longRun { hasLong = true } else { short += run.count }
      }
      if !hasLong { return false }
    }
    guard short > 0, short * QueryTiler.scatteredShare <= total else { return false }
    for slot in slots {
      scattered[slot].removeAll(keepingCapacity: true)
      var kept = 0
      var degree = 0
      for run in scratch[slot].runs {
        if run.count >= longRun {
          scratch[slot].runs[kept] = run
          kept += 1
          degree += run.count
        } else {
          scattered[slot].append(run)
        }
      }
      scratch[slot].runs.removeLast(scratch[slot].runs.count - kept)
      degrees[slot] = degree
    }
    return true
  }

  /// Moves the runs of `slot` with a far key into `farRuns`; returns whether there were any.
  private mutating func splitFarRuns(slot: Int, row: Int, near: NearKeys) -> Bool {
    farRuns.removeAll(keepingCapacity: true)
    var kept = 0
    for run in scratch[slot].runs {
      if near.hasFarKey(run, row: row) {
        farRuns.append(run)
      } else {
        scratch[slot].runs[kept] = run
        kept += 1
      }
    }
    guard !farRuns.isEmpty else { return false }
    scratch[slot].runs.removeLast(scratch[slot].runs.count - kept)
    return true
  }

  private mutating func emitSingle(_ row: Int, slot: Int, tile: (Tile) -> Void) {
    emitSingle(row, runs: scratch[slot].runs, tile: tile)
  }

  private mutating func emitSingle(_ row: Int, runs: [KeyRun], tile: (Tile) -> Void) {
    var count = 0
    for run in runs { count += run.count }
    let segment = QueryTiler.segmentKeys
    reserveKeys(min(count, segment))
    tileRows[0] = row
    scoresComputed += count
    var n = 0
    var segmentStart = runs.first?.start ?? 0
    func flush(_ n: Int, next: Int) {
      guard n > 0 else { return }
      tile(Tile(rows: UnsafeBufferPointer(start: tileRows, count: 1), groupRanges: UnsafeBufferPointer(start: tileRanges, count: 0),
                keys: keys, keyCount: n, mask: nil, finishedKeys: count > segment ? segmentStart..<next : nil))
    }
    for run in runs {
      var key = run.start
      for _ in 0..<run.count {
        keys[n] = Int64(key)
        n &+= 1
        key &+= run.stride
        if n == segment {
          flush(n, next: key)
          segmentStart = key
          n = 0
        }
      }
    }
    flush(n, next: (runs.last?.last ?? 0) + 1)
  }

  /// The position of `key` (which is in the union) among the union's sorted keys.
  private func position(of key: Int, count: Int) -> Int {
    if case let .lattice(start, stride) = shape { return (key - start) / stride }
    var lo = 0, hi = count
    while lo < hi {
      let mid = (lo + hi) / 2
      if Int(keys[mid]) < key { lo = mid + 1 } else { hi = mid }
    }
    return lo
  }

  /// The size of the union of the rows' keys, or nil once it exceeds `limit`.
  private mutating func unionSize(slots: Range<Int>, limit: Int) -> Int? {
    var lo = Int.max, hi = Int.min
    var stride = 0
    var singleRuns = true
    var contiguous = true
    for slot in slots {
      let runs = scratch[slot].runs
      if runs.count != 1 { singleRuns = false }
      for run in runs where run.count > 1 {
        if run.stride != 1 { contiguous = false }
        if stride == 0 { stride = run.stride } else if run.stride != stride { singleRuns = false }
      }
      lo = min(lo, runs[0].start)
      hi = max(hi, runs[runs.count - 1].last)
    }
    if singleRuns, !contiguous, slots.allSatisfy({ (scratch[$0].runs[0].start - lo) % stride == 0 }) {
      shape = .lattice(start: lo, stride: stride)
      let n = (hi - lo) / stride + 1
      return n <= limit ? n : nil
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
    return mergedKeys(slots: slots, limit: limit, fill: false)
  }

  /// Writes the union's `count` sorted keys, and the per-row mask bytes, or with `spansSuffice` and rows of
  /// one run each (lattice and interval unions), the rows' position spans (`tileSpans`) instead of a mask.
  /// Returns whether it wrote spans.
  private mutating func fillUnion(slots: Range<Int>, count: Int) -> Bool {
    reserveKeys(count)
    let rows = slots.count
    if case .general = shape {
      growMask(rows * count)
      mask.update(repeating: 0, count: rows * count)
      _ = mergedKeys(slots: slots, limit: count, fill: true, count: count)
      return false
    }
    // The position in the union of each row's first key, per run.
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
    func position(_ run: KeyRun, _ u: inout Int) -> Int {
      if case let .lattice(start, stride) = shape { return (run.start - start) / stride }
      while intervals[u].last < run.start { u += 1 }
      return intervalOffsets[u] + run.start - intervals[u].start
    }
    if spansSuffice, count < Int(Int32.max), slots.allSatisfy({ scratch[$0].runs.count == 1 }) {
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
    for (r, slot) in slots.enumerated() {
      var u = 0
      for run in scratch[slot].runs { markMask(row: r, from: position(run, &u), count: run.count, keys: count) }
    }
    return false
  }

  private mutating func growMask(_ bytes: Int) {
    guard maskCapacity < bytes else { return }
    mask.deallocate()
    maskCapacity = max(bytes, 2 * maskCapacity)
    mask = .allocate(capacity: maskCapacity)
  }

  /// Merges the rows' keys one by one: counts distinct keys (nil past `limit`), and with `fill` writes them
  /// and the mask. O(degree) per row; used only when strided runs of differing shapes meet.
  private mutating func mergedKeys(slots: Range<Int>, limit: Int, fill: Bool, count total: Int = 0) -> Int? {
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
          if fill { mask[maskIndex(row: r, key: n, keys: total)] = 1 }
          cursors[r] = step + 1 == runs[run].count ? (run + 1, 0) : (run, step + 1)
        }
      }
      n += 1
    }
  }

  /// Where row `r`'s byte for key position `key` lives: `[group][key][row of group]`.
  @inline(__always)
  private func maskIndex(row r: Int, key: Int, keys: Int) -> Int {
    let group = QueryTiler.groupRows
    return (r / group) * keys * group + key * group + r % group
  }

  private func markMask(row r: Int, from first: Int, count: Int, keys: Int) {
    var index = maskIndex(row: r, key: first, keys: keys)
    for _ in 0..<count {
      mask[index] = 1
      index &+= QueryTiler.groupRows
    }
  }

  private mutating func reserveKeys(_ count: Int) {
    guard keysCapacity < count else { return }
    keys.deallocate()
    keysCapacity = max(count, 2 * keysCapacity)
    keys = .allocate(capacity: keysCapacity)
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
