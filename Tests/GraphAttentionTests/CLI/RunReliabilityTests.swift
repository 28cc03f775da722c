import Foundation
import GraphAttention
import XCTest

/// `run` as a new user's tests broke it: concurrent writers, `--device cuda` without a driver,
/// progress in logs, a killed check. Each fails on the old `run` and passes now.
final class RunReliabilityTests: XCTestCase {
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws { directory = try StorageScratchDirectory() }
  override func tearDown() { directory.remove() }


  private func generate(tokens: Int) throws {
    let result = try CommandLineRunner.run(["generate", "--tokens", "\(tokens)", "--heads", "1", "--dim", "32", "--dtype", "f32",
                                            "--seed", "9", "--output", directory.path("")])
    XCTAssertEqual(result.status, 0, result.stderr)
  }

  private func runArguments(output: String, mask: String = "window:48+global:0", extra: [String] = []) -> [String] {
    ["run", "--query", directory.path("q.npy"), "--key", directory.path("k.npy"), "--value", directory.path("v.npy"),
     "--mask", mask, "--output", output, "--chunk-rows", "128", "--checkpoint-seconds", "0"] + extra
  }

  /// Waits until the record beside `output` says `rows` rows are done (or the process ends).
  private func waitForRecord(_ output: String, rows: Int, while process: Process) -> Int {
    let deadline = Date().addingTimeInterval(120)
    while process.isRunning, Date() < deadline {
      if let data = FileManager.default.contents(atPath: ((output as NSString).deletingLastPathComponent as NSString).appendingPathComponent(".\((output as NSString).lastPathComponent).progress.json")),
         let fields = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
         let done = fields["completedRows"] as? Int, done >= rows {
        return done
      }
      usleep(5000)
    }
    return 0
  }

  /// a second run onto an output being written, and a --resume of it, are refused while the
  /// first runs; the first then commits exactly its own result.
  func testSecondWriterIsRefusedWhileTheFirstRuns() throws {
    try generate(tokens: 30000)
    XCTAssertEqual(try CommandLineRunner.run(runArguments(output: directory.path("whole.npy"))).status, 0)
    let output = directory.path("o.npy")
    let first = try CommandLineRunner.launch(runArguments(output: output))
    XCTAssertGreaterThan(waitForRecord(output, rows: 1, while: first), 0, "the first run ended before the test could race it")
    for extra in [[], ["--resume"]] {
      let second = try CommandLineRunner.run(runArguments(output: output, mask: "window:8", extra: extra))
      XCTAssertEqual(second.status, 1, "\(extra): \(second.stderr)")
      XCTAssertTrue(second.stderr.contains("another run is writing"), second.stderr)
    }
    first.waitUntilExit()
    XCTAssertEqual(first.terminationStatus, 0)
    XCTAssertEqual(FileManager.default.contents(atPath: output), FileManager.default.contents(atPath: directory.path("whole.npy")))
    XCTAssertEqual(try directory.entries().filter { $0.hasPrefix(".") }, [], "lock or temporary files left behind")
  }

  /// a run killed during its sampled check (every row computed) does not block the next run,
  /// which finishes the same job.
  func testKilledCheckDoesNotBlockTheNextRun() throws {
    try generate(tokens: 6000)
    XCTAssertEqual(try CommandLineRunner.run(runArguments(output: directory.path("whole.npy"))).status, 0)
    let output = directory.path("o.npy")
    let checking = try CommandLineRunner.launch(runArguments(output: output, extra: ["--check-rows", "6000"]))
    XCTAssertEqual(waitForRecord(output, rows: 6000, while: checking), 6000, "the run ended before its check could be killed")
    kill(checking.processIdentifier, SIGKILL)
    checking.waitUntilExit()
    let next = try CommandLineRunner.run(runArguments(output: output))
    XCTAssertEqual(next.status, 0, next.stderr)
    XCTAssertEqual(FileManager.default.contents(atPath: output), FileManager.default.contents(atPath: directory.path("whole.npy")))
    // --check-rows larger than L_q is capped, and says so by its count.
    let capped = try CommandLineRunner.run(runArguments(output: directory.path("c.npy"), extra: ["--check-rows", "1000000000"]))
    XCTAssertEqual(capped.status, 0, capped.stderr)
    XCTAssertTrue(capped.stderr.contains("over 6000 sampled rows"), capped.stderr)
  }

  /// with stderr not a terminal, plain progress lines (rows, rate, ETA) appear.
  func testProgressLinesWhenStderrIsNotATerminal() throws {
    try generate(tokens: 2000)
    let result = try CommandLineRunner.run(runArguments(output: directory.path("o.npy"), extra: ["--progress-seconds", "0"]))
    XCTAssertEqual(result.status, 0, result.stderr)
    let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("attention: ") }
    XCTAssertGreaterThanOrEqual(lines.count, 10, result.stderr)
    XCTAssertTrue(lines.last?.contains("2000 of 2000 rows (100.0%)") ?? false, result.stderr)
    XCTAssertTrue(lines.allSatisfy { $0.contains("rows/s, ETA") }, result.stderr)
  }

  /// `run --device cuda` without a driver exits 1 with the message verify and time give,
  /// instead of computing on the CPU.
  func testDeviceCudaWithoutADriverIsRefused() throws {
    if let handle = dlopen("libcuda.so.1", RTLD_NOW) {
      dlclose(handle)
      throw XCTSkip("a CUDA driver is installed here; scripts/gpu_check.sh covers --device cuda")
    }
    try generate(tokens: 64)
    let result = try CommandLineRunner.run(runArguments(output: directory.path("o.npy"), extra: ["--device", "cuda"]))
    XCTAssertEqual(result.status, 1, result.stderr)
    XCTAssertTrue(result.stderr.contains("no CUDA driver found (libcuda.so.1); --device cpu works here"), result.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: directory.path("o.npy")))
  }

  /// a streamed implicit-graph run keeps its resident set bounded, not the size of its files:
  /// 2^21 tokens, d = 16, fp16 inputs and an fp32 output are 320 MiB of files; the run peaks near the
  /// binary plus one 64 MiB step of the input scan (the 16M-token, d = 32 run of the issue peaks at 193 MiB).
  func testResidentMemoryStaysBelowTheFiles() throws {
    XCTAssertEqual(try CommandLineRunner.run(["generate", "--tokens", "\(1 << 21)", "--heads", "1", "--dim", "16", "--dtype", "f16",
                                              "--seed", "4", "--output", directory.path("")]).status, 0)
    let result = try CommandLineRunner.run(runArguments(output: directory.path("o.npy"), mask: "window:1", extra: ["--json"])
      .map { $0 == "128" ? "65536" : $0 })
    XCTAssertEqual(result.status, 0, result.stderr)
    let fields = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
    let peak = try XCTUnwrap(fields?["peak_resident_bytes"] as? Int)
    XCTAssertLessThan(peak, 160 << 20, "peak resident bytes \(peak) approach the 320 MiB of files")
  }

  /// `--output` naming an input, directly or through another path, is refused.
  func testOutputEqualToAnInputIsRefused() throws {
    try generate(tokens: 64)
    let before = FileManager.default.contents(atPath: directory.path("q.npy"))
    try FileManager.default.createSymbolicLink(atPath: directory.path("alias.npy"), withDestinationPath: directory.path("k.npy"))
    for output in [directory.path("q.npy"), directory.path("alias.npy"), directory.url.path + "/./v.npy"] {
      let result = try CommandLineRunner.run(runArguments(output: output))
      XCTAssertEqual(result.status, 1, result.stderr)
      XCTAssertTrue(result.stderr.contains("is the input"), result.stderr)
    }
    XCTAssertEqual(FileManager.default.contents(atPath: directory.path("q.npy")), before)
  }
}
