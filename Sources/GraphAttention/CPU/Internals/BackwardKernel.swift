import _GraphAttentionKernels

/// The C backward tile kernel (`ga_backward_tile_run`), seen from Swift: one reusable call record per
/// worker, filled in place per tile so that a tile costs no allocation.
///
/// Ownership: every pointer belongs to the caller and must stay valid during `run`; the kernel keeps none.
struct BackwardKernel {
  static let maxRows = Int(GA_BW_MAX_ROWS)

  /// The best instruction set the backward kernels use on this CPU: "avx512", "avx2" or "portable".
  static var bestInstructionSet: String { name(ofLevel: Int(ga_backward_best_isa())) }

  /// Kernel levels this CPU runs, portable first (tests run every one).
  static var supportedLevels: [Int] { Array(0...Int(ga_backward_best_isa())) }

  static func name(ofLevel level: Int) -> String {
    switch Int32(level) {
    case Int32(GA_ISA_AVX512): return "avx512"
    case Int32(GA_ISA_AVX2): return "avx2"
    default: return "portable"
    }
  }

  private var call = ga_backward_tile()
  private let scratch: UnsafeMutablePointer<Float>

  /// A call record for dimensions `a_dim`, `b_dim`, using at most instruction set `level`.
  init(aDim: Int, bDim: Int, scale: Float, level: Int) {
    let floats = Int(ga_backward_scratch_floats(Int32(aDim), Int32(bDim)))
    scratch = UnsafeMutableRawPointer.allocate(byteCount: floats * 4, alignment: 64).bindMemory(to: Float.self, capacity: floats)
    call.a_dim = Int32(aDim)
    call.b_dim = Int32(bDim)
    call.scale = scale
    call.scratch = scratch
    call.isa = Int32(level)
  }

  /// Frees the scratch; the kernel must not be used afterwards.
  func deallocate() { scratch.deallocate() }

  /// Sets the column vectors and, for pass 2, the per-column lse and delta.
  mutating func setColumns(a: UnsafePointer<Float>, b: UnsafePointer<Float>, lse: UnsafePointer<Float>?,
                           delta: UnsafePointer<Float>?) {
    call.A = a
    call.B = b
    call.col_lse = lse
    call.col_delta = delta
  }

  /// Sets row `slot`: its vectors, gradient accumulators and (pass 1) lse and delta.
  mutating func setRow(_ slot: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, gradA: UnsafeMutablePointer<Float>,
                       gradB: UnsafeMutablePointer<Float>?, lse: Float = 0, delta: Float = 0) {
    withUnsafeMutableBytes(of: &call.a) { $0.storeBytes(of: a, toByteOffset: slot * 8, as: UnsafePointer<Float>.self) }
    withUnsafeMutableBytes(of: &call.b) { $0.storeBytes(of: b, toByteOffset: slot * 8, as: UnsafePointer<Float>.self) }
    withUnsafeMutableBytes(of: &call.grad_a) { $0.storeBytes(of: gradA, toByteOffset: slot * 8, as: UnsafeMutablePointer<Float>.self) }
    withUnsafeMutableBytes(of: &call.grad_b) { $0.storeBytes(of: gradB, toByteOffset: slot * 8, as: UnsafeMutablePointer<Float>?.self) }
    withUnsafeMutableBytes(of: &call.row_lse) { $0.storeBytes(of: lse, toByteOffset: slot * 4, as: Float.self) }
    withUnsafeMutableBytes(of: &call.row_delta) { $0.storeBytes(of: delta, toByteOffset: slot * 4, as: Float.self) }
  }

  /// Runs the tile's first `rows` rows against `columns`.
  mutating func run(rows: Int, columns: UnsafePointer<Int64>, count: Int, mask: UnsafePointer<UInt8>?) {
    call.rows = Int32(rows)
    call.columns = columns
    call.n = Int64(count)
    call.mask = mask
    ga_backward_tile_run(&call)
  }
}
