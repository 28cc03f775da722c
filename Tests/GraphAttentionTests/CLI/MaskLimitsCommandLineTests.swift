import Foundation
import GraphAttention
import XCTest

/// `inspect` and `verify` on sizes that once trapped, ran for hours or ran without a word, and mask paths
/// holding `+` or `:`.
final class MaskLimitsCommandLineTests: XCTestCase {
  private func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try CommandLineRunner.run(arguments)
  }

  /// `inspect --mask full --tokens 1000000000000` (and causal) trapped on overflow.
  func testCountsBeyondInt64AreAnError() throws {
    for mask in ["full", "causal", "window:2+full"] {
      let result = try run(["inspect", "--mask", mask, "--tokens", "1000000000000"])
      XCTAssertEqual(result.status, 1, mask)
      XCTAssertTrue(result.stderr.contains("more than 9223372036854775807 edges"), result.stderr)
    }
  }

  /// `inspect --mask window:4:causal --tokens 1e12` walked every row for hours: closed forms answer at once.
  func testImplicitStatisticsAtATrillionTokens() throws {
    let start = Date()
    let result = try run(["inspect", "--mask", "window:4:causal", "--tokens", "1000000000000", "--json"])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertLessThan(Date().timeIntervalSince(start), 20)
    let fields = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    XCTAssertEqual(fields?["edges"] as? Int, 5 * 1_000_000_000_000 - 10)
    XCTAssertEqual(fields?["degree_min"] as? Int, 1)
    XCTAssertEqual(fields?["degree_max"] as? Int, 5)
  }

  /// `verify --mask full --tokens 10000000` ran for minutes without a word; it is refused with the limit.
  func testVerifyRefusesSizesBeyondItsLimit() throws {
    let result = try run(["verify", "--mask", "full", "--tokens", "10000000"])
    XCTAssertEqual(result.status, 1)
    XCTAssertTrue(result.stderr.contains("verify checks at most 17179869184 edges x heads"), result.stderr)
    let memory = try run(["verify", "--mask", "window:1", "--tokens", "100000000", "--dim", "64"])
    XCTAssertEqual(memory.status, 1)
    XCTAssertTrue(memory.stderr.contains("holds fp32 Q, K, V and O in memory"), memory.stderr)
  }

  func testHugeNumbersAreTooLarge() throws {
    let result = try run(["inspect", "--mask", "window:99999999999999999999", "--tokens", "10"])
    XCTAssertEqual(result.status, 1)
    XCTAssertTrue(result.stderr.contains("too large (at most 9223372036854775807)"), result.stderr)
  }

  /// Paths with `+` and `:` in a mask, quoted; `verify --compose` splits the union after parsing, not on `+`.
  func testQuotedPathsInMasks() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ga-mask-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let rows = directory.appendingPathComponent("r+o:ws.npy").path
    let columns = directory.appendingPathComponent("c.npy").path
    try NPYWriter.write([0, 3, 5, 5] as [Int64], shape: [4], to: rows)
    try NPYWriter.write([1, 0, 2, 2] as [Int64], shape: [4], to: columns)
    let mask = "window:1+coo:\"\(rows)\":\(columns)"
    let inspect = try run(["inspect", "--mask", mask, "--tokens", "8", "--json"])
    XCTAssertEqual(inspect.status, 0, inspect.stderr)
    XCTAssertEqual(try Graph(parsing: mask).edgeCount(queryCount: 8, keyCount: 8), 8 * 3 - 2 + 2)
    let verify = try run(["verify", "--mask", mask, "--tokens", "8", "--compose"])
    XCTAssertEqual(verify.status, 0, verify.stderr + verify.stdout)
    XCTAssertTrue(verify.stdout.hasPrefix("PASS"), verify.stdout)
  }

  /// A COO row of 2^40 and a .mtx size line of 1e11 rows: errors naming the lengths, no allocation failure.
  func testExplicitGraphsWithHugeIndices() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ga-mask-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let rows = directory.appendingPathComponent("r.npy").path
    let columns = directory.appendingPathComponent("c.npy").path
    try NPYWriter.write([Int64.max] as [Int64], shape: [1], to: rows)
    try NPYWriter.write([0] as [Int64], shape: [1], to: columns)
    let coo = try run(["inspect", "--mask", "coo:\(rows):\(columns)", "--tokens", "4"])
    XCTAssertEqual(coo.status, 1)
    XCTAssertTrue(coo.stderr.contains("out of range 0..<4"), coo.stderr)
    let mtx = directory.appendingPathComponent("m.mtx").path
    try Data("%%MatrixMarket matrix coordinate pattern general\n100000000000 64 1\n1 1\n".utf8).write(to: URL(fileURLWithPath: mtx))
    let market = try run(["inspect", "--mask", "mtx:\(mtx)", "--tokens", "64"])
    XCTAssertEqual(market.status, 1)
    XCTAssertTrue(market.stderr.contains("100000000000 rows but the query has 64 tokens"), market.stderr)
  }
}
