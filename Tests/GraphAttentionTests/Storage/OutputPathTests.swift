import Foundation
@testable import GraphAttention
import XCTest

/// The one implementation of output checks, temporary files and typed errno (OutputPath, Syscalls).
final class OutputPathTests: XCTestCase {
  private var scratch: StorageScratchDirectory!

  override func setUpWithError() throws {
    scratch = try StorageScratchDirectory()
  }

  override func tearDown() {
    scratch.remove()
  }

  private func error(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> GraphAttentionError? {
    do {
      try body()
      XCTFail("expected an error", file: file, line: line)
      return nil
    } catch let error as GraphAttentionError {
      return error
    } catch {
      XCTFail("unexpected \(error)", file: file, line: line)
      return nil
    }
  }

  func testSplitsPaths() throws {
    let cases: [(String, String, String, String)] = [
      ("o.npy", ".", "", "o.npy"), ("/o.npy", "/", "/", "o.npy"), ("a/b/o.npy", "a/b", "a/b/", "o.npy"),
      ("./o", ".", "./", "o"), ("é/ü.npy", "é", "é/", "ü.npy"),
    ]
    for (path, directory, prefix, name) in cases {
      let output = try OutputPath(path)
      XCTAssertEqual([output.directory, output.prefix, output.name], [directory, prefix, name], path)
    }
    for bad in ["", "dir/", "/"] {
      XCTAssertEqual(error { _ = try OutputPath(bad) }?.kind, .file, bad)
    }
  }

  func testOutputBelowARegularFileSaysWhichComponentIsAFile() throws {
    let file = try scratch.write([1, 2, 3], to: "q.npy")
    for path in [file + "/o.npy", file + "/deeper/o.npy"] {
      let found = error { try AtomicFile.checkDestination(path) }
      XCTAssertEqual(found?.errno, .notDirectory, path)
      XCTAssertTrue(found?.problem.contains("\(file) is a file, not a directory") ?? false, found?.description ?? "")
      XCTAssertFalse(found?.problem.contains("does not exist") ?? true)
    }
  }

  func testMissingDirectoryAndDirectoryPath() throws {
    let missing = error { try AtomicFile.checkDestination(scratch.path("nosuch/o.npy")) }
    XCTAssertEqual(missing?.errno, .noSuchFileOrDirectory)
    XCTAssertTrue(missing?.problem.contains("does not exist") ?? false)
    try FileManager.default.createDirectory(atPath: scratch.path("d"), withIntermediateDirectories: false)
    let directory = error { try AtomicFile.checkDestination(scratch.path("d")) }
    XCTAssertEqual(directory?.errno, .isDirectory)
    XCTAssertNoThrow(try AtomicFile.checkDestination(scratch.path("d/o.npy")))
  }

  func testProcIsNotWritable() throws {
    guard FileManager.default.fileExists(atPath: "/proc/self") else { throw XCTSkip("no /proc here") }
    for attempt in [{ try AtomicFile.checkDestination("/proc/o.npy") },
                    { _ = try TensorFile.create("/proc/o.npy", shape: [4], type: .float32) },
                    { try AtomicFile.write(to: "/proc/o.bin") { _ in } }] {
      let found = error(attempt)
      XCTAssertTrue(found?.problem.contains("not writable") ?? false, found?.description ?? "")
      XCTAssertFalse(found?.problem.contains("GiB free") ?? true)
    }
  }

  func testErrorsKeepTheErrnoOfTheirSystemCall() throws {
    // /dev/full fails every write with ENOSPC; a read-only descriptor fails with EBADF.
    let full = open("/dev/full", O_WRONLY)
    guard full >= 0 else { throw XCTSkip("no /dev/full") }
    defer { close(full) }
    let bytes = [UInt8](repeating: 1, count: 100)
    let noSpace = error { try bytes.withUnsafeBytes { try storageWriteAll(full, $0, path: "/dev/full") } }
    XCTAssertEqual(noSpace?.errno, .noSpace)
    XCTAssertEqual(noSpace?.kind, .resource)
    let readOnly = open("/dev/null", O_RDONLY)
    defer { close(readOnly) }
    let badDescriptor = error { try bytes.withUnsafeBytes { try storageWriteAll(readOnly, $0, path: "/dev/null") } }
    XCTAssertEqual(badDescriptor?.errno, Errno(rawValue: EBADF))
    XCTAssertEqual(badDescriptor?.kind, .file)
    let missing = error { _ = try NPYArray(contentsOf: scratch.path("nosuch.npy")) }
    XCTAssertEqual(missing?.errno, .noSuchFileOrDirectory)
    XCTAssertEqual(OutputPath.notWritableForTesting(.readOnlyFileSystem).errno, .readOnlyFileSystem)
    XCTAssertTrue(OutputPath.notWritableForTesting(.readOnlyFileSystem).problem.contains("read-only file system"))
    XCTAssertEqual(OutputPath.notWritableForTesting(.permissionDenied).errno, .permissionDenied)
  }

  /// Too little space names the option that helps on `run` (it has --output-dtype, not --dtype).
  func testNotEnoughSpaceNamesRunsOutputDtype() throws {
    let found = error { _ = try TensorFile.create(scratch.path("o.npy"), shape: [1 << 50], type: .float32) }
    XCTAssertEqual(found?.kind, .resource)
    XCTAssertTrue(found?.fix.contains("--output-dtype f16") ?? false, found?.description ?? "")
    XCTAssertEqual(try scratch.entries(), [], "nothing is created")
  }

  func testRetriesInterruptedCallsOnly() {
    var calls = 0
    let retried = valueOrErrno { () -> Int32 in
      calls += 1
      if calls < 3 { errno = EINTR; return -1 }
      return 7
    }
    XCTAssertEqual(try retried.get(), 7)
    XCTAssertEqual(calls, 3)
    calls = 0
    let notRetried = valueOrErrno(retryOnInterrupt: false) { () -> Int32 in
      calls += 1
      errno = EINTR
      return -1
    }
    XCTAssertEqual(calls, 1)
    XCTAssertThrowsError(try notRetried.get()) { XCTAssertEqual($0 as? Errno, .interrupted) }
    let failed = valueOrErrno { () -> Int32 in errno = EACCES; return -1 }
    XCTAssertThrowsError(try failed.get()) { XCTAssertEqual($0 as? Errno, .permissionDenied) }
    // Short transfers are continued until the count is reached or a call returns 0.
    var chunks: [Int] = []
    let moved = transferAll(10) { done, chunk in chunks.append(done); return min(chunk, 3) }
    XCTAssertEqual(try moved.get(), 10)
    XCTAssertEqual(chunks, [0, 3, 6, 9])
    XCTAssertEqual(try transferAll(10) { done, _ in done == 4 ? 0 : 2 }.get(), 4)
  }

  func testTemporaryFilesAreUniqueAndCommitRenames() throws {
    let output = try OutputPath(scratch.path("o.bin"))
    let a = try output.createTemporary(flags: O_RDWR)
    let b = try output.createTemporary(flags: O_RDWR)
    XCTAssertNotEqual(a.path, b.path)
    XCTAssertTrue(a.path.hasPrefix(scratch.path(".o.bin.tmp-")))
    try [UInt8]([9, 8]).withUnsafeBytes { try storageWriteAll(a.descriptor, $0, path: a.path) }
    try output.commit(descriptor: a.descriptor, temporary: a.path)
    close(a.descriptor)
    close(b.descriptor)
    unlink(b.path)
    XCTAssertEqual(try scratch.read("o.bin"), [9, 8])
    XCTAssertEqual(try scratch.entries(), ["o.bin"])
  }
}
