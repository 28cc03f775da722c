/// The keys of a row that stay resident while rows are streamed: those within `reach` of the row (a
/// window's, a dilated or blocked graph's) and the global tokens. Every other key is *far*: a streaming
/// caller reads it from the file instead of faulting its page in (`ScatteredKeyAccess.read`).
struct NearKeys: Sendable {
  /// Keys `row - reach ... row + reach` are near.
  let reach: Int
  /// Keys near every row (global tokens), sorted.
  let resident: [Int]

  init(reach: Int, resident: [Int]) {
    self.reach = reach
    self.resident = resident.sorted()
  }

  /// Whether `key` is far from `row`.
  /// - Complexity: O(log resident).
  @inline(__always)
  func isFar(_ key: Int, row: Int) -> Bool {
    if key >= row - reach && key <= row + reach { return false }
    if resident.isEmpty { return true }
    var lo = 0, hi = resident.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if resident[mid] < key { lo = mid + 1 } else { hi = mid }
    }
    return lo == resident.count || resident[lo] != key
  }

  /// Whether any key of `run` is far from `row`.
  /// - Complexity: O(1) for a run within reach, else O(min(count, resident) log resident).
  func hasFarKey(_ run: KeyRun, row: Int) -> Bool {
    if run.start >= row - reach && run.last <= row + reach { return false }
    if run.count > resident.count { return true }
    var key = run.start
    for _ in 0..<run.count {
      if isFar(key, row: row) { return true }
      key += run.stride
    }
    return false
  }
}
