import Dispatch
import Synchronization

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
/// degree so an item is about `targetEdgesPerItem` edges. Memory: per thread O(max degree) for the
/// tile's keys and masks and 256 scores; nothing O(L^2) or O(edges).
@usableFromInline
enum CPUExecutor {
  /// Where row results go.
  enum Destination {
    /// Write `acc / l` (or the empty-row value) into a `[B, H_q, L_q, d_v]` output.
    case output(UnsafeMutablePointer<Float>, emptyRows: EmptyRowPolicy)
    /// Carry `(m, l, acc)` in and out of a state: `m`, `l` are `[B, H_q, L_q]`, `acc` is `[B, H_q, L_q, d_v]`.
    case state(maxima: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>, accumulator: UnsafeMutablePointer<Float>)
  }

  /// Edges per work item: large enough to amortise the hand-out, small enough to balance.
  static let targetEdgesPerItem = 1 << 15

  /// The number of threads used when none is asked for: the online processors.
  static var defaultThreadCount: Int {
    max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
  }

  /// Raw pointers handed to worker threads; the caller keeps the buffers alive for the whole call.
  struct Pointers: @unchecked Sendable {
    var query: UnsafePointer<Float>
    var key: UnsafePointer<Float>
    var value: UnsafePointer<Float>
    var destination: Destination
  }

  /// Computes attention of `graph` (minus `excluding`) for every head, batch and query row.
  ///
  /// - Parameters:
  ///   - edgesPerHead: the graph's edge count (used to size work items); any positive estimate works.
  ///   - progress: called with the fraction of items done, from worker threads, at most ~100 times.
  /// - Returns: the number of scores the kernels computed (at least the edges visited).
  @discardableResult
  static func run(shape: AttentionShape, graph: Graph, excluding: Graph?, edgesPerHead: Int, scale: Float,
                  threads: Int, forcePortable: Bool = false, pointers: Pointers,
                  progress: (@Sendable (Double) -> Void)?) -> Int {
    let averageDegree = max(1, edgesPerHead / shape.queryCount)
    let rowsPerItem = max(1, min(4096, targetEdgesPerItem / averageDegree, (shape.queryCount + 3) / 4))
    let blocksPerHead = (shape.queryCount + rowsPerItem - 1) / rowsPerItem
    let heads = shape.batch * shape.queryHeads
    let itemCount = heads * blocksPerHead
    let workers = max(1, min(threads, itemCount))
    let next = Atomic<Int>(0)
    let done = Atomic<Int>(0)
    let reportEvery = max(1, itemCount / 100)

    let scoresComputed = Atomic<Int>(0)
    DispatchQueue.concurrentPerform(iterations: workers) { _ in
      var tiler = QueryTiler(graph: graph, excluding: excluding, queryCount: shape.queryCount, keyCount: shape.keyCount)
      let scratch = UnsafeMutableRawPointer.allocate(byteCount: TileKernel.scratchFloats * 4, alignment: 64)
        .bindMemory(to: Float.self, capacity: TileKernel.scratchFloats)
      let localState = UnsafeMutablePointer<Float>.allocate(capacity: 2 * TileKernel.maxRows)
      let portable = forcePortable
      defer {
        tiler.deallocate()
        scratch.deallocate()
        localState.deallocate()
      }
      let p = pointers
      while true {
        let item = next.wrappingAdd(1, ordering: .relaxed).oldValue
        guard item < itemCount else { break }
        let head = item / blocksPerHead
        let firstRow = (item % blocksPerHead) * rowsPerItem
        let lastRow = min(shape.queryCount, firstRow + rowsPerItem)
        let batch = head / shape.queryHeads
        let kvHead = batch * shape.keyValueHeads + (head % shape.queryHeads) / shape.groupSize
        let key = p.key + kvHead * shape.keyCount * shape.keyDim
        let value = p.value + kvHead * shape.keyCount * shape.valueDim
        let headRows = head * shape.queryCount
        tiler.forEachTile(rows: firstRow..<lastRow, empty: { row in
          if case let .output(out, emptyRows) = p.destination {
            finish(acc: out + (headRows + row) * shape.valueDim, sum: 0, count: shape.valueDim, emptyRows: emptyRows)
          }
        }, tile: { tile in
          var rows = TileKernel.Rows()
          for (slot, row) in tile.rows.enumerated() {
            let rowIndex = headRows + row
            rows.query.append(p.query + rowIndex * shape.keyDim)
            switch p.destination {
            case let .output(out, _):
              let acc = out + rowIndex * shape.valueDim
              acc.initialize(repeating: 0, count: shape.valueDim)
              localState[slot] = -.infinity
              localState[TileKernel.maxRows + slot] = 0
              rows.maxima.append(localState + slot)
              rows.sums.append(localState + TileKernel.maxRows + slot)
              rows.accumulators.append(acc)
            case let .state(maxima, sums, accumulator):
              rows.maxima.append(maxima + rowIndex)
              rows.sums.append(sums + rowIndex)
              rows.accumulators.append(accumulator + rowIndex * shape.valueDim)
            }
          }
          TileKernel.attend(rows: rows, groupRanges: tile.groupRanges, key: key, value: value, keyDim: shape.keyDim,
                            valueDim: shape.valueDim, scale: scale, keys: tile.keys, keyCount: tile.keyCount,
                            mask: tile.mask, scratch: scratch, portable: portable)
          if case let .output(_, emptyRows) = p.destination {
            for slot in 0..<tile.rows.count {
              finish(acc: rows.accumulators[slot], sum: localState[TileKernel.maxRows + slot], count: shape.valueDim,
                     emptyRows: emptyRows)
            }
          }
        })
        if let progress {
          let finished = done.wrappingAdd(1, ordering: .relaxed).newValue
          if finished % reportEvery == 0 || finished == itemCount { progress(Double(finished) / Double(itemCount)) }
        }
      }
      scoresComputed.wrappingAdd(tiler.scoresComputed, ordering: .relaxed)
    }
    return scoresComputed.load(ordering: .relaxed)
  }

  /// Normalises an accumulated row: `acc / l`, or zeros / NaN for a row without edges (`l == 0`).
  @inline(__always)
  static func finish(acc: UnsafeMutablePointer<Float>, sum l: Float, count: Int, emptyRows: EmptyRowPolicy) {
    if l > 0 {
      let inverse = 1 / l
      for c in 0..<count { acc[c] *= inverse }
    } else {
      acc.update(repeating: emptyRows == .nan ? .nan : 0, count: count)
    }
  }
}
