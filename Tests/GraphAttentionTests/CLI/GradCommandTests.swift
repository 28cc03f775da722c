import Foundation
@testable import GraphAttention
import XCTest

/// `grad` and `run --save-lse`, run as a user runs them.
final class GradCommandTests: XCTestCase {
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws {
    directory = try StorageScratchDirectory()
  }

  override func tearDown() {
    directory.remove()
  }

  private func writeInputs() throws -> (Tensor, Tensor, Tensor, Tensor) {
    let q = Inputs.tensor([2, 90, 16], seed: 11), k = Inputs.tensor([1, 90, 16], seed: 12)
    let v = Inputs.tensor([1, 90, 8], seed: 13), dO = Inputs.tensor([2, 90, 8], seed: 14)
    for (name, t) in [("q", q), ("k", k), ("v", v), ("do", dO)] { try t.write(npyFile: directory.path(name + ".npy")) }
    return (q, k, v, dO)
  }

  private var inputArguments: [String] {
    ["--query", directory.path("q.npy"), "--key", directory.path("k.npy"), "--value", directory.path("v.npy"),
     "--grad-output", directory.path("do.npy"), "--mask", "window:7+global:0+random:0.05:3"]
  }

  func testGradWritesTheLibrarysGradientsAndJSON() throws {
    let (q, k, v, dO) = try writeInputs()
    try FileManager.default.createDirectory(atPath: directory.path("g"), withIntermediateDirectories: false)
    let result = try CommandLineRunner.run(["grad"] + inputArguments + ["--output-directory", directory.path("g"), "--threads", "2", "--json"])
    XCTAssertEqual(result.status, 0, result.stderr)
    let fields = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    let graph = try Graph(parsing: "window:7+global:0+random:0.05:3")
    XCTAssertEqual(fields?["edges"] as? Int, graph.edgeCount(queryCount: 90, keyCount: 90))
    XCTAssertNotNil(fields?["seconds"] as? Double)
    XCTAssertNotNil(fields?["gflops"] as? Double)
    let expected = try GradientTests.gradients(q: q, k: k, v: v, dO: dO, graph: graph, options: AttentionOptions())
    for (name, values, shape) in [("dq", expected.gradQuery, q.shape), ("dk", expected.gradKey, k.shape), ("dv", expected.gradValue, v.shape)] {
      let file = try TensorFile.open(directory.path("g/\(name).npy"))
      XCTAssertEqual(file.type, .float32)
      XCTAssertEqual(file.shape, shape)
      XCTAssertEqual(Tensor(file).scalars.map(\.bitPattern), values.map(\.bitPattern), name)
    }
  }

  func testRunSaveLSEThenGradFromTheSavedForward() throws {
    let (q, k, v, dO) = try writeInputs()
    let run = try CommandLineRunner.run(["run", "--query", directory.path("q.npy"), "--key", directory.path("k.npy"),
                                         "--value", directory.path("v.npy"), "--mask", "window:7+global:0+random:0.05:3",
                                         "--output", directory.path("o.npy"), "--save-lse", directory.path("lse.npy")])
    XCTAssertEqual(run.status, 0, run.stderr)
    let lse = try TensorFile.open(directory.path("lse.npy"))
    XCTAssertEqual(lse.shape, [2, 90])
    XCTAssertEqual(lse.type, .float32)
    try FileManager.default.createDirectory(atPath: directory.path("g"), withIntermediateDirectories: false)
    let result = try CommandLineRunner.run(["grad"] + inputArguments + ["--output-directory", directory.path("g"),
                                                                        "--output", directory.path("o.npy"), "--lse", directory.path("lse.npy")])
    XCTAssertEqual(result.status, 0, result.stderr)
    let mask = MaskCase.window(7) + .global([0]) + .random(0.05, seed: 3)
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let reference = GradientReference.gradients(query: q, key: k, value: v, gradOutput: dO, shape: shape, mask: mask)
    for (row, expected) in reference.logSumExp.enumerated() {
      XCTAssertEqual(Double(lse.element(row)), expected, accuracy: 1e-5 * max(1, abs(expected)), "LSE row \(row)")
    }
    for (name, exact, magnitude, width) in [("dq", reference.gradQuery, reference.queryMagnitude, 16),
                                            ("dk", reference.gradKey, reference.keyMagnitude, 16),
                                            ("dv", reference.gradValue, reference.valueMagnitude, 8)] {
      let values = Tensor(try TensorFile.open(directory.path("g/\(name).npy"))).scalars
      values.withUnsafeBufferPointer {
        GradientReference.assertClose($0, exact, magnitude: magnitude, width: width, tolerance: 1e-5, "grad --lse \(name)")
      }
    }
  }

  func testBadInputExitsNonZeroAndWritesNothing() throws {
    _ = try writeInputs()
    try FileManager.default.createDirectory(atPath: directory.path("g"), withIntermediateDirectories: false)
    let underAFile = try CommandLineRunner.run(["grad"] + inputArguments + ["--output-directory", directory.path("q.npy/sub")])
    XCTAssertNotEqual(underAFile.status, 0)
    XCTAssertTrue(underAFile.stderr.contains("not a directory"), underAFile.stderr)
    let halfForward = try CommandLineRunner.run(["grad"] + inputArguments + ["--output-directory", directory.path("g"),
                                                                            "--output", directory.path("q.npy")])
    XCTAssertNotEqual(halfForward.status, 0)
    XCTAssertTrue(halfForward.stderr.contains("--lse"), halfForward.stderr)
    // dO shaped like Q's d (16), not the output's d_v (8).
    var arguments = inputArguments
    arguments[arguments.firstIndex(of: "--grad-output")! + 1] = directory.path("q.npy")
    let badShape = try CommandLineRunner.run(["grad"] + arguments + ["--output-directory", directory.path("g")])
    XCTAssertNotEqual(badShape.status, 0)
    XCTAssertTrue(badShape.stderr.contains("gradOutput"), badShape.stderr)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path("g")), [])
  }

  /// Every command's output directory follows one rule: created with its missing parents (as `mkdir -p`),
  /// checked before any work; `generate --output DIR` and `bench --output-directory` do the same.
  func testMissingOutputDirectoriesAreCreatedWithTheirParents() throws {
    _ = try writeInputs()
    let grad = try CommandLineRunner.run(["grad"] + inputArguments + ["--output-directory", directory.path("new/grads")])
    XCTAssertEqual(grad.status, 0, grad.stderr)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path("new/grads")).sorted(),
                   ["dk.npy", "dq.npy", "dv.npy"])
    let generate = try CommandLineRunner.run(["generate", "--tokens", "4", "--dim", "2", "--output", directory.path("made/by/generate")])
    XCTAssertEqual(generate.status, 0, generate.stderr)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path("made/by/generate")).sorted(),
                   ["k.npy", "q.npy", "v.npy"])
  }

  /// `grad --mask-file`: one graph per query head, as `run` and `verify` read them; the outputs are the library's
  /// per-head gradients (checked against the float64 reference in ModelAttentionTests), bit for bit.
  func testGradWithAMaskFilePerHead() throws {
    let q = Inputs.tensor([2, 4, 70, 8], seed: 21), k = Inputs.tensor([2, 2, 70, 8], seed: 22)
    let v = Inputs.tensor([2, 2, 70, 8], seed: 23), dO = Inputs.tensor([2, 4, 70, 8], seed: 24)
    for (name, t) in [("q", q), ("k", k), ("v", v), ("do", dO)] { try t.write(npyFile: directory.path(name + ".npy")) }
    let specs = ["window:16:causal", "causal", "window:16:causal", "random:0.1:5:per-head&causal"]
    let file = directory.path("masks.txt")
    try ("# one line per query head\n" + specs.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
    try FileManager.default.createDirectory(atPath: directory.path("g"), withIntermediateDirectories: false)
    let inputs = ["grad", "--query", directory.path("q.npy"), "--key", directory.path("k.npy"), "--value", directory.path("v.npy"),
                  "--grad-output", directory.path("do.npy"), "--output-directory", directory.path("g")]
    let result = try CommandLineRunner.run(inputs + ["--mask-file", file, "--json"])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertTrue(result.stdout.contains("mask file"), result.stdout)

    let graphs = try specs.enumerated().map { try Graph(parsing: $1).forHead($0) }
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let o = MutableTensorView(allocating: shape.outputShape, type: .float32)
    let lse = MutableTensorView(allocating: [2, 4, 70], type: .float32)
    try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o, graphs: graphs, logSumExp: lse)
    let expected = [q.shape, k.shape, v.shape].map { MutableTensorView(allocating: $0, type: .float32) }
    try attentionGradients(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o.readOnly, logSumExp: lse.readOnly,
                           gradOutput: TensorView(dO), gradQuery: expected[0], gradKey: expected[1], gradValue: expected[2], graphs: graphs)
    for (name, view) in zip(["dq", "dk", "dv"], expected) {
      let written = Tensor(try TensorFile.open(directory.path("g/\(name).npy")))
      XCTAssertEqual(written.shape, view.shape, name)
      XCTAssertEqual(written.scalars.map(\.bitPattern), (0..<view.count).map { view.element($0).bitPattern }, name)
    }

    let errors: [([String], String)] = [
      (["--mask-file", try write("causal\ncausal\n", "two.txt")], "2 specification(s) for 4 query head(s)"),
      (["--mask-file", try write("causal\nwindow:x\ncausal\ncausal\n", "bad.txt")], "line 2"),
      (["--mask-file", directory.path("missing.txt")], "cannot read the mask file"),
      (["--mask-file", file, "--mask", "causal"], "exactly one of --mask and --mask-file"),
      ([], "exactly one of --mask and --mask-file"),
    ]
    for (arguments, words) in errors {
      let failed = try CommandLineRunner.run(inputs + arguments)
      XCTAssertNotEqual(failed.status, 0, "\(arguments)")
      XCTAssertTrue(failed.stderr.contains(words), "\(arguments): \(failed.stderr)")
    }
  }

  private func write(_ text: String, _ name: String) throws -> String {
    let path = directory.path(name)
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }
}
