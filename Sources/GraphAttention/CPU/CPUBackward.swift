import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs the backward of attention on the CPU in one or two deterministic passes, without atomics on gradients.
///
/// Graphs whose key columns reach narrow bands of query rows (windows, dilated, blocked: `QuerySpans`) take
/// a single pass over key columns that also gathers dQ: each item adds its tiles' `dS_ij k_j` into its own
/// band of rows, and the bands are summed into dQ in item order. That is 5d multiply-adds per edge instead
/// of the two passes' 7d, for at most twice dQ's memory. Other graphs (global tokens, random, explicit)
/// and `emptyRows: .nan` take the two passes below.
///
/// Pass 1, over query rows (items of (head, row block)): `D_i = dO_i . O_i`, then
/// `dQ_i = scale * sum_j P_ij (dP_ij - D_i) k_j`. Pass 2, over key columns through the transposed graph
/// (items of (key/value head, column block)): for each query head of the key/value head's group, in
/// order, `dV_j += sum_i P_ij dO_i` and `dK_j += scale * sum_i P_ij (dP_ij - D_i) q_i`. `S` and `dP` are
/// recomputed in both passes (FlexAttention's scheme; FlashAttention-2 computes them once and adds dQ
/// with atomics, which is not deterministic).
///
/// Every gradient row is written by exactly one item, and an item's tiles, their rows and the kernel's
/// order of accumulation depend only on the graph and the shape, never on the thread count, so the
/// result is the same bytes for any number of threads. Work items are handed out from a counter only
/// to balance the load.
///
/// Memory: O(B * H_q * L_q) floats for `D`; per thread one tile (O(widest tile) columns and mask bytes)
/// and the kernel's packed block; explicit and random graphs add their transpose (O(edges)).
enum CPUBackward {
  /// fp32 inputs and outputs, `[B, H, L, d]` contiguous; the caller keeps them alive during `run`.
  struct Buffers: @unchecked Sendable {
    var query: UnsafePointer<Float>
    var key: UnsafePointer<Float>
    var value: UnsafePointer<Float>
    var output: UnsafePointer<Float>
    var logSumExp: UnsafePointer<Float>
    var gradOutput: UnsafePointer<Float>
    var gradQuery: UnsafeMutablePointer<Float>
    var gradKey: UnsafeMutablePointer<Float>
    var gradValue: UnsafeMutablePointer<Float>
    /// `[H_q]`: receives dL/dsink per query head when the modifiers have sinks; nil skips it.
    var gradSinks: UnsafeMutablePointer<Float>? = nil
  }

  /// Edges per work item: large enough to amortise the hand-out, small enough to balance.
  static let targetEdgesPerItem = 1 << 17

  /// Computes dQ, dK and dV (every element written).
  ///
  /// - Parameter kernel: the tile kernel (resolved: not `.automatic`).
  /// - Returns: edges per pass over every query head, and the scores both passes computed.
  /// With score modifiers, `P` and `dS` use the modified scores (`ScoreModifiers`): the softcap's
  /// derivative `1 - tanh^2` scales `dS`, ALiBi's bias is constant, and a sink needs nothing more than the
  /// log-sum-exp that counted it; its own gradient is `dsink_h = -sum_i e^(sink_h - LSE_i) D_i` over the
  /// head's rows (O(rows), summed in a fixed order).
  static func run(shape: AttentionShape, graph: Graph, scale: Float, threads: Int, kernel: CPUKernel,
                  emptyRows: EmptyRowPolicy, edgesPerHead: Int, modifiers: ScoreModifiers = ScoreModifiers(),
                  buffers b: Buffers) -> (edges: Int, scores: Int) {
    let (lq, lk, kd, vd) = (shape.queryCount, shape.keyCount, shape.keyDim, shape.valueDim)
    let heads = shape.batch * shape.queryHeads
    let deltaBuffer = UnsafeSendable(UnsafeMutablePointer<Float>.allocate(capacity: heads * lq))
    defer { deltaBuffer.value.deallocate() }
    let edges = Atomic<Int>(0), scores = Atomic<Int>(0)
    let transposed = graph.transposed(queryCount: lq, keyCount: lk)
    let columnsPerItem = itemSize(count: lk, averageDegree: edgesPerHead * shape.groupSize / lk)
    let spans = emptyRows == .nan ? nil
      : QuerySpans(transposed, queryCount: lq, keyCount: lk, columnsPerItem: columnsPerItem)

    if let spans {
      // D for every row, in parallel over row blocks (each row's sum has one order).
      let blocks = (heads * lq + 4095) / 4096
      DispatchQueue.concurrentPerform(iterations: blocks) { block in
        let rows = (block * 4096)..<min(heads * lq, (block + 1) * 4096)
        fillDelta(rows: rows, buffers: b, valueDim: vd, into: deltaBuffer.value)
      }
    } else {
      // Pass 1: dQ over query rows (every other graph).
      let rowsPerItem = itemSize(count: lq, averageDegree: edgesPerHead / lq)
      let blocks = (lq + rowsPerItem - 1) / rowsPerItem
      let itemCount = heads * blocks
      let next = Atomic<Int>(0)
      DispatchQueue.concurrentPerform(iterations: max(1, min(threads, itemCount))) { _ in
        let delta = deltaBuffer.value
        var tiler = BackwardTiler(rowStride: graph.preferredRowStride) { row, scratch in
          graph.neighbourhood(row: row, queryCount: lq, keyCount: lk, into: &scratch)
        }
        var kernel = BackwardKernel(aDim: kd, bDim: vd, scale: scale, kernel: kernel)
        defer { tiler.deallocate(); kernel.deallocate() }
        while true {
          let item = next.wrappingAdd(1, ordering: .relaxed).oldValue
          guard item < itemCount else { break }
          let head = item / blocks
          let first = (item % blocks) * rowsPerItem, last = min(lq, first + rowsPerItem)
          let kvHead = shape.keyValueHead(ofQueryHead: head)
          let headRow = head * lq
          fillDelta(rows: (headRow + first)..<(headRow + last), buffers: b, valueDim: vd, into: delta)
          (b.gradQuery + (headRow + first) * kd).update(repeating: 0, count: (last - first) * kd)
          kernel.setModifiers(modifiers.kernelModifiers(head: head % shape.queryHeads))
          kernel.setColumns(a: b.key + kvHead * lk * kd, b: b.value + kvHead * lk * vd, lse: nil, delta: nil)
          kernel.resetPanel(limit: lk)
          tiler.forEachTile(rows: first..<last, empty: { row in
            if emptyRows == .nan { (b.gradQuery + (headRow + row) * kd).update(repeating: .nan, count: kd) }
          }, tile: { tile in
            for (slot, row) in tile.rows.enumerated() {
              let i = headRow + row
              kernel.setRow(slot, position: row, a: b.query + i * kd, b: b.gradOutput + i * vd, gradA: b.gradQuery + i * kd,
                            gradB: nil, lse: b.logSumExp[i], delta: delta[i])
            }
            kernel.run(rows: tile.rows.count, columns: tile.columns, count: tile.columnCount, mask: tile.mask)
            for row in tile.rows {
              let g = b.gradQuery + (headRow + row) * kd
              for c in 0..<kd { g[c] *= scale }
            }
          })
        }
        edges.wrappingAdd(tiler.edges, ordering: .relaxed)
        scores.wrappingAdd(tiler.scores, ordering: .relaxed)
      }
    }

    if let sinks = modifiers.sinks, let gradSinks = b.gradSinks {
      let delta = deltaBuffer.value
      for h in 0..<shape.queryHeads {
        var sum = 0.0
        for batch in 0..<shape.batch {
          let headRow = (batch * shape.queryHeads + h) * lq
          for i in headRow..<(headRow + lq) { sum += Double(exp(sinks[h] - b.logSumExp[i])) * Double(delta[i]) }
        }
        gradSinks[h] = Float(-sum)
      }
    }

    // Pass 2: dK and dV (and with spans, dQ's bands) over key columns, through the transposed graph.
    let bandFloats = spans.map { heads * $0.totalRows * kd } ?? 0
    let bands = UnsafeSendable(UnsafeMutablePointer<Float>.allocate(capacity: max(1, bandFloats)))
    defer { bands.value.deallocate() }
    do {
      let columnsPerItem = spans?.columnsPerBlock ?? columnsPerItem
      let blocks = (lk + columnsPerItem - 1) / columnsPerItem
      let kvHeads = shape.batch * shape.keyValueHeads
      let itemCount = kvHeads * blocks
      let next = Atomic<Int>(0)
      DispatchQueue.concurrentPerform(iterations: max(1, min(threads, itemCount))) { _ in
        let delta = deltaBuffer.value
        var tiler = BackwardTiler(rowStride: transposed.preferredRowStride) { column, scratch in
          transposed.neighbourhood(column: column, into: &scratch)
        }
        var kernel = BackwardKernel(aDim: kd, bDim: vd, scale: scale, kernel: kernel)
        defer { tiler.deallocate(); kernel.deallocate() }
        var passScores = 0
        while true {
          let item = next.wrappingAdd(1, ordering: .relaxed).oldValue
          guard item < itemCount else { break }
          let kvHead = item / blocks
          let first = (item % blocks) * columnsPerItem, last = min(lk, first + columnsPerItem)
          let headColumn = kvHead * lk
          (b.gradKey + (headColumn + first) * kd).update(repeating: 0, count: (last - first) * kd)
          (b.gradValue + (headColumn + first) * vd).update(repeating: 0, count: (last - first) * vd)
          let block = item % blocks
          // Head by head, each over all the item's tiles, so a head's packed query columns serve every tile; a
          // key's gradient still sums its query heads in head order (the same bytes as tile by tile).
          for head in shape.queryHeads(ofKeyValueHead: kvHead) {
            let headRow = head * lq
            kernel.setModifiers(modifiers.kernelModifiers(head: head % shape.queryHeads, keyRows: true))
            kernel.setColumns(a: b.query + headRow * kd, b: b.gradOutput + headRow * vd,
                              lse: b.logSumExp + headRow, delta: delta + headRow)
            kernel.resetPanel(limit: lq)
            if let spans {
              let band = bands.value + (head * spans.totalRows + spans.offsets[block]) * kd
              band.update(repeating: 0, count: spans.rows[block].count * kd)
              kernel.setColumnGradients(band, first: spans.rows[block].lowerBound)
            }
            tiler.forEachTile(rows: first..<last, empty: { _ in }, tile: { tile in
              for (slot, column) in tile.rows.enumerated() {
                let j = headColumn + column
                kernel.setRow(slot, position: column, a: b.key + j * kd, b: b.value + j * vd, gradA: b.gradKey + j * kd,
                              gradB: b.gradValue + j * vd)
              }
              kernel.run(rows: tile.rows.count, columns: tile.columns, count: tile.columnCount, mask: tile.mask)
              passScores += tile.rows.count * tile.columnCount
            })
          }
          let g = b.gradKey + (headColumn + first) * kd
          for e in 0..<((last - first) * kd) { g[e] *= scale }
        }
        scores.wrappingAdd(passScores, ordering: .relaxed)
        if spans != nil { edges.wrappingAdd(tiler.edges, ordering: .relaxed) }
      }
    }

    if let spans {
      // dQ_i = scale * (the bands holding row i, summed in block order): the same bytes for any thread count.
      let rowsPerChunk = 1024
      let chunks = (lq + rowsPerChunk - 1) / rowsPerChunk
      DispatchQueue.concurrentPerform(iterations: heads * chunks) { index in
        let head = index / chunks
        let rows = ((index % chunks) * rowsPerChunk)..<min(lq, (index % chunks + 1) * rowsPerChunk)
        let out = b.gradQuery + (head * lq) * kd
        (out + rows.lowerBound * kd).update(repeating: 0, count: rows.count * kd)
        for block in spans.rows.indices {
          let band = spans.rows[block].clamped(to: rows)
          guard !band.isEmpty else { continue }
          let source = bands.value + (head * spans.totalRows + spans.offsets[block] + band.lowerBound - spans.rows[block].lowerBound) * kd
          let target = out + band.lowerBound * kd
          for e in 0..<(band.count * kd) { target[e] += source[e] }
        }
        let target = out + rows.lowerBound * kd
        for e in 0..<(rows.count * kd) { target[e] *= scale }
      }
    }
    return (edges.load(ordering: .relaxed), scores.load(ordering: .relaxed))
  }

  /// `D_i = dO_i . O_i` for the flat rows `rows` (over every head).
  private static func fillDelta(rows: Range<Int>, buffers b: Buffers, valueDim vd: Int, into delta: UnsafeMutablePointer<Float>) {
    for i in rows {
      var d: Float = 0
      let o = b.output + i * vd, g = b.gradOutput + i * vd
      for c in 0..<vd { d += o[c] * g[c] }
      delta[i] = d
    }
  }

  /// Rows (or columns) per work item for rows of `averageDegree` edges: a function of the problem only,
  /// never of the thread count, so that the tiles (and the bytes) do not depend on it.
  static func itemSize(count: Int, averageDegree: Int) -> Int {
    max(BackwardTiler.maxRows, min(4096, targetEdgesPerItem / max(1, averageDegree)))
  }
}
