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
/// and reduces each row with `RowKernel`.
///
/// Items are handed out from an atomic counter, so a thread that drew light rows (the start of a
/// causal graph, empty blocked rows) simply takes more items; blocks are sized from the average
/// degree so an item is about `targetEdgesPerItem` edges. Memory: per thread O(max degree) for the
/// row's runs and 64 scores; nothing O(L^2) or O(edges).
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
  static func run(shape: AttentionShape, graph: Graph, excluding: Graph?, edgesPerHead: Int, scale: Float,
                  threads: Int, pointers: Pointers, progress: (@Sendable (Double) -> Void)?) {
    let averageDegree = max(1, edgesPerHead / shape.queryCount)
    let rowsPerItem = max(1, min(4096, targetEdgesPerItem / averageDegree, (shape.queryCount + 3) / 4))
    let blocksPerHead = (shape.queryCount + rowsPerItem - 1) / rowsPerItem
    let heads = shape.batch * shape.queryHeads
    let itemCount = heads * blocksPerHead
    let workers = max(1, min(threads, itemCount))
    let next = Atomic<Int>(0)
    let done = Atomic<Int>(0)
    let reportEvery = max(1, itemCount / 100)

    DispatchQueue.concurrentPerform(iterations: workers) { _ in
      var scratch = RowScratch()
      let scores = UnsafeMutablePointer<Float>.allocate(capacity: RowKernel.chunkCapacity)
      let indices = UnsafeMutablePointer<Int>.allocate(capacity: RowKernel.chunkCapacity)
      defer {
        scores.deallocate()
        indices.deallocate()
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
        let kernel = RowKernel(
          keys: p.key + kvHead * shape.keyCount * shape.keyDim,
          values: p.value + kvHead * shape.keyCount * shape.valueDim,
          keyDim: shape.keyDim, valueDim: shape.valueDim, scale: scale, scores: scores, indices: indices)
        for row in firstRow..<lastRow {
          graph.neighbourhood(row: row, queryCount: shape.queryCount, keyCount: shape.keyCount,
                              excluding: excluding, into: &scratch)
          let rowIndex = head * shape.queryCount + row
          let q = p.query + rowIndex * shape.keyDim
          scratch.runs.withUnsafeBufferPointer { runs in
            switch p.destination {
            case let .output(out, emptyRows):
              let acc = out + rowIndex * shape.valueDim
              acc.initialize(repeating: 0, count: shape.valueDim)
              var m = -Float.infinity, l: Float = 0
              kernel.accumulate(query: q, runs: runs, m: &m, l: &l, acc: acc)
              finish(acc: acc, sum: l, count: shape.valueDim, emptyRows: emptyRows)
            case let .state(maxima, sums, accumulator):
              kernel.accumulate(query: q, runs: runs, m: &maxima[rowIndex], l: &sums[rowIndex],
                                acc: accumulator + rowIndex * shape.valueDim)
            }
          }
        }
        if let progress {
          let finished = done.wrappingAdd(1, ordering: .relaxed).newValue
          if finished % reportEvery == 0 || finished == itemCount { progress(Double(finished) / Double(itemCount)) }
        }
      }
    }
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
