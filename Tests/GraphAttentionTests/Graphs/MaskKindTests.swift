@testable import GraphAttention
import XCTest

/// The table of mask kinds is the parser's: every kind's form parses (or reaches its file loader), and every
/// text that lists the grammar (the CLI's help, the unknown-kind error, the C ABI's grammar) lists every kind.
final class MaskKindTests: XCTestCase {
  private struct ReachedLoader: Error {}

  /// A component of each kind, written from its form with small numbers.
  private func example(_ kind: MaskKind) -> String {
    kind.form.split(separator: " ").first.map(String.init)!
      .replacingOccurrences(of: "[:causal]", with: ":causal").replacingOccurrences(of: "[:per-head]", with: ":per-head")
      .replacingOccurrences(of: "[:D]", with: ":1").replacingOccurrences(of: "0,N1,...,L", with: "0,3,8")
      .replacingOccurrences(of: "I,J,...", with: "0,2").replacingOccurrences(of: ":W", with: ":2")
      .replacingOccurrences(of: ":P:SEED", with: ":0.5:7").replacingOccurrences(of: ":P", with: ":2")
      .replacingOccurrences(of: ":B", with: ":4").replacingOccurrences(of: ":D", with: ":1")
  }

  func testEveryKindOfTheTableParses() throws {
    for kind in MaskKind.allCases {
      let text = example(kind)
      XCTAssertEqual(MaskKind(field: String(text.split(separator: ":")[0])), kind, text)
      do {
        let graph = try Graph(parsing: text, explicit: { _, _ in throw ReachedLoader() })
        XCTAssertNoThrow(try graph.validate(queryCount: 8, keyCount: 8), text)
        XCTAssertFalse([.csr, .coo, .mtx].contains(kind), "\(text) parsed without its loader")
      } catch is ReachedLoader {
        XCTAssertTrue([.csr, .coo, .mtx].contains(kind), "\(text) reached the explicit loader")
      }
    }
  }

  func testEveryGrammarTextListsEveryKind() throws {
    let help = try CommandLineRunner.run(["--help"], environment: ["COLUMNS": "400"]).stdout
    var unknown = ""
    XCTAssertThrowsError(try Graph(parsing: "windwo:3")) { unknown = "\($0)" }
    for kind in MaskKind.allCases {
      XCTAssertTrue(help.contains(kind.form), "--help lacks \(kind.form)")
      XCTAssertTrue(unknown.contains(kind.form), "the unknown-kind error lacks \(kind.form)")
      XCTAssertTrue(MaskKind.grammarReference.contains(kind.form + ": " + kind.summary))
    }
    for operatorText in ["'A+B' is the union", "'A&B' the intersection"] {
      XCTAssertTrue(help.contains(operatorText), help)
    }
  }

  /// The files a specification names, as the parser's tokenizer reads them (quotes, escapes, documents files).
  func testFilesNamedBySpecifications() throws {
    XCTAssertEqual(try Graph.filesNamed(by: #"window:3+csr:"a+b.npy":c\&d.npy&documents:cu.npy+documents:0,4,8+mtx:m.mtx"#),
                   ["a+b.npy", "c&d.npy", "cu.npy", "m.mtx"])
    XCTAssertEqual(try Graph.filesNamed(by: "window:64+global:0"), [])
    XCTAssertThrowsError(try Graph.filesNamed(by: #"csr:"open"#))
  }
}
