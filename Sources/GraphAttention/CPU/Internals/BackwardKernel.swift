import _GraphAttentionKernels

/// The C backward tile kernel (`ga_backward_tile_run`), seen from Swift: one reusable call record per
/// worker, filled in place per tile so that a tile costs no allocation.
///
/// Ownership: every pointer belongs to the caller and must stay valid during `run`; the kernel keeps none.
struct BackwardKernel {
  static let maxRows = Int(GA_BW_MAX_ROWS)

  /// Columns a panel holds (`ga_backward_panel`): a work item's tiles of a window or blocked graph span
  /// its rows plus twice the window, packed once.
  static let panelColumns = 4096

  private var call = ga_backward_tile()
  private let scratch: UnsafeMutablePointer<Float>
  private let panel: UnsafeMutablePointer<ga_backward_panel>

  /// A call record for dimensions `a_dim`, `b_dim`, running `kernel` (resolved: not `.automatic`).
  init(aDim: Int, bDim: Int, scale: Float, kernel: CPUKernel) {
    let floats = Int(ga_backward_scratch_floats(Int32(aDim), Int32(bDim)))
    scratch = UnsafeMutableRawPointer.allocate(byteCount: floats * 4, alignment: 64).bindMemory(to: Float.self, capacity: floats)
    call.a_dim = Int32(aDim)
    call.b_dim = Int32(bDim)
    call.scale = scale
    call.scratch = scratch
    call.isa = kernel.isa
    panel = .allocate(capacity: 1)
    let columns = BackwardKernel.panelColumns
    panel.initialize(to: ga_backward_panel(
      A: UnsafeMutableRawPointer.allocate(byteCount: columns * aDim * 4, alignment: 64).bindMemory(to: Float.self, capacity: columns * aDim),
      B: UnsafeMutableRawPointer.allocate(byteCount: columns * bDim * 4, alignment: 64).bindMemory(to: Float.self, capacity: columns * bDim),
      packed: .allocate(capacity: columns / 8), first: 0, stride: 0, capacity: Int64(columns), limit: 0))
  }

  /// Frees the scratch and the panel; the kernel must not be used afterwards.
  func deallocate() {
    scratch.deallocate()
    panel.pointee.A.deallocate()
    panel.pointee.B.deallocate()
    panel.pointee.packed.deallocate()
    panel.deallocate()
  }

  /// Empties the panel for new column vectors (`setColumns`; a new item or head) that number `limit`: the
  /// kernel places it at the first tile whose columns step evenly, and later such tiles reuse its blocks.
  mutating func resetPanel(limit: Int) {
    panel.pointee.stride = 0
    panel.pointee.limit = Int64(limit)
    call.panel = panel
  }

  /// Sets the column vectors and, for pass 2, the per-column lse and delta.
  mutating func setColumns(a: UnsafePointer<Float>, b: UnsafePointer<Float>, lse: UnsafePointer<Float>?,
                           delta: UnsafePointer<Float>?) {
    call.A = a
    call.B = b
    call.col_lse = lse
    call.col_delta = delta
  }

  /// Sets where pass 2 of a single-pass backward also accumulates the columns' gradients of A (dQ, unscaled):
  /// column `c`'s at `gradA + (c - first) * a_dim`; nil accumulates none.
  mutating func setColumnGradients(_ gradA: UnsafeMutablePointer<Float>?, first: Int) {
    call.grad_A = gradA
    call.grad_A_first = Int64(first)
  }

  /// Sets the score modifiers of the head being run (softcap, ALiBi; all zero for none).
  mutating func setModifiers(_ modifiers: ga_score_mods) {
    call.mods = modifiers
  }

  /// Sets row `slot`: its position (for ALiBi), vectors, gradient accumulators and (pass 1) lse and delta.
  mutating func setRow(_ slot: Int, position: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, gradA: UnsafeMutablePointer<Float>,
                       gradB: UnsafeMutablePointer<Float>?, lse: Float = 0, delta: Float = 0) {
    withUnsafeMutableBytes(of: &call.row_position) {
      $0.storeBytes(of: Int32(truncatingIfNeeded: position), toByteOffset: slot * 4, as: Int32.self)
    }
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
