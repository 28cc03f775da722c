/// Writes NumPy `.npy` files byte-for-byte as `np.save` does, atomically.
///
/// Files use format version 1.0 (2.0 only if the header would exceed 65535 bytes), C order and
/// little-endian data. Each file is written through `AtomicFile`, so an interrupted or failed write
/// never leaves a truncated `.npy` behind.
///
/// ```swift
/// try NPYWriter.write(output, shape: [heads, rows, dim], to: "out.npy")
/// // np.load("out.npy").shape == (heads, rows, dim), dtype float32
/// ```
public enum NPYWriter {
  /// Writes `float32` values (`'<f4'`) with the given C-order shape.
  ///
  /// - Parameters:
  ///   - values: the elements in C (row-major) order.
  ///   - shape: extents, outermost first; `[]` writes a 0-dimensional array holding one value.
  ///   - path: the destination; its directory must exist.
  /// - Precondition: every extent is non-negative and their product equals `values.count`.
  /// - Throws: `GraphAttentionError(.file)` if the file cannot be written; an existing file at
  ///   `path` is then left unchanged.
  /// - Complexity: O(`values.count`); the values are written without an intermediate copy.
  public static func write(_ values: UnsafeBufferPointer<Float>, shape: [Int], to path: String) throws {
    try write(UnsafeRawBufferPointer(values), count: values.count, descr: NPYElementType.float32.rawValue,
              shape: shape, to: path)
  }

  /// Writes `float32` values (`'<f4'`) with the given C-order shape.
  ///
  /// - Precondition: every extent is non-negative and their product equals `values.count`.
  /// - Throws: `GraphAttentionError(.file)` if the file cannot be written.
  /// - Complexity: O(`values.count`).
  public static func write(_ values: [Float], shape: [Int], to path: String) throws {
    try values.withUnsafeBufferPointer { try write($0, shape: shape, to: path) }
  }

  #if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
  /// Writes `float16` values (`'<f2'`) with the given C-order shape.
  ///
  /// - Precondition: every extent is non-negative and their product equals `values.count`.
  /// - Throws: `GraphAttentionError(.file)` if the file cannot be written.
  /// - Complexity: O(`values.count`).
  public static func write(_ values: [Float16], shape: [Int], to path: String) throws {
    try values.withUnsafeBytes {
      try write($0, count: values.count, descr: NPYElementType.float16.rawValue, shape: shape, to: path)
    }
  }
  #endif

  /// Writes signed 64-bit integers (`'<i8'`), as used for CSR/COO index files.
  ///
  /// - Precondition: every extent is non-negative and their product equals `values.count`.
  /// - Throws: `GraphAttentionError(.file)` if the file cannot be written.
  /// - Complexity: O(`values.count`).
  public static func write(_ values: [Int64], shape: [Int], to path: String) throws {
    try values.withUnsafeBytes {
      try write($0, count: values.count, descr: NPYElementType.int64.rawValue, shape: shape, to: path)
    }
  }

  // MARK: - Implementation

  private static func write(_ data: UnsafeRawBufferPointer, count: Int, descr: String, shape: [Int],
                            to path: String) throws {
    let elements = npyElementCount(shape)
    precondition(elements == count, "NPYWriter: shape \(shape) does not describe \(count) values")
    let header = npyHeader(descr: descr, shape: shape)
    try AtomicFile.write(to: path) { sink in
      try header.withUnsafeBytes { try sink.write($0) }
      try sink.write(data)
    }
  }
}

/// The complete preamble np.save writes: magic, version, header length, then the dict padded with
/// spaces (including numpy's spare room to grow the first axis in place) and a final newline so the
/// data starts at a multiple of 64 bytes.
func npyHeader(descr: String, shape: [Int]) -> [UInt8] {
  var dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(npyShapeText(shape)), }"
  if let first = shape.first {
    // numpy's GROWTH_AXIS_MAX_DIGITS (21) minus the digits of the first extent.
    dict += String(repeating: " ", count: max(0, 21 - String(first).utf8.count))
  }
  let text = Array(dict.utf8)
  for (version, lengthBytes) in [(UInt8(1), 2), (UInt8(2), 4)] {
    let prefixCount = 8 + lengthBytes
    let unpadded = text.count + 1  // + "\n"
    let padding = 64 - (prefixCount + unpadded) % 64
    let headerLength = unpadded + padding
    if lengthBytes == 2 && headerLength > Int(UInt16.max) { continue }
    var bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0]
    for i in 0..<lengthBytes {
      bytes.append(UInt8(truncatingIfNeeded: headerLength >> (8 * i)))
    }
    bytes += text
    bytes += repeatElement(UInt8(ascii: " "), count: padding)
    bytes.append(UInt8(ascii: "\n"))
    return bytes
  }
  preconditionFailure("NPYWriter: a header longer than 4 GiB is impossible for a shape of \(shape.count) extents")
}
