import Foundation
import GraphAttention
import XCTest

final class JSONTextTests: XCTestCase {
  func testEscapesAsRFC8259AndRoundTripsThroughJSONSerialization() throws {
    let controls = String((0..<0x20).map { Character(Unicode.Scalar(UInt8($0))) })
    let samples = ["", "plain", "quote \" and backslash \\", "tab\there\nnew\rline", controls,
                   "non-ASCII: é ü 日本 🙂", "\u{7F} DEL and / slash", "\\\"\\\""]
    for text in samples {
      let quoted = JSONText.quoted(text)
      XCTAssertTrue(quoted.unicodeScalars.allSatisfy { $0.value >= 0x20 }, "raw control character in \(quoted)")
      let parsed = try JSONSerialization.jsonObject(with: Data("[\(quoted)]".utf8)) as? [String]
      XCTAssertEqual(parsed, [text], quoted)
    }
    XCTAssertEqual(JSONText.quoted("a\"b\\\n\u{01}"), #""a\"b\\\n\u0001""#)
  }
}
