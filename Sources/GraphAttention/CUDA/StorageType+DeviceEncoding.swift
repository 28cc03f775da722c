extension StorageType {
  /// The tensor's elements in this storage type, little-endian, rounded to nearest even by the
  /// storage layer's one conversion (`StorageKernels.store`).
  ///
  /// fp16 keeps 11 significant bits (and fails on values beyond 65,504), bf16 keeps 8 bits with fp32's
  /// range; expect relative errors of about 1e-3 (fp16) and 1e-2 (bf16) against fp32.
  /// - Throws: `GraphAttentionError` (`.value`) naming the first finite element that rounds to infinity
  ///   (fp16 from 65,520 up, bf16 beyond about 3.39e38).
  /// - Complexity: O(elements).
  func encode(_ tensor: Tensor, name: String) throws -> [UInt8] {
    let count = tensor.scalars.count
    var bytes = [UInt8](repeating: 0, count: count * byteCount)
    tensor.scalars.withUnsafeBufferPointer { source in
      bytes.withUnsafeMutableBytes { destination in
        guard let from = source.baseAddress, let to = destination.baseAddress else { return }
        StorageKernels.store(from, count: count, to: to, type: self, portable: false)
      }
    }
    guard self != .float32 else { return bytes }
    let infinity: UInt16 = self == .float16 ? 0x7C00 : 0x7F80
    for i in 0..<count {
      let bits = UInt16(bytes[2 * i]) | UInt16(bytes[2 * i + 1]) << 8
      if bits & 0x7FFF == infinity, tensor.scalars[i].isFinite {
        throw GraphAttentionError(
          .value, "\(name) element \(i) is \(tensor.scalars[i]), beyond \(shortName)'s range (\(self == .float16 ? "65504" : "about 3.39e38"))",
          fix: self == .float16 ? "use f32 or bf16 storage, or scale the \(name) down" : "use f32 storage, or scale the \(name) down")
      }
    }
    return bytes
  }
}
