import GraphAttention

/// `ga_attention_options` of graph_attention.h, read field by field at fixed offsets: the header is not
/// imported into Swift (the `@_cdecl` functions would clash with its declarations), so the offsets written
/// here and the struct there are the one contract, checked by python/tests/test_c_abi.py through ctypes.
///
/// Version 1 (56 bytes, no padding on any platform with 8-byte pointers and 4-byte floats):
///
///     0 uint32 size   4 int32 graph_count   8 graphs   16 alibi_slopes   24 sinks
///     32 float scale   36 float softcap   40 int32 empty_rows   44 int32 threads   48 uint32 flags   52 int32 alibi
///
/// `size` versions the struct: a later version appends fields, and reads the ones a smaller `size` lacks as
/// their defaults, so a caller compiled against an older header keeps working.
struct CAttentionOptions {
  /// The bytes of version 1, the only version so far.
  static let version1Size: UInt32 = 56

  /// One graph for every head (one element), or one per query head.
  var graphs: [Graph]
  /// Everything else, score modifiers included (the library checks their values).
  var options: AttentionOptions

  /// Reads and checks the caller's options for a call with `queryHeads` query heads.
  init(_ pointer: UnsafeRawPointer?, queryHeads: Int) throws {
    guard let pointer else {
      throw CABIFailure(status: .argument, message: "argument: options pointer is NULL. Fix: pass a ga_attention_options from ga_attention_options_default().")
    }
    let size = pointer.load(fromByteOffset: 0, as: UInt32.self)
    guard size == Self.version1Size else {
      let fix = size > Self.version1Size
        ? "use a libgraph_attention.so at least as new as the graph_attention.h the caller was compiled with"
        : "set size to sizeof(ga_attention_options) (start from ga_attention_options_default())"
      throw CABIFailure(status: .argument, message: "argument: options size is \(size) bytes, but this library knows version 1 (\(Self.version1Size) bytes). Fix: \(fix).")
    }
    let graphCount = pointer.load(fromByteOffset: 4, as: Int32.self)
    let handles = pointer.load(fromByteOffset: 8, as: UnsafePointer<UnsafeMutableRawPointer?>?.self)
    let slopes = pointer.load(fromByteOffset: 16, as: UnsafePointer<Float>?.self)
    let sinks = pointer.load(fromByteOffset: 24, as: UnsafePointer<Float>?.self)
    let scale = pointer.load(fromByteOffset: 32, as: Float.self)
    let softcap = pointer.load(fromByteOffset: 36, as: Float.self)
    let emptyRows = pointer.load(fromByteOffset: 40, as: Int32.self)
    let threads = pointer.load(fromByteOffset: 44, as: Int32.self)
    let flags = pointer.load(fromByteOffset: 48, as: UInt32.self)
    let alibi = pointer.load(fromByteOffset: 52, as: Int32.self)

    guard graphCount >= 1, let handles else {
      throw CABIFailure(status: .argument, message: "argument: options hold \(graphCount) graph(s) at \(handles == nil ? "NULL" : "an array"). Fix: set graphs to an array of graph_count >= 1 handles from ga_graph_parse.")
    }
    graphs = try (0..<Int(graphCount)).map { try GraphHandle.borrow(handles[$0]) }
    options = try attentionOptions(scale: scale, emptyRows: emptyRows, threads: threads, flags: flags)
    // NaN means no softcap (as for the scale); any other value, 0 included, reaches the library's one rule.
    options.softcap = softcap.isNaN ? nil : softcap
    switch alibi {
    case 0: options.alibi = nil
    case 1: options.alibi = .standard
    case 2:
      guard let slopes else {
        throw CABIFailure(status: .argument, message: "argument: alibi is 2 but alibi_slopes is NULL. Fix: point alibi_slopes at one slope per query head.")
      }
      options.alibi = .slopes(Array(UnsafeBufferPointer(start: slopes, count: queryHeads)))
    default:
      throw CABIFailure(status: .argument, message: "argument: alibi code \(alibi). Fix: use 0 (none), 1 (standard slopes) or 2 (alibi_slopes).")
    }
    options.sinks = sinks.map { Array(UnsafeBufferPointer(start: $0, count: queryHeads)) }
  }
}
