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

  /// `e^x` for 8 lanes with `x <= 0` (the only arguments an online softmax produces).
  ///
  /// Cephes-style: `x = n ln2 + r`, `|r| <= ln2/2`, a degree-6 polynomial for `e^r` (relative error
  /// below 2e-7), scaled by `2^n` built in the exponent bits. Lanes below -87 (where `e^x` is
  /// subnormal, under 1.7e-38) and `-inf` give 0; NaN lanes give NaN.
  /// Rounding uses the 1.5*2^23 trick because SIMD `rounded()` is a libm call per lane without SSE4.1.
  @inlinable @inline(__always)
  static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let magic = SIMD8<Float>(repeating: 12_582_912)  // 1.5 * 2^23
    let clamped = x.replacing(with: -87, where: x .< -87)
    let t = clamped * 1.442_695_04 + magic
    let n = t - magic
    let r = clamped - n * 0.693_359_375 + n * 2.121_944_4e-4
    var p = SIMD8<Float>(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_59e-2
    p = p * r + 0.166_666_655
    p = p * r + 0.500_000_01
    p = p * (r * r) + r + 1
    let exponent = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    let result = p * unsafeBitCast(exponent, to: SIMD8<Float>.self)
    return result.replacing(with: 0, where: x .< -87)
  }

  /// Scalar `e^x` for `x <= 0` through the same polynomial, so row statistics and weights agree.
  @inlinable @inline(__always)
  static func exp(_ x: Float) -> Float {
    exp(SIMD8<Float>(repeating: x))[0]
  }
}
