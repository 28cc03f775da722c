import Foundation
import GraphAttention
import XCTest

/// The `graph-attention` executable, run as a user runs it: examples that double as end-to-end tests.
final class CommandLineTests: XCTestCase {
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws {
    directory = try StorageScratchDirectory()
  }

  override func tearDown() {
    directory.remove()
  }


  private func graphAttention(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try CommandLineRunner.run(arguments)
  }

  private func writeInputs(heads: Int = 2, tokens: Int = 48, dim: Int = 8) throws -> (Tensor, Tensor, Tensor) {
    let q = Inputs.tensor([heads, tokens, dim], seed: 21), k = Inputs.tensor([heads, tokens, dim], seed: 22)
    let v = Inputs.tensor([heads, tokens, dim], seed: 23)
    try q.write(npyFile: directory.path("q.npy"))
    try k.write(npyFile: directory.path("k.npy"))
    try v.write(npyFile: directory.path("v.npy"))
    return (q, k, v)
  }

  private func runArguments(mask: String, output: String) -> [String] {
    ["run", "--query", directory.path("q.npy"), "--key", directory.path("k.npy"), "--value", directory.path("v.npy"),
     "--mask", mask, "--output", output]
  }

  func testRunWritesWhatTheLibraryComputes() throws {
    let (q, k, v) = try writeInputs()
    let mask = "window:5+global:0,47+random:0.05:9"
    // Mapped far keys tile rows as the in-memory library does: the same bytes (the default, reading far
    // keys from the file, is compared with the library in StreamingRunTests).
    let result = try graphAttention(runArguments(mask: mask, output: directory.path("o.npy")) + ["--json", "--scattered-keys", "mapped"])
    XCTAssertEqual(result.status, 0, result.stderr)
    let fields = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    let expectedEdges = try Graph(parsing: mask).edgeCount(queryCount: 48, keyCount: 48)
    XCTAssertEqual(fields?["edges"] as? Int, expectedEdges)
    XCTAssertNotNil(fields?["seconds"] as? Double)
    XCTAssertNotNil(fields?["gflops"] as? Double)
    let written = try Tensor(npyFile: directory.path("o.npy"), name: "output")
    XCTAssertEqual(written, try attention(query: q, key: k, value: v, graph: try Graph(parsing: mask)))
  }

  func testExplicitGraphFromFiles() throws {
    let (q, k, v) = try writeInputs(tokens: 6)
    try NPYWriter.write([0, 2, 2, 5, 5, 5, 5] as [Int64], shape: [7], to: directory.path("indptr.npy"))
    try NPYWriter.write([4, 1, 0, 5, 0] as [Int64], shape: [5], to: directory.path("indices.npy"))
    try "%%MatrixMarket matrix coordinate pattern general\n% rows 0 and 2\n6 6 5\n1 5\n1 2\n3 1\n3 6\n3 1\n"
      .write(toFile: directory.path("g.mtx"), atomically: true, encoding: .utf8)
    let pairs = [(0, 4), (0, 1), (2, 0), (2, 5)]
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let reference = DenseReference.attention(query: q, key: k, value: v, shape: shape, mask: .pairs(pairs))
    for mask in ["csr:\(directory.path("indptr.npy")):\(directory.path("indices.npy"))", "mtx:\(directory.path("g.mtx"))"] {
      let result = try graphAttention(runArguments(mask: mask, output: directory.path("o.npy")))
      XCTAssertEqual(result.status, 0, result.stderr)
      DenseReference.assertClose(try Tensor(npyFile: directory.path("o.npy"), name: "o"), reference, valueDim: 8, mask)
    }
  }

  func testFailedRunLeavesTheOutputAsItWas() throws {
    _ = try writeInputs()
    let output = directory.path("o.npy")
    let previous = Array("previous result".utf8)
    _ = FileManager.default.createFile(atPath: output, contents: Data(previous))
    var q = try Tensor(npyFile: directory.path("q.npy"), name: "q")
    q.scalars[100] = .infinity
    try q.write(npyFile: directory.path("q.npy"))
    let cases: [([String], String)] = [
      (runArguments(mask: "window:3", output: output), "query[0, 12, 4] is inf"),
      (runArguments(mask: "window:3:sideways", output: output), "unknown window option"),
      (runArguments(mask: "csr:missing.npy:missing.npy", output: output), "missing.npy"),
      (runArguments(mask: "window:3", output: directory.path("no/such/dir/o.npy")), "does not exist"),
      (runArguments(mask: "window:3", output: directory.path("")), "is a directory"),
      (runArguments(mask: "window:3", output: output) + ["--threads", "0"], "--threads"),
      (["verify", "--mask", "window:3", "--tokens", "-5"], "--tokens"),
      (["inspect", "--mask", "global:99", "--tokens", "10"], "global token 99"),
    ]
    for (arguments, words) in cases {
      let result = try graphAttention(arguments)
      XCTAssertNotEqual(result.status, 0, "\(arguments)")
      XCTAssertTrue(result.stderr.contains(words), "\(arguments): stderr '\(result.stderr)' should mention '\(words)'")
      XCTAssertFalse(result.stderr.contains("Fatal error"), result.stderr)
      XCTAssertEqual(Array(FileManager.default.contents(atPath: output) ?? Data()), previous, "\(arguments) touched the output")
    }
    XCTAssertEqual(try directory.entries().filter { $0.hasPrefix(".") }, [], "temporary files left behind")
  }

  func testVerifyPassesForEveryKind() throws {
    for mask in ["full", "causal", "window:9", "window:9:causal", "dilated:7:2", "blocked:16:1", "global:0,99",
                 "random:0.05:3", "window:4+global:0,99+random:0.02:1"] {
      let result = try graphAttention(["verify", "--mask", mask, "--tokens", "100", "--dim", "12", "--heads", "2"])
      XCTAssertEqual(result.status, 0, "\(mask): \(result.stdout) \(result.stderr)")
      XCTAssertTrue(result.stdout.hasPrefix("PASS"), result.stdout)
    }
  }

  func testInspectCountsEdgesExactly() throws {
    let result = try graphAttention(["inspect", "--mask", "window:64", "--tokens", "160000000", "--json"])
    XCTAssertEqual(result.status, 0, result.stderr)
    let fields = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    XCTAssertEqual(fields?["edges"] as? Int, 160_000_000 * 129 - 64 * 65)
  }

  func testDemoChecksItself() throws {
    let result = try graphAttention(["demo", "--tokens", "4096", "--heads", "1", "--sample", "4"])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertTrue(result.stdout.contains("PASS"), result.stdout)
  }
}

/// Streaming runs from memory-mapped files: storage types, interruption and resumption.
final class StreamingRunTests: XCTestCase {
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws { directory = try StorageScratchDirectory() }
  override func tearDown() { directory.remove() }


  private func run(_ arguments: [String]) throws -> Int32 {
    let process = try CommandLineRunner.launch(arguments)
    process.waitUntilExit()
    return process.terminationStatus
  }

  private func runArguments(output: String, extra: [String] = []) -> [String] {
    ["run", "--query", directory.path("q.npy"), "--key", directory.path("k.npy"), "--value", directory.path("v.npy"),
     "--mask", "window:48+global:0", "--output", output, "--chunk-rows", "128", "--checkpoint-seconds", "0"] + extra
  }

  /// fp16 inputs and an fp16 output match the fp32 library on the same (widened) inputs within fp16 rounding.
  func testHalfPrecisionFilesThroughTheRun() throws {
    XCTAssertEqual(try run(["generate", "--tokens", "700", "--heads", "2", "--dim", "16", "--dtype", "f16", "--seed", "5",
                            "--output", directory.path("")]), 0)
    XCTAssertEqual(try run(runArguments(output: directory.path("o.npy"), extra: ["--output-dtype", "f16", "--check-rows", "6"])), 0)
    let q = Tensor(try TensorFile.open(directory.path("q.npy")))
    let k = Tensor(try TensorFile.open(directory.path("k.npy")))
    let v = Tensor(try TensorFile.open(directory.path("v.npy")))
    let expected = try attention(query: q, key: k, value: v, graph: try Graph(parsing: "window:48+global:0"))
    let written = try TensorFile.open(directory.path("o.npy"))
    XCTAssertEqual(written.type, .float16)
    for i in 0..<expected.scalars.count {
      XCTAssertEqual(written.element(i), TensorView.rounded(expected.scalars[i], to: .float16), accuracy: 1e-3, "element \(i)")
    }
  }

  /// BigBird through `run`: far keys read from the file (the default) and through the mapping give the
  /// library's result and the exact edge count summed over chunks.
  func testBigBirdRunReadsFarKeysLikeTheMapping() throws {
    let mask = "window:5+global:0,1+random:0.01:7"
    XCTAssertEqual(try run(["generate", "--tokens", "900", "--heads", "2", "--dim", "16", "--dtype", "f16", "--seed", "3",
                            "--output", directory.path("")]), 0)
    var outputs: [Data?] = []
    for access in ["read", "mapped"] {
      let output = directory.path("o-\(access).npy")
      let result = try CommandLineRunner.run(
        ["run", "--query", directory.path("q.npy"), "--key", directory.path("k.npy"), "--value", directory.path("v.npy"),
         "--mask", mask, "--output", output, "--chunk-rows", "100", "--scattered-keys", access, "--check-rows", "8", "--json"])
      XCTAssertEqual(result.status, 0, result.stderr)
      let fields = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
      XCTAssertEqual(fields?["edges"] as? Int, try Graph(parsing: mask).edgeCount(queryCount: 900, keyCount: 900), access)
      outputs.append(FileManager.default.contents(atPath: output))
    }
    XCTAssertNotNil(outputs[0])
    XCTAssertNotNil(outputs[1])
    let q = Tensor(try TensorFile.open(directory.path("q.npy")))
    let k = Tensor(try TensorFile.open(directory.path("k.npy")))
    let v = Tensor(try TensorFile.open(directory.path("v.npy")))
    let expected = try attention(query: q, key: k, value: v, graph: try Graph(parsing: mask))
    for access in ["read", "mapped"] {
      let written = try TensorFile.open(directory.path("o-\(access).npy"))
      XCTAssertEqual(written.count, expected.scalars.count)
      for i in 0..<expected.scalars.count {
        XCTAssertEqual(written.element(i), expected.scalars[i], accuracy: 1e-5, "\(access) element \(i)")
      }
    }
    XCTAssertNotEqual(try run(["run", "--query", directory.path("q.npy"), "--key", directory.path("k.npy"),
                               "--value", directory.path("v.npy"), "--mask", mask, "--output", directory.path("x.npy"),
                               "--scattered-keys", "sometimes"]), 0)
  }

  /// A run killed part-way resumes from its progress record to the same bytes as an uninterrupted run.
  func testKilledRunResumesToTheSameBytes() throws {
    XCTAssertEqual(try run(["generate", "--tokens", "30000", "--heads", "1", "--dim", "32", "--dtype", "f32", "--seed", "9",
                            "--output", directory.path("")]), 0)
    XCTAssertEqual(try run(runArguments(output: directory.path("whole.npy"))), 0)
    let output = directory.path("o.npy")
    let record = directory.path(".o.npy.progress.json")
    for signal in [SIGKILL, SIGINT] {
      let process = try CommandLineRunner.launch(runArguments(output: output))
      var completed = 0
      let deadline = Date().addingTimeInterval(60)
      while completed == 0, process.isRunning, Date() < deadline {
        usleep(5000)
        if let data = FileManager.default.contents(atPath: record),
           let fields = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
          completed = fields["completedRows"] as? Int ?? 0
        }
      }
      guard process.isRunning else { return XCTFail("the run finished before it could be interrupted: make it longer") }
      kill(process.processIdentifier, signal)
      process.waitUntilExit()
      XCTAssertNotEqual(process.terminationStatus, 0)
      XCTAssertTrue(FileManager.default.fileExists(atPath: record), "no progress record after signal \(signal)")
      XCTAssertFalse(FileManager.default.fileExists(atPath: output), "an interrupted run must not leave \(output)")
      XCTAssertNotEqual(try run(runArguments(output: output)), 0, "a new run must refuse to overwrite a resumable one")
      XCTAssertEqual(try run(runArguments(output: output, extra: ["--resume"])), 0)
      XCTAssertEqual(FileManager.default.contents(atPath: output), FileManager.default.contents(atPath: directory.path("whole.npy")),
                     "resumed output differs after signal \(signal)")
      XCTAssertFalse(FileManager.default.fileExists(atPath: record))
      try FileManager.default.removeItem(atPath: output)
    }
  }
}
