import GraphAttention

/// Reads `count` (start, count, stride) triples of int64 as runs.
private func runs(_ triples: UnsafePointer<Int64>?, _ count: Int64, name: String) throws -> [KeyRun] {
  guard count >= 0 else { throw CABIFailure(status: .argument, message: "argument: \(name) count \(count) is negative. Fix: pass 0 or more runs.") }
  guard count == 0 || triples != nil else {
    throw CABIFailure(status: .argument, message: "argument: \(name) is NULL with \(count) runs. Fix: pass count*3 int64 values.")
  }
  var out: [KeyRun] = []
  for r in 0..<Int(count) {
    let (start, n, stride) = (triples![3 * r], triples![3 * r + 1], triples![3 * r + 2])
    guard start >= 0, n >= 1, stride >= 1, !stride.multipliedReportingOverflow(by: n).overflow,
          !start.addingReportingOverflow(stride * (n - 1)).overflow else {
      throw GraphAttentionError(.mask, "\(name) run \(r) (start \(start), count \(n), stride \(stride)) is not a run of indices",
                                fix: "give start >= 0, count >= 1 and stride >= 1")
    }
    out.append(KeyRun(start: Int(start), count: Int(n), stride: Int(stride)))
  }
  return out
}

/// Creates a view of `graph` (`Graph.view`): global query rows `row_runs` against global keys `key_runs` of a
/// `query_count` x `key_count` graph, renumbered compactly, with the edges of `excluded_rows` dropped; a new
/// handle at `*out`, freed with `ga_graph_free`. Runs are (start, count, stride) int64 triples, sorted, disjoint.
@_cdecl("ga_graph_view")
public func ga_graph_view(_ handle: UnsafeMutableRawPointer?, _ queryCount: Int64, _ keyCount: Int64,
                          _ rowRuns: UnsafePointer<Int64>?, _ rowRunCount: Int64,
                          _ keyRuns: UnsafePointer<Int64>?, _ keyRunCount: Int64,
                          _ excluded: UnsafePointer<Int64>?, _ excludedCount: Int64,
                          _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
  out?.pointee = nil
  return withStatus {
    guard let out else { throw CABIFailure(status: .argument, message: "argument: output pointer is NULL. Fix: pass one.") }
    try checkTokenCounts(queryCount, keyCount)
    guard excludedCount >= 0, excludedCount == 0 || excluded != nil else {
      throw CABIFailure(status: .argument, message: "argument: excluded_rows is NULL or its count negative. Fix: pass count int64 rows.")
    }
    let rows = (0..<Int(excludedCount)).map { Int(excluded![$0]) }
    let view = try GraphHandle.borrow(handle).view(queryCount: Int(queryCount), keyCount: Int(keyCount),
                                                   rows: try runs(rowRuns, rowRunCount, name: "row_runs"),
                                                   keys: try runs(keyRuns, keyRunCount, name: "key_runs"), excludingRows: rows)
    out.pointee = Unmanaged.passRetained(GraphHandle(view)).toOpaque()
  }
}

/// The object behind a C exchange-plan handle.
final class ExchangePlanHandle {
  let plan: ExchangePlan
  init(_ plan: ExchangePlan) { self.plan = plan }

  static func borrow(_ handle: UnsafeMutableRawPointer?) throws -> ExchangePlan {
    guard let handle else { throw CABIFailure(status: .argument, message: "argument: plan handle is NULL. Fix: create one with ga_exchange_plan_create.") }
    return Unmanaged<ExchangePlanHandle>.fromOpaque(handle).takeUnretainedValue().plan
  }
}

/// Plans the exchange of sequence-parallel attention (`ExchangePlan`): `graph_count` graphs (1 for every head,
/// or one per query head) over `tokens` tokens in `world_size` shards of `shard_sizes` tokens (rank order; NULL
/// for `torch.tensor_split`'s sizes). A new handle at `*out`, freed with `ga_exchange_plan_free`.
@_cdecl("ga_exchange_plan_create")
public func ga_exchange_plan_create(_ graphs: UnsafePointer<UnsafeMutableRawPointer?>?, _ graphCount: Int64, _ tokens: Int64,
                                    _ shardSizes: UnsafePointer<Int64>?, _ worldSize: Int64,
                                    _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
  out?.pointee = nil
  return withStatus {
    guard let out, let graphs, graphCount >= 1 else {
      throw CABIFailure(status: .argument, message: "argument: graphs or output pointer is NULL, or graph_count < 1. Fix: pass at least one graph.")
    }
    guard worldSize >= 1, tokens >= 1, !tokens.multipliedReportingOverflow(by: tokens).overflow else {
      throw GraphAttentionError(.shape, "world size \(worldSize) and \(tokens) tokens cannot be planned", fix: "pass at least one rank and one token")
    }
    let sizes = shardSizes.map { p in (0..<Int(worldSize)).map { Int(p[$0]) } }
      ?? ExchangePlan.evenShardSizes(tokens: Int(tokens), worldSize: Int(worldSize))
    let list = try (0..<Int(graphCount)).map { try GraphHandle.borrow(graphs[$0]) }
    let plan = try ExchangePlan(graphs: list, tokens: Int(tokens), shardSizes: sizes)
    out.pointee = Unmanaged.passRetained(ExchangePlanHandle(plan)).toOpaque()
  }
}

/// Releases a plan from `ga_exchange_plan_create`; NULL is ignored.
@_cdecl("ga_exchange_plan_free")
public func ga_exchange_plan_free(_ handle: UnsafeMutableRawPointer?) {
  guard let handle else { return }
  Unmanaged<ExchangePlanHandle>.fromOpaque(handle).release()
}

/// The keys rank `receiver` fetches from rank `sender`: `*run_count` runs and `*key_count` keys in all; the runs'
/// (start, count, stride) triples go to `runs` when `capacity` (in runs) holds them all (pass NULL, 0 to size).
@_cdecl("ga_exchange_plan_needs")
public func ga_exchange_plan_needs(_ handle: UnsafeMutableRawPointer?, _ receiver: Int64, _ sender: Int64,
                                   _ runs: UnsafeMutablePointer<Int64>?, _ capacity: Int64,
                                   _ runCount: UnsafeMutablePointer<Int64>?, _ keyCount: UnsafeMutablePointer<Int64>?) -> Int32 {
  withStatus {
    let plan = try ExchangePlanHandle.borrow(handle)
    guard (0..<Int64(plan.worldSize)).contains(receiver), (0..<Int64(plan.worldSize)).contains(sender) else {
      throw GraphAttentionError(.index, "ranks \(receiver), \(sender) are outside 0..<\(plan.worldSize)", fix: "pass ranks of the plan")
    }
    let list = plan.needs[Int(receiver)][Int(sender)]
    runCount?.pointee = Int64(list.count)
    keyCount?.pointee = Int64(plan.keyCount(receiver: Int(receiver), sender: Int(sender)))
    guard let runs, capacity >= Int64(list.count) else { return }
    for (n, run) in list.enumerated() {
      runs[3 * n] = Int64(run.start)
      runs[3 * n + 1] = Int64(run.count)
      runs[3 * n + 2] = Int64(run.stride)
    }
  }
}

/// The rows merged from partial states (global tokens as queries): `*count` of them, written to `rows` when
/// `capacity` holds them (pass NULL, 0 to size).
@_cdecl("ga_exchange_plan_global_rows")
public func ga_exchange_plan_global_rows(_ handle: UnsafeMutableRawPointer?, _ rows: UnsafeMutablePointer<Int64>?,
                                         _ capacity: Int64, _ count: UnsafeMutablePointer<Int64>?) -> Int32 {
  withStatus {
    let plan = try ExchangePlanHandle.borrow(handle)
    count?.pointee = Int64(plan.globalRows.count)
    guard let rows, capacity >= Int64(plan.globalRows.count) else { return }
    for (n, row) in plan.globalRows.enumerated() { rows[n] = Int64(row) }
  }
}

/// Bytes rank `rank` sends in a forward (`backward` 0) or backward pass (`ExchangePlan.bytesSent`), given the
/// row sizes `row_bytes[6]`: K+V, Q, partial state, dK+dV, global row state (O, LSE, dO), dQ of one token.
@_cdecl("ga_exchange_plan_bytes_sent")
public func ga_exchange_plan_bytes_sent(_ handle: UnsafeMutableRawPointer?, _ rank: Int64, _ rowBytes: UnsafePointer<Int64>?,
                                        _ backward: Int32, _ out: UnsafeMutablePointer<Int64>?) -> Int32 {
  withStatus {
    let plan = try ExchangePlanHandle.borrow(handle)
    guard let rowBytes, let out else { throw CABIFailure(status: .argument, message: "argument: row_bytes or out is NULL. Fix: pass both.") }
    guard (0..<Int64(plan.worldSize)).contains(rank) else {
      throw GraphAttentionError(.index, "rank \(rank) is outside 0..<\(plan.worldSize)", fix: "pass a rank of the plan")
    }
    var b = ExchangePlan.RowBytes(batch: 0, queryHeads: 0, keyValueHeads: 0, keyDim: 0, valueDim: 0, elementBytes: 0)
    (b.keyValue, b.query, b.partialState) = (Int(rowBytes[0]), Int(rowBytes[1]), Int(rowBytes[2]))
    (b.gradKeyValue, b.globalRowState, b.gradQuery) = (Int(rowBytes[3]), Int(rowBytes[4]), Int(rowBytes[5]))
    out.pointee = Int64(plan.bytesSent(rank: Int(rank), rowBytes: b, backward: backward != 0))
  }
}
