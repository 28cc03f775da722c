import Foundation
import GraphAttention
import XCTest

final class AtomicFileTests: XCTestCase {
  private var scratch: StorageScratchDirectory!

  override func setUpWithError() throws {
    scratch = try StorageScratchDirectory()
  }

  override func tearDown() {
    scratch.remove()
  }

  private struct BodyFailure: Error {}

  func testWritesSmallAndLargeChunksInOrder() throws {
    let small: [UInt8] = Array("header\n".utf8)
    let large = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    let medium = [UInt8](repeating: 7, count: 900_000)
    let path = scratch.path("out.bin")
    try AtomicFile.write(to: path) { sink in
      try small.withUnsafeBytes { try sink.write($0) }
      try large.withUnsafeBytes { try sink.write($0) }
      try medium.withUnsafeBytes { try sink.write($0) }
      try medium.withUnsafeBytes { try sink.write($0) }
      try small.withUnsafeBytes { try sink.write(UnsafeRawBufferPointer(rebasing: $0[0..<0])) }
      try small.withUnsafeBytes { try sink.write($0) }
    }
    XCTAssertEqual(try scratch.read("out.bin"), small + large + medium + medium + small)
    XCTAssertEqual(try scratch.entries(), ["out.bin"])
  }

  func testReplacesAnExistingFile() throws {
    let path = try scratch.write(Array("old contents".utf8), to: "data.txt")
    try AtomicFile.write(to: path) { sink in
      try Array("new".utf8).withUnsafeBytes { try sink.write($0) }
    }
    XCTAssertEqual(try scratch.read("data.txt"), Array("new".utf8))
    XCTAssertEqual(try scratch.entries(), ["data.txt"])
  }

  func testKeepsPermissionsOfTheReplacedFile() throws {
    let path = try scratch.write([1, 2, 3], to: "private.bin")
    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
    try AtomicFile.write(to: path) { sink in
      try [UInt8](repeating: 9, count: 4).withUnsafeBytes { try sink.write($0) }
    }
    let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
    XCTAssertEqual(mode, 0o600)
  }

  func testThrowingBodyLeavesPreviousFileAndNoTemporaryFile() throws {
    let previous = (0..<5_000).map { UInt8(truncatingIfNeeded: $0) }
    let path = try scratch.write(previous, to: "keep.npy")
    let failure = GraphAttentionError(.value, "output holds NaN", fix: "check the inputs")
    do {
      try AtomicFile.write(to: path) { sink in
        // More than the buffer, so part of it has reached the temporary file before the failure.
        try [UInt8](repeating: 1, count: 3 << 20).withUnsafeBytes { try sink.write($0) }
        throw failure
      }
      XCTFail("expected the body's error")
    } catch let error as GraphAttentionError {
      XCTAssertEqual(error, failure)
    }
    XCTAssertEqual(try scratch.read("keep.npy"), previous)
    XCTAssertEqual(try scratch.entries(), ["keep.npy"])
  }

  func testOtherErrorsFromTheBodyBecomeFileErrors() throws {
    let path = scratch.path("new.bin")
    assertStorageError(.file, mentions: [path]) {
      try AtomicFile.write(to: path) { _ in throw BodyFailure() }
    }
    XCTAssertEqual(try scratch.entries(), [])
  }

  func testMissingDirectoryFailsUpFront() throws {
    let path = scratch.path("no/such/dir/out.npy")
    var bodyRan = false
    assertStorageError(.file, mentions: ["directory", scratch.path("no/such/dir"), "does not exist", "--output"]) {
      try AtomicFile.write(to: path) { _ in bodyRan = true }
    }
    XCTAssertFalse(bodyRan)
  }

  func testParentThatIsAFileFails() throws {
    let parent = try scratch.write([0], to: "plain")
    assertStorageError(.file, mentions: ["not a directory", parent]) {
      try AtomicFile.write(to: parent + "/out.npy") { _ in }
    }
  }

  func testDestinationThatIsADirectoryFails() throws {
    assertStorageError(.file, mentions: ["is a directory", scratch.url.path]) {
      try AtomicFile.write(to: scratch.url.path) { _ in }
    }
    let trailingSlash = scratch.path("sub") + "/"
    assertStorageError(.file, mentions: ["does not name a file"]) {
      try AtomicFile.write(to: trailingSlash) { _ in }
    }
  }
}
