#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How long a context fits on this machine: with Q, K, V and O in memory, or streamed from files
/// on disk with a bounded resident set. The arithmetic behind `graph-attention plan`.
///
/// ## The model (every number is stated so it can be checked)
/// - Tensors, per token: Q `B·H·d·s`, K `B·H_kv·d·s`, V `B·H_kv·d_v·s`, O `B·H·d_v·s_o` bytes, with
///   `s` the storage type's size and `s_o` the output's.
/// - Engine working memory: `64 MiB + threads × 1 MiB` (row runs, key lists, tile state, scores).
/// - Graph memory: implicit components (window, causal, global, dilated, blocked, full, and
///   random, whose rows come from a seed) need none; an explicit graph holds `8·(L_q+1) + 4·E` bytes.
/// - In memory: `L_max = floor((memory − engine − graph) / bytes per token)`.
/// - Streamed: Q, K, V, O are files (`bytes per token · L + 16 KiB` of headers on disk), processed
///   as `StreamingAttention` does: in chunks of `R` query rows of every head at once (all threads inside
///   the chunk), `R` chosen by `StreamingChunkPolicy` (about 2^26 edges and at most 32 MiB of query rows;
///   `chunkRows(tokens:)`); pages behind the chunk are dropped (`madvise`; dirty output pages written
///   back first), so the resident set is the engine, the chunk (`R·B·H·(d·s + d_v·s_o)`: Q and O rows),
///   and the K/V rows the chunk reaches, per key/value head: a contiguous span of `R + 2W` rows
///   for `window:W` (`R + W` causal, `R + 2W(D+1)` dilated, `R + B` blocked); for `global` and
///   `random` one page of K and one of V per distinct key (`G`, and `L·(1 − (1−P)^R)` expected);
///   for `full`, `causal` and global rows a 256 MiB read window streaming over all keys. The sum
///   is capped at the whole of K and V. Clean page-cache pages are not counted: the kernel reclaims them.
/// - `L_streamed` is the largest `L` within both the disk and `resident(L) <= memory`.
///
/// ```swift
/// let plan = try ContextPlan(graph: try Graph(parsing: "window:256"),
///                            request: .init(headDim: 32, heads: 1, storage: .float16,
///                                           memoryBytes: 24 << 30, diskBytes: 72 << 30))
/// plan.maxTokensInMemory   // 195_xxx_xxx
/// plan.maxTokensStreamed   // limited by the disk
/// ```
public struct ContextPlan: Sendable {
  /// What is planned for.
  public struct Request: Sendable, Equatable {
    /// Query/key head dimension `d`.
    public var headDim: Int
    /// Value head dimension `d_v` (usually `d`).
    public var valueDim: Int
    /// Query heads `H`.
    public var heads: Int
    /// Key/value heads `H_kv` (dividing `H`; fewer for grouped-query attention).
    public var keyValueHeads: Int
    /// Batch `B`.
    public var batch: Int
    /// Storage type of Q, K and V.
    public var storage: StorageType
    /// Storage type of O.
    public var output: StorageType
    /// Memory available to the process, in bytes.
    public var memoryBytes: Int
    /// Free disk space for the files, in bytes.
    public var diskBytes: Int
    /// Worker threads.
    public var threads: Int
    /// Query rows per streamed chunk `R`; nil: what `StreamingAttention` picks (`StreamingChunkPolicy`).
    public var chunkRows: Int?

    /// Describes a plan request; unspecified dimensions default to the common case.
    public init(headDim: Int, valueDim: Int? = nil, heads: Int = 1, keyValueHeads: Int? = nil, batch: Int = 1,
                storage: StorageType, output: StorageType? = nil, memoryBytes: Int, diskBytes: Int,
                threads: Int = 1, chunkRows: Int? = nil) {
      self.headDim = headDim
      self.valueDim = valueDim ?? headDim
      self.heads = heads
      self.keyValueHeads = keyValueHeads ?? heads
      self.batch = batch
      self.storage = storage
      self.output = output ?? storage
      self.memoryBytes = memoryBytes
      self.diskBytes = diskBytes
      self.threads = threads
      self.chunkRows = chunkRows
    }
  }

  /// One term of a byte total, with the formula that gives it.
  public struct Term: Sendable, Equatable {
    /// What the bytes are for, with the formula, e.g. "window:64: (R + 2·64) rows × (d·s + d_v·s)".
    public var label: String
    /// The bytes.
    public var bytes: Int
  }

  /// Which resource bounds the streamed length.
  public enum Limit: String, Sendable {
    /// Free disk space for the files.
    case disk
    /// The resident set (it grows with `L` for random graphs).
    case memory
    /// The explicit graph's fixed length.
    case graph
  }

  /// The request.
  public let request: Request
  /// The graph planned for.
  public let graph: Graph
  /// Bytes per token of Q, K, V and O (each a term) and their sum.
  public let tokenTerms: [Term]
  /// Sum of `tokenTerms`: bytes of Q, K, V and O per token.
  public let bytesPerToken: Int
  /// Engine working memory in bytes: 64 MiB + threads × 1 MiB.
  public let engineBytes: Int
  /// For explicit graphs, the fixed (queries, keys); nil for implicit graphs, which fit any length.
  public let fixedLength: (queries: Int, keys: Int)?
  /// The longest context whose Q, K, V, O, graph and engine fit in `memoryBytes` (0 if none).
  public let maxTokensInMemory: Int
  /// The longest context whose four files fit in `diskBytes`.
  public let maxTokensOnDisk: Int
  /// The longest context that can be streamed: within the disk and with `resident <= memoryBytes`.
  public let maxTokensStreamed: Int
  /// What bounds `maxTokensStreamed`.
  public let streamingLimit: Limit

  /// Bytes the four file headers may take on disk (allowance).
  public static let headerAllowance = 16 << 10
  /// Engine working memory: fixed part.
  public static let engineBaseBytes = 64 << 20
  /// Engine working memory per thread.
  public static let engineThreadBytes = 1 << 20
  /// The read window assumed for keys streamed in order (full, causal, global rows).
  public static let streamWindowBytes = 256 << 20

  /// Computes the plan.
  /// - Throws: `GraphAttentionError(.option)` for non-positive dimensions, a key/value head count that
  ///   does not divide the heads, or negative byte budgets.
  /// - Complexity: O(components × log(disk bytes)).
  public init(graph: Graph, request: Request) throws {
    let r = request
    for (value, name) in [(r.headDim, "head dimension"), (r.valueDim, "value dimension"), (r.heads, "heads"),
                          (r.keyValueHeads, "key/value heads"), (r.batch, "batch"), (r.threads, "threads"),
                          (r.chunkRows ?? 1, "chunk rows")] where value < 1 || value > 1 << 32 {
      throw GraphAttentionError(.option, "\(name) must be between 1 and 2^32, got \(value)", fix: "pass a positive \(name)")
    }
    guard r.heads % r.keyValueHeads == 0 else {
      throw GraphAttentionError(.option, "\(r.keyValueHeads) key/value heads do not divide \(r.heads) heads",
                                fix: "use a key/value head count that divides the query heads (grouped-query attention)")
    }
    guard r.memoryBytes >= 0, r.diskBytes >= 0 else {
      throw GraphAttentionError(.option, "memory and disk budgets must be non-negative", fix: "pass byte counts >= 0")
    }
    self.request = r
    self.graph = graph
    let s = r.storage.byteCount, so = r.output.byteCount
    tokenTerms = [
      Term(label: "Q \(r.batch)·\(r.heads)·\(r.headDim)·\(s)", bytes: r.batch * r.heads * r.headDim * s),
      Term(label: "K \(r.batch)·\(r.keyValueHeads)·\(r.headDim)·\(s)", bytes: r.batch * r.keyValueHeads * r.headDim * s),
      Term(label: "V \(r.batch)·\(r.keyValueHeads)·\(r.valueDim)·\(s)", bytes: r.batch * r.keyValueHeads * r.valueDim * s),
      Term(label: "O \(r.batch)·\(r.heads)·\(r.valueDim)·\(so)", bytes: r.batch * r.heads * r.valueDim * so),
    ]
    bytesPerToken = tokenTerms.reduce(0) { $0 + $1.bytes }
    let engine = ContextPlan.engineBaseBytes + r.threads * ContextPlan.engineThreadBytes
    engineBytes = engine
    fixedLength = graph.components.lazy.compactMap { component -> (Int, Int)? in
      guard case let .explicit(pattern) = component else { return nil }
      return (pattern.rowCount, max(pattern.declaredColumnCount ?? pattern.columnBound, 1))
    }.first

    // In memory: closed form for implicit graphs.
    let memoryFree = Double(r.memoryBytes - engine)
    let perToken = Double(bytesPerToken)
    let diskTokens = max(0, (Double(r.diskBytes) - Double(ContextPlan.headerAllowance)) / perToken).rounded(.down)
    if let fixed = fixedLength {
      maxTokensInMemory = Self.memoryNeed(r, graph, fixed, engine) <= r.memoryBytes ? fixed.queries : 0
      maxTokensOnDisk = Self.diskNeed(r, fixed) <= r.diskBytes ? fixed.queries : 0
    } else {
      maxTokensInMemory = memoryFree <= 0 ? 0 : Int(min(memoryFree / perToken, 9e18).rounded(.down))
      maxTokensOnDisk = Int(min(diskTokens, 9e18))
    }

    // Streamed: the largest L within the disk whose resident set fits (resident is non-decreasing in L).
    if let fixed = fixedLength {
      let resident = Self.residentTerms(r, graph, queries: fixed.queries, keys: fixed.keys, engine: engine)
      let fits = resident.reduce(0) { $0 &+ $1.bytes } <= r.memoryBytes
      maxTokensStreamed = fits && maxTokensOnDisk > 0 ? fixed.queries : 0
      streamingLimit = maxTokensOnDisk == 0 ? .disk : (fits ? .graph : .memory)
    } else {
      let residentAt = { (tokens: Int) in
        Self.residentTerms(r, graph, queries: tokens, keys: tokens, engine: engine).reduce(0) { $0 &+ $1.bytes }
      }
      var lo = 0, hi = maxTokensOnDisk
      if hi > 0, residentAt(hi) <= r.memoryBytes {
        lo = hi
      } else {
        while lo < hi {  // invariant: residentAt(lo) fits (or lo == 0), residentAt(hi) does not
          let mid = lo + (hi - lo + 1) / 2
          if residentAt(mid) <= r.memoryBytes { lo = mid } else { hi = mid - 1 }
        }
      }
      maxTokensStreamed = lo
      streamingLimit = lo == maxTokensOnDisk ? .disk : .memory
    }
  }

  /// Bytes Q, K, V, O, the graph and the engine need in memory for `tokens` (the explicit graph's
  /// own length when it has one).
  public func memoryBytes(tokens: Int) -> Int {
    Self.memoryNeed(request, graph, fixedLength ?? (tokens, tokens), engineBytes)
  }

  /// Bytes the files of Q, K, V and O take on disk for `tokens`, headers included.
  public func diskBytes(tokens: Int) -> Int {
    Self.diskNeed(request, fixedLength ?? (tokens, tokens))
  }

  /// Bytes an explicit graph holds in memory (0 for implicit graphs).
  public var graphBytes: Int {
    Self.graphMemory(graph)
  }

  /// The resident set while streaming `tokens`, term by term (engine, chunk, keys and values per
  /// component, explicit graph).
  public func residentTerms(tokens: Int) -> [Term] {
    let (queries, keys) = fixedLength ?? (tokens, tokens)
    return Self.residentTerms(request, graph, queries: queries, keys: keys, engine: engineBytes)
  }

  /// Query rows per streamed chunk at `tokens`: the request's, or what `StreamingAttention` picks for this
  /// shape (with far keys read, `.read`, its default).
  /// - Complexity: O(components).
  public func chunkRows(tokens: Int) -> Int {
    let (queries, keys) = fixedLength ?? (tokens, tokens)
    return Self.chunkRows(request, graph, queries: queries, keys: keys)
  }

  /// Edges per head for `tokens` queries and keys: exact for one implicit component (while
  /// `L_q·L_k < 9e18`; a close approximation beyond), the expected count for random graphs, and the
  /// sum over components (an upper bound) for unions.
  /// - Complexity: O(components).
  public func edgesPerHead(tokens: Int) -> (edges: Double, isUpperBound: Bool) {
    let (queries, keys) = fixedLength ?? (tokens, tokens)
    let total = graph.components.reduce(0.0) { $0 + Self.edges($1, queries: Double(queries), keys: Double(keys)) }
    return (total, graph.components.count > 1)
  }

  /// Useful floating-point work of one forward pass over `tokens`: `2·E·(d + d_v)` per query head.
  public func usefulFlops(tokens: Int) -> Double {
    let r = request
    return 2 * edgesPerHead(tokens: tokens).edges * Double(r.headDim + r.valueDim) * Double(r.batch * r.heads)
  }

  // MARK: - Implementation

  static func memoryNeed(_ r: Request, _ graph: Graph, _ length: (queries: Int, keys: Int), _ engine: Int) -> Int {
    let s = r.storage.byteCount, so = r.output.byteCount
    let queryBytes = Double(length.queries) * Double(r.batch * r.heads * (r.headDim * s + r.valueDim * so))
    let keyBytes = Double(length.keys) * Double(r.batch * r.keyValueHeads * (r.headDim + r.valueDim) * s)
    return clamp(queryBytes + keyBytes + Double(graphMemory(graph)) + Double(engine))
  }

  static func diskNeed(_ r: Request, _ length: (queries: Int, keys: Int)) -> Int {
    let s = r.storage.byteCount, so = r.output.byteCount
    let queryBytes = Double(length.queries) * Double(r.batch * r.heads * (r.headDim * s + r.valueDim * so))
    let keyBytes = Double(length.keys) * Double(r.batch * r.keyValueHeads * (r.headDim + r.valueDim) * s)
    return clamp(queryBytes + keyBytes + Double(headerAllowance))
  }

  static func graphMemory(_ graph: Graph) -> Int {
    graph.components.reduce(0) { total, component in
      guard case let .explicit(pattern) = component else { return total }
      return total + 8 * (pattern.rowCount + 1) + 4 * pattern.edgeCount
    }
  }

  static func chunkRows(_ r: Request, _ graph: Graph, queries: Int, keys: Int) -> Int {
    if let rows = r.chunkRows { return min(rows, max(queries, 1)) }
    let shape = AttentionShape(batch: r.batch, queryHeads: r.heads, keyValueHeads: r.keyValueHeads, queryCount: max(queries, 1),
                               keyCount: max(keys, 1), keyDim: r.headDim, valueDim: r.valueDim)
    return min(max(queries, 1), StreamingChunkPolicy.rows(shape: shape, graph: graph, queryBytes: r.storage.byteCount,
                                                          keyBytes: r.storage.byteCount, access: .read))
  }

  static func residentTerms(_ r: Request, _ graph: Graph, queries: Int, keys: Int, engine: Int) -> [Term] {
    let s = r.storage.byteCount, so = r.output.byteCount
    let rows = chunkRows(r, graph, queries: queries, keys: keys)
    let heads = r.batch * r.heads, keyHeads = Double(r.batch * r.keyValueHeads)
    let page = MappedFile.pageSize
    let keyRowBytes = Double(r.headDim * s + r.valueDim * s) * keyHeads     // one key's K and V rows, all K/V heads
    let scatteredKeyBytes = Double(max(r.headDim * s, page) + max(r.valueDim * s, page)) * keyHeads  // a page each
    let allKeyValue = Double(keys) * keyRowBytes
    let window = min(allKeyValue, Double(streamWindowBytes))
    var terms = [
      Term(label: "engine: 64 MiB + \(r.threads) threads × 1 MiB", bytes: engine),
      Term(label: "chunk: R·B·H·(d·s + d_v·s_o) = \(rows)·\(heads)·(\(r.headDim)·\(s) + \(r.valueDim)·\(so))",
           bytes: rows * heads * (r.headDim * s + r.valueDim * so)),
    ]
    var keyTerms: [(String, Double)] = []
    let R = Double(rows), L = Double(keys)
    var streamed = false
    for component in graph.components {
      switch component {
      case .full, .causal, .prefix, .view:
        streamed = true
      case let .documents(documents):
        let span = min(L, R + Double(documents.longest))
        keyTerms.append(("\(documents.source): (R + \(documents.longest) longest document) key rows × B·H_kv·(d + d_v)·s", span * keyRowBytes))
      case .intersection:
        // Within its nearest operand's reach (scattered operands only: anywhere, streamed).
        if let reach = component.localReach(keyCount: keys, shift: 0), reach < keys {
          keyTerms.append(("\(component): (R + \(reach)) key rows × B·H_kv·(d + d_v)·s", min(L, R + Double(reach)) * keyRowBytes))
        } else {
          streamed = true
        }
      case let .window(radius, causal):
        let span = min(L, R + Double(radius) * (causal ? 1 : 2))
        keyTerms.append(("\(component): (R + \(causal ? "" : "2·")\(radius)) key rows × B·H_kv·(d + d_v)·s", span * keyRowBytes))
      case let .dilated(radius, dilation):
        let span = min(L, R + 2 * Double(radius) * Double(dilation + 1))
        keyTerms.append(("\(component): (R + 2·\(radius)·\(dilation + 1)) key rows × B·H_kv·(d + d_v)·s", span * keyRowBytes))
      case let .blocked(block, _):
        let span = min(L, R + Double(block))
        keyTerms.append(("\(component): (R + \(block)) key rows × B·H_kv·(d + d_v)·s", span * keyRowBytes))
      case let .global(tokens):
        keyTerms.append(("\(component): \(tokens.count) keys × B·H_kv × 2 pages", Double(tokens.count) * scatteredKeyBytes))
        streamed = true  // the global rows themselves attend to every key
      case let .random(random):
        let distinct = L * -expm1(R * log1p(-random.probability))
        keyTerms.append(("\(component): L·(1 − (1−P)^R) = \(Int(distinct.rounded())) keys × B·H_kv × 2 pages",
                         min(distinct * scatteredKeyBytes, allKeyValue)))
      case let .explicit(pattern):
        let degree = Double(pattern.edgeCount) / Double(max(pattern.rowCount, 1))
        let distinct = min(L, R * degree)
        keyTerms.append(("\(pattern.source): min(L_k, R × \(String(Int(degree.rounded()))) mean degree) keys × B·H_kv × 2 pages",
                         min(distinct * scatteredKeyBytes, allKeyValue)))
        terms.append(Term(label: "graph \(pattern.source): 8·(L_q+1) + 4·E", bytes: 8 * (pattern.rowCount + 1) + 4 * pattern.edgeCount))
      }
    }
    if streamed {
      keyTerms.append(("keys streamed in order (full, causal, global rows): min(K+V, 256 MiB window)", window))
    }
    let keySum = keyTerms.reduce(0) { $0 + $1.1 }
    if keySum > allKeyValue {
      terms.append(Term(label: "K and V, capped at their whole size L·B·H_kv·(d + d_v)·s", bytes: clamp(allKeyValue)))
    } else {
      terms += keyTerms.map { Term(label: $0.0, bytes: clamp($0.1)) }
    }
    return terms
  }

  static func edges(_ component: Graph.Component, queries: Double, keys: Double) -> Double {
    // Exact closed forms while L_q·L_k fits in 64 bits; Double approximations beyond.
    if case let .random(random) = component { return random.probability * queries * keys }
    if queries * keys < 9e18, let exact = try? component.closedFormEdgeCount(queryCount: Int(queries), keyCount: Int(keys)) {
      return Double(exact)
    }
    let n = keys
    switch component {
    case .full: return queries * keys
    case .causal, .prefix: return n * (n + 1) / 2
    case let .documents(documents): return Double(documents.edgeCount)
    case let .intersection(atoms): return atoms.map { edges($0, queries: queries, keys: keys) }.min() ?? 0
    case let .window(radius, causal):
      let w = Double(radius)
      if w >= n - 1 { return causal ? n * (n + 1) / 2 : n * n }
      return causal ? n * (w + 1) - w * (w + 1) / 2 : n * (2 * w + 1) - w * (w + 1)
    case let .dilated(radius, dilation):
      let s = Double(dilation + 1), w = Double(radius)
      let perClass = n / s
      if w >= perClass - 1 { return s * perClass * perClass }
      return s * (perClass * (2 * w + 1) - w * (w + 1))
    case let .blocked(block, dilation):
      let b = Double(block), s = Double(dilation + 1)
      let perBlock = ((b - 1) / s).rounded(.down) + 1
      return (n / b) * perBlock * perBlock
    case let .global(tokens):
      let g = Double(tokens.count)
      return 2 * g * n - g * g
    case let .random(random):
      return random.probability * queries * keys
    case let .explicit(pattern):
      return Double(pattern.edgeCount)
    case let .view(view):
      return edges(view.base, queries: Double(view.globalQueryCount), keys: Double(view.globalKeyCount)) * queries / Double(max(1, view.globalQueryCount))
    }
  }

  static func clamp(_ value: Double) -> Int {
    value >= 9.2e18 ? Int.max : Int(value.rounded(.up))
  }
}
