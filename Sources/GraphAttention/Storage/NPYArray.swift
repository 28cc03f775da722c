#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// `NPYArray.bytes` is documented as little-endian and is reinterpreted in place, which is only
// right on a little-endian machine (x86_64, arm64).
#if _endian(big)
#error("GraphAttention's .npy storage assumes a little-endian machine")
#endif

/// Element types of `.npy` files that GraphAttention reads.
///
/// The raw value is the numpy `descr` string written by `np.save` on a little-endian machine.
/// When reading, the byte-order marks `'='` and `'|'` are treated as `'<'` (native is little-endian),
/// and single-byte types accept any byte-order mark.
public enum NPYElementType: String, Sendable, CaseIterable {
  /// IEEE 754 binary16 (`np.float16`).
  case float16 = "<f2"
  /// IEEE 754 binary32 (`np.float32`).
  case float32 = "<f4"
  /// IEEE 754 binary64 (`np.float64`).
  case float64 = "<f8"
  /// Signed 32-bit integer (`np.int32`).
  case int32 = "<i4"
  /// Signed 64-bit integer (`np.int64`).
  case int64 = "<i8"
  /// Unsigned 32-bit integer (`np.uint32`).
  case uint32 = "<u4"
  /// Unsigned 64-bit integer (`np.uint64`).
  case uint64 = "<u8"
  /// Boolean stored as one byte, 0 or 1 (`np.bool_`).
  case bool = "|b1"
  /// Signed 8-bit integer (`np.int8`).
  case int8 = "|i1"
  /// Unsigned 8-bit integer (`np.uint8`).
  case uint8 = "|u1"
  /// Signed 16-bit integer (`np.int16`).
  case int16 = "<i2"
  /// Unsigned 16-bit integer (`np.uint16`).
  case uint16 = "<u2"

  /// Size of one element in bytes.
  public var byteCount: Int {
    switch self {
    case .bool, .int8, .uint8: return 1
    case .float16, .int16, .uint16: return 2
    case .float32, .int32, .uint32: return 4
    case .float64, .int64, .uint64: return 8
    }
  }

  /// Whether the elements are IEEE floating-point numbers (`float16`, `float32`, `float64`).
  public var isFloatingPoint: Bool {
    switch self {
    case .float16, .float32, .float64: return true
    default: return false
    }
  }

  /// numpy's kind letter and size, without byte order ("f4", "u1").
  var kindAndSize: Substring { rawValue.dropFirst() }
}

/// A whole `.npy` array held in memory: shape, element type and raw little-endian bytes in C order.
///
/// ```swift
/// let q = try NPYArray(contentsOf: "q.npy")
/// let values = try q.floats(name: "--q")   // [Float], C order, q.count elements
/// ```
public struct NPYArray: Sendable {
  /// Extent of each dimension, outermost first; `[]` for a 0-dimensional (scalar) array.
  public var shape: [Int]
  /// Type of every element.
  public var elementType: NPYElementType
  /// The elements in C (row-major) order, little-endian, exactly `count * elementType.byteCount` bytes.
  public var bytes: [UInt8]

  /// Number of elements: the product of `shape`, 1 for shape `[]`, 0 if any extent is 0.
  public var count: Int {
    shape.reduce(1, *)
  }

  /// Creates an array from its parts.
  ///
  /// - Precondition: every extent is non-negative, their product does not overflow `Int`, and
  ///   `bytes.count == count * elementType.byteCount`.
  public init(shape: [Int], elementType: NPYElementType, bytes: [UInt8]) {
    let elements = npyElementCount(shape)
    precondition(elements != nil, "NPYArray: shape \(shape) has a negative extent or overflows Int")
    let (byteTotal, overflow) = (elements ?? 0).multipliedReportingOverflow(by: elementType.byteCount)
    precondition(!overflow && byteTotal == bytes.count,
                 "NPYArray: \(bytes.count) bytes do not hold shape \(shape) of \(elementType.rawValue)")
    self.shape = shape
    self.elementType = elementType
    self.bytes = bytes
  }

  /// Reads a `.npy` file (format versions 1.0, 2.0 and 3.0).
  ///
  /// Bytes after the data section are ignored, as `np.load` does. Any malformed, truncated or
  /// unsupported file is reported as a thrown error, never a trap.
  ///
  /// - Parameter path: the file to read; pipes and character devices work too.
  /// - Throws: `GraphAttentionError` of kind `.file` when the file cannot be opened or read or is not
  ///   a valid C-order `.npy` file of a plain numeric type (the problem names `path`), and of kind
  ///   `.dtype` for big-endian or unsupported element types.
  /// - Complexity: O(file size); the data section is read straight into `bytes` without a second copy.
  public init(contentsOf path: String) throws {
    var file = try StorageFileReader(path: path)
    let prefix = try file.readBytes(upTo: 12)
    let preamble = try NPYPreamble(prefix, path: path)
    let headerStart = preamble.headerStart, headerLength = preamble.headerLength
    if let size = file.regularFileSize, size < headerStart + headerLength {
      throw npyTruncatedHeader(path)
    }
    var header = Array(prefix[headerStart...])
    if header.count > headerLength {
      header.removeLast(header.count - headerLength)
    } else {
      header += try file.readBytes(upTo: headerLength - header.count)
      guard header.count == headerLength else { throw npyTruncatedHeader(path) }
    }
    var parser = NPYHeaderParser(bytes: header, path: path)
    let fields = try parser.parse()

    let needed = try fields.dataByteCount(path: path)
    let dataStart = headerStart + headerLength
    if let size = file.regularFileSize, size - dataStart < needed {
      throw npyShortData(path, fields, needed: needed, found: max(0, size - dataStart))
    }
    let data = try file.readBytes(upTo: needed)
    guard data.count == needed else {
      throw npyShortData(path, fields, needed: needed, found: data.count)
    }
    self.shape = fields.shape
    self.elementType = fields.elementType
    self.bytes = data
  }

  /// The elements converted to `Float`, in C order.
  ///
  /// `float16` converts exactly, `float32` is copied, and `float64` is rounded to nearest.
  ///
  /// - Parameter name: how the caller refers to this array in messages (an option name such as
  ///   `"--q"`); the error carries no path because an `NPYArray` does not know where it came from.
  /// - Throws: `GraphAttentionError(.dtype)` if the element type is not floating-point.
  /// - Complexity: O(`count`), branch-free loops over raw memory.
  public func floats(name: String) throws -> [Float] {
    let n = count
    switch elementType {
    case .float32:
      return [Float](unsafeUninitializedCapacity: n) { out, initialized in
        bytes.withUnsafeBytes { raw in
          if n > 0, let dst = out.baseAddress, let src = raw.baseAddress {
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: n * 4)
          }
        }
        initialized = n
      }
    case .float16:
      return [Float](unsafeUninitializedCapacity: n) { out, initialized in
        bytes.withUnsafeBytes { raw in
          if n > 0, let dst = out.baseAddress, let src = raw.baseAddress {
            StorageKernels.convert(src, type: .float16, count: n, to: dst, portable: false)
          }
        }
        initialized = n
      }
    case .float64:
      return [Float](unsafeUninitializedCapacity: n) { out, initialized in
        bytes.withUnsafeBytes { raw in
          if n > 0, let dst = out.baseAddress, let src = raw.baseAddress {
            for i in 0..<n {
              dst[i] = Float(src.loadUnaligned(fromByteOffset: i &* 8, as: Double.self))
            }
          }
        }
        initialized = n
      }
    default:
      throw GraphAttentionError(
        .dtype, "\(name) has element type '\(elementType.rawValue)', which is not floating-point, but floating-point values are needed",
        fix: "save it as floats, e.g. np.save(path, a.astype('<f4'))")
    }
  }

  /// The elements converted to `Int64`, in C order, for integer (and boolean) arrays.
  ///
  /// - Parameter name: how the caller refers to this array in messages, e.g. `"--rows"`.
  /// - Throws: `GraphAttentionError(.dtype)` for floating-point arrays, and
  ///   `GraphAttentionError(.index)` if a `uint64` element exceeds `Int64.max`.
  /// - Complexity: O(`count`).
  public func integers(name: String) throws -> [Int64] {
    let n = count
    switch elementType {
    case .float16, .float32, .float64:
      throw GraphAttentionError(
        .dtype, "\(name) has floating-point element type '\(elementType.rawValue)', but integers are needed",
        fix: "save it as integers, e.g. np.save(path, a.astype('<i8'))")
    case .uint64:
      var tooLarge: (position: Int, value: UInt64)?
      let result = [Int64](unsafeUninitializedCapacity: n) { out, initialized in
        bytes.withUnsafeBytes { raw in
          guard n > 0, let dst = out.baseAddress, let src = raw.baseAddress else { return }
          var highBits: UInt64 = 0
          for i in 0..<n {
            let v = src.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self)
            highBits |= v
            dst[i] = Int64(bitPattern: v)
          }
          // Checked once after the loop so the loop stays branch-free and vectorizable.
          if highBits > UInt64(Int64.max) {
            for i in 0..<n where dst[i] < 0 {
              tooLarge = (i, UInt64(bitPattern: dst[i]))
              break
            }
          }
        }
        initialized = n
      }
      if let bad = tooLarge {
        throw GraphAttentionError(
          .index, "\(name) holds \(bad.value) at flat position \(bad.position), larger than the largest supported index \(Int64.max)",
          fix: "indices must be below 2^63; check how the array was built")
      }
      return result
    case .int64: return npyWidenIntegers(bytes, count: n, as: Int64.self)
    case .int32: return npyWidenIntegers(bytes, count: n, as: Int32.self)
    case .uint32: return npyWidenIntegers(bytes, count: n, as: UInt32.self)
    case .int16: return npyWidenIntegers(bytes, count: n, as: Int16.self)
    case .uint16: return npyWidenIntegers(bytes, count: n, as: UInt16.self)
    case .int8: return npyWidenIntegers(bytes, count: n, as: Int8.self)
    case .uint8, .bool: return npyWidenIntegers(bytes, count: n, as: UInt8.self)
    }
  }
}

// MARK: - Conversions

/// Loads `count` little-endian values of `T` from `bytes` and widens them to `Int64`.
private func npyWidenIntegers<T: FixedWidthInteger>(_ bytes: [UInt8], count n: Int, as _: T.Type) -> [Int64] {
  [Int64](unsafeUninitializedCapacity: n) { out, initialized in
    bytes.withUnsafeBytes { raw in
      if n > 0, let dst = out.baseAddress, let src = raw.baseAddress {
        for i in 0..<n {
          dst[i] = Int64(truncatingIfNeeded: src.loadUnaligned(fromByteOffset: i &* MemoryLayout<T>.size, as: T.self))
        }
      }
    }
    initialized = n
  }
}

// MARK: - Header

/// The fixed start of a `.npy` file: magic string, format version and header length, parsed once for
/// both readers (`NPYArray` and the memory-mapped `TensorFile`).
struct NPYPreamble {
  /// Offset of the header dictionary: 10 for version 1.0, 12 for 2.0 and 3.0.
  var headerStart: Int
  /// Length of the header dictionary in bytes (padding included).
  var headerLength: Int
  /// Offset of the first element.
  var dataStart: Int { headerStart + headerLength }

  /// Real headers are under a kilobyte; a larger claim is a corrupt file, refused before allocating.
  static let maximumHeaderLength = 1 << 24

  /// Parses the first bytes of a file (at least 12 when the file has them).
  /// - Throws: `GraphAttentionError(.file)` when the magic string is missing, the file ends inside the
  ///   preamble, the version is not 1.0, 2.0 or 3.0, or the header length is implausible.
  init(_ prefix: some RandomAccessCollection<UInt8>, path: String) throws {
    let bytes = Array(prefix.prefix(12))
    let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // "\x93NUMPY"
    guard bytes.count >= 6, Array(bytes[0..<6]) == magic else {
      throw GraphAttentionError(
        .file, "\(path) is not a .npy file (it does not start with the magic string \\x93NUMPY)",
        fix: "pass a file written by numpy's np.save, e.g. np.save(path, a.astype('<f4'))")
    }
    guard bytes.count >= 10 else { throw npyTruncatedHeader(path) }
    let major = bytes[6], minor = bytes[7]
    switch (major, minor) {
    case (1, 0):
      headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
      headerStart = 10
    case (2, 0), (3, 0):
      guard bytes.count >= 12 else { throw npyTruncatedHeader(path) }
      headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
      headerStart = 12
    default:
      throw GraphAttentionError(
        .file, "\(path) uses .npy format version \(major).\(minor); only 1.0, 2.0 and 3.0 are supported",
        fix: "re-save the array with numpy's np.save")
    }
    guard headerLength <= Self.maximumHeaderLength else {
      throw GraphAttentionError(
        .file, "\(path) declares a .npy header of \(headerLength) bytes, which is not plausible",
        fix: "the file is corrupt; re-create it with np.save")
    }
  }
}

/// The three fields of a `.npy` header that GraphAttention uses.
struct NPYHeaderFields {
  var elementType: NPYElementType
  var shape: [Int]

  /// Bytes of data the shape and type need.
  /// - Throws: `GraphAttentionError(.file)` when a count overflows 64 bits (a corrupt header).
  func dataByteCount(path: String) throws -> Int {
    guard let count = npyElementCount(shape),
          case let (needed, false) = count.multipliedReportingOverflow(by: elementType.byteCount) else {
      throw GraphAttentionError(.file, "\(path) has shape \(npyShapeText(shape)), whose byte size overflows a 64-bit integer",
                                fix: "the header is corrupt; re-create the file with np.save")
    }
    return needed
  }
}

/// Product of the extents, or nil if one is negative or the product overflows `Int`.
func npyElementCount(_ shape: [Int]) -> Int? {
  var total = 1
  for extent in shape {
    guard extent >= 0 else { return nil }
    let (product, overflow) = total.multipliedReportingOverflow(by: extent)
    guard !overflow else { return nil }
    total = product
  }
  return total
}

/// A shape as numpy prints it: `()`, `(5,)`, `(2, 3)`.
func npyShapeText(_ shape: [Int]) -> String {
  shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
}

func npyTruncatedHeader(_ path: String) -> GraphAttentionError {
  GraphAttentionError(.file, "\(path) is truncated: the file ends inside its .npy header",
                      fix: "the file is incomplete; re-create it with np.save")
}

private func npyShortData(_ path: String, _ fields: NPYHeaderFields, needed: Int, found: Int) -> GraphAttentionError {
  GraphAttentionError(
    .file, "\(path) is truncated: shape \(npyShapeText(fields.shape)) of '\(fields.elementType.rawValue)' needs \(needed) bytes of data, but only \(found) bytes follow the header",
    fix: "the file is incomplete; re-create it with np.save")
}

/// Parses the header of a `.npy` file: a Python dict literal with the keys `'descr'`,
/// `'fortran_order'` and `'shape'`, in any order, with single- or double-quoted strings and an
/// optional trailing comma, followed by padding whitespace.
struct NPYHeaderParser {
  let bytes: [UInt8]
  let path: String
  var position = 0

  init(bytes: [UInt8], path: String) {
    self.bytes = bytes
    self.path = path
  }

  private enum Value {
    case string(String)
    case bool(Bool)
    case tuple([Int])
  }

  mutating func parse() throws -> NPYHeaderFields {
    var descr: String?
    var fortranOrder: Bool?
    var shape: [Int]?
    skipWhitespace()
    try expect(UInt8(ascii: "{"), "the header does not start with '{'")
    entries: while true {
      skipWhitespace()
      if peek() == UInt8(ascii: "}") {
        position += 1
        break entries
      }
      let key = try parseString()
      skipWhitespace()
      try expect(UInt8(ascii: ":"), "expected ':' after key '\(key)'")
      skipWhitespace()
      switch key {
      case "descr":
        if peek() == UInt8(ascii: "[") {
          throw GraphAttentionError(
            .file, "\(path) holds a structured (record) array, which GraphAttention cannot use",
            fix: "save a plain numeric array, e.g. np.save(path, a['field'].astype('<f4'))")
        }
        guard descr == nil else { throw malformed("key 'descr' appears twice") }
        guard case .string(let text) = try parseValue() else { throw malformed("'descr' is not a string") }
        descr = text
      case "fortran_order":
        guard fortranOrder == nil else { throw malformed("key 'fortran_order' appears twice") }
        guard case .bool(let flag) = try parseValue() else { throw malformed("'fortran_order' is not True or False") }
        fortranOrder = flag
      case "shape":
        guard shape == nil else { throw malformed("key 'shape' appears twice") }
        guard case .tuple(let extents) = try parseValue() else { throw malformed("'shape' is not a tuple of integers") }
        shape = extents
      default:
        throw malformed("unexpected key '\(key)' (a .npy header has exactly 'descr', 'fortran_order' and 'shape')")
      }
      skipWhitespace()
      switch peek() {
      case UInt8(ascii: ","): position += 1
      case UInt8(ascii: "}"): position += 1; break entries
      default: throw malformed("expected ',' or '}' after the value of '\(key)'")
      }
    }
    skipWhitespace()
    guard position == bytes.count else { throw malformed("unexpected text after the closing '}'") }
    guard let descr, let fortranOrder, let shape else {
      let missing = [("descr", descr == nil), ("fortran_order", fortranOrder == nil), ("shape", shape == nil)]
        .filter(\.1).map { "'\($0.0)'" }.joined(separator: ", ")
      throw malformed("missing key \(missing)")
    }
    if let negative = shape.first(where: { $0 < 0 }) {
      throw GraphAttentionError(
        .file, "\(path) has shape \(npyShapeText(shape)) with negative extent \(negative)",
        fix: "the header is corrupt; re-create the file with np.save")
    }
    let elementType = try elementType(from: descr)
    if fortranOrder {
      throw GraphAttentionError(
        .file, "\(path) stores its array in Fortran (column-major) order ('fortran_order': True); GraphAttention reads C order only",
        fix: "re-save it in C order: np.save(path, np.ascontiguousarray(a))")
    }
    return NPYHeaderFields(elementType: elementType, shape: shape)
  }

  /// Maps a numpy type string to a supported element type, explaining why others are refused.
  private func elementType(from descr: String) throws -> NPYElementType {
    let order = descr.first
    let code = descr.dropFirst()
    let known = NPYElementType.allCases.first { $0.kindAndSize == code }
    if descr == "O" || descr == "|O" || descr == "<O" || descr == ">O" || descr == "=O" {
      throw GraphAttentionError(
        .file, "\(path) holds an object array (dtype '\(descr)'), which is not numeric data",
        fix: "save a numeric array, e.g. np.save(path, np.asarray(a, dtype='<f4'))")
    }
    if let order, order == "|" || order == "<" || order == ">" || order == "=", code.first == "V" {
      throw GraphAttentionError(
        .file, "\(path) holds a structured or raw-bytes array (dtype '\(descr)'), which GraphAttention cannot use",
        fix: "save a plain numeric array, e.g. np.save(path, a.astype('<f4'))")
    }
    if code.first == "c" {
      throw GraphAttentionError(
        .dtype, "\(path) holds complex numbers (dtype '\(descr)'); attention needs real values",
        fix: "save the real part (or whichever real values are meant), e.g. np.save(path, a.real.astype('<f4'))")
    }
    guard let known, let order, order == "<" || order == "=" || order == "|" || order == ">" else {
      throw GraphAttentionError(
        .dtype, "\(path) has element type '\(descr)', which is not supported",
        fix: "save it as float16, float32 or float64 values (or integers for index files), e.g. np.save(path, a.astype('<f4'))")
    }
    if order == ">" && known.byteCount > 1 {
      throw GraphAttentionError(
        .dtype, "\(path) is big-endian (dtype '\(descr)'); GraphAttention reads little-endian data only",
        fix: "re-save it little-endian: np.save(path, a.astype('\(known.rawValue)'))")
    }
    return known
  }

  private func malformed(_ what: String) -> GraphAttentionError {
    GraphAttentionError(
      .file, "\(path) has a malformed .npy header (not a Python dict literal as np.save writes): \(what)",
      fix: "the file is corrupt or was not written by numpy; re-create it with np.save")
  }

  private func peek() -> UInt8? {
    position < bytes.count ? bytes[position] : nil
  }

  private mutating func skipWhitespace() {
    while let b = peek(), b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 || b == 0x0C || b == 0x0B {
      position += 1
    }
  }

  private mutating func expect(_ byte: UInt8, _ what: String) throws {
    guard peek() == byte else { throw malformed(what) }
    position += 1
  }

  private mutating func parseValue() throws -> Value {
    switch peek() {
    case UInt8(ascii: "'"), UInt8(ascii: "\""):
      return .string(try parseString())
    case UInt8(ascii: "("):
      return .tuple(try parseTuple())
    case UInt8(ascii: "T"), UInt8(ascii: "F"):
      if matchWord("True") { return .bool(true) }
      if matchWord("False") { return .bool(false) }
      throw malformed("unexpected word at byte \(position)")
    default:
      throw malformed("unexpected character at byte \(position)")
    }
  }

  private mutating func matchWord(_ word: String) -> Bool {
    let utf8 = Array(word.utf8)
    guard position + utf8.count <= bytes.count, Array(bytes[position..<(position + utf8.count)]) == utf8 else {
      return false
    }
    let after = position + utf8.count
    if after < bytes.count, npyIsIdentifierByte(bytes[after]) { return false }
    position = after
    return true
  }

  /// A quoted string; backslash escapes are kept verbatim after the backslash, which is enough
  /// for the plain ASCII type strings and keys numpy writes.
  private mutating func parseString() throws -> String {
    guard let quote = peek(), quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\"") else {
      throw malformed("expected a quoted key at byte \(position)")
    }
    position += 1
    var text: [UInt8] = []
    while let b = peek() {
      position += 1
      if b == quote { return String(decoding: text, as: UTF8.self) }
      if b == UInt8(ascii: "\\") {
        guard let escaped = peek() else { break }
        position += 1
        text.append(escaped)
      } else if b == 0x0A {
        break
      } else {
        text.append(b)
      }
    }
    throw malformed("unterminated string")
  }

  /// `()`, `(5,)`, `(2, 3)`; Python 2 long suffixes (`3L`) as older numpy wrote are accepted.
  private mutating func parseTuple() throws -> [Int] {
    position += 1  // "("
    var extents: [Int] = []
    while true {
      skipWhitespace()
      if peek() == UInt8(ascii: ")") {
        position += 1
        // `(5)` is an int in Python, not a tuple.
        return extents
      }
      extents.append(try parseInteger())
      skipWhitespace()
      switch peek() {
      case UInt8(ascii: ","):
        position += 1
      case UInt8(ascii: ")"):
        guard extents.count != 1 else { throw malformed("'shape' is (n) without a comma, which is not a tuple") }
        position += 1
        return extents
      default:
        throw malformed("expected ',' or ')' in 'shape'")
      }
    }
  }

  private mutating func parseInteger() throws -> Int {
    var negative = false
    if peek() == UInt8(ascii: "-") || peek() == UInt8(ascii: "+") {
      negative = peek() == UInt8(ascii: "-")
      position += 1
    }
    var value = 0
    var digits = 0
    while let b = peek(), b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") {
      let (shifted, o1) = value.multipliedReportingOverflow(by: 10)
      let (added, o2) = shifted.addingReportingOverflow(Int(b - UInt8(ascii: "0")))
      if o1 || o2 {
        throw GraphAttentionError(
          .file, "\(path) has a shape entry that does not fit in a 64-bit integer",
          fix: "the header is corrupt; re-create the file with np.save")
      }
      value = added
      digits += 1
      position += 1
    }
    guard digits > 0 else { throw malformed("'shape' holds something other than integers") }
    if peek() == UInt8(ascii: "L") || peek() == UInt8(ascii: "l") { position += 1 }
    return negative ? -value : value
  }
}

private func npyIsIdentifierByte(_ b: UInt8) -> Bool {
  (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
    || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "_")
}

// MARK: - POSIX file reading

/// Advice for the usual reasons `open` fails on an input file.
private func storageOpenFix(_ code: Errno) -> String {
  switch code {
  case .noSuchFileOrDirectory, .notDirectory: return "check the path; no file exists there"
  case .permissionDenied, .notPermitted: return "make the file readable (chmod +r) or run as a user who can read it"
  case .isDirectory: return "pass a file, not a directory"
  default: return "check that the file exists and is readable"
  }
}

/// A file opened read-only with POSIX calls, so failures carry `errno`, read in large chunks.
///
/// Shared by the `.npy` and Matrix Market readers. Closes the descriptor when it goes out of scope.
struct StorageFileReader: ~Copyable {
  let path: String
  private let descriptor: Int32
  /// Bytes in the file when it is a regular file, nil for pipes and devices.
  let regularFileSize: Int?
  private var offset = 0

  init(path: String) throws {
    let fd: Int32
    switch valueOrErrno({ open(path, O_RDONLY | O_CLOEXEC) }) {
    case .success(let opened): fd = opened
    case .failure(let code):
      throw GraphAttentionError(.file, "cannot open \(path): \(code)", fix: storageOpenFix(code), errno: code)
    }
    var info = stat()
    if case .failure(let code) = nothingOrErrno({ fstat(fd, &info) }) {
      close(fd)
      throw GraphAttentionError(.file, "cannot inspect \(path): \(code)", fix: storageOpenFix(code), errno: code)
    }
    if info.st_mode & S_IFMT == S_IFDIR {
      close(fd)
      throw GraphAttentionError(.file, "cannot read \(path): \(Errno.isDirectory)", fix: storageOpenFix(.isDirectory), errno: .isDirectory)
    }
    self.path = path
    self.descriptor = fd
    self.regularFileSize = info.st_mode & S_IFMT == S_IFREG ? Int(info.st_size) : nil
  }

  deinit {
    close(descriptor)
  }

  /// Fills `buffer` from the current offset until it is full or the file ends; returns bytes read.
  private mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
    guard let base = buffer.baseAddress else { return 0 }
    let descriptor = self.descriptor
    let filled: Int
    switch transferAll(buffer.count, { done, chunk in read(descriptor, base + done, chunk) }) {
    case .success(let count): filled = count
    case .failure(let code):
      throw GraphAttentionError(.file, "cannot read \(path): \(code)",
                                fix: "check that the file is readable and the device is healthy", errno: code)
    }
    offset += filled
    return filled
  }

  /// Reads up to `limit` bytes; fewer only if the file ends first.
  ///
  /// Regular files are read straight into an exactly-sized array, up to the size `fstat` reported
  /// at open (bytes appended later are not seen); other files grow the array in chunks so that a
  /// bogus `limit` from a corrupt header cannot force a huge allocation.
  mutating func readBytes(upTo limit: Int) throws -> [UInt8] {
    if let size = regularFileSize {
      let wanted = max(0, min(limit, size - offset))
      return try [UInt8](unsafeUninitializedCapacity: wanted) { buffer, initialized in
        initialized = try fill(UnsafeMutableRawBufferPointer(buffer))
      }
    }
    return try readChunked(upTo: limit)
  }

  private mutating func readChunked(upTo limit: Int) throws -> [UInt8] {
    var result: [UInt8] = []
    var chunk = 1 << 16
    while result.count < limit {
      let want = min(chunk, limit - result.count)
      let start = result.count
      result.append(contentsOf: repeatElement(0, count: want))
      let got = try result.withUnsafeMutableBytes { raw in
        try fill(UnsafeMutableRawBufferPointer(rebasing: raw[start...]))
      }
      if got < want {
        result.removeLast(want - got)
        break
      }
      chunk = min(chunk * 2, 1 << 26)
    }
    return result
  }
}
