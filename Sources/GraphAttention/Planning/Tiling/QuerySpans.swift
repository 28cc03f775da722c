/// The band of query rows each block of key columns reaches through the transposed graph, when the bands
/// are narrow: what a single-pass backward (`CPUBackward`) needs to gather dQ from key tiles into one band
/// per block, summed afterwards in block order.
///
/// Blocks are at least twice as wide as the widest column's reach, so for a banded graph (window, dilated,
/// blocked, their causal forms and unions) each row lies in at most two bands and the bands hold about
/// `L_q (1 + reach / block)` <= 1.5 `L_q` rows. A graph whose bands would hold more than `maxRowsFactor * L_q`
/// rows (global tokens, random and explicit graphs, wide prefixes) gets none.
struct QuerySpans {
  /// The bands may hold at most this many times the query rows (the single pass's extra memory, in dQs).
  static let maxRowsFactor = 2

  /// Key columns per block (and per work item of the pass over key columns).
  let columnsPerBlock: Int
  /// Per block, the query rows its columns reach (empty for a block without edges).
  let rows: [Range<Int>]
  /// Per block, where its band starts among all bands, in rows: the prefix sums of `rows`' counts.
  let offsets: [Int]
  /// Rows of all bands together.
  let totalRows: Int

  /// The spans of `transposed` in blocks of at least `columnsPerItem` columns, or nil when they are too wide.
  /// - Complexity: O(L_k) neighbourhood calls (O(runs) each), O(L_k) memory.
  init?(_ transposed: TransposedGraph, queryCount: Int, keyCount: Int, columnsPerItem: Int) {
    guard keyCount > 0, queryCount > 0 else { return nil }
    var scratch = RowScratch()
    var lower = [Int](repeating: 0, count: keyCount), upper = [Int](repeating: 0, count: keyCount)
    var widest = 0
    for column in 0..<keyCount {
      transposed.neighbourhood(column: column, into: &scratch)
      guard let first = scratch.runs.first, let last = scratch.runs.last else { continue }
      (lower[column], upper[column]) = (first.start, last.last + 1)
      widest = max(widest, last.last + 1 - first.start)
      // One column reaching most rows (a global token) already rules the bands out.
      if widest > queryCount / 2 && queryCount >= 64 { return nil }
    }
    // Blocks twice the widest reach keep the bands to about 1.5 L_q rows.
    let width = max(columnsPerItem, 2 * widest)
    var rows: [Range<Int>] = [], offsets: [Int] = [], total = 0
    var start = 0
    while start < keyCount {
      let end = min(keyCount, start + width)
      var low = Int.max, high = Int.min
      for column in start..<end where upper[column] > lower[column] {
        low = min(low, lower[column])
        high = max(high, upper[column])
      }
      let band = low < high ? low..<high : 0..<0
      offsets.append(total)
      rows.append(band)
      total += band.count
      if total > QuerySpans.maxRowsFactor * queryCount { return nil }
      start = end
    }
    self.columnsPerBlock = width
    self.rows = rows
    self.offsets = offsets
    self.totalRows = total
  }
}
