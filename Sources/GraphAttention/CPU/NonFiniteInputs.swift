#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Unchecked inputs (`checksFiniteInputs == false`) that hold NaN or infinity, and the rows they reach.
///
/// The semantics are SDPA's with a boolean mask: a non-finite element reaches exactly the query rows whose
/// edges touch it, and those rows are what the attention formula gives in IEEE arithmetic (a NaN score
/// makes its row NaN; a NaN in column `c` of a value row makes column `c` NaN in every row that attends
/// to it); every other row is as if the element were not there. The fast kernels cannot promise that on
/// their own: a tile of rows that share keys multiplies masked weights by zero (`0 x NaN = NaN`), and the
/// online maximum skips NaN scores. So a call with non-finite inputs runs in three steps:
///
/// 1. the fast path on copies of Q, K and V whose non-finite rows are zero (no row can be disturbed
///    by a key it does not attend to);
/// 2. the reached rows found from the graph's runs (`reachedRows`), without enumerating other edges;
/// 3. those rows recomputed in float64 from the original inputs (`writeRow`) and, in the backward,
///    their gradient contributions added in row order (deterministic).
///
/// Finite inputs cost one vectorised scan (O(inputs)) and nothing else.
struct NonFiniteInputs {
  /// Per query head of every batch element (`b * H_q + h`): the query rows with a non-finite element.
  var queryRows: [[Int]]
  /// Per key/value head of every batch element (`b * H_kv + g`): key rows whose key or value row has a
  /// non-finite element, sorted.
  var keyRows: [[Int]]

  /// Scans the inputs; nil when every element is finite (the common case: one vectorised pass).
  /// `extraQueryRows` are further per-row tensors of the query's layout (the backward's `dO`).
  /// - Complexity: O(inputs).
  init?(shape: AttentionShape, query: TensorView, key: TensorView, value: TensorView,
        extraQueryRows: [TensorView] = []) {
    let rowTensors = [query] + extraQueryRows
    let all = rowTensors + [key, value]
    guard all.contains(where: { storageFirstNonFinite($0.base, $0.type, $0.count, $0.mappedFile) != nil }) else { return nil }
    let queryHeads = shape.batch * shape.queryHeads, keyHeads = shape.batch * shape.keyValueHeads
    queryRows = Array(repeating: [], count: queryHeads)
    keyRows = Array(repeating: [], count: keyHeads)
    for tensor in rowTensors {
      let width = tensor.count / max(1, queryHeads * shape.queryCount)
      for (head, rows) in NonFiniteInputs.badRows(tensor, heads: queryHeads, rows: shape.queryCount, width: width).enumerated() {
        queryRows[head] = Array(Set(queryRows[head]).union(rows)).sorted()
      }
    }
    let badKeys = NonFiniteInputs.badRows(key, heads: keyHeads, rows: shape.keyCount, width: shape.keyDim)
    let badValues = NonFiniteInputs.badRows(value, heads: keyHeads, rows: shape.keyCount, width: shape.valueDim)
    for head in 0..<keyHeads { keyRows[head] = Array(Set(badKeys[head]).union(badValues[head])).sorted() }
  }

  /// Rows (per head) of `tensor`, laid out `[heads, rows, width]`, holding a NaN or an infinity.
  private static func badRows(_ tensor: TensorView, heads: Int, rows: Int, width: Int) -> [[Int]] {
    var found = [[Int]](repeating: [], count: heads)
    guard width > 0 else { return found }
    var start = 0
    while let offset = storageFirstNonFinite(tensor.base + start &* tensor.type.byteCount, tensor.type,
                                             tensor.count - start, nil) {
      let row = (start + offset) / width
      found[row / rows].append(row % rows)
      start = (row + 1) * width
      if start >= tensor.count { break }
    }
    return found
  }

  /// A copy of `tensor` (`[heads, rows, width]`) with the given rows of each head zeroed, in the same
  /// storage type (zero is all-zero bits in every type).
  /// - Complexity: O(elements) time and memory.
  static func zeroing(_ rows: [[Int]], of tensor: TensorView, rowsPerHead: Int) -> TensorView {
    let copy = MutableTensorView(allocating: tensor.shape, type: tensor.type)
    copy.base.copyMemory(from: tensor.base, byteCount: tensor.byteCount)
    let width = tensor.count / max(1, rows.count * rowsPerHead)
    for (head, list) in rows.enumerated() {
      for row in list {
        (copy.base + ((head * rowsPerHead + row) * width) &* tensor.type.byteCount).initializeMemory(
          as: UInt8.self, repeating: 0, count: width * tensor.type.byteCount)
      }
    }
    return copy.readOnly
  }

  /// Per query head of every batch element, the rows among `rows` that a non-finite element reaches:
  /// rows with a non-finite query (or `dO`) element, and rows with an edge to a non-finite key or value row.
  /// - Complexity: O(runs of the rows * log(non-finite keys)), only when non-finite inputs exist.
  func reachedRows(shape: AttentionShape, graph: Graph, rows: Range<Int>) -> [[Int]] {
    var reached = queryRows.map { $0.filter(rows.contains) }
    var scratch = RowScratch()
    for row in rows {
      var graphRowRead = false
      for (kvHead, bad) in keyRows.enumerated() where !bad.isEmpty {
        if !graphRowRead {
          graph.neighbourhood(row: row, queryCount: shape.queryCount, keyCount: shape.keyCount, into: &scratch)
          graphRowRead = true
        }
        guard scratch.runs.contains(where: { NonFiniteInputs.run($0, touches: bad) }) else { continue }
        for head in shape.queryHeads(ofKeyValueHead: kvHead) { reached[head].append(row) }
      }
    }
    return reached.map { Array(Set($0)).sorted() }
  }

  /// Whether `run` holds a key of the sorted list `keys`.
  private static func run(_ run: KeyRun, touches keys: [Int]) -> Bool {
    var low = 0, high = keys.count
    while low < high {
      let mid = (low + high) / 2
      if keys[mid] < run.start { low = mid + 1 } else { high = mid }
    }
    while low < keys.count, keys[low] <= run.last {
      if run.contains(keys[low]) { return true }
      low += 1
    }
    return false
  }
}

/// One query row computed in float64 from the original inputs, as the attention formula evaluates in IEEE
/// arithmetic: the path of rows a non-finite input reaches (`NonFiniteInputs`).
struct ExactRow {
  let shape: AttentionShape
  let scale: Double
  let modifiers: ScoreModifiers
  /// The row's keys, in order.
  var keys: [Int] = []
  /// The row's modified scores `z_j`.
  var scores: [Double] = []
  /// The softmax weights `P_j` (sink included in the denominator).
  var weights: [Double] = []
  /// The sink's weight (0 without sinks).
  var sinkWeight = 0.0
  /// `m + log(l)`, or -inf for a row without edges or sink.
  var logSumExp = -Double.infinity
  /// The softcap's derivative `1 - tanh^2` per key (1 without a softcap).
  var softcapDerivative: [Double] = []

  init(shape: AttentionShape, scale: Float, modifiers: ScoreModifiers) {
    self.shape = shape
    self.scale = Double(scale)
    self.modifiers = modifiers
  }

  /// Computes the scores and weights of row `row` of query head `head` (`b * H_q + h`).
  mutating func load(row: Int, head: Int, graph: Graph, query: TensorView, key: TensorView, scratch: inout RowScratch) {
    let h = head % shape.queryHeads
    let kvHead = shape.keyValueHead(ofQueryHead: head)
    graph.neighbourhood(row: row, queryCount: shape.queryCount, keyCount: shape.keyCount, into: &scratch)
    keys.removeAll(keepingCapacity: true)
    for run in scratch.runs {
      for t in 0..<run.count { keys.append(run.start + t * run.stride) }
    }
    let q = (head * shape.queryCount + row) * shape.keyDim
    let slope = modifiers.slopes.map { Double($0[h]) }
    let softcap = Double(modifiers.softcap)
    scores.removeAll(keepingCapacity: true)
    softcapDerivative.removeAll(keepingCapacity: true)
    for j in keys {
      let k = (kvHead * shape.keyCount + j) * shape.keyDim
      var dot = 0.0
      for c in 0..<shape.keyDim { dot += Double(query.element(q + c)) * Double(key.element(k + c)) }
      var z = dot * scale
      if softcap > 0 {
        let t = tanh(z / softcap)
        z = softcap * t
        softcapDerivative.append(1 - t * t)
      } else {
        softcapDerivative.append(1)
      }
      if let slope { z -= slope * Double(abs(row + modifiers.alignment - j)) }
      scores.append(z)
    }
    let sink = modifiers.sinks.map { Double($0[h]) }
    // NaN-propagating maximum: a NaN score must reach the whole row, as it does in the formula.
    var m = sink ?? -.infinity
    for z in scores where z.isNaN || z > m { m = z }
    weights = scores.map { exp($0 - m) }
    sinkWeight = sink.map { exp($0 - m) } ?? 0
    let total = weights.reduce(0, +) + sinkWeight
    guard !keys.isEmpty || sink != nil else { logSumExp = -.infinity; return }
    for t in weights.indices { weights[t] /= total }
    sinkWeight /= total
    logSumExp = m + log(total)
  }

  /// Writes the loaded row's output (and log-sum-exp) for row `row` of query head `head`.
  func write(row: Int, head: Int, value: TensorView, output: MutableTensorView, logSumExp: MutableTensorView?,
             emptyRows: EmptyRowPolicy) {
    let kvHead = shape.keyValueHead(ofQueryHead: head)
    let o = (head * shape.queryCount + row) * shape.valueDim
    let empty = keys.isEmpty && modifiers.sinks == nil
    for c in 0..<shape.valueDim {
      var sum = 0.0
      for (t, j) in keys.enumerated() { sum += weights[t] * Double(value.element((kvHead * shape.keyCount + j) * shape.valueDim + c)) }
      output.setElement(o + c, empty ? (emptyRows == .nan ? .nan : 0) : Float(sum))
    }
    logSumExp?.setElement(head * shape.queryCount + row, Float(self.logSumExp))
  }
}

extension NonFiniteInputs {
  /// The forward of a call with non-finite inputs (see the type's discussion): `fastPath` runs on the
  /// zeroed copies, then the reached rows are overwritten. Returns the fast path's work.
  func forward(shape: AttentionShape, graph: Graph, scale: Float, modifiers: ScoreModifiers, rows: Range<Int>,
               query: TensorView, key: TensorView, value: TensorView, output: MutableTensorView,
               logSumExp: MutableTensorView?, emptyRows: EmptyRowPolicy,
               fastPath: (TensorView, TensorView, TensorView) throws -> AttentionWork) rethrows -> AttentionWork {
    let keyHeads = keyRows
    let work = try fastPath(NonFiniteInputs.zeroing(queryRows, of: query, rowsPerHead: shape.queryCount),
                            NonFiniteInputs.zeroing(keyHeads, of: key, rowsPerHead: shape.keyCount),
                            NonFiniteInputs.zeroing(keyHeads, of: value, rowsPerHead: shape.keyCount))
    var exact = ExactRow(shape: shape, scale: scale, modifiers: modifiers)
    var scratch = RowScratch()
    for (head, reached) in reachedRows(shape: shape, graph: graph, rows: rows).enumerated() {
      for row in reached {
        exact.load(row: row, head: head, graph: graph, query: query, key: key, scratch: &scratch)
        exact.write(row: row, head: head, value: value, output: output, logSumExp: logSumExp, emptyRows: emptyRows)
      }
    }
    return work
  }
}

extension NonFiniteInputs {
  /// The backward of a call with non-finite `Q`, `K`, `V` or `dO` (see the type's discussion).
  ///
  /// `fastPath` runs on copies in which the reached rows contribute nothing (their `dO` and `O` zero, their
  /// log-sum-exp `+inf`, so every weight is 0) and non-finite rows of `Q`, `K`, `V` are zero; then each
  /// reached row's exact float64 terms are added in row order: its `dQ` row, and its `dK` and `dV`
  /// contributions to the keys it attends (and to `dsink`). Deterministic, like the fast path.
  func backward(shape: AttentionShape, graph: Graph, scale: Float, modifiers: ScoreModifiers, emptyRows: EmptyRowPolicy,
                query: TensorView, key: TensorView, value: TensorView, output: TensorView, logSumExp: TensorView,
                gradOutput: TensorView, gradQuery: MutableTensorView, gradKey: MutableTensorView,
                gradValue: MutableTensorView, gradSinks: MutableTensorView?,
                fastPath: (_ q: TensorView, _ k: TensorView, _ v: TensorView, _ o: TensorView, _ lse: TensorView,
                           _ dO: TensorView) throws -> AttentionWork) rethrows -> AttentionWork {
    let reached = reachedRows(shape: shape, graph: graph, rows: 0..<shape.queryCount)
    let lse = MutableTensorView(allocating: logSumExp.shape, type: .float32)
    lse.base.copyMemory(from: logSumExp.base, byteCount: logSumExp.byteCount)
    for (head, rows) in reached.enumerated() {
      for row in rows { lse.setElement(head * shape.queryCount + row, .infinity) }
    }
    let work = try fastPath(NonFiniteInputs.zeroing(queryRows, of: query, rowsPerHead: shape.queryCount),
                            NonFiniteInputs.zeroing(keyRows, of: key, rowsPerHead: shape.keyCount),
                            NonFiniteInputs.zeroing(keyRows, of: value, rowsPerHead: shape.keyCount),
                            NonFiniteInputs.zeroing(reached, of: output, rowsPerHead: shape.queryCount),
                            lse.readOnly,
                            NonFiniteInputs.zeroing(reached, of: gradOutput, rowsPerHead: shape.queryCount))
    var exact = ExactRow(shape: shape, scale: scale, modifiers: modifiers)
    var scratch = RowScratch()
    let (dk, dv) = (shape.keyDim, shape.valueDim)
    var dQ = [Double](repeating: 0, count: dk)
    for (head, rows) in reached.enumerated() {
      let h = head % shape.queryHeads
      let kvHead = shape.keyValueHead(ofQueryHead: head)
      for row in rows {
        exact.load(row: row, head: head, graph: graph, query: query, key: key, scratch: &scratch)
        let q = (head * shape.queryCount + row) * dk, o = (head * shape.queryCount + row) * dv
        if exact.keys.isEmpty && modifiers.sinks == nil {
          for c in 0..<dk { gradQuery.setElement(q + c, emptyRows == .nan ? .nan : 0) }
          continue
        }
        var d = 0.0
        for c in 0..<dv { d += Double(gradOutput.element(o + c)) * Double(output.element(o + c)) }
        for c in 0..<dk { dQ[c] = 0 }
        for (t, j) in exact.keys.enumerated() {
          let kRow = (kvHead * shape.keyCount + j) * dk, vRow = (kvHead * shape.keyCount + j) * dv
          var dP = 0.0
          for c in 0..<dv { dP += Double(gradOutput.element(o + c)) * Double(value.element(vRow + c)) }
          let dS = exact.weights[t] * (dP - d) * exact.softcapDerivative[t] * exact.scale
          for c in 0..<dk {
            dQ[c] += dS * Double(key.element(kRow + c))
            gradKey.setElement(kRow + c, Float(Double(gradKey.element(kRow + c)) + dS * Double(query.element(q + c))))
          }
          for c in 0..<dv {
            gradValue.setElement(vRow + c, Float(Double(gradValue.element(vRow + c))
                                                 + exact.weights[t] * Double(gradOutput.element(o + c))))
          }
        }
        for c in 0..<dk { gradQuery.setElement(q + c, Float(dQ[c])) }
        if let gradSinks {
          gradSinks.setElement(h, Float(Double(gradSinks.element(h)) - exact.sinkWeight * d))
        }
      }
    }
    return work
  }
}
