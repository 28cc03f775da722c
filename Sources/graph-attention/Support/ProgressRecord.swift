import Foundation
import GraphAttention

/// The small file beside an output that records how far a run got, so `--resume` can continue it.
///
/// It names the job (mask, inputs with their sizes and modification times, output type, chunking, scale,
/// empty-row policy) so a resume with anything changed is refused instead of mixing two computations.
struct ProgressRecord: Codable, Equatable {
  struct Input: Codable, Equatable {
    var path: String
    var name: String
    var bytes: Int
    var modified: Double
  }

  var version = 1
  var mask: String
  var inputs: [Input]
  var outputType: String
  var chunkRows: Int
  var scale: Float?
  var emptyRows: String
  var tokens: Int
  var completedRows = 0
  var temporaryPath: String?
  var output: String

  init(output: String, mask: String, inputs: [String], names: [String], outputType: String, chunkRows: Int,
       scale: Float?, emptyRows: String, tokens: Int) {
    self.output = output
    self.mask = mask
    self.inputs = zip(inputs, names).map { path, name in
      let attributes = try? FileManager.default.attributesOfItem(atPath: path)
      return Input(path: URL(fileURLWithPath: path).standardizedFileURL.path, name: name,
                   bytes: (attributes?[.size] as? Int) ?? -1,
                   modified: (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)
    }
    self.outputType = outputType
    self.chunkRows = chunkRows
    self.scale = scale
    self.emptyRows = emptyRows
    self.tokens = tokens
  }

  static func path(for output: String) -> String { output + ".progress.json" }

  static func load(for output: String) throws -> ProgressRecord? {
    let path = path(for: output)
    guard FileManager.default.fileExists(atPath: path) else { return nil }
    do {
      return try JSONDecoder().decode(ProgressRecord.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    } catch {
      throw GraphAttentionError(.file, "progress record \(path) is unreadable (\(error))",
                                fix: "delete it (and the temporary output it names) to start over")
    }
  }

  static func remove(for output: String) {
    try? FileManager.default.removeItem(atPath: path(for: output))
  }

  /// Writes the record atomically, so a kill leaves the previous or the new record, never half of one.
  func save() throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let bytes = Array(try encoder.encode(self))
    try AtomicFile.write(to: ProgressRecord.path(for: output)) { sink in
      try bytes.withUnsafeBytes { try sink.write($0) }
    }
  }

  /// Throws unless `other` describes the same computation (everything but the progress itself).
  func requireSameJob(as other: ProgressRecord) throws {
    var mine = self, theirs = other
    mine.completedRows = 0
    mine.temporaryPath = nil
    theirs.completedRows = 0
    theirs.temporaryPath = nil
    guard mine == theirs else {
      throw GraphAttentionError(.option, "the interrupted run in \(ProgressRecord.path(for: output)) was a different job "
        + "(mask, inputs, their sizes or times, output type, chunk rows, scale or empty-row policy changed)",
        fix: "repeat the original command with --resume, or delete the progress record to start over")
    }
  }
}

/// Ctrl-C as a request to stop after the current chunk, instead of killing the process mid-write.
enum Interrupt {
  nonisolated(unsafe) static var requested = false

  static func install() {
    signal(SIGINT) { _ in
      if Interrupt.requested { _exit(130) }  // a second Ctrl-C stops at once; --resume still works
      Interrupt.requested = true
    }
  }
}
