import Foundation
import GraphAttention
import XCTest

/// A unique scratch directory under the system temporary directory, removed by `remove()`.
struct StorageScratchDirectory {
  let url: URL

  init() throws {
    url = FileManager.default.temporaryDirectory
      .appendingPathComponent("GraphAttentionStorageTests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  }

  /// The path of `name` inside the directory.
  func path(_ name: String) -> String {
    url.appendingPathComponent(name).path
  }

  /// Names of the entries in the directory, hidden ones included, sorted.
  func entries() throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: url.path).sorted()
  }

  func write(_ bytes: [UInt8], to name: String) throws -> String {
    let target = path(name)
    try Data(bytes).write(to: URL(fileURLWithPath: target))
    return target
  }

  func read(_ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path(name))))
  }

  func remove() {
    try? FileManager.default.removeItem(at: url)
  }
}

/// The bytes of a .npy file with the given header dict, padded the way numpy pads it.
func storageNPYFileBytes(header: String, data: [UInt8], version: UInt8 = 1, pad: Bool = true) -> [UInt8] {
  let lengthBytes = version == 1 ? 2 : 4
  var text = Array(header.utf8)
  if pad {
    let padding = 64 - (8 + lengthBytes + text.count + 1) % 64
    text += [UInt8](repeating: UInt8(ascii: " "), count: padding) + [UInt8(ascii: "\n")]
  }
  var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version, 0]
  for i in 0..<lengthBytes {
    bytes.append(UInt8(truncatingIfNeeded: text.count >> (8 * i)))
  }
  return bytes + text + data
}

/// Little-endian bytes of fixed-width values.
func storageLittleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
  values.flatMap { value in
    (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value.littleEndian >> (8 * $0)) }
  }
}

func storageLittleEndianBytes(_ values: [Float]) -> [UInt8] {
  storageLittleEndianBytes(values.map(\.bitPattern))
}

/// Asserts that `body` throws a `GraphAttentionError` of `kind` whose description contains every
/// string in `mentions`.
func assertStorageError(
  _ kind: GraphAttentionError.Kind, mentions: [String], file: StaticString = #filePath, line: UInt = #line,
  _ body: () throws -> Void
) {
  do {
    try body()
    XCTFail("expected a \(kind) error mentioning \(mentions), but nothing was thrown", file: file, line: line)
  } catch let error as GraphAttentionError {
    XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line)
    for word in mentions {
      XCTAssertTrue(error.description.contains(word), "'\(word)' not in: \(error)", file: file, line: line)
    }
    XCTAssertFalse(error.fix.isEmpty, file: file, line: line)
  } catch {
    XCTFail("expected GraphAttentionError, got \(error)", file: file, line: line)
  }
}
