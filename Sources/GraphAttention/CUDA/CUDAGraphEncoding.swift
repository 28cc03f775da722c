/// A graph as the kernels read it: 8 little 64-bit words per component, plus the arrays of global
/// tokens and CSR patterns that must be uploaded.
///
/// Components are ordered so the kernels' de-duplication is cheap: the graphs already accumulated
/// (only tested for membership, never enumerated) come first, then the new graph's; within each,
/// contiguous implicit kinds (the tensor-core kernel's share), other implicit kinds (O(1) membership),
/// explicit (binary search), then random (a walk of the row), because a key is tested against every
/// component before its own. The union is commutative, so the order changes nothing but rounding.
struct CUDAGraphEncoding {
  /// `8 * components.count` words; words 3 and 4 of components with arrays are patched with device
  /// addresses by `patched(addresses:)`.
  var words: [UInt64]
  /// Components `0 ..< firstNew` are excluded (visited earlier); the rest are enumerated.
  var firstNew: Int
  var componentCount: Int { words.count / 8 }
  /// Arrays to upload: for component `component`, word `word` (3 or 4) gets the address of `bytes`.
  var arrays: [(component: Int, word: Int, bytes: [UInt8])]

  /// Bytes of device memory the encoding needs.
  var deviceBytes: Int { words.count * 8 + arrays.reduce(0) { $0 + $1.bytes.count } }

  /// How many of the new components, from `firstNew` on, are contiguous kinds (each row's keys one run
  /// of consecutive keys: full, causal, window, blocked and dilated without dilation), which the
  /// tensor-core kernel computes as dense tiles.
  var contiguousCount: Int

  init(graph: Graph, excluding: Graph?) {
    let earlier = CUDAGraphEncoding.ordered(excluding?.components ?? [])
    let new = CUDAGraphEncoding.ordered(graph.components)
    words = []
    arrays = []
    firstNew = earlier.count
    contiguousCount = new.prefix { CUDAGraphEncoding.rank($0) == 0 }.count
    for component in earlier + new { append(component) }
  }

  /// The kind's class: 0 contiguous implicit, 1 other implicit, 2 explicit, 3 random.
  static func rank(_ c: Graph.Component) -> Int {
    switch c {
    case .full, .causal, .window: return 0
    case let .dilated(_, dilation): return dilation == 0 ? 0 : 1
    case let .blocked(_, dilation): return dilation == 0 ? 0 : 1
    case .global: return 1
    case .explicit: return 2
    case .random: return 3
    case .prefix, .documents, .intersection, .view: return 1  // refused by `CUDAExecutor.run` (`cudaSupport`)
    }
  }

  /// Components sorted by `rank`, stably.
  static func ordered(_ components: [Graph.Component]) -> [Graph.Component] {
    components.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
  }

  private mutating func append(_ component: Graph.Component) {
    let index = componentCount
    var w = [UInt64](repeating: 0, count: 8)
    switch component {
    case .full:
      w[0] = 0
    case .causal:
      w[0] = 1
    case let .window(radius, causal):
      w[0] = 2 | (causal ? 1 << 8 : 0)
      w[1] = UInt64(radius)
    case let .dilated(radius, dilation):
      w[0] = 3
      w[1] = UInt64(radius)
      w[2] = UInt64(dilation)
    case let .blocked(block, dilation):
      w[0] = 4
      w[1] = UInt64(block)
      w[2] = UInt64(dilation)
    case let .global(tokens):
      w[0] = 5
      w[1] = UInt64(tokens.count)
      arrays.append((index, 3, CUDAGraphEncoding.bytes(tokens.map { Int64($0) })))
    case let .random(graph):
      w[0] = 6
      w[5] = graph.seed
      w[6] = graph.probability.bitPattern
      w[7] = graph.logOneMinusP.bitPattern
    case let .explicit(graph):
      w[0] = 7
      w[1] = UInt64(graph.rowCount)
      arrays.append((index, 3, CUDAGraphEncoding.bytes(graph.denseRowOffsets.map { Int64($0) })))
      arrays.append((index, 4, CUDAGraphEncoding.bytes(graph.storage.columns)))
    case .prefix, .documents, .intersection, .view:
      preconditionFailure("\(component) is refused before encoding (CUDAGraphEncoding.unsupported)")
    }
    words += w
  }

  /// Why the CUDA kernels cannot compute `graph` at these lengths, or nil when they can: they know
  /// neither prefix, document and intersection graphs, nor causal kinds aligned for `L_q != L_k`, nor
  /// per-head random patterns.
  static func unsupported(_ graph: Graph?, queryCount: Int, keyCount: Int) -> String? {
    for component in graph?.components ?? [] {
      switch component {
      case .prefix, .documents, .intersection, .view:
        return "the CUDA backend does not compute \(component) graphs yet"
      case .causal where queryCount != keyCount, .window(_, true) where queryCount != keyCount:
        return "the CUDA backend does not align \(component) for L_q != L_k yet"
      case let .random(random) where random.perHead:
        return "the CUDA backend does not compute per-head random graphs yet"
      default:
        continue
      }
    }
    return nil
  }

  /// The words with the arrays' device addresses filled in (one address per entry of `arrays`).
  func patched(addresses: [UInt64]) -> [UInt64] {
    precondition(addresses.count == arrays.count)
    var result = words
    for (array, address) in zip(arrays, addresses) { result[8 * array.component + array.word] = address }
    return result
  }

  static func bytes<T>(_ values: [T]) -> [UInt8] {
    values.withUnsafeBytes { Array($0) }
  }
}
