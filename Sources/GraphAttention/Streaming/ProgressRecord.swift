#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The small hidden JSON file beside an output (`.<name>.progress.json`) that records how far a streamed job
/// got, so that `StreamingAttention.run(resume: true)` can continue it.
///
/// It names the job (mask, inputs with their real paths, sizes and modification times, output type,
/// chunk rows, scale, empty-row policy, token count, the output's real path) so that a resume with
/// anything changed is refused, saying what changed, instead of mixing two computations. It is written
/// atomically (temporary file, then rename) after the output pages it vouches for are on disk.
///
/// ```swift
/// if let record = try ProgressRecord.load(at: try OutputPath("o.npy")) {
///   print(record.completedRows, "of", record.tokens)
/// }
/// ```
package struct ProgressRecord: Sendable, Equatable {
  /// One input file as the job saw it.
  package struct Input: Sendable, Equatable {
    /// The file's real (absolute, symlink-free) path.
    package var path: String
    /// The tensor name inside a `.safetensors` file.
    package var name: String
    /// The file's size in bytes (-1 when it could not be inspected).
    package var bytes: Int
    /// The file's modification time, seconds since 1970 (nanosecond resolution).
    package var modified: Double
  }

  /// The record format's version; records of another version are refused.
  package static let currentVersion = 2
  /// The largest record file read (a record is a few hundred bytes per input; more is not a record).
  static let maximumBytes = 1 << 24
  /// The record format's version.
  package var version = ProgressRecord.currentVersion
  /// The mask specification (`Graph.description`).
  package var mask: String
  /// The query, key and value files.
  package var inputs: [Input]
  /// The output storage type (`StorageType.rawValue`).
  package var outputType: String
  /// Query rows per chunk.
  package var chunkRows: Int
  /// The scale, or nil for `1/sqrt(d_k)`.
  package var scale: Float?
  /// The empty-row policy (`EmptyRowPolicy.rawValue`).
  package var emptyRows: String
  /// Query rows `L_q`.
  package var tokens: Int
  /// Query rows of every head whose output is on disk: `0..<completedRows` are done.
  package var completedRows = 0
  /// The partially written output (`TensorFile.resumePath(for:)`), once created.
  package var temporaryPath: String?
  /// The output's real path (its directory resolved), so `o.npy` and `/abs/o.npy` are the same job.
  package var output: String
  /// The score modifiers (softcap, ALiBi, sinks) in words, "none" without any.
  package var scoreModifiers = "none"

  /// Describes a job; inputs are inspected (`stat`) now.
  package init(output: String, mask: String, inputs: [(path: String, name: String)], outputType: String, chunkRows: Int,
              scale: Float?, emptyRows: String, tokens: Int, scoreModifiers: String = "none") {
    self.output = OutputPath.canonical(output)
    self.scoreModifiers = scoreModifiers
    self.mask = mask
    self.inputs = inputs.map { input in
      var info = stat()
      let found = stat(input.path, &info) == 0
      return Input(path: OutputPath.canonical(input.path), name: input.name, bytes: found ? Int(info.st_size) : -1,
                   modified: found ? Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) * 1e-9 : 0)
    }
    self.outputType = outputType
    self.chunkRows = chunkRows
    self.scale = scale
    self.emptyRows = emptyRows
    self.tokens = tokens
  }

  /// The record beside `output`, or nil when there is none.
  /// - Throws: `GraphAttentionError(.file)` when the file exists but is not a record of this version, or when
  ///   only a record of an earlier version's unhidden name (`<name>.progress.json`) exists.
  /// - Complexity: O(record size).
  static func load(at output: OutputPath) throws -> ProgressRecord? {
    let path = output.progressRecordPath
    guard let bytes = storageReadWholeFile(path, limit: ProgressRecord.maximumBytes) else {
      let unhidden = output.unhiddenProgressRecordPath
      if access(unhidden, F_OK) == 0 {
        throw GraphAttentionError(.file, "an interrupted run of an earlier version left \(unhidden); records are now kept at \(path)",
                                  fix: "rename it (mv \(unhidden) \(path)) to resume with --resume, or delete it and \(output.partialPath) to start over")
      }
      return nil
    }
    guard let record = ProgressRecord(json: bytes) else {
      throw GraphAttentionError(.file, "progress record \(path) is unreadable or from another version",
                                fix: "delete it (and the temporary output it names, \(output.partialPath)) to start over")
    }
    return record
  }

  /// Deletes the record beside `output`, if any.
  static func remove(at output: OutputPath) {
    unlink(output.progressRecordPath)
  }

  /// Writes the record atomically, so a kill leaves the previous or the new record, never half of one.
  /// - Throws: `GraphAttentionError(.file)` when the file cannot be written.
  func save(at output: OutputPath) throws {
    let bytes = Array(json.utf8)
    try AtomicFile.write(to: output.progressRecordPath) { sink in
      try bytes.withUnsafeBytes { try sink.write($0) }
    }
  }

  /// What differs between this (the interrupted job's) record and `other` (the job now asked for),
  /// ignoring the progress itself; empty when they describe the same computation.
  package func differences(from other: ProgressRecord) -> [String] {
    var changes: [String] = []
    func compare<T: Equatable>(_ what: String, _ mine: T, _ theirs: T, _ text: (T) -> String) {
      if mine != theirs { changes.append("\(what) was \(text(mine)), now \(text(theirs))") }
    }
    compare("version", version, other.version) { "\($0)" }
    compare("the mask", mask, other.mask) { $0 }
    compare("the output", output, other.output) { $0 }
    compare("the output type", outputType, other.outputType) { $0 }
    compare("chunk rows", chunkRows, other.chunkRows) { "\($0)" }
    compare("the scale", scale, other.scale) { $0.map { "\($0)" } ?? "1/sqrt(d_k)" }
    compare("the empty-row policy", emptyRows, other.emptyRows) { $0 }
    compare("the score modifiers", scoreModifiers, other.scoreModifiers) { $0 }
    compare("the token count", tokens, other.tokens) { "\($0)" }
    let roles = ["query", "key", "value"]
    for i in 0..<max(inputs.count, other.inputs.count) {
      let role = i < roles.count ? roles[i] : "input \(i)"
      guard i < inputs.count, i < other.inputs.count else { changes.append("the number of inputs"); break }
      let (a, b) = (inputs[i], other.inputs[i])
      compare("the \(role) file", a.path, b.path) { $0 }
      compare("the \(role) tensor name", a.name, b.name) { $0 }
      if a.path == b.path {
        compare("the \(role) file's size", a.bytes, b.bytes) { "\($0) bytes" }
        compare("the \(role) file's modification time", a.modified, b.modified) { "\($0)" }
      }
    }
    return changes
  }

  /// Throws unless `other` describes the same computation, naming what changed.
  func requireSameJob(as other: ProgressRecord, recordPath: String) throws {
    let changes = differences(from: other)
    guard changes.isEmpty else {
      throw GraphAttentionError(
        .option, "the interrupted run in \(recordPath) was a different job: " + changes.joined(separator: "; "),
        fix: "repeat the original command with --resume, or delete \(recordPath) and \(temporaryPath ?? "its .partial file") to start over")
    }
  }

  // MARK: - JSON

  /// The record as a JSON object (keys sorted, one per line).
  var json: String {
    var fields: [(String, String)] = [
      ("chunkRows", "\(chunkRows)"), ("completedRows", "\(completedRows)"), ("emptyRows", JSONText.quoted(emptyRows)),
      ("inputs", "[" + inputs.map {
        "{\"bytes\":\($0.bytes),\"modified\":\($0.modified),\"name\":\(JSONText.quoted($0.name)),\"path\":\(JSONText.quoted($0.path))}"
      }.joined(separator: ",") + "]"),
      ("mask", JSONText.quoted(mask)), ("output", JSONText.quoted(output)),
      ("outputType", JSONText.quoted(outputType)),
    ]
    if let scale { fields.append(("scale", "\(scale)")) }
    fields.append(("scoreModifiers", JSONText.quoted(scoreModifiers)))
    if let temporaryPath { fields.append(("temporaryPath", JSONText.quoted(temporaryPath))) }
    fields += [("tokens", "\(tokens)"), ("version", "\(version)")]
    return "{\n" + fields.map { "  \"\($0.0)\" : \($0.1)" }.joined(separator: ",\n") + "\n}\n"
  }

  /// Parses `json`; nil when it is not a record of the current version.
  init?(json bytes: [UInt8]) {
    var parser = JSONParser(bytes: bytes)
    guard let record = try? parser.parseDocument(),
          let version = record["version"]?.number, Int(exactly: version) == ProgressRecord.currentVersion,
          let mask = record["mask"]?.string, case let .array(inputs)? = record["inputs"],
          let outputType = record["outputType"]?.string, let chunkRows = record["chunkRows"]?.number,
          let emptyRows = record["emptyRows"]?.string, let tokens = record["tokens"]?.number,
          let completed = record["completedRows"]?.number, let output = record["output"]?.string
    else { return nil }
    var parsedInputs: [Input] = []
    for input in inputs {
      guard let path = input["path"]?.string, let name = input["name"]?.string,
            let bytes = input["bytes"]?.number, let modified = input["modified"]?.number else { return nil }
      parsedInputs.append(Input(path: path, name: name, bytes: Int(bytes), modified: modified))
    }
    self.mask = mask
    self.inputs = parsedInputs
    self.outputType = outputType
    self.chunkRows = Int(chunkRows)
    self.scale = record["scale"]?.number.map { Float($0) }
    self.emptyRows = emptyRows
    self.tokens = Int(tokens)
    self.completedRows = Int(completed)
    self.temporaryPath = record["temporaryPath"]?.string
    self.output = output
    self.scoreModifiers = record["scoreModifiers"]?.string ?? "none"
  }
}

