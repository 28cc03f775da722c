/// Which keys each query attends to: the attention mask as a graph, never materialised.
///
/// Query token `i` is a vertex whose in-edges come from the keys `j` in its neighbourhood `N(i)`.
/// A graph is a union of one or more *components*; each component is one of the kinds below, and
/// an edge present in several components is still visited exactly once (unlike the reference
/// paper's chained kernels, which double count shared edges).
///
/// | spec | Swift | row `i` attends to `j` when |
/// |---|---|---|
/// | `full` | `.full` | always |
/// | `causal` | `.causal` | `j <= i + L_k - L_q` (bottom-right aligned, as FlashAttention >= 2.1) |
/// | `window:W` | `.window(W)` | `max(0, i-W) <= j <= min(L-1, i+W)` |
/// | `window:W:causal` | `.window(W, causal: true)` | `i + L_k - L_q - W <= j <= i + L_k - L_q` |
/// | `prefix:P` | `.prefix(P)` | `j < max(P, i + L_k - L_q + 1)` (bidirectional prefix, causal after) |
/// | `documents:0,N1,...,L` / `documents:CU.npy` | `.documents(offsets:)` | `i` and `j` lie in the same document |
/// | `dilated:W:D` | `.dilated(radius: W, dilation: D)` | `j ≡ i (mod D+1)` and `|i-j| <= W(D+1)` |
/// | `blocked:B:D` | `.blocked(block: B, dilation: D)` | `(i - base) % (D+1) == 0` and `j = base + t(D+1) < L`, `t <= (B-1)/(D+1)`, `base = floor(i/B)*B` |
/// | `global:I,J,..` | `.global([I, J])` | `i` or `j` is a listed token |
/// | `random:P:SEED` | `.random(probability: P, seed: SEED)` | independently with probability `P` |
/// | `random:P:SEED:per-head` | `.random(probability: P, seed: SEED, perHead: true)` | as above, head `h` seeded with `SEED + h * 0x9E3779B97F4A7C15` |
/// | `csr:`/`coo:`/`mtx:` | `.explicit(...)` | the stored pattern has `(i, j)` |
///
/// Graphs combine with `+` (union): Longformer is `window:W+global:...`, BigBird
/// `window:W+global:...+random:P:S`; and with `&` (intersection, binding tighter than `+`): packed
/// causal documents are `documents:CU.npy&causal`, Mistral-style packing
/// `documents:CU.npy&window:4096:causal`. Both are exact: an edge is visited once.
///
/// With `L_q != L_k`, the causal kinds (`causal`, `window:W:causal`, `prefix:P`) align the last query
/// with the last key (a decoding query over a KV cache attends to the newest keys); rows with
/// `i + L_k - L_q < 0` are then empty. The other implicit kinds need `L_q == L_k`.
///
/// ```swift
/// let bigBird = try Graph.window(64) + Graph.global([0, 4095]) + Graph.random(probability: 1e-3, seed: 7)
/// let same = try Graph(parsing: "window:64+global:0,4095+random:0.001:7")
/// ```
///
/// Implicit kinds cost O(1) memory; explicit ones hold their pattern in CSR form
/// (8 bytes per row plus 4 bytes per edge).
public struct Graph: Sendable, CustomStringConvertible {
  /// The union's operands, at least one.
  @usableFromInline
  internal var components: [Component]

  @usableFromInline
  internal init(components: [Component]) {
    precondition(!components.isEmpty)
    self.components = components
  }

  /// One kind of graph with its validated parameters.
  @usableFromInline
  internal enum Component: Sendable {
    case full
    case causal
    case window(radius: Int, causal: Bool)
    case dilated(radius: Int, dilation: Int)
    case blocked(block: Int, dilation: Int)
    /// Sorted, unique token indices.
    case global([Int])
    case random(RandomGraph)
    case explicit(ExplicitGraph)
    /// `j < max(P, i + L_k - L_q + 1)`.
    case prefix(Int)
    case documents(DocumentGraph)
    /// Two or more components, none of them an intersection.
    case intersection([Component])
    /// A component seen through a view of some rows and keys (`Graph.view`).
    case view(GraphView)
  }

  // MARK: - Kinds

  /// Every query attends to every key (dense attention). Allows `queryCount != keyCount`.
  public static let full = Graph(components: [.full])

  /// Query `i` attends to keys `0...i` (decoder self-attention).
  public static let causal = Graph(components: [.causal])

  /// A sliding window of `radius` keys on each side of the query (or before it, when `causal`).
  ///
  /// Row `i` attends to `max(0, i-radius)...min(L-1, i+radius)`, or `max(0, i-radius)...i` when causal:
  /// `2*radius+1` keys in the interior, `radius+1` when causal.
  /// - Throws: `GraphAttentionError` (`.mask`) if `radius < 0`.
  public static func window(_ radius: Int, causal: Bool = false) throws -> Graph {
    try require(radius >= 0, "window radius must be >= 0, got \(radius)",
                fix: "use window:W with W a non-negative integer, e.g. window:256")
    return Graph(components: [.window(radius: radius, causal: causal)])
  }

  /// The reference paper's "local 1D dilated" graph: every `(dilation+1)`-th key within `radius` steps.
  ///
  /// Row `i` attends to `j ≡ i (mod dilation+1)` with `|i-j| <= radius*(dilation+1)`, clipped to the
  /// sequence: up to `2*radius+1` keys. `dilation == 0` is `window(radius)`.
  /// - Throws: `GraphAttentionError` (`.mask`) if a parameter is negative or the span overflows.
  public static func dilated(radius: Int, dilation: Int) throws -> Graph {
    try require(radius >= 0 && dilation >= 0, "dilated radius and dilation must be >= 0, got \(radius):\(dilation)",
                fix: "use dilated:W:D with W, D >= 0, e.g. dilated:64:1")
    try require(radius.multipliedReportingOverflow(by: dilation &+ 1).overflow == false && dilation < Int.max,
                "dilated span \(radius)*(\(dilation)+1) overflows", fix: "use a smaller radius or dilation")
    return Graph(components: [.dilated(radius: radius, dilation: dilation)])
  }

  /// The reference paper's "local 2D dilated" graph: a strided lattice inside each diagonal block.
  ///
  /// With `base = floor(i/block)*block`, rows with `(i-base) % (dilation+1) == 0` attend to
  /// `base + t*(dilation+1)` for `t = 0...(block-1)/(dilation+1)` (keys `< L`); all other rows are empty.
  /// Unlike the paper, `block` need not divide the sequence length: the last block is partial.
  /// - Throws: `GraphAttentionError` (`.mask`) if `block < 1` or `dilation < 0`.
  public static func blocked(block: Int, dilation: Int = 0) throws -> Graph {
    try require(block >= 1, "blocked block size must be >= 1, got \(block)",
                fix: "use blocked:B:D with B >= 1, e.g. blocked:256:0")
    try require(dilation >= 0 && dilation < Int.max, "blocked dilation must be >= 0, got \(dilation)",
                fix: "use blocked:B:D with D >= 0")
    return Graph(components: [.blocked(block: block, dilation: dilation)])
  }

  /// Global tokens: each listed token attends to every key, and every query attends to each listed key.
  ///
  /// Duplicates are ignored and order does not matter. Tokens must be below the sequence length,
  /// which is checked when the graph is used.
  /// - Throws: `GraphAttentionError` (`.mask`) if the list is empty or has a negative token.
  public static func global(_ tokens: [Int]) throws -> Graph {
    try require(!tokens.isEmpty, "global needs at least one token", fix: "list tokens, e.g. global:0,4095")
    if let bad = tokens.first(where: { $0 < 0 }) {
      throw GraphAttentionError(.mask, "global token \(bad) is negative", fix: "use token indices in 0..<L")
    }
    return Graph(components: [.global(Array(Set(tokens)).sorted())])
  }

  /// A Bernoulli random graph: each edge `(i, j)` is present independently with `probability`.
  ///
  /// Rows are generated on the fly from a counter-based, platform-stable generator (see
  /// `RandomGraph`), so the same seed gives the same edges on every machine and thread count,
  /// and nothing of size `L x L` is ever held.
  /// - Throws: `GraphAttentionError` (`.mask`) unless `0 <= probability <= 1`.
  public static func random(probability: Double, seed: UInt64) throws -> Graph {
    try require(probability >= 0 && probability <= 1, "random probability must be in [0, 1], got \(probability)",
                fix: "use random:P:SEED with 0 <= P <= 1, e.g. random:0.001:42")
    return Graph(components: [.random(RandomGraph(probability: probability, seed: seed))])
  }

  /// A bidirectional prefix of `length` tokens, causal after it (prefix-LM, T5/UL2-style).
  ///
  /// Row `i` attends to `j < max(length, i + L_k - L_q + 1)`: every row sees the whole prefix, and rows
  /// past it see the keys up to their own position. `prefix(0)` is `causal`.
  /// - Throws: `GraphAttentionError` (`.mask`) if `length < 0`.
  public static func prefix(_ length: Int) throws -> Graph {
    try require(length >= 0, "prefix length must be >= 0, got \(length)", fix: "use prefix:P with P >= 0, e.g. prefix:128")
    return Graph(components: [.prefix(length)])
  }

  /// Packed documents: token `i` attends to token `j` when both lie in the same document.
  ///
  /// `offsets` are cumulative (FlashAttention's `cu_seqlens`): first 0, non-decreasing, last the
  /// sequence length, which is checked when the graph is used. Intersect with `causal` for packed
  /// decoder training: `try .documents(offsets: cu) & .causal`.
  /// - Throws: `GraphAttentionError` (`.mask`) for offsets that are not of that form.
  /// - Complexity: O(documents) to build and in memory; O(log documents) per row.
  public static func documents<Offsets: Collection>(offsets: Offsets) throws -> Graph where Offsets.Element: BinaryInteger {
    Graph(components: [.documents(try DocumentGraph(offsets: offsets))])
  }

  /// Packed documents from validated offsets (e.g. read from a file); see `documents(offsets:)`.
  public static func documents(_ graph: DocumentGraph) -> Graph {
    Graph(components: [.documents(graph)])
  }

  /// A Bernoulli random graph whose pattern differs per query head when `perHead` is true: head `h`
  /// uses seed `seed &+ UInt64(h) &* 0x9E3779B97F4A7C15` (and head 0 the seed itself).
  ///
  /// A graph holding such a component gives each head its own graph (`forHead(_:)`); `attention`
  /// runs it head by head.
  /// - Throws: `GraphAttentionError` (`.mask`) unless `0 <= probability <= 1`.
  public static func random(probability: Double, seed: UInt64, perHead: Bool) throws -> Graph {
    let graph = try random(probability: probability, seed: seed)
    return perHead ? Graph(components: [.random(RandomGraph(probability: probability, seed: seed, perHead: true))]) : graph
  }

  /// An explicit graph given by its stored pattern (CSR, COO or Matrix Market).
  public static func explicit(_ pattern: ExplicitGraph) -> Graph {
    Graph(components: [.explicit(pattern)])
  }

  /// The union of two graphs: an edge present in both is visited once.
  ///
  /// - Complexity: O(1) to build; row enumeration costs O(runs) per row, and O(degree) for rows
  ///   where operands with strided or gathered runs overlap.
  public static func + (lhs: Graph, rhs: Graph) -> Graph {
    Graph(components: lhs.components + rhs.components)
  }

  /// The intersection of two graphs: `(i, j)` is an edge when it is an edge of both. Binds tighter
  /// than `+`, as in the specification `documents:CU.npy&causal+global:0`.
  ///
  /// Intersection distributes over union: `(A + B) & C` is `A&C + B&C`, each edge still visited once.
  /// - Complexity: O(1) to build for operands that are not unions; row enumeration intersects the
  ///   operands' sorted runs, O(runs of the operands) per row (O(keys) where two strided runs overlap).
  public static func & (lhs: Graph, rhs: Graph) -> Graph {
    var terms: [Component] = []
    for l in lhs.components {
      for r in rhs.components {
        terms.append(.intersection(l.intersectionAtoms + r.intersectionAtoms))
      }
    }
    return Graph(components: terms)
  }

  /// The union of several graphs; see `+`.
  public static func union(_ graphs: [Graph]) -> Graph {
    precondition(!graphs.isEmpty, "union needs at least one graph")
    return Graph(components: graphs.flatMap(\.components))
  }

  /// The union's operands in order, each a graph of its own (one for a graph that is not a union).
  public var operands: [Graph] {
    components.map { Graph(components: [$0]) }
  }

  /// The specification this graph parses from, e.g. `window:64+global:0,9`.
  public var description: String {
    components.map(\.description).joined(separator: "+")
  }

  @inline(__always)
  static func require(_ condition: Bool, _ problem: @autoclosure () -> String, fix: @autoclosure () -> String) throws {
    if !condition { throw GraphAttentionError(.mask, problem(), fix: fix()) }
  }
}

extension Graph.Component: CustomStringConvertible {
  @usableFromInline
  var description: String {
    switch self {
    case .full: return "full"
    case .causal: return "causal"
    case let .window(radius, causal): return causal ? "window:\(radius):causal" : "window:\(radius)"
    case let .dilated(radius, dilation): return "dilated:\(radius):\(dilation)"
    case let .blocked(block, dilation): return "blocked:\(block):\(dilation)"
    case let .global(tokens): return "global:" + tokens.map(String.init).joined(separator: ",")
    case let .random(r): return "random:\(r.probability):\(r.seed)" + (r.perHead ? ":per-head" : "")
    case let .explicit(e): return e.source
    case let .prefix(length): return "prefix:\(length)"
    case let .documents(d): return d.source
    case let .intersection(atoms): return atoms.map(\.description).joined(separator: "&")
    case let .view(view): return view.description
    }
  }

  /// The operands of an intersection, or the component itself.
  var intersectionAtoms: [Graph.Component] {
    if case let .intersection(atoms) = self { return atoms }
    return [self]
  }

  /// Whether the component is defined only for square (self-)attention.
  var requiresSquare: Bool {
    switch self {
    case .full, .random, .explicit, .causal, .prefix, .view: return false
    case let .window(_, causal): return !causal
    case .dilated, .blocked, .global, .documents: return true
    case let .intersection(atoms): return atoms.contains(where: \.requiresSquare)
    }
  }
}
