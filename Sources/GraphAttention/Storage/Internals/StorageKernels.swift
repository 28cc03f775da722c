import Dispatch
import _GraphAttentionKernels

/// Typed wrappers over the C conversion and scan kernels (`_GraphAttentionKernels/Convert.c`).
///
/// The only place in the storage layer that names C symbols. Pointers are raw on the Swift side;
/// the C code uses unaligned loads, so 16-bit data needs no particular alignment.
enum StorageKernels {
  /// Whether the F16C/AVX2 versions run on this CPU.
  static var usesF16C: Bool { ga_convert_uses_f16c() != 0 }

  /// `count` elements of `type` at `source` to fp32 at `destination`.
  static func convert(_ source: UnsafeRawPointer, type: StorageType, count: Int,
                      to destination: UnsafeMutablePointer<Float>, portable: Bool) {
    guard count > 0 else { return }
    let n = Int64(count)
    switch type {
    case .float32:
      UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count &* 4)
    case .float16:
      let halves = source.assumingMemoryBound(to: UInt16.self)
      portable ? ga_f16_to_f32_portable(halves, destination, n) : ga_f16_to_f32(halves, destination, n)
    case .bfloat16:
      let halves = source.assumingMemoryBound(to: UInt16.self)
      portable ? ga_bf16_to_f32_portable(halves, destination, n) : ga_bf16_to_f32(halves, destination, n)
    }
  }

  /// `count` fp32 values at `source` rounded to `type` at `destination`.
  static func store(_ source: UnsafePointer<Float>, count: Int, to destination: UnsafeMutableRawPointer,
                    type: StorageType, portable: Bool) {
    guard count > 0 else { return }
    let n = Int64(count)
    switch type {
    case .float32:
      destination.copyMemory(from: source, byteCount: count &* 4)
    case .float16:
      let halves = destination.assumingMemoryBound(to: UInt16.self)
      portable ? ga_f32_to_f16_portable(source, halves, n) : ga_f32_to_f16(source, halves, n)
    case .bfloat16:
      let halves = destination.assumingMemoryBound(to: UInt16.self)
      portable ? ga_f32_to_bf16_portable(source, halves, n) : ga_f32_to_bf16(source, halves, n)
    }
  }

  /// Elements below which a scan runs on the calling thread alone (a few hundred microseconds).
  static let parallelScanThreshold = 1 << 22

  /// Flat index of the first NaN or infinity among `count` elements, or nil.
  ///
  /// Large inputs are split into one contiguous part per processor, scanned at once: the scan is bound
  /// by memory bandwidth, which one core does not saturate, and it runs before every attention call.
  /// - Complexity: O(`count`).
  static func firstNonFinite(_ source: UnsafeRawPointer, type: StorageType, count: Int) -> Int? {
    guard count > 0 else { return nil }
    let parts = count < parallelScanThreshold ? 1 : CPUExecutor.defaultThreadCount
    guard parts > 1 else { return firstNonFiniteSerially(source, type: type, count: count) }
    let partLength = (count + parts - 1) / parts
    let found = UnsafeMutableBufferPointer<Int>.allocate(capacity: parts)
    defer { found.deallocate() }
    found.initialize(repeating: Int.max)
    let results = UnsafeSendable(found)
    let base = UnsafeSendable(source)
    DispatchQueue.concurrentPerform(iterations: parts) { part in
      let start = part * partLength
      guard start < count else { return }
      let length = min(partLength, count - start)
      if let index = firstNonFiniteSerially(base.value + start * type.byteCount, type: type, count: length) {
        results.value[part] = start + index
      }
    }
    let first = found.min()!
    return first == .max ? nil : first
  }

  /// `firstNonFinite` on the calling thread alone (from worker threads, which must not fan out again).
  static func firstNonFiniteSerially(_ source: UnsafeRawPointer, type: StorageType, count: Int) -> Int? {
    let n = Int64(count)
    let found: Int64
    switch type {
    case .float32: found = ga_first_nonfinite_f32(source.assumingMemoryBound(to: Float.self), n)
    case .float16: found = ga_first_nonfinite_f16(source.assumingMemoryBound(to: UInt16.self), n)
    case .bfloat16: found = ga_first_nonfinite_bf16(source.assumingMemoryBound(to: UInt16.self), n)
    }
    return found < 0 ? nil : Int(found)
  }
}
