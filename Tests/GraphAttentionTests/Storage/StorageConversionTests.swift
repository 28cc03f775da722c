import GraphAttention
import XCTest

/// fp16 and bf16 storage: names, exact widening, round-to-nearest-even narrowing, special values,
/// and the F16C kernels against the portable ones.
final class StorageConversionTests: XCTestCase {
  func testStorageTypeNames() {
    for (text, type) in [("f32", StorageType.float32), ("FP32", .float32), ("float32", .float32), ("f16", .float16),
                         ("half", .float16), ("float16", .float16), ("fp16", .float16), ("bf16", .bfloat16),
                         ("BFloat16", .bfloat16), ("<f2", .float16)] {
      XCTAssertEqual(StorageType(parsing: text), type, text)
    }
    XCTAssertNil(StorageType(parsing: "f64"))
    XCTAssertNil(StorageType(parsing: ""))
    XCTAssertEqual(StorageType.allCases.map(\.byteCount), [4, 2, 2])
    XCTAssertEqual(StorageType.allCases.map(\.npyDescriptor), ["<f4", "<f2", nil])
    XCTAssertEqual(StorageType.allCases.map(\.safetensorsName), ["F32", "F16", "BF16"])
    XCTAssertEqual(StorageType.allCases.compactMap { StorageType(safetensorsName: $0.safetensorsName) }, StorageType.allCases)
  }

  // MARK: - fp16

  /// Every one of the 65536 binary16 patterns widens exactly, on both kernels.
  func testEveryHalfWidensExactly() {
    let patterns = (0...UInt16.max).map { $0 }
    for kernel in [ConversionKernel.fastest, .portable] {
      let widened = convert(patterns, .float16, kernel)
      for (bits, value) in zip(patterns, widened) {
        let exponent = bits & 0x7C00, mantissa = UInt32(bits & 0x3FF)
        if exponent == 0x7C00 && mantissa != 0 {
          // NaN: sign and payload kept, shifted into place, quiet bit set (as x86 does).
          XCTAssertEqual(value.bitPattern, (UInt32(bits & 0x8000) << 16) | 0x7FC0_0000 | (mantissa << 13), "\(bits)")
        } else {
          XCTAssertEqual(value.bitPattern, expectedHalfToFloat(bits).bitPattern, "\(kernel) 0x\(String(bits, radix: 16))")
        }
      }
    }
  }

  func testHalfRoundingSpecialValues() {
    let cases: [(Float, UInt16)] = [
      (0, 0x0000), (-0.0, 0x8000), (1, 0x3C00), (-2, 0xC000),
      (65504, 0x7BFF), (65519.996, 0x7BFF), (65520, 0x7C00), (-65520, 0xFC00), (1e10, 0x7C00),
      (.infinity, 0x7C00), (-.infinity, 0xFC00),
      (0x1p-14, 0x0400), (0x1p-24, 0x0001), (0x1p-25, 0x0000), (0x1.8p-24, 0x0002), (0x1.8p-25, 0x0001),
      (0x1p-26, 0x0000), (-0x1p-24, 0x8001), (.leastNonzeroMagnitude, 0x0000), (0x1.ffcp-15, 0x0400),
      // Ties at 1 + 2^-11 (between 0x3C00 and 0x3C01) go to even; just above goes up.
      (1 + 0x1p-11, 0x3C00), (1 + 0x1p-11 + 0x1p-20, 0x3C01), (1 + 3 * 0x1p-11, 0x3C02),
    ]
    for kernel in [ConversionKernel.fastest, .portable] {
      let narrowed = store(cases.map(\.0), .float16, kernel)
      for ((value, expected), got) in zip(cases, narrowed) {
        XCTAssertEqual(got, expected, "\(kernel) \(value): 0x\(String(got, radix: 16))")
      }
      // NaN stays NaN with its sign, quiet, top payload bits kept (never infinity).
      let nans: [Float] = [.nan, -.nan, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFFA0_0000)]
      for (value, got) in zip(nans, store(nans, .float16, kernel)) {
        XCTAssertEqual(got & 0x7C00, 0x7C00)
        XCTAssertNotEqual(got & 0x3FF, 0, "NaN 0x\(String(value.bitPattern, radix: 16)) became infinity")
        XCTAssertEqual(got & 0x200, 0x200)
        XCTAssertEqual(got >> 15, UInt16(value.bitPattern >> 31))
      }
    }
  }

  /// Every binary16 value, and every midpoint between neighbours (ties), rounds as Swift's
  /// correctly rounded `Float16(_:)` does; the portable kernel matches the fast one bit for bit.
  func testHalfNarrowingMatchesSwiftOnEveryValueAndTie() {
    var inputs: [Float] = []
    for bits in UInt16(0)..<0x7C00 {
      let value = expectedHalfToFloat(bits)
      let next = expectedHalfToFloat(bits + 1)
      let gap = next - value
      inputs += [value, -value, value + gap / 2, -(value + gap / 2), value + gap / 4, value + gap * 0.75]
    }
    var generator = SplitMix(seed: 3)
    for _ in 0..<20_000 { inputs.append(Float(bitPattern: UInt32(truncatingIfNeeded: generator.next()))) }
    let fast = store(inputs, .float16, .fastest)
    let portable = store(inputs, .float16, .portable)
    for (i, value) in inputs.enumerated() {
      XCTAssertEqual(fast[i], portable[i], "0x\(String(value.bitPattern, radix: 16))")
      if !value.isNaN {
        XCTAssertEqual(fast[i], Float16(value).bitPattern, "\(value) (0x\(String(value.bitPattern, radix: 16)))")
      }
      if fast[i] != portable[i] { break }
    }
  }

  // MARK: - bf16

  /// Every one of the 65536 bfloat16 patterns widens by the 16-bit shift (NaNs stay NaNs with their
  /// sign and payload), on both kernels.
  func testEveryBFloat16WidensExactly() {
    let patterns = (0...UInt16.max).map { $0 }
    for kernel in [ConversionKernel.fastest, .portable] {
      let widened = convert(patterns, .bfloat16, kernel)
      XCTAssertEqual(widened.map(\.bitPattern), patterns.map { UInt32($0) << 16 }, "\(kernel)")
      XCTAssertEqual(zip(patterns, widened).filter { $0.0 & 0x7F80 == 0x7F80 && $0.0 & 0x7F != 0 }.filter { !$0.1.isNaN }.count, 0)
    }
  }

  func testBFloat16RoundingSpecialValues() {
    let cases: [(UInt32, UInt16)] = [
      (0x0000_0000, 0x0000), (0x8000_0000, 0x8000), (0x3F80_0000, 0x3F80),
      (0x3F80_8000, 0x3F80),  // tie, even stays
      (0x3F81_8000, 0x3F82),  // tie, odd rounds up
      (0x3F80_8001, 0x3F81), (0x3F80_7FFF, 0x3F80),
      (0x7F7F_FFFF, 0x7F80),  // the largest float rounds to infinity
      (0x7F7F_7FFF, 0x7F7F),
      (0x7F80_0000, 0x7F80), (0xFF80_0000, 0xFF80),
      (0x0000_0001, 0x0000), (0x0000_8000, 0x0000), (0x0001_8000, 0x0002), (0x0000_8001, 0x0001),  // subnormals
      (0x8000_8001, 0x8001),
    ]
    for kernel in [ConversionKernel.fastest, .portable] {
      let narrowed = store(cases.map { Float(bitPattern: $0.0) }, .bfloat16, kernel)
      for ((bits, expected), got) in zip(cases, narrowed) {
        XCTAssertEqual(got, expected, "\(kernel) 0x\(String(bits, radix: 16)): got 0x\(String(got, radix: 16))")
      }
      // NaNs whose payload lives only in the low 16 bits must not round to infinity (or wrap to zero).
      let nans: [UInt32] = [0x7F80_0001, 0xFF80_0001, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x7FC0_0000]
      for (bits, got) in zip(nans, store(nans.map { Float(bitPattern: $0) }, .bfloat16, kernel)) {
        XCTAssertTrue(Float(bitPattern: UInt32(got) << 16).isNaN, "0x\(String(bits, radix: 16)) -> 0x\(String(got, radix: 16))")
        XCTAssertEqual(got >> 15, UInt16(bits >> 31))
        XCTAssertEqual(got & 0xFF80 | 0x8000, 0xFF80, "exponent of 0x\(String(got, radix: 16))")
      }
    }
  }

  /// bf16 rounding against an independent reference (nearest of the two neighbours in Double, ties to
  /// even), on random bit patterns and every tie of a range; fast and portable agree.
  func testBFloat16MatchesReference() {
    var inputs: [Float] = []
    var generator = SplitMix(seed: 11)
    for _ in 0..<50_000 { inputs.append(Float(bitPattern: UInt32(truncatingIfNeeded: generator.next()))) }
    for high in UInt32(0x3F00)..<0x4100 { inputs.append(Float(bitPattern: high << 16 | 0x8000)) }
    let fast = store(inputs, .bfloat16, .fastest)
    let portable = store(inputs, .bfloat16, .portable)
    XCTAssertEqual(fast, portable)
    for (value, got) in zip(inputs, fast) where !value.isNaN {
      XCTAssertEqual(got, referenceBFloat16(value), "0x\(String(value.bitPattern, radix: 16))")
    }
    // Widening is exact: the 16 bits move up.
    let widened = convert(fast, .bfloat16, .fastest)
    XCTAssertEqual(widened.map(\.bitPattern), fast.map { UInt32($0) << 16 })
    XCTAssertEqual(convert(fast, .bfloat16, .portable).map(\.bitPattern), fast.map { UInt32($0) << 16 })
  }

  func testRoundedAndOddLengths() {
    XCTAssertEqual(TensorView.rounded(1 + 0x1p-11, to: .float16), 1)
    XCTAssertEqual(TensorView.rounded(1 + 0x1p-8 + 0x1p-20, to: .bfloat16), 1 + 0x1p-7)
    XCTAssertEqual(TensorView.rounded(0.1, to: .float32), 0.1)
    // Lengths around the 8- and 16-wide blocks convert every element, and nothing past the end.
    for n in [0, 1, 7, 8, 9, 15, 16, 17, 33] {
      let values = (0..<n).map { Float($0) + 0.25 }
      for type in StorageType.allCases {
        var raw = [UInt8](repeating: 0xAB, count: n * type.byteCount + 8)
        raw.withUnsafeMutableBytes { out in values.withUnsafeBufferPointer { TensorView.store($0.baseAddress!, count: n, to: out.baseAddress!, type: type) } }
        XCTAssertEqual(raw.suffix(8), [UInt8](repeating: 0xAB, count: 8), "\(type) \(n)")
        var back = [Float](repeating: -7, count: n + 2)
        raw.withUnsafeBytes { input in back.withUnsafeMutableBufferPointer { TensorView.convert(input.baseAddress!, type: type, count: n, to: $0.baseAddress!) } }
        XCTAssertEqual(Array(back.prefix(n)), values.map { TensorView.rounded($0, to: type) })
        XCTAssertEqual(back.suffix(2), [-7, -7])
      }
    }
  }

  func testFirstNonFiniteInEveryType() {
    for type in StorageType.allCases {
      let heap = MutableTensorView(allocating: [2, 3000, 4], type: type)
      XCTAssertNil(heap.readOnly.firstNonFinite(name: "key"))
      for (flat, bad) in [(23_999, Float.infinity), (4097, -.infinity), (5, .nan)] {
        heap.setElement(flat, bad)
        let error = heap.readOnly.firstNonFinite(name: "key")
        XCTAssertEqual(error?.kind, .value)
        let index = [flat / 12000, flat / 4 % 3000, flat % 4]
        XCTAssertTrue(error?.problem.hasPrefix("key\(index) is \(bad)") ?? false, "\(type): \(String(describing: error))")
      }
    }
    XCTAssertNil(TensorView(Tensor(shape: [0, 4], scalars: [])).firstNonFinite(name: "q"))
  }

  /// Inputs above the threshold are scanned in one part per processor: the earliest bad element wins
  /// whichever part holds it, and a bad element at either end of a part is found.
  func testFirstNonFiniteOfLargeInputsSplitAcrossThreads() {
    // Above the library's threshold of 2^22 elements; parts are ceil(count / processors) long.
    let count = (1 << 22) + 12_345
    let heap = MutableTensorView(allocating: [count], type: .float16)
    XCTAssertNil(heap.readOnly.firstNonFinite(name: "v"))
    let parts = max(2, ProcessInfo.processInfo.activeProcessorCount)
    let partLength = (count + parts - 1) / parts
    for flat in [count - 1, partLength, partLength - 1, 0] {  // each one earlier than the last
      heap.setElement(flat, .nan)
      XCTAssertTrue(heap.readOnly.firstNonFinite(name: "v")?.problem.hasPrefix("v[\(flat)] is nan") ?? false, "\(flat)")
    }
  }

  // MARK: - Helpers

  private func convert<T: FixedWidthInteger>(_ patterns: [T], _ type: StorageType, _ kernel: ConversionKernel) -> [Float] {
    var out = [Float](repeating: 0, count: patterns.count)
    patterns.withUnsafeBytes { raw in
      out.withUnsafeMutableBufferPointer { TensorView.convert(raw.baseAddress!, type: type, count: patterns.count, to: $0.baseAddress!, kernel: kernel) }
    }
    return out
  }

  private func store(_ values: [Float], _ type: StorageType, _ kernel: ConversionKernel) -> [UInt16] {
    var out = [UInt16](repeating: 0, count: values.count)
    values.withUnsafeBufferPointer { input in
      out.withUnsafeMutableBytes { TensorView.store(input.baseAddress!, count: values.count, to: $0.baseAddress!, type: type, kernel: kernel) }
    }
    return out
  }

  /// binary16 -> Float from the definition: (-1)^s * 2^(e-15) * 1.m, or 2^-14 * 0.m.
  private func expectedHalfToFloat(_ bits: UInt16) -> Float {
    let sign: Float = bits & 0x8000 != 0 ? -1 : 1
    let exponent = Int((bits >> 10) & 0x1F), mantissa = Float(bits & 0x3FF)
    if exponent == 0x1F { return mantissa == 0 ? sign * .infinity : .nan }
    if exponent == 0 { return sign * mantissa * 0x1p-24 }
    return sign * (1 + mantissa / 1024) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
  }

  /// Nearest bf16 to `value`, ties to even, by comparing the two truncation neighbours in Double.
  private func referenceBFloat16(_ value: Float) -> UInt16 {
    let down = UInt16(value.bitPattern >> 16)  // the neighbour nearer zero
    if value.bitPattern & 0xFFFF == 0 { return down }
    let up = down &+ 1  // the neighbour farther from zero
    let low = Double(Float(bitPattern: UInt32(down) << 16))
    var high = Double(Float(bitPattern: UInt32(up) << 16))
    // Infinity sits where the next binade would start, 2^128, for the purpose of rounding.
    if high.isInfinite { high = low.sign == .minus ? -0x1p128 : 0x1p128 }
    let exact = Double(value)
    let distanceDown = abs(exact - low), distanceUp = abs(high - exact)
    if distanceUp < distanceDown || (distanceUp == distanceDown && up & 1 == 0) { return up }
    return down
  }
}

/// SplitMix64, for test inputs.
struct SplitMix {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
