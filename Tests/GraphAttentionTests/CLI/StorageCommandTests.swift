import Foundation
import GraphAttention
import XCTest

/// `generate` and `plan`, run as a user runs them.
final class StorageCommandTests: XCTestCase {
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws {
    directory = try StorageScratchDirectory()
  }

  override func tearDown() {
    directory.remove()
  }

  // MARK: - generate

  func testGenerateWritesTheGeneratorsValuesDeterministically() throws {
    let shape = [3, 1000, 7]
    for (dtype, folder) in [("f32", "a"), ("f32", "b"), ("f16", "h"), ("bf16", "bf")] {
      let result = try graphAttention(["generate", "--tokens", "1000", "--heads", "3", "--dim", "7", "--dtype", dtype,
                                       "--seed", "41", "--output", directory.path(folder)])
      XCTAssertEqual(result.status, 0, result.stderr)
      XCTAssertTrue(result.stdout.hasPrefix("wrote"), result.stdout)
    }
    // The same seed gives the same bytes; f32 files are Tensor.random with seeds S, S+1, S+2.
    for (t, name) in ["q", "k", "v"].enumerated() {
      XCTAssertEqual(try directory.read("a/\(name).npy"), try directory.read("b/\(name).npy"))
      let f32 = try TensorFile.open(directory.path("a/\(name).npy"))
      XCTAssertEqual(Tensor(f32), Tensor.random(shape: shape, seed: 41 + UInt64(t)))
      let generator = RandomTensorGenerator(seed: 41, stream: t)
      for (file, type) in [("h/\(name).npy", StorageType.float16), ("bf/\(name).safetensors", .bfloat16)] {
        let view = try TensorFile.open(directory.path(file))
        XCTAssertEqual(view.type, type)
        XCTAssertEqual(view.shape, shape)
        XCTAssertEqual(Tensor(view).scalars, (0..<view.count).map { generator.value(at: $0, storedAs: type) }, file)
      }
    }
    XCTAssertEqual(try directory.entries(), ["a", "b", "bf", "h"])
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path("bf")).sorted(),
                   ["k.safetensors", "q.safetensors", "v.safetensors"])
  }

  func testGenerateOneSafetensorsFileWithBatch() throws {
    let path = directory.path("qkv.safetensors")
    let result = try graphAttention(["generate", "--tokens", "50", "--heads", "2", "--dim", "4", "--batch", "3",
                                     "--dtype", "f16", "--seed", "7", "--output", path, "--json"])
    XCTAssertEqual(result.status, 0, result.stderr)
    let fields = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    XCTAssertEqual(fields?["shape"] as? [Int], [3, 2, 50, 4])
    XCTAssertEqual(fields?["bytes"] as? Int, 3 * 1200 * 2)
    XCTAssertEqual(fields?["files"] as? [String], [path])
    XCTAssertEqual(try TensorFile.tensors(in: path).map(\.name), ["q", "k", "v"])
    for (t, name) in ["q", "k", "v"].enumerated() {
      let view = try TensorFile.open(path, name: name)
      XCTAssertEqual(view.shape, [3, 2, 50, 4])
      let generator = RandomTensorGenerator(seed: 7, stream: t)
      XCTAssertEqual(view.element(1199), generator.value(at: 1199, storedAs: .float16))
      XCTAssertEqual(view.element(0), TensorView.rounded(Tensor.random(shape: [1], seed: 7 + UInt64(t)).scalars[0], to: .float16))
    }
  }

  func testGenerateRefusesBadRequestsBeforeWriting() throws {
    let file = try directory.write([1], to: "q.npy.file")
    let cases: [([String], String)] = [
      (["--output", directory.path("q.npy")], "three tensors"),
      (["--output", directory.path("d"), "--dtype", "bf16", "--format", "npy"], "bfloat16"),
      (["--output", directory.path("d"), "--dtype", "f64"], "f64"),
      (["--output", directory.path("d"), "--tokens", "0"], "--tokens"),
      (["--output", directory.path("q.npy.file/d")], "not a directory"),
      // 2^40 tokens x 64 x 4 bytes x 3: far beyond any disk; refused before anything is created.
      (["--output", directory.path("d"), "--tokens", "\(1 << 40)"], "GiB free on"),
    ]
    for (arguments, words) in cases {
      var full = ["generate", "--tokens", "10"] + arguments
      if arguments.contains("--tokens") { full.removeSubrange(1...2) }
      let result = try graphAttention(full)
      XCTAssertNotEqual(result.status, 0, "\(full)")
      XCTAssertTrue(result.stderr.contains(words), "\(full): stderr '\(result.stderr)' should mention '\(words)'")
      XCTAssertFalse(result.stderr.contains("Fatal error"), result.stderr)
    }
    XCTAssertEqual(try directory.entries(), ["q.npy.file"], "nothing may be created beside \(file)")
  }

  // MARK: - plan

  func testPlanShowsItsArithmetic() throws {
    let result = try graphAttention(["plan", "--mask", "window:128", "--dim", "32", "--dtype", "f16", "--memory", "1G",
                                     "--disk", "10GiB", "--threads", "2", "--tokens", "160000000"])
    XCTAssertEqual(result.status, 0, result.stderr)
    let inMemory = ((1 << 30) - (66 << 20)) / 256
    let onDisk = ((10 << 30) - (16 << 10)) / 256
    for text in ["= 256 B", "L <= (1.00 GiB - 66.00 MiB engine) / 256 B = \(grouped(inMemory)) tokens",
                 "L <= (10.00 GiB - 16 KiB headers) / 256 B = \(grouped(onDisk)) tokens",
                 "window:128: (R + 2·128) key rows", "limited by disk", "at L = 160,000,000 tokens:",
                 "needs 38.15 GiB of disk (10.00 GiB free)"] {
      XCTAssertTrue(result.stdout.contains(text), "'\(text)' missing from:\n\(result.stdout)")
    }
  }

  /// Without --memory the plan budgets what can be allocated now, not the installed memory.
  func testPlanDefaultsToAvailableMemory() throws {
    let result = try graphAttention(["plan", "--mask", "window:8", "--disk", "1G", "--json"])
    XCTAssertEqual(result.status, 0, result.stderr)
    let fields = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    let memory = try XCTUnwrap(fields["memory_bytes"] as? Int)
    XCTAssertGreaterThan(memory, 0)
    XCTAssertLessThanOrEqual(memory, Int(ProcessInfo.processInfo.physicalMemory))
    #if os(Linux)
    let text = try graphAttention(["plan", "--mask", "window:8", "--disk", "1G"])
    XCTAssertTrue(text.stdout.contains("MemAvailable"), text.stdout)
    #endif
  }

  func testPlanJSON() throws {
    let result = try graphAttention(["plan", "--mask", "window:64+global:0+random:1e-6:3", "--dim", "64", "--heads", "4",
                                     "--kv-heads", "2", "--dtype", "bf16", "--output-dtype", "f32", "--memory", "24e9",
                                     "--disk", "72G", "--threads", "2", "--tokens", "1000000", "--json"])
    XCTAssertEqual(result.status, 0, result.stderr)
    let fields = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    // Q 4·64·2 + K 2·64·2 + V 2·64·2 + O 4·64·4 per token.
    XCTAssertEqual(fields["bytes_per_token"] as? Int, 512 + 256 + 256 + 1024)
    XCTAssertEqual(fields["memory_bytes"] as? Int, 24_000_000_000)
    XCTAssertEqual(fields["max_tokens_in_memory"] as? Int, (24_000_000_000 - (66 << 20)) / 2048)
    XCTAssertEqual(fields["max_tokens_on_disk"] as? Int, ((72 << 30) - (16 << 10)) / 2048)
    XCTAssertEqual(fields["fits_in_memory"] as? Bool, true)
    XCTAssertEqual(fields["graph_bytes"] as? Int, 0)
    let streamed = try XCTUnwrap(fields["max_tokens_streamed"] as? Int)
    XCTAssertLessThanOrEqual(streamed, fields["max_tokens_on_disk"] as? Int ?? 0)
    XCTAssertNotNil(fields["resident_terms"] as? [[String: Any]])

    for bad in [["--memory", "lots"], ["--disk", "-1G"], ["--kv-heads", "3"], ["--mask", "window:-1"]] {
      var arguments = ["plan", "--mask", "window:8", "--heads", "4"]
      if bad[0] == "--mask" { arguments.removeSubrange(1...2) }
      let failed = try graphAttention(arguments + bad)
      XCTAssertNotEqual(failed.status, 0, "\(bad)")
      XCTAssertFalse(failed.stderr.isEmpty)
    }
  }

  // MARK: - Helpers

  private func grouped(_ value: Int) -> String {
    let formatter = NumberFormatter()
    formatter.numberStyle = .decimal
    formatter.groupingSeparator = ","
    formatter.usesGroupingSeparator = true
    return formatter.string(from: NSNumber(value: value)) ?? "\(value)"
  }


  private func graphAttention(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try CommandLineRunner.run(arguments)
  }
}
