import _GraphAttentionKernels

/// Groups query rows into tiles that share their keys, so one pass over a key serves several rows.
///
/// Built on `RowGrouper` (visiting order, pending rows, unions, masks), as `BackwardTiler` is. Rows are visited in residue-major order for graphs with a stride (dilated and blocked graphs with
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
  /// fills the 4 rows of a register block; see TileKernelAVX2Rows.inc).
  static let maxRows = RowGrouper.maxRows
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
  var rowStride: Int { grouper.rowStride }

  /// The pending rows, their runs, the union and its mask or spans.
  private var grouper: RowGrouper
  /// The current tile's group ranges, handed to the callback without allocating.
  private let tileRanges = UnsafeMutablePointer<Range<Int>>.allocate(capacity: QueryTiler.maxRows / QueryTiler.groupRows)
  /// Short runs set aside by `splitScatteredKeys`, per slot.
  private var scattered = [[KeyRun]](repeating: [], count: QueryTiler.maxRows)
  /// The runs every row of a tile shares below its own (`emitSharedPrefix`).
  private var sharedRuns: [KeyRun] = []
  /// Whether a tile of single-run rows may describe its rows by position spans instead of a mask (the kernels
  /// with rows in the lanes, AVX2 and AVX-512, read spans; the others need the mask). Saves writing rows x
  /// keys mask bytes per tile.
  var spansSuffice = false
  /// When set, each row's runs with far keys become a single-row tile of their own, emitted before the row
  /// joins a shared tile: a tile of several rows then never holds a far key, so a streaming caller can read
  /// far keys from the file (single-row tiles) and never fault their pages in.
  var nearKeys: NearKeys?
  private var farRuns: [KeyRun] = []
  /// Scores computed by the tiles built so far.
  private(set) var scoresComputed = 0
  /// Edges of the rows tiled so far (each row's degree, less the excluded graph's edges).
  private(set) var edgesVisited = 0

  init(graph: Graph, excluding: Graph?, queryCount: Int, keyCount: Int) {
    self.graph = graph
    self.excluding = excluding
    self.queryCount = queryCount
    self.keyCount = keyCount
    grouper = RowGrouper(rowStride: graph.preferredRowStride, keysCapacity: 256)
  }

  /// Frees the buffers; the tiler must not be used afterwards.
  func deallocate() {
    grouper.deallocate()
    tileRanges.deallocate()
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
    grouper.removeAll()
    for row in RowOrder(rows, rowStride: grouper.rowStride) {
      let slot = grouper.nextSlot
      graph.neighbourhood(row: row, queryCount: queryCount, keyCount: keyCount, excluding: excluding, into: &grouper.scratch[slot])
      var degree = grouper.scratch[slot].degree
      edgesVisited += degree
      if degree > 0, let near = nearKeys, splitFarRuns(slot: slot, row: row, near: near) {
        emitSingle(row, runs: farRuns, tile: tile)
        degree = grouper.scratch[slot].degree
      }
      guard degree > 0 else { continue }
      // A row whose keys all lie past the previous row's (the first row of a document, or of a block)
      // shares nothing with the rows pending: tile those alone, so no tile straddles the break.
      if grouper.startsAfterPrevious(slot) {
        flush(tile: tile)
        grouper.restart(from: slot)
      }
      if grouper.append(row, degree: degree) {
        emit(slots: 0..<QueryTiler.maxRows, tile: tile)
        grouper.removeAll()
      }
    }
    flush(tile: tile)
    grouper.removeAll()
  }

  /// Emits fewer than `maxRows` pending rows: their groups of four as one tile, the rest singly.
  private mutating func flush(tile: (Tile) -> Void) {
    let count = grouper.pending.count
    let grouped = count / QueryTiler.groupRows * QueryTiler.groupRows
    if grouped > 0 { emit(slots: 0..<grouped, tile: tile) }
    for slot in grouped..<count { emitSingle(slot: slot, tile: tile) }
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
  private mutating func emit(slots: Range<Int>, allowSplit: Bool = true, tile: (Tile) -> Void) {
    let a = slots.lowerBound, b = slots.lowerBound + 1
    // Rows of one run each plus the same runs below it (a window with global columns: Longformer) are one tile
    // of spans after the shared keys; rows of one long run plus scattered short ones, two tiles whose rows are
    // spans. Both are cheaper than one tile with a mask byte per row and key (and than the merges of rows of
    // several runs below).
    if allowSplit, spansSuffice, grouper.scratch[a].runs.count > 1 {
      if emitSharedPrefix(slots: slots, tile: tile) { return }
      if slots.allSatisfy({ longRuns(grouper.scratch[$0].runs) == 1 }), splitScatteredKeys(slots) {
        emitSplit(slots: slots, tile: tile)
        return
      }
    }
    // Rows that do not share keys (random and scattered explicit rows) show it in their first two rows:
    // an O(degree) merge of those two saves the union attempts, which sort all the rows' runs.
    // The union of two rows of a group may be up to `groupRows` times the overhead wider than either.
    let pairLimit = Int(Double(max(grouper.degrees[a], grouper.degrees[b])) * (1 + Double(QueryTiler.groupRows) * QueryTiler.maxOverhead))
      + QueryTiler.slackPerGroup
    if !grouper.pairFits(a, b, limit: pairLimit) {
      for slot in slots { emitSingle(slot: slot, tile: tile) }
      return
    }
    let groups = slots.count / QueryTiler.groupRows
    var edges = 0
    for slot in slots { edges += grouper.degrees[slot] }
    let budget = Int(Double(edges) * (1 + QueryTiler.maxOverhead)) + QueryTiler.slackPerGroup * groups
    // Every union key lies in some group's span, so a union wider than budget / groupRows cannot fit.
    if let union = grouper.unionSize(slots, limit: budget / QueryTiler.groupRows, contiguousHull: false) {
      let spans = grouper.fillUnion(slots, count: union, maskGroupRows: QueryTiler.groupRows, spans: spansSuffice)
      var cost = 0
      for g in 0..<groups {
        var lo = Int.max, hi = 0
        for slot in groupSlots(g, of: slots) {
          let runs = grouper.scratch[slot].runs
          lo = min(lo, grouper.position(of: runs[0].start, count: union))
          hi = max(hi, grouper.position(of: runs[runs.count - 1].last, count: union) + 1)
        }
        tileRanges[g] = lo..<hi
        cost += QueryTiler.groupRows * (hi - lo)
      }
      if cost <= budget {
        scoresComputed += cost
        grouper.setTileRows(slots)
        tile(Tile(rows: UnsafeBufferPointer(start: grouper.tileRows, count: slots.count),
                  groupRanges: UnsafeBufferPointer(start: tileRanges, count: groups), keys: grouper.keys, keyCount: union,
                  mask: spans ? nil : UnsafePointer(grouper.mask), rowSpans: spans ? UnsafePointer(grouper.tileSpans) : nil))
        return
      }
    }
    if allowSplit, splitScatteredKeys(slots) {
      emitSplit(slots: slots, tile: tile)
      return
    }
    if groups > 1 {
      for g in 0..<groups {
        emit(slots: groupSlots(g, of: slots), allowSplit: allowSplit, tile: tile)
      }
    } else {
      for slot in slots { emitSingle(slot: slot, tile: tile) }
    }
  }

  /// Emits rows that each attend to the same runs of keys below one run of their own (Longformer's global
  /// columns under a window) as one tile: the shared keys first, then the union of the rows' own runs, each row a
  /// span after them (`Tile.sharedKeys`). Returns false, with the rows' runs as they were, for other rows or a
  /// union over the budget.
  ///
  /// One tile instead of `emitSplit`'s two saves a Q pack and a state round trip per tile and the split's array
  /// work: with two, `window:256+global:0,1,2,3` at 16K tokens took 22% longer than `window:256` for 1.5% more edges.
  private mutating func emitSharedPrefix(slots: Range<Int>, tile: (Tile) -> Void) -> Bool {
    let first = slots.lowerBound
    let prefix = grouper.scratch[first].runs.count - 1
    guard prefix >= 1 else { return false }
    for slot in slots {
      guard grouper.scratch[slot].runs.count == prefix + 1 else { return false }
      for i in 0..<prefix where grouper.scratch[slot].runs[i] != grouper.scratch[first].runs[i] { return false }
    }
    sharedRuns.removeAll(keepingCapacity: true)
    sharedRuns.append(contentsOf: grouper.scratch[first].runs[0..<prefix])
    var shared = 0, edges = 0
    for run in sharedRuns { shared += run.count }
    for slot in slots {
      edges += grouper.degrees[slot]
      grouper.scratch[slot].runs.removeFirst(prefix)
    }
    let groups = slots.count / QueryTiler.groupRows
    let budget = Int(Double(edges) * (1 + QueryTiler.maxOverhead)) + QueryTiler.slackPerGroup * groups
    if let union = grouper.unionSize(slots, limit: budget / QueryTiler.groupRows - shared, contiguousHull: false), shared + union < Int(Int32.max) {
      grouper.reserveKeys(shared + union)
      if grouper.fillUnion(slots, count: union, maskGroupRows: QueryTiler.groupRows, spans: spansSuffice) {
        var cost = 0
        for g in 0..<groups {
          var end = 0
          for r in QueryTiler.groupRows * g..<QueryTiler.groupRows * (g + 1) {
            grouper.tileSpans[r] = shared + grouper.tileSpans[r].lowerBound..<shared + grouper.tileSpans[r].upperBound
            end = max(end, grouper.tileSpans[r].upperBound)
          }
          tileRanges[g] = 0..<end
          cost += QueryTiler.groupRows * end
        }
        if cost <= budget {
          let keys = grouper.keys
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
          grouper.setTileRows(slots)
          tile(Tile(rows: UnsafeBufferPointer(start: grouper.tileRows, count: slots.count),
                    groupRanges: UnsafeBufferPointer(start: tileRanges, count: groups), keys: grouper.keys, keyCount: shared + union,
                    mask: nil, rowSpans: UnsafePointer(grouper.tileSpans), sharedKeys: shared))
          return true
        }
      }
    }
    for slot in slots { grouper.scratch[slot].runs.insert(contentsOf: sharedRuns, at: 0) }
    return false
  }

  /// Emits rows split by `splitScatteredKeys`: their long runs as one tile, then their scattered keys, as a
  /// shared tile when the first two rows' scattered keys are the same (Longformer's global columns), else row
  /// by row.
  private mutating func emitSplit(slots: Range<Int>, tile: (Tile) -> Void) {
    emit(slots: slots, allowSplit: false, tile: tile)
    let first = slots.lowerBound
    if slots.allSatisfy({ !scattered[$0].isEmpty }), scattered[first] == scattered[first + 1] {
      for slot in slots {
        swap(&grouper.scratch[slot].runs, &scattered[slot])
        grouper.degrees[slot] = grouper.scratch[slot].degree
      }
      emit(slots: slots, allowSplit: false, tile: tile)
      return
    }
    for slot in slots where !scattered[slot].isEmpty {
      emitSingle(grouper.pending[slot], runs: scattered[slot], tile: tile)
    }
  }

  /// The runs of `longRun` keys or more among `runs`.
  private func longRuns(_ runs: [KeyRun]) -> Int {
    var count = 0
    for run in runs where run.count >= QueryTiler.longRun { count += 1 }
    return count
  }

  /// Moves each row's short runs (fewer than `longRun` keys) to `scattered`, keeping its long runs, when
  /// every row has long runs and the short ones are at most 1 / `scatteredShare` of the keys. Returns
  /// whether it split.
  private mutating func splitScatteredKeys(_ slots: Range<Int>) -> Bool {
    let longRun = QueryTiler.longRun
    var total = 0, short = 0
    for slot in slots {
      var hasLong = false
      for run in grouper.scratch[slot].runs {
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
      for run in grouper.scratch[slot].runs {
        if run.count >= longRun {
          grouper.scratch[slot].runs[kept] = run
          kept += 1
          degree += run.count
        } else {
          scattered[slot].append(run)
        }
      }
      grouper.scratch[slot].runs.removeLast(grouper.scratch[slot].runs.count - kept)
      grouper.degrees[slot] = degree
    }
    return true
  }

  /// Moves the runs of `slot` with a far key into `farRuns`; returns whether there were any.
  private mutating func splitFarRuns(slot: Int, row: Int, near: NearKeys) -> Bool {
    farRuns.removeAll(keepingCapacity: true)
    var kept = 0
    for run in grouper.scratch[slot].runs {
      if near.hasFarKey(run, row: row) {
        farRuns.append(run)
      } else {
        grouper.scratch[slot].runs[kept] = run
        kept += 1
      }
    }
    guard !farRuns.isEmpty else { return false }
    grouper.scratch[slot].runs.removeLast(grouper.scratch[slot].runs.count - kept)
    return true
  }

  private mutating func emitSingle(slot: Int, tile: (Tile) -> Void) {
    emitSingle(grouper.pending[slot], runs: grouper.scratch[slot].runs, tile: tile)
  }

  private mutating func emitSingle(_ row: Int, runs: [KeyRun], tile: (Tile) -> Void) {
    var count = 0
    for run in runs { count += run.count }
    let segment = QueryTiler.segmentKeys
    grouper.reserveKeys(min(count, segment))
    let keys = grouper.keys
    grouper.tileRows[0] = row
    scoresComputed += count
    var n = 0
    var segmentStart = runs.first?.start ?? 0
    func flush(_ n: Int, next: Int) {
      guard n > 0 else { return }
      tile(Tile(rows: UnsafeBufferPointer(start: grouper.tileRows, count: 1), groupRanges: UnsafeBufferPointer(start: tileRanges, count: 0),
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

}
