import Dispatch
import Synchronization
import _GraphAttentionKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs attention on the CPU: splits (head, row block) items across threads, balanced dynamically,
/// and reduces tiles of rows that share keys with the C tile kernel.
///
/// Items are handed out from an atomic counter, so a thread that drew light rows (the start of a
/// causal graph, empty blocked rows) simply takes more items; blocks are sized from the average
/// degree so an item is about `targetEdgesPerItem` edges. Keys and values are read in their storage
/// type (fp32, fp16, bf16) by the kernel; query rows are widened to fp32 per tile and outputs narrowed
/// per item. Memory: per thread O(max degree) for the tile's keys and masks, 16 query rows, one item's
/// outputs and 256 scores; nothing O(L^2) or O(edges).
enum CPUExecutor {
  /// Where row results go.
  enum Destination {
    /// Write `acc / l` (or the empty-row value) into a `[B, H_q, L_q, d_v]` output of the given type.
    case output(UnsafeMutableRawPointer, type: StorageType, emptyRows: EmptyRowPolicy)
    /// Carry fp32 `(m, l, acc)` in and out of a state: `m`, `l` are `[B, H_q, L_q]`, `acc` is `[B, H_q, L_q, d_v]`.
    case state(maxima: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>, accumulator: UnsafeMutablePointer<Float>)
  }

  /// Edges per work item: large enough to amortise the hand-out, small enough to balance.
  static let targetEdgesPerItem = 1 << 15

  /// Most rows in one work item, whatever the degree: bounds the per-thread item buffers (m, l and the
  /// fp32 outputs of the item's rows) when rows have very few edges.
  static let maxRowsPerItem = 4096

  /// Fewest work items per thread's share of a short row range: an item holds at most a quarter of the
  /// rows, so even a call on a few rows is split for several threads.
  static let minItemsPerRange = 4

  /// Bytes of one item's query rows and fp32 outputs when a stored pattern is gathered by key blocks (1,024 rows at
  /// d = 64): they are read in row order once per key block, so they stream; the item's rows use each key row of
  /// a block ~10 times at density 1e-2. Measured at 64K tokens, density 1e-2: 1,024-4,096 rows per item within the
  /// noise, 512 rows +25% time, 256 rows +50%.
  static let gatherChunkBytes = 1 << 19

  /// Bytes of K and V per key block of a gathered pattern (1,024 keys at d = 64, fp32): this block and the next,
  /// being prefetched, fill the 1 MiB L2 of a Zen 5 core. Measured at 64K tokens, density 1e-2: 512 keys +50%
  /// time, 2,048-4,096 keys +5-40%, one block (row by row) +100%.
  static let gatherBlockBytes = 1 << 19

  /// A row visits every key block (a bounds check per block), so blocks are made no more numerous than an
  /// eighth of the average degree: sparser rows get larger blocks.
  static let edgesPerGatherBlockVisit = 8

  /// Fewest uses of each key row of a block by an item's rows for key blocks to pay (their bookkeeping and the
  /// split of each row into runs); below it a pattern is gathered row by row.
  static let minGatherReuse = 4

  /// Most keys of one row handed at once to the narrower kernels when gathering a stored pattern (their 64-bit key
  /// list): bounds a worker's scratch however long a row or a key block is.
  static let gatherPieceKeys = 4096

  /// The number of threads used when none is asked for: the online processors.
  static var defaultThreadCount: Int {
    max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
  }

  /// Raw pointers handed to worker threads; the caller keeps the buffers alive for the whole call.
  struct Pointers: @unchecked Sendable {
    var query: UnsafeRawPointer
    var queryType: StorageType = .float32
    var key: UnsafeRawPointer
    var value: UnsafeRawPointer
    var keyValueType: StorageType = .float32
    var destination: Destination
    /// Reads far keys of single-row tiles from the files (see `ScatteredKeyReader`); nil reads every key
    /// through `key` and `value`.
    var scatteredReader: ScatteredKeyReader? = nil
    /// With `.output`: where to write each row's log-sum-exp `m + log(l)` (fp32, `[B, H_q, L_q]`, `-inf`
    /// for rows without edges), for the backward pass; nil writes none.
    var logSumExp: UnsafeMutablePointer<Float>? = nil
  }

  /// NaN and infinity found by the work items themselves: each item scans its query rows as it starts, and,
  /// with `includesKeys`, the key and value rows of its share of its key/value head (the rows of its row
  /// range, scaled to L_k, scanned by the first query head of each group), so every element of Q, K and V
  /// is read once, by the item about to use it, while it comes into cache anyway: the check costs no pass
  /// over memory of its own. Each tensor keeps the lowest flat index found.
  final class FiniteScan: Sendable {
    /// The scanned tensors, in the order their errors are reported.
    enum Tensor: Int, CaseIterable { case query, key, value }
    /// Whether items scan K and V (a call on all rows) or only their query rows (a call on a row range,
    /// whose K and V the caller checked).
    let includesKeys: Bool
    private let firstQuery = Atomic<Int>(.max), firstKey = Atomic<Int>(.max), firstValue = Atomic<Int>(.max)

    init(includesKeys: Bool) { self.includesKeys = includesKeys }

    /// Scans elements `range` of the tensor at `base` and keeps the first non-finite one's flat index.
    /// - Complexity: O(`range.count`), vectorised, on the calling thread.
    func scan(_ tensor: Tensor, _ base: UnsafeRawPointer, type: StorageType, elements range: Range<Int>) {
      guard !range.isEmpty,
            let found = StorageKernels.firstNonFiniteSerially(base + range.lowerBound * type.byteCount, type: type,
                                                             count: range.count) else { return }
      withSlot(tensor) { slot in
        var current = slot.load(ordering: .relaxed)
        while range.lowerBound + found < current {
          let (exchanged, original) = slot.compareExchange(expected: current, desired: range.lowerBound + found, ordering: .relaxed)
          if exchanged { break }
          current = original
        }
      }
    }

    private func withSlot<R>(_ tensor: Tensor, _ body: (borrowing Atomic<Int>) -> R) -> R {
      switch tensor {
      case .query: body(firstQuery)
      case .key: body(firstKey)
      case .value: body(firstValue)
      }
    }

    /// The first non-finite element: in the query if any, else in the key, else in the value; nil when all
    /// scanned elements are finite.
    var firstFound: (tensor: Tensor, index: Int)? {
      for tensor in Tensor.allCases {
        let index = withSlot(tensor) { $0.load(ordering: .relaxed) }
        if index != .max { return (tensor, index) }
      }
      return nil
    }
  }

  /// What a call did: the edges it visited and the scores its kernels computed (at least the edges,
  /// more where tiles share keys), over every head.
  struct Work {
    var edges = 0
    var scores = 0
    /// Seconds the workers ran, from each one's start to its last item, summed.
    var busySeconds = 0.0
    /// Workers times the call's wall time (from before the first worker starts to after the last one ends).
    var threadSeconds = 0.0

    /// The share of the workers' thread time spent not working: waiting to start, and idle at the end of the
    /// call while others finish their last items (the load balance's tail); nil for a call without workers.
    var idleFraction: Double? { threadSeconds > 0 ? max(0, 1 - busySeconds / threadSeconds) : nil }
  }

  /// Computes attention of `graph` (minus `excluding`) for every head and batch, over query rows `rows`
  /// (all rows when nil).
  ///
  /// - Parameters:
  ///   - forcePortable: runs the portable kernel whatever `kernel` says.
  ///   - kernel: the C kernel (a resolved choice; `.automatic` runs the widest).
  ///   - edgesPerHead: the graph's edge count (used to size work items); any positive estimate works.
  ///   - progress: called with the fraction of items done, from worker threads, at most ~100 times.
  /// - Returns: the edges visited and the scores the kernels computed.
  @discardableResult
  static func run(shape: AttentionShape, graph: Graph, excluding: Graph?, edgesPerHead: Int, scale: Float,
                  threads: Int, forcePortable: Bool = false, kernel kernelChoice: CPUKernel = .automatic,
                  rows: Range<Int>? = nil, modifiers: ScoreModifiers = ScoreModifiers(), pointers: Pointers,
                  progress: (@Sendable (Double) -> Void)?,
                  keysFinished: (@Sendable (_ keyValueHead: Int, _ keys: Range<Int>) -> Void)? = nil,
                  finiteScan: FiniteScan? = nil) -> Work {
    let rowRange = rows ?? 0..<shape.queryCount
    guard !rowRange.isEmpty else { return Work() }
    let averageDegree = max(1, edgesPerHead / shape.queryCount)
    let quarter = (rowRange.count + minItemsPerRange - 1) / minItemsPerRange
    let rowsByEdges = max(1, min(maxRowsPerItem, targetEdgesPerItem / averageDegree, quarter))
    // Whole tiles per item, and at least one: a remainder of 1-3 rows would run as single-row tiles on the
    // slower dot-product kernel (with 127 rows per item, 2.4% of a window's rows did), and rows of more
    // than 2^11 keys (dense causal) would come 1-4 to an item, filling 1-4 of the kernel's 16 lanes.
    let tiledRowsPerItem = rowsByEdges >= QueryTiler.maxRows ? rowsByEdges - rowsByEdges % QueryTiler.maxRows
      : max(rowsByEdges, min(QueryTiler.maxRows, quarter))
    // A stored pattern's rows are gathered by key blocks (`ga_gather_rows`): an item is a chunk of rows whose
    // queries and outputs share L2 with one block of K and V, however many edges that is.
    let pattern = excluding == nil && pointers.scatteredReader == nil && keysFinished == nil ? graph.denselyStoredPattern : nil
    let kvBytes = (shape.keyDim + shape.valueDim) * pointers.keyValueType.byteCount
    let rowsPerItem = pattern == nil ? tiledRowsPerItem
      : max(1, min(maxRowsPerItem, quarter, gatherChunkBytes / (4 * (shape.keyDim + shape.valueDim))))
    let gatherBlocks = max(1, averageDegree / edgesPerGatherBlockVisit)
    let cachedKeyBlock = max(256, gatherBlockBytes / kvBytes, (shape.keyCount + gatherBlocks - 1) / gatherBlocks)
    // Blocks pay when an item's rows use each key row several times; else one block, row by row.
    let reuse = Double(rowsPerItem) * Double(averageDegree) / Double(max(1, shape.keyCount))
    let keyBlock = reuse < Double(minGatherReuse) ? max(1, shape.keyCount) : cachedKeyBlock
    let blocksPerHead = (rowRange.count + rowsPerItem - 1) / rowsPerItem
    let heads = shape.batch * shape.queryHeads
    let itemCount = heads * blocksPerHead
    let workers = max(1, min(threads, itemCount))
    let next = Atomic<Int>(0)
    let done = Atomic<Int>(0)
    let reportEvery = max(1, itemCount / 100)
    let scoresComputed = Atomic<Int>(0)
    let edgesVisited = Atomic<Int>(0)
    let busyNanoseconds = Atomic<Int>(0)
    let (kd, vd) = (shape.keyDim, shape.valueDim)
    let callStart = DispatchTime.now().uptimeNanoseconds

    DispatchQueue.concurrentPerform(iterations: workers) { _ in
      let workerStart = DispatchTime.now().uptimeNanoseconds
      var tiler = QueryTiler(graph: graph, excluding: excluding, queryCount: shape.queryCount, keyCount: shape.keyCount)
      tiler.nearKeys = pointers.scatteredReader?.near
      let scratch = UnsafeMutableRawPointer.allocate(byteCount: TileKernel.scratchFloats * 4, alignment: 64)
        .bindMemory(to: Float.self, capacity: TileKernel.scratchFloats)
      // m and l of the item's rows when writing an output (a state carries its own), the item's fp32
      // outputs when the output is stored narrower, and widened query rows when queries are.
      let itemMaxima = UnsafeMutablePointer<Float>.allocate(capacity: rowsPerItem)
      let itemSums = UnsafeMutablePointer<Float>.allocate(capacity: rowsPerItem)
      let itemOutputs = UnsafeMutablePointer<Float>.allocate(capacity: rowsPerItem * vd)
      let wideQueries = UnsafeMutablePointer<Float>.allocate(capacity: (pattern == nil ? TileKernel.maxRows : rowsPerItem) * kd)
      // A gathered pattern's per-row cursors and the 64-bit key list the narrower kernels take.
      let cursors = UnsafeMutablePointer<Int64>.allocate(capacity: pattern == nil ? 1 : rowsPerItem)
      let gatherKeyCapacity = pattern == nil ? 1 : min(keyBlock, gatherPieceKeys)
      let gatherKeys = UnsafeMutablePointer<Int64>.allocate(capacity: gatherKeyCapacity)
      var gatheredEdges = 0
      var laneScores = 0  // scores the lane kernels compute beyond the tiler's count
      let p = pointers
      let qSize = p.queryType.byteCount, kvSize = p.keyValueType.byteCount
      // Far keys of single-row tiles, gathered from the files (empty unless a reader is set).
      let gatherCapacity = p.scatteredReader == nil ? 0 : ScatteredKeyReader.pieceKeys
      let gatheredKeys = UnsafeMutableRawPointer.allocate(byteCount: max(1, gatherCapacity * kd * kvSize), alignment: 64)
      let gatheredValues = UnsafeMutableRawPointer.allocate(byteCount: max(1, gatherCapacity * vd * kvSize), alignment: 64)
      defer {
        gatheredKeys.deallocate()
        gatheredValues.deallocate()
        tiler.deallocate()
        scratch.deallocate()
        itemMaxima.deallocate()
        itemSums.deallocate()
        itemOutputs.deallocate()
        wideQueries.deallocate()
        cursors.deallocate()
        gatherKeys.deallocate()
      }
      var kernel = TileKernel(keyDim: kd, valueDim: vd, scale: scale, scratch: scratch,
                              kernel: forcePortable ? .portable : kernelChoice)
      defer { kernel.deallocate() }
      tiler.spansSuffice = kernel.readsRowSpans
      while true {
        let item = next.wrappingAdd(1, ordering: .relaxed).oldValue
        guard item < itemCount else { break }
        let head = item / blocksPerHead
        let firstRow = rowRange.lowerBound + (item % blocksPerHead) * rowsPerItem
        let lastRow = min(rowRange.upperBound, firstRow + rowsPerItem)
        let kvHead = shape.keyValueHead(ofQueryHead: head)
        let headKeys = p.key + kvHead * shape.keyCount * kd * kvSize
        let headValues = p.value + kvHead * shape.keyCount * vd * kvSize
        kernel.setHead(key: headKeys, value: headValues, elementType: p.keyValueType)
        kernel.setModifiers(modifiers.kernelModifiers(head: head % shape.queryHeads))
        let headRows = head * shape.queryCount
        if let finiteScan {
          finiteScan.scan(.query, p.query, type: p.queryType, elements: (headRows + firstRow) * kd..<(headRows + lastRow) * kd)
          if finiteScan.includesKeys, (head % shape.queryHeads) % shape.groupSize == 0 {
            let firstKey = firstRow * shape.keyCount / shape.queryCount
            let endKey = lastRow == shape.queryCount ? shape.keyCount : lastRow * shape.keyCount / shape.queryCount
            let headKey = kvHead * shape.keyCount
            finiteScan.scan(.key, p.key, type: p.keyValueType, elements: (headKey + firstKey) * kd..<(headKey + endKey) * kd)
            finiteScan.scan(.value, p.value, type: p.keyValueType, elements: (headKey + firstKey) * vd..<(headKey + endKey) * vd)
          }
        }
        // A row may come in several tiles (its shared keys, then its scattered ones): its state starts
        // here and is normalised once all tiles of the item are done.
        var outputRows: UnsafeMutablePointer<Float>?
        if case let .output(out, type, _) = p.destination {
          outputRows = type == .float32 ? (out.assumingMemoryBound(to: Float.self) + (headRows + firstRow) * vd) : itemOutputs
          outputRows!.update(repeating: 0, count: (lastRow - firstRow) * vd)
          itemMaxima.update(repeating: -.infinity, count: lastRow - firstRow)
          itemSums.update(repeating: 0, count: lastRow - firstRow)
        }
        if let pattern {
          let stored = firstRow..<max(firstRow, min(lastRow, pattern.rowCount))  // rows past a COO pattern's last are empty
          var query = (p.query + (headRows + firstRow) * kd * qSize).assumingMemoryBound(to: Float.self)
          if p.queryType != .float32 {
            TensorView.convert(p.query + (headRows + firstRow) * kd * qSize, type: p.queryType, count: stored.count * kd,
                               to: wideQueries)
            query = UnsafePointer(wideQueries)
          }
          var gather = ga_gather()
          gather.rows = Int64(stored.count)
          gather.first_position = Int32(truncatingIfNeeded: firstRow)
          gather.query = UnsafePointer(query)
          gather.key_count = Int64(shape.keyCount)
          gather.key_block = Int64(keyBlock)
          gather.cursor = cursors
          gather.keys = gatherKeys
          gather.keys_capacity = Int64(gatherKeyCapacity)
          switch p.destination {
          case .output:
            (gather.m, gather.l, gather.acc) = (itemMaxima, itemSums, outputRows!)
          case let .state(maxima, sums, accumulator):
            let rowIndex = headRows + firstRow
            (gather.m, gather.l, gather.acc) = (maxima + rowIndex, sums + rowIndex, accumulator + rowIndex * vd)
          }
          _ = pattern.withDenseRows { offsets, columns in
            guard !stored.isEmpty, let columnBase = columns.baseAddress else { return }
            gather.row_offsets = UnsafeRawPointer(offsets.baseAddress! + firstRow).assumingMemoryBound(to: Int64.self)
            gather.columns = columnBase
            kernel.gather(&gather)
            gatheredEdges += offsets[stored.upperBound] - offsets[stored.lowerBound]
          }
        } else {
          tiler.forEachTile(rows: firstRow..<lastRow, tile: { tile in
            for (slot, row) in tile.rows.enumerated() {
              let rowIndex = headRows + row
              var query = (p.query + rowIndex * kd * qSize).assumingMemoryBound(to: Float.self)
              if p.queryType != .float32 {
                TensorView.convert(p.query + rowIndex * kd * qSize, type: p.queryType, count: kd, to: wideQueries + slot * kd)
                query = UnsafePointer(wideQueries + slot * kd)
              }
              switch p.destination {
              case .output:
                let local = row - firstRow
                kernel.setRow(slot, position: row, query: query, maximum: itemMaxima + local, sum: itemSums + local,
                              accumulator: outputRows! + local * vd)
              case let .state(maxima, sums, accumulator):
                kernel.setRow(slot, position: row, query: query, maximum: maxima + rowIndex, sum: sums + rowIndex,
                              accumulator: accumulator + rowIndex * vd)
              }
            }
            for (group, range) in tile.groupRanges.enumerated() { kernel.setGroup(group, range: range) }
            if kernel.readsRowSpans, tile.rows.count > 1 {
              // The tiler counts each group's span; the kernels with rows in the lanes compute all 16 lanes over
              // the tile's whole key range.
              var (first, end, counted) = (Int.max, 0, 0)
              for range in tile.groupRanges {
                (first, end, counted) = (min(first, range.lowerBound), max(end, range.upperBound), counted + QueryTiler.groupRows * range.count)
              }
              laneScores += QueryTiler.maxRows * (min(end, tile.keyCount) - first) - counted
            }
            if let reader = p.scatteredReader, tile.rows.count == 1, tile.finishedKeys == nil,
               reader.hasFarKeys(row: tile.rows[0], keys: tile.keys, count: tile.keyCount) {
              // Pieces of gathered rows fold into the same (m, l, acc) one after another.
              kernel.setHead(key: gatheredKeys, value: gatheredValues, elementType: p.keyValueType)
              var first = 0
              while first < tile.keyCount {
                let n = min(ScatteredKeyReader.pieceKeys, tile.keyCount - first)
                reader.gather(row: tile.rows[0], kvHead: kvHead, keys: tile.keys + first, count: n,
                              mappedKeys: headKeys, mappedValues: headValues,
                              keyBuffer: gatheredKeys, valueBuffer: gatheredValues)
                kernel.attend(rows: 1, keys: reader.positions, keyCount: n, mask: nil, keyPositions: tile.keys + first)
                first += n
              }
              kernel.setHead(key: headKeys, value: headValues, elementType: p.keyValueType)
            } else {
              kernel.attend(rows: tile.rows.count, keys: tile.keys, keyCount: tile.keyCount, mask: tile.mask, spans: tile.rowSpans,
                            sharedKeys: tile.sharedKeys)
            }
            if let finished = tile.finishedKeys { keysFinished?(kvHead, finished) }
          })
        }
        if case let .output(out, type, emptyRows) = p.destination {
          let sink = modifiers.sinks?[head % shape.queryHeads]
          for local in 0..<(lastRow - firstRow) {
            let lse = finish(acc: outputRows! + local * vd, maximum: itemMaxima[local], sum: itemSums[local], count: vd,
                             emptyRows: emptyRows, sink: sink)
            p.logSumExp?[headRows + firstRow + local] = lse
          }
          if type != .float32 {
            TensorView.store(itemOutputs, count: (lastRow - firstRow) * vd, to: out + (headRows + firstRow) * vd * type.byteCount,
                             type: type)
          }
        }
        if let progress {
          let finished = done.wrappingAdd(1, ordering: .relaxed).newValue
          if finished % reportEvery == 0 || finished == itemCount { progress(Double(finished) / Double(itemCount)) }
        }
      }
      scoresComputed.wrappingAdd(tiler.scoresComputed + laneScores + gatheredEdges, ordering: .relaxed)
      edgesVisited.wrappingAdd(tiler.edgesVisited + gatheredEdges, ordering: .relaxed)
      busyNanoseconds.wrappingAdd(Int(DispatchTime.now().uptimeNanoseconds - workerStart), ordering: .relaxed)
    }
    let wall = Double(DispatchTime.now().uptimeNanoseconds - callStart) * 1e-9
    return Work(edges: edgesVisited.load(ordering: .relaxed), scores: scoresComputed.load(ordering: .relaxed),
                busySeconds: Double(busyNanoseconds.load(ordering: .relaxed)) * 1e-9, threadSeconds: wall * Double(workers))
  }

  /// Normalises an accumulated row `(m, l, acc)` in place and returns its log-sum-exp.
  ///
  /// Without a sink: `acc / l` and `m + log(l)`, or for a row without edges (`l == 0`) zeros (NaN with
  /// `.nan`) and `-inf`. With a sink logit `s`, which joins the denominator: with `m' = max(m, s)`,
  /// `acc e^(m - m') / (l e^(m - m') + e^(s - m'))` and `m' + log(l e^(m - m') + e^(s - m'))`; a row
  /// without edges gives zeros (its `acc` is zero) and `s`.
  @inline(__always)
  static func finish(acc: UnsafeMutablePointer<Float>, maximum m: Float, sum l: Float, count: Int,
                     emptyRows: EmptyRowPolicy, sink: Float?) -> Float {
    let (logSumExp, factor) = normalization(maximum: m, sum: l, sink: sink)
    if let factor {
      for c in 0..<count { acc[c] *= factor }
    } else {
      acc.update(repeating: emptyRows == .nan ? .nan : 0, count: count)
    }
    return logSumExp
  }

  /// A row's log-sum-exp and the factor `finish` scales its accumulator by (nil: a row without edges and
  /// without a sink, whose output is the empty-row value).
  @inline(__always)
  static func normalization(maximum m: Float, sum l: Float, sink: Float?) -> (logSumExp: Float, factor: Float?) {
    if let sink {
      let top = l > 0 ? max(m, sink) : sink
      let carried: Float = l > 0 ? exp(m - top) : 0
      let total = l * carried + exp(sink - top)
      return (top + log(total), carried / total)
    }
    return l > 0 ? (m + log(l), 1 / l) : (-.infinity, nil)
  }
}
