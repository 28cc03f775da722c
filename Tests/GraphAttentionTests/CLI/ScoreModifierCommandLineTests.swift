import Foundation
import GraphAttention
import XCTest

/// `--softcap`, `--alibi`, `--alibi-slopes` and `--sinks` on run and grad (ScoreModifierOptions): the files
/// hold what the library computes with the same options (checked against float64 in ScoreModifierTests),
/// and bad values are errors naming the fix.
final class ScoreModifierCommandLineTests: XCTestCase {
  private var scratch: StorageScratchDirectory!
  private let (q, k, v, dO) = (Inputs.tensor([2, 4, 60, 8], seed: 51), Inputs.tensor([2, 2, 60, 8], seed: 52),
                               Inputs.tensor([2, 2, 60, 8], seed: 53), Inputs.tensor([2, 4, 60, 8], seed: 54))
  private let sinks: [Float] = [0.5, -1, 2, 0]
  private let slopes: [Float] = [0.5, 0.25, 0.125, 1]

  override func setUpWithError() throws {
    scratch = try StorageScratchDirectory()
    for (name, t) in [("q", q), ("k", k), ("v", v), ("do", dO)] { try t.write(npyFile: scratch.path(name + ".npy")) }
    try NPYWriter.write(sinks, shape: [4], to: scratch.path("sinks.npy"))
    try NPYWriter.write(slopes, shape: [4], to: scratch.path("slopes.npy"))
    try FileManager.default.createDirectory(atPath: scratch.path("g"), withIntermediateDirectories: false)
  }

  override func tearDown() { scratch.remove() }

  private var inputs: [String] {
    ["--query", scratch.path("q.npy"), "--key", scratch.path("k.npy"), "--value", scratch.path("v.npy")]
  }

  private func bits(_ path: String) throws -> [UInt32] { Tensor(try TensorFile.open(path)).scalars.map(\.bitPattern) }
  private func bits(_ view: MutableTensorView) -> [UInt32] { (0..<view.count).map { view.element($0).bitPattern } }

  func testRunWritesTheLibrarysOutputWithEveryModifier() throws {
    for (arguments, options) in [
      (["--softcap", "5"], AttentionOptions(softcap: 5)),
      (["--alibi"], AttentionOptions(alibi: .standard)),
      (["--alibi-slopes", scratch.path("slopes.npy")], AttentionOptions(alibi: .slopes(slopes))),
      (["--sinks", scratch.path("sinks.npy")], AttentionOptions(sinks: sinks)),
      (["--softcap", "3", "--alibi", "--sinks", scratch.path("sinks.npy")], AttentionOptions(softcap: 3, alibi: .standard, sinks: sinks)),
    ] {
      let result = try CommandLineRunner.run(["run"] + inputs + ["--mask", "causal+global:0", "--output", scratch.path("o.npy"),
                                                                 "--chunk-rows", "16"] + arguments)
      XCTAssertEqual(result.status, 0, "\(arguments): \(result.stderr)")
      let expected = try attention(query: q, key: k, value: v, graph: try Graph(parsing: "causal+global:0"), options: options)
      let written = Tensor(try TensorFile.open(scratch.path("o.npy"))).scalars
      let worst = zip(written, expected.scalars).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? .nan
      XCTAssertLessThanOrEqual(worst, 1e-6, "\(arguments)")
    }
  }

  /// grad with per-head graphs and every modifier, from the in-memory forward and from `run --save-lse`.
  func testGradWritesDSinksAndTheLibrarysGradients() throws {
    let specs = ["window:9:causal", "causal", "window:9:causal", "documents:0,20,60&causal"]
    let maskFile = scratch.path("masks.txt")
    try specs.joined(separator: "\n").write(toFile: maskFile, atomically: true, encoding: .utf8)
    let modifiers = ["--softcap", "4", "--alibi-slopes", scratch.path("slopes.npy"), "--sinks", scratch.path("sinks.npy")]
    let grad = ["grad"] + inputs + ["--grad-output", scratch.path("do.npy"), "--mask-file", maskFile,
                                    "--output-directory", scratch.path("g")] + modifiers
    let result = try CommandLineRunner.run(grad)
    XCTAssertEqual(result.status, 0, result.stderr)

    let options = AttentionOptions(softcap: 4, alibi: .slopes(slopes), sinks: sinks)
    let graphs = try specs.map { try Graph(parsing: $0) }
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let o = MutableTensorView(allocating: shape.outputShape, type: .float32)
    let lse = MutableTensorView(allocating: [2, 4, 60], type: .float32)
    try attention(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o, graphs: graphs, options: options, logSumExp: lse)
    let expected = [q.shape, k.shape, v.shape, [4]].map { MutableTensorView(allocating: $0, type: .float32) }
    try attentionGradients(query: TensorView(q), key: TensorView(k), value: TensorView(v), output: o.readOnly, logSumExp: lse.readOnly,
                           gradOutput: TensorView(dO), gradQuery: expected[0], gradKey: expected[1], gradValue: expected[2],
                           graphs: graphs, options: options, gradSinks: expected[3])
    for (name, view) in zip(["dq", "dk", "dv", "dsinks"], expected) {
      let file = try TensorFile.open(scratch.path("g/\(name).npy"))
      XCTAssertEqual(file.type, .float32, name)
      XCTAssertEqual(file.shape, view.shape, name)
      XCTAssertEqual(try bits(scratch.path("g/\(name).npy")), bits(view), name)
    }
    XCTAssertTrue(bits(expected[3]).contains { $0 != 0 }, "dsinks should not vanish")

    // The same gradients from a streamed forward's output and log-sum-exp (which holds the sinks).
    let run = try CommandLineRunner.run(["run"] + inputs + ["--mask-file", maskFile, "--output", scratch.path("o.npy"),
                                                            "--save-lse", scratch.path("lse.npy"), "--chunk-rows", "16"] + modifiers)
    XCTAssertEqual(run.status, 0, run.stderr)
    try FileManager.default.createDirectory(atPath: scratch.path("h"), withIntermediateDirectories: false)
    var saved = grad
    saved[saved.firstIndex(of: scratch.path("g"))!] = scratch.path("h")
    let fromSaved = try CommandLineRunner.run(saved + ["--output", scratch.path("o.npy"), "--lse", scratch.path("lse.npy")])
    XCTAssertEqual(fromSaved.status, 0, fromSaved.stderr)
    for (name, view) in zip(["dq", "dk", "dv", "dsinks"], expected) {
      let written = Tensor(try TensorFile.open(scratch.path("h/\(name).npy"))).scalars
      let exact = (0..<view.count).map { view.element($0) }
      let magnitude = exact.map(abs).max() ?? 0
      for (x, y) in zip(written, exact) where !(abs(x - y) <= 1e-5 * magnitude) {
        XCTFail("grad --lse \(name): \(x) vs \(y)")
        break
      }
    }
  }

  /// verify and run --check-rows compare with the float64 reference, which applies the modifiers too.
  func testVerifyAndCheckedRunsApplyEveryModifier() throws {
    let modifiers = ["--softcap", "4", "--alibi", "--sinks", scratch.path("sinks.npy")]
    for extra in [[], ["--compose"]] {
      let result = try CommandLineRunner.run(["verify", "--mask", "window:5+global:0", "--tokens", "70", "--dim", "8", "--heads", "4"]
                                             + modifiers + extra)
      XCTAssertEqual(result.status, 0, "\(extra): \(result.stdout) \(result.stderr)")
      XCTAssertTrue(result.stdout.hasPrefix("PASS"), result.stdout)
    }
    let run = try CommandLineRunner.run(["run"] + inputs + ["--mask", "causal", "--output", scratch.path("o.npy"), "--check-rows", "12"]
                                        + ["--softcap", "4", "--alibi-slopes", scratch.path("slopes.npy"), "--sinks", scratch.path("sinks.npy")])
    XCTAssertEqual(run.status, 0, run.stderr)
  }

  func testBadModifiersAreErrorsNamingTheFix() throws {
    try NPYWriter.write([1, 2, 3] as [Float], shape: [3], to: scratch.path("three.npy"))
    try NPYWriter.write([0, .nan, 0, 0] as [Float], shape: [4], to: scratch.path("nan.npy"))
    let run = ["run"] + inputs + ["--mask", "causal", "--output", scratch.path("o.npy")]
    let grad = ["grad"] + inputs + ["--grad-output", scratch.path("do.npy"), "--mask", "causal", "--output-directory", scratch.path("g")]
    let cases: [([String], String)] = [
      (run + ["--softcap", "0"], "softcap 0.0 is not a positive finite number"),
      (run + ["--softcap", "-2"], "softcap -2.0 is not a positive finite number"),
      (grad + ["--softcap", "inf"], "softcap inf is not a positive finite number"),
      (run + ["--alibi", "--alibi-slopes", scratch.path("slopes.npy")], "exclude each other"),
      (run + ["--alibi-slopes", scratch.path("three.npy")], "has shape [3], but Q has 4 query head(s)"),
      (grad + ["--sinks", scratch.path("three.npy")], "has shape [3], but Q has 4 query head(s)"),
      (grad + ["--sinks", scratch.path("nan.npy")], "holds nan at head 1"),
      (run + ["--sinks", scratch.path("missing.npy")], "missing.npy"),
    ]
    for (arguments, words) in cases {
      let result = try CommandLineRunner.run(arguments)
      XCTAssertNotEqual(result.status, 0, "\(arguments)")
      XCTAssertTrue(result.stderr.contains(words), "\(arguments): \(result.stderr)")
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: scratch.path("o.npy")))
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch.path("g")), [])
  }
}
