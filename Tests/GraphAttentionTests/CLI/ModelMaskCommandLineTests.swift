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

  /// `run --mask-file` streams per-head graphs in chunks (with the log-sum-exp) and matches the in-memory
  /// per-head call, which is checked against the float64 reference elsewhere.
  func testRunWithAMaskFilePerHead() throws {
    let (h, l, d) = (3, 200, 8)
    let q = Inputs.tensor([h, l, d], seed: 41), k = Inputs.tensor([h, l, d], seed: 42), v = Inputs.tensor([h, l, d], seed: 43)
    for (t, name) in [(q, "q.npy"), (k, "k.npy"), (v, "v.npy")] { try NPYWriter.write(t.scalars, shape: t.shape, to: scratch.path(name)) }
    let specs = ["documents:0,50,51,200&causal", "random:0.05:3:per-head+window:4:causal", "prefix:20"]
    let file = try write(specs.joined(separator: "\n") + "\n", "masks.txt")
    let result = try CommandLineRunner.run(["run", "--query", scratch.path("q.npy"), "--key", scratch.path("k.npy"), "--value", scratch.path("v.npy"),
                                            "--mask-file", file, "--output", scratch.path("o.npy"), "--chunk-rows", "64",
                                            "--check-rows", "30", "--save-lse", scratch.path("lse.npy")])
    XCTAssertEqual(result.status, 0, result.stderr)
    let o = try Tensor(npyFile: scratch.path("o.npy"), name: "o")
    let expected = try attention(query: q, key: k, value: v, graphs: specs.enumerated().map { try Graph(parsing: $1).forHead($0) })
    XCTAssertEqual(o.shape, expected.shape)
    for (x, y) in zip(o.scalars, expected.scalars) where !(abs(x - y) <= 1e-6 * max(1, abs(y))) {
      XCTFail("run --mask-file: \(x) vs \(y)")
      break
    }
    let lse = try Tensor(npyFile: scratch.path("lse.npy"), name: "lse")
    XCTAssertEqual(lse.shape, [h, l])
    XCTAssertFalse(lse.scalars.contains { $0.isNaN })
    let wrong = try CommandLineRunner.run(["run", "--query", scratch.path("q.npy"), "--key", scratch.path("k.npy"), "--value", scratch.path("v.npy"),
                                           "--mask-file", try write("causal\n", "one.txt"), "--output", scratch.path("o2.npy")])
    XCTAssertNotEqual(wrong.status, 0)
    XCTAssertTrue(wrong.stderr.contains("1 specification(s) for 3 query head(s)"), wrong.stderr)
  }
}
