import Foundation
import XCTest

/// Runs the `graph-attention` executable built next to the test bundle (`swift test` builds every product).
enum CommandLineRunner {
  /// Starts the CLI with `arguments` in the background, its output discarded (for tests that interrupt
  /// it or race a second run against it); the caller waits for or signals the process.
  static func launch(_ arguments: [String]) throws -> Process {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    return process
  }

  static let executable: URL = {
    var url = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
      let candidate = url.appendingPathComponent("graph-attention")
      if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
      url.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: ".build/debug/graph-attention")
  }()

  /// Runs the executable to completion; fails the test if it is missing. `environment` entries are
  /// added to (or replace) the test's own environment.
  static func run(_ arguments: [String], environment: [String: String] = [:], file: StaticString = #filePath, line: UInt = #line) throws
    -> (status: Int32, stdout: String, stderr: String) {
    guard FileManager.default.isExecutableFile(atPath: executable.path) else {
      XCTFail("graph-attention not found at \(executable.path): run `swift build` first", file: file, line: line)
      return (-1, "", "")
    }
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if !environment.isEmpty {
      process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
  }
}
