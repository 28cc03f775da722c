/// JSON text helpers shared by the safetensors writer and the command line's `--json` output, so
/// that strings are escaped one way everywhere.
package enum JSONText {
  /// `text` as a JSON string literal, quotes included (RFC 8259 section 7).
  ///
  /// Escapes `"` and `\`, writes `\n`, `\r`, `\t`, `\b`, `\f` in their short forms and every other
  /// control character (U+0000 to U+001F) as `\u00XX`; everything else, including non-ASCII text,
  /// is kept as UTF-8.
  ///
  /// ```swift
  /// JSONText.quoted("a\"b\n")   // "\"a\\\"b\\n\""
  /// ```
  /// - Complexity: O(`text.utf8.count`).
  package static func quoted(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "\u{08}": out += "\\b"
      case "\u{0C}": out += "\\f"
      default:
        if scalar.value < 0x20 {
          let hex = String(scalar.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        } else {
          out.unicodeScalars.append(scalar)
        }
      }
    }
    return out + "\""
  }
}
