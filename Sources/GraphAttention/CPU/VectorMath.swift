/// SIMD helpers for the CPU kernels, written with plain `*` and `+` on SIMD types.
///
/// Why not `addingProduct`: without a target CPU (and library targets may not set one), Swift lowers
/// SIMD fused multiply-add to one libm `fmaf` call per lane. Separate multiply and add compile to
/// packed SSE instructions on every x86-64 and to NEON on arm64.
@usableFromInline
enum VectorMath {
  /// Loads 8 floats from a possibly unaligned address.
  @inlinable @inline(__always)
  static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
  }

  /// Stores 8 floats to a possibly unaligned address.
  @inlinable @inline(__always)
  static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
  }
}
