extension Graph {
  /// Parses a mask specification: components joined by `+`, each `kind[:arg[:arg]]`.
  ///
  /// Kinds: `full`, `causal`, `window:W`, `window:W:causal`, `dilated:W:D`, `blocked:B:D` (`blocked:B`
  /// means `D = 0`), `global:I,J,...`, `random:P:SEED`, `csr:INDPTR.npy:INDICES.npy`,
  /// `coo:ROWS.npy:COLS.npy`, `mtx:FILE.mtx`. File paths are relative to the working directory and
  /// may not contain `:` or `+`. Explicit graphs are loaded and validated here.
  ///
  /// - Throws: `GraphAttentionError` (`.mask`) naming the component and the expected form, or the
  ///   file and index errors of loading an explicit graph.
  public init(parsing specification: String) throws {
    let parts = specification.split(separator: "+", omittingEmptySubsequences: false)
    var components: [Component] = []
    for part in parts {
      let text = part.trimmingWhitespace()
      guard !text.isEmpty else {
        throw GraphAttentionError(.mask, "mask '\(specification)' has an empty component",
                                  fix: "join components with single '+', e.g. window:64+global:0")
      }
      components += try Graph.parseComponent(text).components
    }
    self.init(components: components)
  }

  private static func parseComponent(_ text: String) throws -> Graph {
    let fields = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
    let kind = fields[0].lowercased()
    let arguments = Array(fields.dropFirst())
    func expect(_ counts: ClosedRange<Int>, _ form: String) throws {
      guard counts.contains(arguments.count) else {
        throw GraphAttentionError(.mask, "'\(text)' has \(arguments.count) argument(s)", fix: "write it as \(form)")
      }
    }
    func integer(_ index: Int, _ name: String, _ form: String) throws -> Int {
      guard let value = Int(arguments[index].trimmingWhitespace()) else {
        throw GraphAttentionError(.mask, "\(name) '\(arguments[index])' in '\(text)' is not an integer", fix: "write it as \(form)")
      }
      return value
    }
    switch kind {
    case "full":
      try expect(0...0, "full")
      return .full
    case "causal":
      try expect(0...0, "causal")
      return .causal
    case "window", "local":
      let form = "window:W or window:W:causal"
      try expect(1...2, form)
      if arguments.count == 2, arguments[1].lowercased() != "causal" {
        throw GraphAttentionError(.mask, "'\(text)': unknown window option '\(arguments[1])'", fix: "write it as \(form)")
      }
      return try .window(integer(0, "radius", form), causal: arguments.count == 2)
    case "dilated":
      let form = "dilated:W:D (radius W, dilation D)"
      try expect(2...2, form)
      return try .dilated(radius: integer(0, "radius", form), dilation: integer(1, "dilation", form))
    case "blocked":
      let form = "blocked:B:D (block size B, dilation D)"
      try expect(1...2, form)
      return try .blocked(block: integer(0, "block", form), dilation: arguments.count == 2 ? integer(1, "dilation", form) : 0)
    case "global":
      let form = "global:I,J,... (token indices)"
      try expect(1...1, form)
      var tokens: [Int] = []
      for item in arguments[0].split(separator: ",", omittingEmptySubsequences: false) {
        guard let token = Int(String(item).trimmingWhitespace()) else {
          throw GraphAttentionError(.mask, "global token '\(item)' in '\(text)' is not an integer", fix: "write it as \(form)")
        }
        tokens.append(token)
      }
      return try .global(tokens)
    case "random":
      let form = "random:P:SEED (probability P in [0,1], integer SEED)"
      try expect(2...2, form)
      guard let p = Double(arguments[0].trimmingWhitespace()), p.isFinite else {
        throw GraphAttentionError(.mask, "probability '\(arguments[0])' in '\(text)' is not a number", fix: "write it as \(form)")
      }
      guard let seed = UInt64(arguments[1].trimmingWhitespace()) else {
        throw GraphAttentionError(.mask, "seed '\(arguments[1])' in '\(text)' is not a non-negative integer", fix: "write it as \(form)")
      }
      return try .random(probability: p, seed: seed)
    case "csr":
      try expect(2...2, "csr:INDPTR.npy:INDICES.npy")
      let offsets = try NPYArray(contentsOf: arguments[0]).integers(name: "CSR indptr \(arguments[0])")
      let columns = try NPYArray(contentsOf: arguments[1]).integers(name: "CSR indices \(arguments[1])")
      return .explicit(try ExplicitGraph(rowOffsets: offsets, columns: columns, source: text))
    case "coo":
      try expect(2...2, "coo:ROWS.npy:COLS.npy")
      let rows = try NPYArray(contentsOf: arguments[0]).integers(name: "COO rows \(arguments[0])")
      let columns = try NPYArray(contentsOf: arguments[1]).integers(name: "COO columns \(arguments[1])")
      return .explicit(try ExplicitGraph(rows: rows, columns: columns, source: text))
    case "mtx":
      try expect(1...1, "mtx:FILE.mtx")
      let pattern = try MatrixMarketPattern(contentsOf: arguments[0])
      return .explicit(try ExplicitGraph(rows: pattern.rows, columns: pattern.columns, rowCount: pattern.rowCount,
                                         columnCount: pattern.columnCount, source: text))
    default:
      throw GraphAttentionError(
        .mask, "unknown mask kind '\(fields[0])' in '\(text)'",
        fix: "use one of full, causal, window:W[:causal], dilated:W:D, blocked:B:D, global:I,J, random:P:SEED, csr:P:I, coo:R:C, mtx:F, joined with '+'")
    }
  }
}

extension StringProtocol {
  func trimmingWhitespace() -> String {
    var slice = Substring(self)
    while let c = slice.first, c.isWhitespace { slice.removeFirst() }
    while let c = slice.last, c.isWhitespace { slice.removeLast() }
    return String(slice)
  }
}
