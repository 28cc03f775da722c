import Foundation
import GraphAttention
import XCTest

/// `verify` with the graphs models use: documents, intersections, prefixes, per-head graphs from
/// `--mask-file`, and the errors a mask file can hold.
final class ModelMaskCommandLineTests: XCTestCase {
  private var scratch: StorageScratchDirectory!

  override func setUpWithError() throws { scratch = try StorageScratchDirectory() }
  override func tearDown() { scratch.remove() }

  private func write(_ text: String, _ name: String) throws -> String {
    let path = scratch.path(name)
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  func testVerifyPassesForEachNewKind() throws {
    let cu = scratch.path("cu.npy")
    try NPYWriter.write([0, 7, 8, 8, 50, 80] as [Int64], shape: [6], to: cu)
    for mask in ["documents:\(cu)&causal", "documents:0,40,41,80&window:5:causal+global:3", "prefix:20", "random:0.2:4:per-head&causal"] {
      let result = try CommandLineRunner.run(["verify", "--mask", mask, "--tokens", "80", "--dim", "8", "--heads", "3"])
      XCTAssertEqual(result.status, 0, "\(mask): \(result.stderr)")
      XCTAssertTrue(result.stdout.hasPrefix("PASS"), "\(mask): \(result.stdout)")
    }
  }

  func testVerifyWithAMaskFilePerHead() throws {
    let file = try write("window:4:causal\n# a comment, skipped\ncausal\n\ndocuments:0,30,64&causal\nrandom:0.1:3:per-head&prefix:5\n", "masks.txt")
    let result = try CommandLineRunner.run(["verify", "--mask-file", file, "--tokens", "64", "--dim", "8", "--heads", "4"])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertTrue(result.stdout.hasPrefix("PASS mask file"), result.stdout)
    XCTAssertTrue(result.stdout.contains("(4 graphs)"), result.stdout)

    let errors: [([String], String)] = [
      (["--mask-file", file, "--heads", "3"], "4 specification(s) for 3 query head(s)"),
      (["--mask-file", try write("causal\nwindow:x\n", "bad.txt"), "--heads", "2"], "line 2"),
      (["--mask-file", try write("causal\ndocuments:0,5\n", "short.txt"), "--heads", "2"], "covers 5 tokens"),
      (["--mask-file", scratch.path("missing.txt"), "--heads", "1"], "cannot read the mask file"),
      (["--mask-file", file, "--mask", "causal", "--heads", "4"], "exactly one of --mask and --mask-file"),
      (["--heads", "4"], "exactly one of --mask and --mask-file"),
    ]
    for (arguments, words) in errors {
      let result = try CommandLineRunner.run(["verify", "--tokens", "64", "--dim", "8"] + arguments)
      XCTAssertNotEqual(result.status, 0, "\(arguments)")
      XCTAssertTrue(result.stderr.contains(words), "\(arguments): \(result.stderr)")
    }
  }
}
