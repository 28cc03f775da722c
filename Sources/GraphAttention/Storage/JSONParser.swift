// The library's one JSON reader (no Foundation in the library): safetensors headers and progress records.
// Its writer side is `JSONText`.


/// A JSON value; numbers are either exact integers or other numbers (fractions, exponents, values beyond
/// `Int`) as the nearest `Double`.
indirect enum JSONValue {
  case object([(String, JSONValue)])
  case array([JSONValue])
  case string(String)
  case integer(Int)
  case otherNumber(Double)
  case bool(Bool)
  case null

  /// An object's member named `key` (the first, if repeated); nil for other values or a missing key.
  subscript(key: String) -> JSONValue? {
    guard case let .object(members) = self else { return nil }
    return members.first { $0.0 == key }?.1
  }

  /// A number's value (integers converted), or nil for other values.
  var number: Double? {
    switch self {
    case let .integer(n): return Double(n)
    case let .otherNumber(x): return x
    default: return nil
    }
  }

  /// A string's value, or nil for other values.
  var string: String? {
    if case let .string(text) = self { return text }
    return nil
  }
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
    let text = String(decoding: bytes[start..<position], as: UTF8.self)
    guard isInteger, let value = Int(text) else { return .otherNumber(Double(text) ?? .nan) }
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
