import Foundation
@testable import GraphAttention
import XCTest

/// `StreamingAttention`: the library's streamed job over files, its resume, cancellation and the
/// reliability rules (checks before the work, SIGBUS as an error, what a refused resume says).
final class StreamingAttentionTests: XCTestCase {
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws { directory = try StorageScratchDirectory() }
  override func tearDown() { directory.remove() }

  /// Writes Q, K, V as fp32 .npy files of `[heads, tokens, dim]`, independent streams.
  private func writeInputs(heads: Int = 2, tokens: Int, dim: Int = 8) throws -> (Tensor, Tensor, Tensor) {
    let q = Inputs.tensor([heads, tokens, dim], seed: 71), k = Inputs.tensor([heads, tokens, dim], seed: 72)
    let v = Inputs.tensor([heads, tokens, dim], seed: 73)
    try q.write(npyFile: directory.path("q.npy"))
    try k.write(npyFile: directory.path("k.npy"))
    try v.write(npyFile: directory.path("v.npy"))
    return (q, k, v)
  }

  private func job(_ mask: String, output: String = "o.npy", chunkRows: Int = 64) throws -> StreamingAttention {
    var job = StreamingAttention(query: directory.path("q.npy"), key: directory.path("k.npy"), value: directory.path("v.npy"),
                                 graph: try Graph(parsing: mask), output: directory.path(output))
    job.chunkRows = chunkRows
    job.checkpointSeconds = 0
    return job
  }

  /// The streamed result equals the in-memory library's, and the float64 reference, for several masks.
  func testStreamedJobMatchesTheLibraryAndTheReference() throws {
    let (q, k, v) = try writeInputs(tokens: 300)
    for mask in ["window:5+global:0", "causal", "window:3+random:0.05:2", "dilated:2:1"] {
      var reports: [StreamingAttention.Progress] = []
      var streamed = try job(mask)
      streamed.checkRows = 7
      let result = try streamed.run(progress: { reports.append($0) })
      XCTAssertTrue(result.isComplete)
      XCTAssertEqual(result.edges, try Graph(parsing: mask).edgeCount(queryCount: 300, keyCount: 300), mask)
      XCTAssertEqual(result.check?.rows, 7)
      XCTAssertEqual(reports.map(\.completedRows), [64, 128, 192, 256, 300], mask)
      let written = Tensor(try TensorFile.open(directory.path("o.npy")))
      let expected = try attention(query: q, key: k, value: v, graph: try Graph(parsing: mask))
      let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
      for row in stride(from: 0, to: 300, by: 37) {
        for head in 0..<2 {
          let reference = ReferenceAttention.row(row, head: head, query: q, key: k, value: v, shape: shape,
                                                 graph: try Graph(parsing: mask), scale: 1 / 8.0.squareRoot())
          let base = (head * 300 + row) * 8
          XCTAssertLessThanOrEqual(ReferenceAttention.relativeError(computed: written.scalars[base..<base + 8], reference: reference), 1e-5, mask)
        }
      }
      // Mapped far keys give the library's exact bytes; read ones agree to fp32 rounding.
      for i in 0..<expected.scalars.count { XCTAssertEqual(written.scalars[i], expected.scalars[i], accuracy: 1e-5, mask) }
      XCTAssertFalse(FileManager.default.fileExists(atPath: try OutputPath(directory.path("o.npy")).progressRecordPath))
    }
    XCTAssertEqual(try directory.entries().filter { $0.hasPrefix(".") }, [], "temporary or lock files left behind")
  }

  /// Cancelled after two chunks, the job keeps its record; resumed, it gives the uninterrupted bytes.
  func testCancelledJobResumesToTheSameBytes() throws {
    _ = try writeInputs(tokens: 500)
    _ = try job("window:9+global:3", output: "whole.npy").run()
    var chunks = 0
    let first = try job("window:9+global:3").run(progress: { _ in chunks += 1 }, isCancelled: { chunks >= 1 })  // polled before the chunk's report
    XCTAssertFalse(first.isComplete)
    XCTAssertEqual(first.completedRows, 128)
    let record = try XCTUnwrap(try ProgressRecord.load(at: OutputPath(directory.path("o.npy"))))
    XCTAssertEqual(record.completedRows, 128)
    // What an interrupted job keeps beside its output is hidden: a listing shows the outputs and inputs only.
    XCTAssertEqual(Set(try directory.entries().filter { !$0.hasPrefix(".") }), ["q.npy", "k.npy", "v.npy", "whole.npy"])
    XCTAssertEqual(Set(try directory.entries().filter { $0.hasPrefix(".") }), [".o.npy.partial", ".o.npy.progress.json"])
    let second = try job("window:9+global:3").run(resume: true)
    XCTAssertTrue(second.isComplete)
    XCTAssertEqual(second.firstRow, 128)
    XCTAssertEqual(FileManager.default.contents(atPath: directory.path("o.npy")),
                   FileManager.default.contents(atPath: directory.path("whole.npy")))
  }

  /// a NaN at the end of K is reported before any work (no chunk computed, nothing created).
  func testNonFiniteKeysAndValuesAreFoundBeforeTheWork() throws {
    for (file, name) in [("k.npy", "key"), ("v.npy", "value")] {
      var (_, k, v) = try writeInputs(tokens: 400)
      if file == "k.npy" { k.scalars[k.scalars.count - 3] = .nan; try k.write(npyFile: directory.path(file)) }
      else { v.scalars[v.scalars.count - 1] = -.infinity; try v.write(npyFile: directory.path(file)) }
      var chunks = 0
      XCTAssertThrowsError(try job("window:4").run(progress: { _ in chunks += 1 })) { error in
        XCTAssertEqual((error as? GraphAttentionError)?.kind, .value)
        XCTAssertTrue("\(error)".contains(name + "[1, 399,"), "\(error)")
      }
      XCTAssertEqual(chunks, 0, "the check must come before the work")
      XCTAssertEqual(try directory.entries().filter { !$0.hasSuffix("npy") || $0.hasPrefix(".") }, [])
    }
  }

  /// a key file truncated while the job reads it through the mapping is an error naming the
  /// file (not a bus error), and the progress record stays for --resume.
  func testTruncatedInputIsAnErrorNamingTheFile() throws {
    _ = try writeInputs(heads: 1, tokens: 4096, dim: 16)
    var streamed = try job("window:8", chunkRows: 512)
    streamed.scatteredKeys = .mapped
    let keyPath = directory.path("k.npy")
    var chunks = 0
    XCTAssertThrowsError(try streamed.run(progress: { _ in
      chunks += 1
      if chunks == 1 { XCTAssertEqual(truncate(keyPath, 4096), 0) }  // only the header and the first rows remain
    })) { error in
      let error = error as? GraphAttentionError
      XCTAssertEqual(error?.kind, .file)
      XCTAssertTrue(error?.problem.contains(keyPath) ?? false, "\(String(describing: error))")
      XCTAssertTrue(error?.problem.contains("SIGBUS") ?? false, "\(String(describing: error))")
      XCTAssertTrue(error?.fix.contains("--resume") ?? false, "\(String(describing: error))")
    }
    let record = try XCTUnwrap(try ProgressRecord.load(at: OutputPath(directory.path("o.npy"))), "the record must stay for --resume")
    XCTAssertEqual(record.completedRows, 512)
    XCTAssertTrue(FileManager.default.fileExists(atPath: try XCTUnwrap(record.temporaryPath)))
    XCTAssertFalse(FileManager.default.fileExists(atPath: directory.path("o.npy")))
  }

  /// A record an earlier version left under the unhidden name is not ignored (that would start over and
  /// discard the interrupted rows): the run is refused, saying where the record now goes.
  func testUnhiddenRecordOfAnEarlierVersionIsReportedWithTheRename() throws {
    _ = try writeInputs(tokens: 500)
    var chunks = 0
    _ = try job("window:9").run(progress: { _ in chunks += 1 }, isCancelled: { chunks >= 1 })
    let location = try OutputPath(directory.path("o.npy"))
    XCTAssertEqual(rename(location.progressRecordPath, location.unhiddenProgressRecordPath), 0)
    XCTAssertThrowsError(try job("window:9").run(resume: true)) { error in
      let error = error as? GraphAttentionError
      XCTAssertEqual(error?.kind, .file)
      XCTAssertTrue(error?.fix.contains("mv \(location.unhiddenProgressRecordPath) \(location.progressRecordPath)") ?? false,
                    "\(String(describing: error))")
    }
    XCTAssertEqual(rename(location.unhiddenProgressRecordPath, location.progressRecordPath), 0)
    XCTAssertTrue(try job("window:9").run(resume: true).isComplete)
  }

  /// The output side of a truncated file: the partial output truncated under the run (or its blocks gone) is an
  /// error naming it, not a bus error.
  func testTruncatedOutputIsAnErrorNamingTheFile() throws {
    _ = try writeInputs(heads: 1, tokens: 4096, dim: 16)
    let partial = TensorFile.resumePath(for: directory.path("o.npy"))
    var chunks = 0
    XCTAssertThrowsError(try job("window:8", chunkRows: 512).run(progress: { _ in
      chunks += 1
      if chunks == 1 { XCTAssertEqual(truncate(partial, 4096), 0) }
    })) { error in
      XCTAssertEqual((error as? GraphAttentionError)?.kind, .file)
      XCTAssertTrue("\(error)".contains(partial) && "\(error)".contains("SIGBUS"), "\(error)")
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: directory.path("o.npy")))
  }

  /// a refused resume lists what changed; the same output by a relative path is the same
  /// job; a deleted partial output gets a clear message.
  func testRefusedResumeSaysWhatChanged() throws {
    _ = try writeInputs(tokens: 400)
    var chunks = 0
    _ = try job("window:4").run(progress: { _ in chunks += 1 }, isCancelled: { chunks >= 1 })
    XCTAssertThrowsError(try job("window:5").run(resume: true)) { error in
      XCTAssertTrue("\(error)".contains("the mask was window:4, now window:5"), "\(error)")
    }
    var otherType = try job("window:4")
    otherType.outputType = .float16
    XCTAssertThrowsError(try otherType.run(resume: true)) { error in
      XCTAssertTrue("\(error)".contains("the output type was f32, now f16"), "\(error)")
    }
    // The same output through a relative path (and a symlinked directory) is the same job.
    let previous = FileManager.default.currentDirectoryPath
    try FileManager.default.createSymbolicLink(atPath: directory.path("link"), withDestinationPath: directory.url.path)
    XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(directory.path("link")))
    defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
    var relative = try job("window:4")
    relative.output = "o.npy"
    chunks = 0
    let resumed = try relative.run(resume: true, progress: { _ in chunks += 1 }, isCancelled: { chunks >= 1 })
    XCTAssertEqual(resumed.firstRow, 128)
    // The partial output truncated, then deleted, under the record.
    let record = try XCTUnwrap(try ProgressRecord.load(at: OutputPath(directory.path("o.npy"))))
    let partial = try XCTUnwrap(record.temporaryPath)
    XCTAssertEqual(truncate(partial, 1000), 0)
    XCTAssertThrowsError(try job("window:4").run(resume: true)) { error in
      XCTAssertTrue("\(error)".contains("is damaged or truncated"), "\(error)")
    }
    try FileManager.default.removeItem(atPath: partial)
    XCTAssertThrowsError(try job("window:4").run(resume: true)) { error in
      XCTAssertTrue("\(error)".contains("is missing (deleted?)"), "\(error)")
      XCTAssertTrue("\(error)".contains("without --resume"), "\(error)")
    }
  }

  /// an output that is an input (by any path) is refused before anything is written.
  func testOutputThatIsAnInputIsRefused() throws {
    _ = try writeInputs(tokens: 100)
    let before = FileManager.default.contents(atPath: directory.path("q.npy"))
    try FileManager.default.linkItem(atPath: directory.path("k.npy"), toPath: directory.path("hard.npy"))
    for output in ["q.npy", "./q.npy", "hard.npy"] {
      var streamed = try job("window:2")
      streamed.output = directory.url.path + "/" + output
      XCTAssertThrowsError(try streamed.run()) { error in
        XCTAssertTrue("\(error)".contains("is the input"), "\(output): \(error)")
      }
    }
    XCTAssertEqual(FileManager.default.contents(atPath: directory.path("q.npy")), before)
  }

  /// while one job holds an output, a second (or a resume) is refused; afterwards it is free.
  func testSecondJobOnTheSameOutputIsRefused() throws {
    _ = try writeInputs(tokens: 300)
    var chunks = 0
    var refusals: [String] = []
    _ = try job("window:4").run(progress: { _ in
      chunks += 1
      guard chunks == 1 else { return }
      for resume in [false, true] {
        do { _ = try self.job("window:8").run(resume: resume) } catch { refusals.append("\(error)") }
      }
    })
    XCTAssertEqual(refusals.count, 2)
    for refusal in refusals { XCTAssertTrue(refusal.contains("another run is writing"), refusal) }
    XCTAssertEqual(try directory.entries().filter { $0.hasPrefix(".") }, [])
    XCTAssertNoThrow(try job("window:8").run())
  }

  /// the sampled check is capped at the row count.
  func testCheckRowsAreCappedAtTheRowCount() throws {
    _ = try writeInputs(tokens: 40)
    var streamed = try job("window:3")
    streamed.checkRows = 1_000_000_000
    let result = try streamed.run()
    XCTAssertEqual(result.check?.rows, 40)
  }

  /// `ContextPlan` predicts the chunk the job runs.
  func testPlanPredictsTheJobsChunk() throws {
    _ = try writeInputs(heads: 2, tokens: 1500, dim: 8)
    for mask in ["window:4", "window:2+random:0.01:3", "causal"] {
      var streamed = try job(mask)
      streamed.chunkRows = nil
      let result = try streamed.run()
      let plan = try ContextPlan(graph: try Graph(parsing: mask),
                                 request: .init(headDim: 8, heads: 2, storage: .float32, memoryBytes: 1 << 30, diskBytes: 1 << 30))
      XCTAssertEqual(plan.chunkRows(tokens: 1500), result.chunkRows, mask)
    }
  }
}
