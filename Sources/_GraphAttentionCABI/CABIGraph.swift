import GraphAttention

/// The object behind a C graph handle: a parsed (and, for explicit graphs, loaded and validated) mask.
/// The caller owns the handle from `ga_graph_parse` until `ga_graph_free`.
final class GraphHandle {
  let graph: Graph
  init(_ graph: Graph) { self.graph = graph }

  /// The graph behind a handle the caller passed in, without taking ownership.
  static func borrow(_ handle: UnsafeMutableRawPointer?) throws -> Graph {
    guard let handle else { throw CABIFailure(status: .argument, message: "argument: graph handle is NULL. Fix: create one with ga_graph_parse.") }
    return Unmanaged<GraphHandle>.fromOpaque(handle).takeUnretainedValue().graph
  }
}

/// Checks token counts the graph functions receive: positive, and `L_q * L_k` within Int64 so every count fits.
func checkTokenCounts(_ queryCount: Int64, _ keyCount: Int64) throws {
  guard queryCount >= 1, keyCount >= 1 else {
    throw GraphAttentionError(.shape, "token counts L_q = \(queryCount), L_k = \(keyCount) must be at least 1",
                              fix: "pass positive token counts")
  }
  guard !queryCount.multipliedReportingOverflow(by: keyCount).overflow else {
    throw GraphAttentionError(.shape, "L_q * L_k = \(queryCount) * \(keyCount) overflows 64 bits", fix: "use fewer tokens")
  }
}

/// Parses a mask specification ("window:256+global:0", "csr:indptr.npy:indices.npy", ...) into a new handle
/// stored at `*out`. Explicit graphs are read from their files (relative to the working directory) here.
/// - Returns: 0, or a status with `ga_last_error` naming the problem (`*out` is then NULL).
@_cdecl("ga_graph_parse")
public func ga_graph_parse(_ specification: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
  out?.pointee = nil
  return withStatus {
    guard let specification, let out else {
      throw CABIFailure(status: .argument, message: "argument: mask specification or output pointer is NULL. Fix: pass both.")
    }
    let graph = try Graph(parsing: String(cString: specification))
    out.pointee = Unmanaged.passRetained(GraphHandle(graph)).toOpaque()
  }
}

/// Releases a handle from `ga_graph_parse`; NULL is ignored.
@_cdecl("ga_graph_free")
public func ga_graph_free(_ handle: UnsafeMutableRawPointer?) {
  guard let handle else { return }
  Unmanaged<GraphHandle>.fromOpaque(handle).release()
}

/// Checks that the graph fits `query_count` queries and `key_count` keys (self-attention kinds need them equal,
/// global tokens and explicit indices must be in range).
@_cdecl("ga_graph_validate")
public func ga_graph_validate(_ handle: UnsafeMutableRawPointer?, _ queryCount: Int64, _ keyCount: Int64) -> Int32 {
  withStatus {
    try checkTokenCounts(queryCount, keyCount)
    try GraphHandle.borrow(handle).validate(queryCount: Int(queryCount), keyCount: Int(keyCount))
  }
}

/// Writes the exact number of edges (shared edges of a union counted once) to `*out`.
/// - Complexity: O(1) for single implicit kinds, O(edges) for random, O(L_q * runs per row) for unions.
@_cdecl("ga_graph_edge_count")
public func ga_graph_edge_count(_ handle: UnsafeMutableRawPointer?, _ queryCount: Int64, _ keyCount: Int64,
                                _ out: UnsafeMutablePointer<Int64>?) -> Int32 {
  withStatus {
    guard let out else { throw CABIFailure(status: .argument, message: "argument: output pointer is NULL. Fix: pass one.") }
    try checkTokenCounts(queryCount, keyCount)
    let graph = try GraphHandle.borrow(handle)
    try graph.validate(queryCount: Int(queryCount), keyCount: Int(keyCount))
    out.pointee = Int64(graph.edgeCount(queryCount: Int(queryCount), keyCount: Int(keyCount)))
  }
}

/// Writes the number of keys query row `row` attends to (its degree) to `*out`.
@_cdecl("ga_graph_degree")
public func ga_graph_degree(_ handle: UnsafeMutableRawPointer?, _ queryCount: Int64, _ keyCount: Int64, _ row: Int64,
                            _ out: UnsafeMutablePointer<Int64>?) -> Int32 {
  withStatus {
    guard let out else { throw CABIFailure(status: .argument, message: "argument: output pointer is NULL. Fix: pass one.") }
    try checkTokenCounts(queryCount, keyCount)
    guard (0..<queryCount).contains(row) else {
      throw GraphAttentionError(.index, "row \(row) is outside 0..<\(queryCount)", fix: "pass a query row in 0..<L_q")
    }
    let graph = try GraphHandle.borrow(handle)
    try graph.validate(queryCount: Int(queryCount), keyCount: Int(keyCount))
    var scratch = RowScratch()
    out.pointee = Int64(graph.degree(row: Int(row), queryCount: Int(queryCount), keyCount: Int(keyCount), scratch: &scratch))
  }
}

/// Copies `text` into `buffer` of `capacity` bytes, NUL-terminated and truncated if needed; `*length` gets
/// the full length in bytes (the convention of every text-returning function here).
func copyText(_ text: String, to buffer: UnsafeMutablePointer<CChar>?, capacity: Int64, length: UnsafeMutablePointer<Int64>?) {
  let bytes = Array(text.utf8)
  length?.pointee = Int64(bytes.count)
  guard let buffer, capacity > 0 else { return }
  let n = min(bytes.count, Int(capacity) - 1)
  for i in 0..<n { buffer[i] = CChar(bitPattern: bytes[i]) }
  buffer[n] = 0
}

/// Writes the files a specification names (`Graph.filesNamed(by:)`), one per line, without reading them,
/// into `buffer` as `ga_graph_describe` does: what a caller caching parsed graphs watches for changes.
@_cdecl("ga_mask_files")
public func ga_mask_files(_ specification: UnsafePointer<CChar>?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int64,
                          _ length: UnsafeMutablePointer<Int64>?) -> Int32 {
  withStatus {
    guard let specification else {
      throw CABIFailure(status: .argument, message: "argument: mask specification is NULL. Fix: pass one.")
    }
    copyText(try Graph.filesNamed(by: String(cString: specification)).joined(separator: "\n"), to: buffer,
             capacity: capacity, length: length)
  }
}

/// Writes the mask grammar (`MaskKind.grammarSummary`, a blank line, then `MaskKind.grammarReference`: one
/// line per kind with its form and meaning) into `buffer` as `ga_graph_describe` does.
@_cdecl("ga_mask_grammar")
public func ga_mask_grammar(_ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int64, _ length: UnsafeMutablePointer<Int64>?) -> Int32 {
  withStatus { copyText(MaskKind.grammarSummary + "\n\n" + MaskKind.grammarReference, to: buffer, capacity: capacity, length: length) }
}

/// Writes the graph's canonical description (as `graph-attention inspect` prints it) into `buffer` of
/// `capacity` bytes, NUL-terminated and truncated if needed; `*length` gets the full length in bytes.
@_cdecl("ga_graph_describe")
public func ga_graph_describe(_ handle: UnsafeMutableRawPointer?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int64,
                              _ length: UnsafeMutablePointer<Int64>?) -> Int32 {
  withStatus { copyText(try GraphHandle.borrow(handle).description, to: buffer, capacity: capacity, length: length) }
}

/// Writes the graph as a dense boolean matrix: `out[i * key_count + j]` is 1 when query `i` attends to key `j`,
/// else 0 (`query_count * key_count` bytes, all written). For tests and plots of small graphs.
/// - Complexity: O(L_q * L_k) time, no memory beyond `out` and one row's runs.
@_cdecl("ga_graph_dense_mask")
public func ga_graph_dense_mask(_ handle: UnsafeMutableRawPointer?, _ queryCount: Int64, _ keyCount: Int64,
                                _ out: UnsafeMutablePointer<UInt8>?) -> Int32 {
  withStatus {
    guard let out else { throw CABIFailure(status: .argument, message: "argument: output pointer is NULL. Fix: pass one.") }
    try checkTokenCounts(queryCount, keyCount)
    let graph = try GraphHandle.borrow(handle)
    let (lq, lk) = (Int(queryCount), Int(keyCount))
    try graph.validate(queryCount: lq, keyCount: lk)
    out.update(repeating: 0, count: lq * lk)
    var scratch = RowScratch()
    for i in 0..<lq {
      graph.neighbourhood(row: i, queryCount: lq, keyCount: lk, into: &scratch)
      let row = out + i * lk
      for run in scratch.runs {
        for n in 0..<run.count { row[run.start + n * run.stride] = 1 }
      }
    }
  }
}
