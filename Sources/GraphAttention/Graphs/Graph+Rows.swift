/// Reusable buffers for enumerating a row's neighbourhood without allocating per row.
///
/// One per worker thread; capacity grows to the largest row seen (O(max degree) at worst, never
/// O(L^2) or O(edges)).
public struct RowScratch {
  /// The last row's runs: sorted by start, spans disjoint.
  public internal(set) var runs: [KeyRun] = []
  @usableFromInline var operands: [KeyRun] = []
  @usableFromInline var excluded: [KeyRun] = []
  @usableFromInline var keys: [Int] = []
  @usableFromInline var merged: [KeyRun] = []
  @usableFromInline var intervals: [KeyRun] = []
  /// Buffers for intersections (`A&B`), apart from the union's.
  @usableFromInline var intersection = IntersectionScratch()

  /// Creates empty buffers.
  public init() {}

  /// The number of keys in `runs`.
  public var degree: Int { runs.reduce(0) { $0 + $1.count } }
}

extension Graph {
  /// Computes row `row`'s neighbourhood as sorted runs with disjoint spans into `scratch.runs`.
  ///
  /// Edges present in several components appear once. If `excluding` is given, its edges are
  /// removed (the state API uses this so a graph accumulated after another never revisits an edge).
  /// The graph must have been validated for these lengths (`validate(queryCount:keyCount:)`).
  ///
  /// - Precondition: `0 <= row < queryCount`.
  /// - Complexity: O(runs) for rows whose operands' spans do not overlap or are all contiguous;
  ///   O(degree log degree) for rows where strided or gathered operands overlap.
  public func neighbourhood(row: Int, queryCount: Int, keyCount: Int, excluding: Graph? = nil,
                            into scratch: inout RowScratch) {
    precondition(row >= 0 && row < queryCount, "row \(row) is outside 0..<\(queryCount)")
    scratch.runs.removeAll(keepingCapacity: true)
    if components.count == 1, excluding == nil {
      components[0].appendRuns(row: row, queryCount: queryCount, keyCount: keyCount, to: &scratch.runs,
                               scratch: &scratch.intersection)
      return
    }
    scratch.operands.removeAll(keepingCapacity: true)
    for component in components {
      component.appendRuns(row: row, queryCount: queryCount, keyCount: keyCount, to: &scratch.operands,
                           scratch: &scratch.intersection)
    }
    Graph.unite(&scratch.operands, into: &scratch.runs, keys: &scratch.keys, intervals: &scratch.intervals)
    if let excluding {
      scratch.operands.removeAll(keepingCapacity: true)
      for component in excluding.components {
        component.appendRuns(row: row, queryCount: queryCount, keyCount: keyCount, to: &scratch.operands,
                             scratch: &scratch.intersection)
      }
      scratch.excluded.removeAll(keepingCapacity: true)
      Graph.unite(&scratch.operands, into: &scratch.excluded, keys: &scratch.keys, intervals: &scratch.intervals)
      Graph.subtract(scratch.excluded, from: scratch.runs, into: &scratch.merged, keys: &scratch.keys)
      swap(&scratch.runs, &scratch.merged)
    }
  }

  /// The number of keys row `row` attends to.
  /// - Precondition: `0 <= row < queryCount`, and the graph validated for these lengths.
  /// - Complexity: O(1) for a single implicit component, O(degree) for random rows, else as `neighbourhood`.
  public func degree(row: Int, queryCount: Int, keyCount: Int, scratch: inout RowScratch) -> Int {
    precondition(row >= 0 && row < queryCount, "row \(row) is outside 0..<\(queryCount)")
    if components.count == 1, let d = components[0].closedFormDegree(row: row, queryCount: queryCount, keyCount: keyCount) {
      return d
    }
    neighbourhood(row: row, queryCount: queryCount, keyCount: keyCount, into: &scratch)
    return scratch.degree
  }

  /// Merges runs (each component's runs sorted and disjoint, components overlapping) into sorted,
  /// disjoint runs. Clusters of overlapping contiguous runs merge as intervals. In a cluster holding a
  /// strided run, the contiguous runs still merge as intervals, a strided run inside one of them is
  /// absorbed without being looked at key by key, and only the keys of strided runs that fall between
  /// intervals are expanded, de-duplicated and re-compressed. So a full row (a global token's) united
  /// with strided runs costs O(runs), never O(L).
  static func unite(_ runs: inout [KeyRun], into out: inout [KeyRun], keys: inout [Int], intervals: inout [KeyRun]) {
    if runs.count > 1 { runs.sort { $0.start < $1.start } }
    var i = 0
    while i < runs.count {
      var end = runs[i].last
      var contiguous = runs[i].stride == 1 || runs[i].count == 1
      var j = i + 1
      while j < runs.count, runs[j].start <= end {
        end = max(end, runs[j].last)
        contiguous = contiguous && (runs[j].stride == 1 || runs[j].count == 1)
        j += 1
      }
      if j == i + 1 {
        appendMerging(runs[i], to: &out)
      } else if contiguous {
        appendMerging(KeyRun(start: runs[i].start, count: end - runs[i].start + 1), to: &out)
      } else {
        uniteMixed(runs[i..<j], into: &out, keys: &keys, intervals: &intervals)
      }
      i = j
    }
  }

  /// One overlapping cluster holding strided runs (sorted by start); see `unite`.
  private static func uniteMixed(_ cluster: ArraySlice<KeyRun>, into out: inout [KeyRun], keys: inout [Int],
                                 intervals: inout [KeyRun]) {
    // The contiguous runs as sorted, disjoint, non-adjacent intervals.
    intervals.removeAll(keepingCapacity: true)
    for r in cluster where r.stride == 1 || r.count == 1 {
      if let previous = intervals.last, r.start <= previous.last + 1 {
        if r.last > previous.last { intervals[intervals.count - 1].count = r.last - previous.start + 1 }
      } else {
        intervals.append(KeyRun(start: r.start, count: r.count))
      }
    }
    // Keys of strided runs outside every interval.
    keys.removeAll(keepingCapacity: true)
    for r in cluster where r.stride > 1 && r.count > 1 {
      var p = intervalIndex(containingOrAfter: r.start, in: intervals)
      if p < intervals.count, intervals[p].start <= r.start, r.last <= intervals[p].last { continue }
      var k = r.start
      for _ in 0..<r.count {
        while p < intervals.count, intervals[p].last < k { p += 1 }
        if !(p < intervals.count && intervals[p].start <= k) { keys.append(k) }
        k += r.stride
      }
    }
    keys.sort()
    // Interleave: the keys in each gap, compressed on their own, then the interval after the gap.
    var k = 0
    for interval in intervals {
      let gapStart = k
      while k < keys.count, keys[k] < interval.start { k += 1 }
      if k > gapStart { compress(sortedKeys: keys[gapStart..<k], to: &out) }
      appendMerging(interval, to: &out)
    }
    if k < keys.count { compress(sortedKeys: keys[k...], to: &out) }
  }

  /// The first interval whose last key is at or after `key` (binary search).
  private static func intervalIndex(containingOrAfter key: Int, in intervals: [KeyRun]) -> Int {
    var lo = 0, hi = intervals.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if intervals[mid].last < key { lo = mid + 1 } else { hi = mid }
    }
    return lo
  }

  /// Removes the keys of `excluded` (sorted, disjoint) from `runs` (sorted, disjoint).
  static func subtract(_ excluded: [KeyRun], from runs: [KeyRun], into out: inout [KeyRun], keys: inout [Int]) {
    out.removeAll(keepingCapacity: true)
    var p = 0
    for run in runs {
      while p < excluded.count, excluded[p].last < run.start { p += 1 }
      var q = p
      var overlapping = false
      var contiguous = run.stride == 1 || run.count == 1
      while q < excluded.count, excluded[q].start <= run.last {
        overlapping = true
        contiguous = contiguous && (excluded[q].stride == 1 || excluded[q].count == 1)
        q += 1
      }
      if !overlapping {
        out.append(run)
      } else if contiguous {
        var next = run.start
        for e in excluded[p..<q] {
          if e.start > next { out.append(KeyRun(start: next, count: e.start - next)) }
          next = max(next, e.last + 1)
        }
        if next <= run.last { out.append(KeyRun(start: next, count: run.last - next + 1)) }
      } else {
        keys.removeAll(keepingCapacity: true)
        var e = p
        var k = run.start
        for _ in 0..<run.count {
          while e < q, excluded[e].last < k { e += 1 }
          if !(e < q && excluded[e].contains(k)) { keys.append(k) }
          k += run.stride
        }
        compress(sortedKeys: keys[...], to: &out)
      }
    }
  }

  /// Appends sorted keys as runs: greedy arithmetic progressions, duplicates skipped.
  static func compress(sortedKeys keys: ArraySlice<Int>, to out: inout [KeyRun]) {
    var i = keys.startIndex
    let n = keys.endIndex
    while i < n {
      let start = keys[i]
      var j = i + 1
      while j < n, keys[j] == start { j += 1 }
      guard j < n else { appendMerging(KeyRun(start: start, count: 1), to: &out); break }
      let stride = keys[j] - start
      var count = 2
      var last = keys[j]
      j += 1
      while j < n {
        if keys[j] == last { j += 1; continue }
        if keys[j] - last != stride { break }
        last = keys[j]
        count += 1
        j += 1
      }
      appendMerging(KeyRun(start: start, count: count, stride: stride), to: &out)
      i = j
    }
  }

  /// Appends `run`, extending the previous run instead when both are contiguous and adjacent.
  @inline(__always)
  static func appendMerging(_ run: KeyRun, to out: inout [KeyRun]) {
    if let previous = out.last, previous.stride == 1 || previous.count == 1,
       run.stride == 1 || run.count == 1, previous.last + 1 == run.start {
      out[out.count - 1] = KeyRun(start: previous.start, count: previous.count + run.count)
    } else {
      out.append(run)
    }
  }
}

extension Graph.Component {
  /// Appends this component's runs for `row` (sorted, disjoint). Square components assume
  /// `row < keyCount`, which validation guarantees; `scratch` is used by intersections only.
  func appendRuns(row i: Int, queryCount m: Int, keyCount n: Int, to runs: inout [KeyRun],
                  scratch: inout IntersectionScratch) {
    switch self {
    case .full:
      runs.append(KeyRun(start: 0, count: n))
    case .causal:
      // Bottom-right aligned: the last key row i sees is i + L_k - L_q (< L_k since i < L_q).
      let hi = i + (n - m)
      if hi >= 0 { runs.append(KeyRun(start: 0, count: hi + 1)) }
    case let .window(radius, causal):
      if causal {
        let hi = i + (n - m)
        guard hi >= 0 else { return }
        let lo = hi >= radius ? hi - radius : 0
        runs.append(KeyRun(start: lo, count: hi - lo + 1))
      } else {
        let lo = i >= radius ? i - radius : 0
        let hi = radius >= n - 1 - i ? n - 1 : i + radius
        runs.append(KeyRun(start: lo, count: hi - lo + 1))
      }
    case let .prefix(length):
      let count = Graph.Component.prefixDegree(row: i, length: length, queryCount: m, keyCount: n)
      if count > 0 { runs.append(KeyRun(start: 0, count: count)) }
    case let .documents(documents):
      let (start, end) = documents.document(of: i)
      runs.append(KeyRun(start: start, count: end - start))
    case let .intersection(atoms):
      scratch.intersect(atoms, row: i, queryCount: m, keyCount: n, into: &runs)
    case let .view(view):
      view.appendRuns(row: i, to: &runs, scratch: &scratch)
    case let .dilated(radius, dilation):
      let s = dilation + 1
      let left = min(radius, i / s)
      let right = min(radius, (n - 1 - i) / s)
      let count = left + right + 1
      runs.append(KeyRun(start: i - left * s, count: count, stride: count == 1 ? 1 : s))
    case let .blocked(block, dilation):
      let s = dilation + 1
      let base = (i / block) * block
      guard (i - base) % s == 0 else { return }
      let count = Graph.Component.blockedDegree(base: base, block: block, step: s, keyCount: n)
      runs.append(KeyRun(start: base, count: count, stride: count == 1 ? 1 : s))
    case let .global(tokens):
      if Graph.Component.binarySearch(tokens, i) {
        runs.append(KeyRun(start: 0, count: n))
      } else {
        for t in tokens { Graph.appendMerging(KeyRun(start: t, count: 1), to: &runs) }
      }
    case let .random(graph):
      graph.forEachKey(row: i, keyCount: n) { key in
        Graph.appendMerging(KeyRun(start: key, count: 1), to: &runs)
        return true
      }
    case let .explicit(graph):
      let columns = graph.columns(ofRow: i)
      var e = columns.startIndex
      while e < columns.endIndex {
        let start = Int(columns[e])
        var count = 1
        while e + count < columns.endIndex, Int(columns[e + count]) == start + count { count += 1 }
        runs.append(KeyRun(start: start, count: count))
        e += count
      }
    }
  }

  /// The row's degree when it has a closed form (every kind but random, unions and most intersections).
  func closedFormDegree(row i: Int, queryCount m: Int, keyCount n: Int) -> Int? {
    switch self {
    case .full: return n
    case .causal: return max(0, i + (n - m) + 1)
    case let .window(radius, causal):
      if causal {
        let hi = i + (n - m)
        return hi < 0 ? 0 : min(radius, hi) + 1
      }
      let lo = i >= radius ? i - radius : 0
      let hi = radius >= n - 1 - i ? n - 1 : i + radius
      return hi - lo + 1
    case let .prefix(length):
      return Graph.Component.prefixDegree(row: i, length: length, queryCount: m, keyCount: n)
    case let .documents(documents):
      let (start, end) = documents.document(of: i)
      return end - start
    case let .intersection(atoms):
      // documents & causal or & a causal window (square): the causal part within the row's document.
      guard let (documents, other) = Graph.Component.documentsPair(atoms) else { return nil }
      let (start, end) = documents.document(of: i)
      switch other {
      case .full: return end - start
      case .causal: return i - start + 1
      case let .window(radius, true): return min(radius, i - start) + 1
      default: return nil
      }
    case let .dilated(radius, dilation):
      let s = dilation + 1
      return min(radius, i / s) + min(radius, (n - 1 - i) / s) + 1
    case let .blocked(block, dilation):
      let s = dilation + 1
      let base = (i / block) * block
      return (i - base) % s == 0 ? Graph.Component.blockedDegree(base: base, block: block, step: s, keyCount: n) : 0
    case let .global(tokens):
      return Graph.Component.binarySearch(tokens, i) ? n : tokens.count
    case .random, .view: return nil
    case let .explicit(graph): return graph.columns(ofRow: i).count
    }
  }

  /// `prefix:P`'s degree of row `i`: `min(L_k, max(P, i + L_k - L_q + 1))`, never negative.
  @inline(__always)
  static func prefixDegree(row i: Int, length: Int, queryCount m: Int, keyCount n: Int) -> Int {
    min(n, max(length, i + (n - m) + 1, 0))
  }

  /// Keys `base + t*step < min(base + block, keyCount)`.
  @inline(__always)
  static func blockedDegree(base: Int, block: Int, step: Int, keyCount: Int) -> Int {
    let span = min(block, keyCount - base)
    return (span - 1) / step + 1
  }

  @inline(__always)
  static func binarySearch(_ sorted: [Int], _ value: Int) -> Bool {
    var lo = 0, hi = sorted.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if sorted[mid] < value { lo = mid + 1 } else { hi = mid }
    }
    return lo < sorted.count && sorted[lo] == value
  }
}

/// Buffers for enumerating an intersection's row: the runs accumulated so far, the next operand's,
/// and keys for overlapping strided runs.
@usableFromInline
struct IntersectionScratch {
  @usableFromInline var accumulated: [KeyRun] = []
  @usableFromInline var operand: [KeyRun] = []
  @usableFromInline var result: [KeyRun] = []
  @usableFromInline var keys: [Int] = []
  /// A view's global runs and keys (`GraphView`), apart from the buffers its base uses.
  @usableFromInline var viewRuns: [KeyRun] = []
  @usableFromInline var viewKeys: [Int] = []

  init() {}

  /// Appends the runs of row `i` of the intersection of `atoms` (none an intersection) to `runs`:
  /// each operand's sorted, disjoint runs intersected with the result so far, left to right.
  /// - Complexity: O(runs of the operands), plus O(keys) where two strided runs overlap.
  mutating func intersect(_ atoms: [Graph.Component], row i: Int, queryCount m: Int, keyCount n: Int,
                          into runs: inout [KeyRun]) {
    // Atoms are never intersections, so they leave this one untouched (an empty value costs no allocation).
    var nested = IntersectionScratch()
    // Through the buffer, each atom is borrowed in place: `atoms[k]` copied it, retaining its payload's
    // arrays (a document graph's offsets) twice per row.
    atoms.withUnsafeBufferPointer { atoms in
      intersect(operands: atoms.count, into: &runs) { k, out in
        atoms[k].appendRuns(row: i, queryCount: m, keyCount: n, to: &out, scratch: &nested)
      }
    }
  }

  /// Appends the intersection of `operands` lists of runs to `runs`; `appendRuns(k, &out)` appends
  /// operand `k`'s sorted, disjoint runs to `out`. Stops early once the intersection is empty.
  mutating func intersect(operands: Int, into runs: inout [KeyRun], appendRuns: (Int, inout [KeyRun]) -> Void) {
    accumulated.removeAll(keepingCapacity: true)
    appendRuns(0, &accumulated)
    for k in 1..<operands {
      if accumulated.isEmpty { return }
      operand.removeAll(keepingCapacity: true)
      appendRuns(k, &operand)
      result.removeAll(keepingCapacity: true)
      IntersectionScratch.intersect(accumulated, operand, into: &result, keys: &keys)
      swap(&accumulated, &result)
    }
    for run in accumulated { Graph.appendMerging(run, to: &runs) }
  }

  /// Intersects two lists of sorted runs with disjoint spans, appending sorted, disjoint runs to `out`.
  static func intersect(_ a: [KeyRun], _ b: [KeyRun], into out: inout [KeyRun], keys: inout [Int]) {
    var p = 0, q = 0
    while p < a.count, q < b.count {
      let x = a[p], y = b[q]
      let lo = max(x.start, y.start), hi = min(x.last, y.last)
      if lo <= hi { overlap(x, y, lo, hi, into: &out, keys: &keys) }
      // Advance the run that ends first; its keys beyond `hi` cannot meet the other list again.
      if x.last < y.last { p += 1 } else if y.last < x.last { q += 1 } else { p += 1; q += 1 }
    }
  }

  /// The common keys of runs `x` and `y` within their common span `lo...hi`.
  private static func overlap(_ x: KeyRun, _ y: KeyRun, _ lo: Int, _ hi: Int, into out: inout [KeyRun], keys: inout [Int]) {
    let xDense = x.stride == 1 || x.count == 1, yDense = y.stride == 1 || y.count == 1
    if xDense && yDense {
      Graph.appendMerging(KeyRun(start: lo, count: hi - lo + 1), to: &out)
    } else if xDense || yDense {
      // A strided run clipped to the contiguous one's span: still a progression.
      let s = xDense ? y : x
      let first = s.start + (lo - s.start + s.stride - 1) / s.stride * s.stride
      guard first <= hi else { return }
      let count = (hi - first) / s.stride + 1
      Graph.appendMerging(KeyRun(start: first, count: count, stride: count == 1 ? 1 : s.stride), to: &out)
    } else {
      // Two progressions: walk the sparser one, keep the keys the other holds.
      let (walk, other) = x.stride >= y.stride ? (x, y) : (y, x)
      keys.removeAll(keepingCapacity: true)
      var k = walk.start + (lo - walk.start + walk.stride - 1) / walk.stride * walk.stride
      while k <= hi {
        if other.contains(k) { keys.append(k) }
        k += walk.stride
      }
      Graph.compress(sortedKeys: keys[...], to: &out)
    }
  }
}

extension Graph {
  /// The pattern when the graph is exactly one explicit component stored with an offset per row (CSR, or COO
  /// and Matrix Market patterns dense enough to be stored so): the executor then gathers its rows by key
  /// blocks (`ga_gather_rows`) instead of tiling them one by one. nil for any other graph.
  var denselyStoredPattern: ExplicitGraph? {
    guard components.count == 1, case let .explicit(pattern) = components[0], pattern.storesRowsDensely else { return nil }
    return pattern
  }
}
