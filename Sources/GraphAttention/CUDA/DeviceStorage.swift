/// How Q, K and V are stored on a device: fp32, fp16 or bf16. Arithmetic is fp32 in every case.
///
/// Halving the storage halves the memory and the bandwidth of the kernels, at the cost of rounding
/// the inputs: fp16 keeps 11 significant bits (and fails on values beyond 65,504), bf16 keeps 8 bits
/// with fp32's range. Expect relative errors of about 1e-3 (fp16) and 1e-2 (bf16) against fp32.
public enum DeviceStorage: String, Sendable, CaseIterable, CustomStringConvertible {
  /// IEEE binary32, as the host tensors.
  case float32 = "fp32"
  /// IEEE binary16.
  case float16 = "fp16"
  /// bfloat16: the top 16 bits of binary32, rounded to nearest even.
  case bfloat16 = "bf16"

  /// Bytes per element.
  public var byteWidth: Int { self == .float32 ? 4 : 2 }

  /// `fp32`, `fp16` or `bf16`.
  public var description: String { rawValue }

  /// The tensor's elements in this storage type, little-endian.
  /// - Throws: `GraphAttentionError` (`.value`) naming the first element that does not fit (fp16 beyond 65,504,
  ///   bf16 beyond about 3.39e38).
  static func encode(_ tensor: Tensor, as storage: DeviceStorage, name: String) throws -> [UInt8] {
    switch storage {
    case .float32:
      return tensor.scalars.withUnsafeBytes { Array($0) }
    case .float16:
      var bits = [UInt16](repeating: 0, count: tensor.scalars.count)
      for (i, x) in tensor.scalars.enumerated() {
        let h = Float16(x)
        guard h.isFinite || !x.isFinite else {
          throw GraphAttentionError(.value, "\(name) element \(i) is \(x), beyond fp16's range (65504)",
                                    fix: "use fp32 or bf16 storage, or scale the \(name) down")
        }
        bits[i] = h.bitPattern
      }
      return bits.withUnsafeBytes { Array($0) }
    case .bfloat16:
      var bits = [UInt16](repeating: 0, count: tensor.scalars.count)
      for (i, x) in tensor.scalars.enumerated() {
        bits[i] = bfloat16Bits(x)
        guard float(bfloat16: bits[i]).isFinite || !x.isFinite else {
          throw GraphAttentionError(.value, "\(name) element \(i) is \(x), beyond bf16's range",
                                    fix: "use fp32 storage, or scale the \(name) down")
        }
      }
      return bits.withUnsafeBytes { Array($0) }
    }
  }

  /// Rounds an fp32 value to bf16 (nearest, ties to even); NaN stays NaN.
  static func bfloat16Bits(_ x: Float) -> UInt16 {
    if x.isNaN { return 0x7FC0 }
    let bits = x.bitPattern
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: rounded >> 16)
  }

  /// The fp32 value of bf16 bits.
  static func float(bfloat16 bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
  }
}
