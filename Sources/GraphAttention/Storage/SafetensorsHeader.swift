/// The header of a `.safetensors` file: parsing with full validation, and encoding.
///
/// ## Format
/// 8 bytes: the header length `N`, unsigned little-endian; `N` bytes: a UTF-8 JSON object mapping
/// each tensor name to `{"dtype": "F16", "shape": [2, 3], "data_offsets": [begin, end]}`, plus an
/// optional `"__metadata__"` object of string values; then the data. Offsets count from the first
/// byte after the header. The header may end in spaces; this writer pads it so the data starts at a
/// multiple of 64 bytes, and lays tensors out back to back in the order given (no holes, as the
/// reference implementation requires).
///
/// The JSON is parsed by a small strict parser here rather than Foundation's `JSONSerialization`:
/// the library does not otherwise depend on Foundation, and integers must stay exact 64-bit values
/// (distinct from booleans and floats), which `NSNumber` does not guarantee.
struct SafetensorsHeader {
  /// One tensor's entry, validated: `end - begin` is its byte size when the dtype is known.
  struct Entry {
    var name: String
    var dtype: String
    var shape: [Int]
    /// Offsets from the start of the data section.
    var begin: Int
    var end: Int
  }

  /// The tensors, sorted by `begin`.
  var entries: [Entry]
  /// Absolute offset of the data section: `8 + N`.
  var dataStart: Int

  /// Byte sizes of the dtypes the format defines.
  static let dtypeSizes: [String: Int] = [
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
  ]

  /// Headers above this size are refused (the reference implementation's limit is 100 MB).
  static let maximumHeaderLength = 100_000_000

  /// Parses and validates the header of the file whose bytes are `file`.
  ///
  /// - Throws: `GraphAttentionError(.file)` naming `path` for a truncated file, an implausible header
  ///   length, malformed JSON, missing or mistyped fields, offsets outside the file, or a byte range
  ///   that does not match the shape and dtype.
  static func parse(_ file: UnsafeRawBufferPointer, path: String) throws -> SafetensorsHeader {
    guard file.count >= 8 else {
      throw malformed(path, "the file has \(file.count) bytes, fewer than the 8-byte header length")
    }
    let declared = file.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
    guard declared <= UInt64(maximumHeaderLength) else {
      throw malformed(path, "it declares a header of \(declared) bytes, more than the 100 MB allowed")
    }
    let length = Int(declared)
    guard length <= file.count - 8 else {
      throw GraphAttentionError(
        .file, "\(path) is truncated: its safetensors header needs \(length) bytes but only \(file.count - 8) follow the length field",
        fix: "the file is incomplete; write it again")
    }
    let bytes = [UInt8](UnsafeRawBufferPointer(rebasing: file[8..<(8 + length)]))
    var parser = JSONParser(bytes: bytes)
    let root: JSONValue
    do {
      root = try parser.parseDocument()
    } catch let error as JSONParser.Failure {
      throw malformed(path, "its header is not valid JSON: \(error.message)")
    }
    guard case .object(let members) = root else {
      throw malformed(path, "its header is not a JSON object")
    }
    let dataLength = file.count - 8 - length
    var entries: [Entry] = []
    var seen = Set<String>()
    for (name, value) in members {
      guard seen.insert(name).inserted else { throw malformed(path, "the name '\(name)' appears twice") }
      if name == "__metadata__" {
        guard case .object(let metadata) = value else { throw malformed(path, "'__metadata__' is not an object") }
        for (key, item) in metadata {
          guard case .string = item else { throw malformed(path, "__metadata__ '\(key)' is not a string") }
        }
        continue
      }
      guard case .object(let fields) = value else { throw malformed(path, "tensor '\(name)' is not an object") }
      var dtype: String?, shape: [Int]?, offsets: [Int]?
      for (key, field) in fields {
        switch key {
        case "dtype":
          guard case .string(let text) = field else { throw malformed(path, "the dtype of '\(name)' is not a string") }
          dtype = text
        case "shape":
          guard let extents = integers(field) else {
            throw malformed(path, "the shape of '\(name)' is not a list of non-negative integers")
          }
          shape = extents
        case "data_offsets":
          guard let pair = integers(field), pair.count == 2 else {
            throw malformed(path, "the data_offsets of '\(name)' are not two non-negative integers")
          }
          offsets = pair
        default:
          continue  // unknown fields are ignored, as the reference implementation does
        }
      }
      guard let dtype, let shape, let offsets else {
        let missing = [("dtype", dtype == nil), ("shape", shape == nil), ("data_offsets", offsets == nil)]
          .filter(\.1).map(\.0).joined(separator: ", ")
        throw malformed(path, "tensor '\(name)' lacks \(missing)")
      }
      let (begin, end) = (offsets[0], offsets[1])
      guard begin <= end, end <= dataLength else {
        throw GraphAttentionError(
          .file, "\(path): tensor '\(name)' has data_offsets [\(begin), \(end)] outside the \(dataLength) data bytes of the file",
          fix: "the file is truncated or corrupt; write it again")
      }
      if let size = dtypeSizes[dtype] {
        guard let count = npyElementCount(shape), case let (bytes, false) = count.multipliedReportingOverflow(by: size) else {
          throw malformed(path, "the shape \(shape) of '\(name)' overflows a 64-bit byte count")
        }
        guard end - begin == bytes else {
          throw GraphAttentionError(
            .file, "\(path): tensor '\(name)' of shape \(shape) and dtype \(dtype) needs \(bytes) bytes, but its data_offsets [\(begin), \(end)] span \(end - begin)",
            fix: "the file is corrupt; write it again")
        }
      }
      entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
    }
    entries.sort { ($0.begin, $0.name) < ($1.begin, $1.name) }
    return SafetensorsHeader(entries: entries, dataStart: 8 + length)
  }

  /// The bytes of a header (length field included) for `tensors` laid out back to back, padded with
  /// spaces so the data starts at a multiple of 64; and each tensor's absolute data offset.
  static func encode(_ tensors: [(name: String, shape: [Int], type: StorageType)],
                     metadata: [(String, String)] = [("format", "pt")]) -> (bytes: [UInt8], offsets: [Int]) {
    var json = "{\"__metadata__\":{"
    json += metadata.map { "\(JSONText.quoted($0.0)):\(JSONText.quoted($0.1))" }.joined(separator: ",")
    json += "}"
    var position = 0
    var relative: [Int] = []
    for tensor in tensors {
      let bytes = storageCheckedCount(tensor.shape, tensor.type) * tensor.type.byteCount
      json += ",\(JSONText.quoted(tensor.name)):{\"dtype\":\"\(tensor.type.safetensorsName)\",\"shape\":["
      json += tensor.shape.map(String.init).joined(separator: ",")
      json += "],\"data_offsets\":[\(position),\(position + bytes)]}"
      relative.append(position)
      position += bytes
    }
    json += "}"
    var header = Array(json.utf8)
    header += repeatElement(UInt8(ascii: " "), count: (64 - (8 + header.count) % 64) % 64)
    var bytes = (0..<8).map { UInt8(truncatingIfNeeded: UInt64(header.count) >> (8 * $0)) }
    bytes += header
    return (bytes, relative.map { $0 + bytes.count })
  }

  /// The non-negative integers of a JSON array, or nil if it is not such an array.
  private static func integers(_ value: JSONValue) -> [Int]? {
    guard case .array(let items) = value else { return nil }
    var result: [Int] = []
    for item in items {
      guard case .integer(let n) = item, n >= 0 else { return nil }
      result.append(n)
    }
    return result
  }

  private static func malformed(_ path: String, _ what: String) -> GraphAttentionError {
    GraphAttentionError(.file, "\(path) is not a valid .safetensors file: \(what)",
                        fix: "write it again with safetensors.numpy.save_file or safetensors.torch.save_file")
  }
}

// MARK: - A strict JSON parser for headers

/// A JSON value; numbers are either exact integers or "other" (fractions, exponents, huge values).
indirect enum JSONValue {
  case object([(String, JSONValue)])
  case array([JSONValue])
  case string(String)
  case integer(Int)
  case otherNumber
  case bool(Bool)
  case null
}

/// RFC 8259 JSON, strict: one value, optional surrounding whitespace, depth at most 64.
struct JSONParser {
  struct Failure: Error {
    var message: String
  }

  let bytes: [UInt8]
  var position = 0
  var depth = 0

  init(bytes: [UInt8]) {
    self.bytes = bytes
  }

  mutating func parseDocument() throws -> JSONValue {
    skipWhitespace()
    let value = try parseValue()
    skipWhitespace()
    guard position == bytes.count else { throw fail("unexpected text after the JSON value") }
    return value
  }

  private func fail(_ what: String) -> Failure {
    Failure(message: "\(what) at byte \(position)")
  }

  private func peek() -> UInt8? {
    position < bytes.count ? bytes[position] : nil
  }

  private mutating func skipWhitespace() {
    while let b = peek(), b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { position += 1 }
  }

  private mutating func expect(_ byte: UInt8) throws {
    guard peek() == byte else { throw fail("expected '\(Character(Unicode.Scalar(byte)))'") }
    position += 1
  }

  private mutating func parseValue() throws -> JSONValue {
    switch peek() {
    case UInt8(ascii: "{"): return try parseObject()
    case UInt8(ascii: "["): return try parseArray()
    case UInt8(ascii: "\""): return .string(try parseString())
    case UInt8(ascii: "t"): try literal("true"); return .bool(true)
    case UInt8(ascii: "f"): try literal("false"); return .bool(false)
    case UInt8(ascii: "n"): try literal("null"); return .null
    case let b? where b == UInt8(ascii: "-") || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")):
      return try parseNumber()
    case nil: throw fail("unexpected end of the header")
    default: throw fail("unexpected character")
    }
  }

  private mutating func literal(_ word: String) throws {
    for byte in word.utf8 {
      guard peek() == byte else { throw fail("invalid literal (expected \(word))") }
      position += 1
    }
  }

  private mutating func nested<T>(_ body: (inout JSONParser) throws -> T) throws -> T {
    depth += 1
    defer { depth -= 1 }
    guard depth <= 64 else { throw fail("nesting deeper than 64 levels") }
    return try body(&self)
  }

  private mutating func parseObject() throws -> JSONValue {
    try nested { parser in
      parser.position += 1  // "{"
      var members: [(String, JSONValue)] = []
      parser.skipWhitespace()
      if parser.peek() == UInt8(ascii: "}") { parser.position += 1; return .object(members) }
      while true {
        parser.skipWhitespace()
        guard parser.peek() == UInt8(ascii: "\"") else { throw parser.fail("expected a quoted name") }
        let key = try parser.parseString()
        parser.skipWhitespace()
        try parser.expect(UInt8(ascii: ":"))
        parser.skipWhitespace()
        members.append((key, try parser.parseValue()))
        parser.skipWhitespace()
        switch parser.peek() {
        case UInt8(ascii: ","): parser.position += 1
        case UInt8(ascii: "}"): parser.position += 1; return .object(members)
        default: throw parser.fail("expected ',' or '}'")
        }
      }
    }
  }

  private mutating func parseArray() throws -> JSONValue {
    try nested { parser in
      parser.position += 1  // "["
      var items: [JSONValue] = []
      parser.skipWhitespace()
      if parser.peek() == UInt8(ascii: "]") { parser.position += 1; return .array(items) }
      while true {
        parser.skipWhitespace()
        items.append(try parser.parseValue())
        parser.skipWhitespace()
        switch parser.peek() {
        case UInt8(ascii: ","): parser.position += 1
        case UInt8(ascii: "]"): parser.position += 1; return .array(items)
        default: throw parser.fail("expected ',' or ']'")
        }
      }
    }
  }

  private mutating func parseNumber() throws -> JSONValue {
    let start = position
    if peek() == UInt8(ascii: "-") { position += 1 }
    let digitsStart = position
    while let b = peek(), b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") { position += 1 }
    let digitCount = position - digitsStart
    guard digitCount > 0 else { throw fail("a number has no digits") }
    guard !(digitCount > 1 && bytes[digitsStart] == UInt8(ascii: "0")) else { throw fail("a number has a leading zero") }
    var isInteger = true
    if peek() == UInt8(ascii: ".") {
      isInteger = false
      position += 1
      let fractionStart = position
      while let b = peek(), b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") { position += 1 }
      guard position > fractionStart else { throw fail("a number has no digits after '.'") }
    }
    if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
      isInteger = false
      position += 1
      if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { position += 1 }
      let exponentStart = position
      while let b = peek(), b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") { position += 1 }
      guard position > exponentStart else { throw fail("a number has no exponent digits") }
    }
    guard isInteger, let value = Int(String(decoding: bytes[start..<position], as: UTF8.self)) else {
      return .otherNumber
    }
    return .integer(value)
  }

  private mutating func parseString() throws -> String {
    position += 1  // opening quote
    var scalars = String.UnicodeScalarView()
    var run = position  // start of the current run of plain bytes
    func flush(_ parser: JSONParser, _ end: Int) {
      scalars.append(contentsOf: String(decoding: parser.bytes[run..<end], as: UTF8.self).unicodeScalars)
    }
    while let b = peek() {
      if b == UInt8(ascii: "\"") {
        flush(self, position)
        position += 1
        return String(scalars)
      }
      if b < 0x20 { throw fail("a control character inside a string") }
      if b != UInt8(ascii: "\\") { position += 1; continue }
      flush(self, position)
      position += 1
      guard let escaped = peek() else { break }
      position += 1
      switch escaped {
      case UInt8(ascii: "\""): scalars.append("\"")
      case UInt8(ascii: "\\"): scalars.append("\\")
      case UInt8(ascii: "/"): scalars.append("/")
      case UInt8(ascii: "b"): scalars.append("\u{8}")
      case UInt8(ascii: "f"): scalars.append("\u{C}")
      case UInt8(ascii: "n"): scalars.append("\n")
      case UInt8(ascii: "r"): scalars.append("\r")
      case UInt8(ascii: "t"): scalars.append("\t")
      case UInt8(ascii: "u"):
        var code = try hex4()
        if (0xD800..<0xDC00).contains(code) {
          // A high surrogate must be followed by an escaped low surrogate.
          guard peek() == UInt8(ascii: "\\") else { throw fail("an unpaired surrogate") }
          position += 1
          guard peek() == UInt8(ascii: "u") else { throw fail("an unpaired surrogate") }
          position += 1
          let low = try hex4()
          guard (0xDC00..<0xE000).contains(low) else { throw fail("an unpaired surrogate") }
          code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        }
        guard let scalar = Unicode.Scalar(code) else { throw fail("an invalid \\u escape") }
        scalars.append(scalar)
      default:
        throw fail("an invalid escape")
      }
      run = position
    }
    throw fail("an unterminated string")
  }

  private mutating func hex4() throws -> UInt32 {
    guard position + 4 <= bytes.count else { throw fail("a truncated \\u escape") }
    var value: UInt32 = 0
    for _ in 0..<4 {
      let b = bytes[position]
      let digit: UInt32
      switch b {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
      case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(b - UInt8(ascii: "a") + 10)
      case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
      default: throw fail("an invalid \\u escape")
      }
      value = value << 4 | digit
      position += 1
    }
    return value
  }
}
