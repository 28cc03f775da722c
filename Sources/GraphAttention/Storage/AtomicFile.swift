#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a file so that readers see either the old file or the complete new one, never a truncated file.
///
/// The bytes go to a hidden temporary file in the destination's directory, which is flushed to disk
/// and then renamed over the destination; `rename` within one file system is atomic.
///
/// ```swift
/// try AtomicFile.write(to: "out.bin") { sink in
///   try values.withUnsafeBytes { try sink.write($0) }
/// }
/// ```
///
/// If the process is killed mid-write, the destination is intact but a hidden
/// `.<name>.tmp-<pid>-<random>` file may be left in its directory.
package enum AtomicFile {
  /// Writes `body`'s output to a temporary file in the same directory as `path`, flushes it to
  /// disk, then renames it over `path`.
  ///
  /// The temporary file is named `.<name>.tmp-<pid>-<random>`. When `path` already names a regular
  /// file, the new file gets the old one's permission bits; otherwise it is created with mode 0644
  /// minus the umask. If `body` throws or any write fails, the temporary file is removed and an
  /// existing file at `path` is left untouched.
  ///
  /// - Parameters:
  ///   - path: the destination file. Its directory must already exist and be writable.
  ///   - body: produces the contents through `Sink.write`; it runs exactly once.
  /// - Throws: `GraphAttentionError(.file)` naming `path` (and the `errno` text) when the directory is
  ///   missing or not writable, `path` is a directory, or creating, writing, syncing or renaming
  ///   fails. An error thrown by `body` is rethrown unchanged if it is a `GraphAttentionError`;
  ///   any other error is wrapped in a `.file` error naming `path`.
  /// - Complexity: O(bytes written), in large `write(2)` calls.
  package static func write(to path: String, _ body: (inout AtomicFile.Sink) throws -> Void) throws {
    let output = try OutputPath(path)
    let existingMode = try output.checkWritable()
    let (fd, temporary) = try output.createTemporary(flags: O_WRONLY)

    var renamed = false
    defer {
      close(fd)
      if !renamed { unlink(temporary) }
    }
    if let existingMode { fchmod(fd, existingMode) }

    var sink = Sink(descriptor: fd, path: path)
    do {
      try body(&sink)
    } catch let error as GraphAttentionError {
      throw error
    } catch {
      throw GraphAttentionError(.file, "writing \(path) failed: \(error)",
                                fix: "fix the cause above and write the file again; the previous file (if any) is unchanged")
    }
    try sink.flush()
    try output.commit(descriptor: fd, temporary: temporary)
    renamed = true
  }

  /// Checks, before any work, that a file can be written at `path`: its directory exists, is a
  /// directory, is writable and not on a read-only or pseudo file system, and `path` is not a directory.
  ///
  /// The same checks `write(to:_:)` and `TensorFile.create` make; call it to fail before a long computation.
  /// - Throws: `GraphAttentionError(.file)` saying which of these fails (with its `errno`).
  /// - Complexity: a few system calls.
  package static func checkDestination(_ path: String) throws {
    try OutputPath(path).checkWritable()
  }

  /// Checks, before any work, that `directory` can receive output files: it is an existing writable directory,
  /// or it is missing and its nearest existing ancestor is a writable directory (`createDirectory` then makes
  /// it, parents included). The one rule for every command's output directory.
  /// - Throws: `GraphAttentionError(.file)` naming the problem: a file in the way, or an ancestor that cannot be
  ///   written.
  /// - Complexity: a few system calls per missing component.
  package static func checkDirectoryDestination(_ directory: String, option: String) throws {
    switch AtomicFile.kind(of: directory) {
    case .directory?: return try checkDestination(directory + "/.probe")
    case .other?:
      throw GraphAttentionError(.file, "\(option) \(directory) exists and is not a directory",
                                fix: "give a directory (it is created, with its parents, if missing)")
    case nil:
      // The first missing component is created inside the nearest existing ancestor, which must be writable.
      var missing = directory
      while missing.count > 1, missing.hasSuffix("/") { missing.removeLast() }
      while case let parent = try AtomicFile.directory(of: missing), AtomicFile.kind(of: parent) == nil { missing = parent }
      try checkDestination(missing)
    }
  }

  /// `path` if something exists there, else its nearest existing ancestor (where a new directory's
  /// space comes from).
  package static func nearestExisting(_ path: String) throws -> String {
    var current = path
    while AtomicFile.kind(of: current) == nil {
      let parent = try AtomicFile.directory(of: current)
      if parent == current { break }
      current = parent
    }
    return current
  }

  /// Creates `directory` and its missing parents (as `mkdir -p`); an existing directory is left as it is.
  /// - Throws: `GraphAttentionError(.file)` with the system's reason when a component cannot be created.
  package static func createDirectory(_ directory: String, option: String) throws {
    var trimmed = directory
    while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed.removeLast() }
    guard AtomicFile.kind(of: trimmed) == nil else { return }
    let parent = try AtomicFile.directory(of: trimmed)
    if parent != trimmed { try createDirectory(parent, option: option) }
    if mkdir(trimmed, 0o777) != 0, errno != EEXIST {
      let code = Errno.current
      throw GraphAttentionError(.file, "cannot create the directory \(trimmed) for \(option): \(code)",
                                fix: "choose another \(option), or create the directory yourself")
    }
  }

  private enum Kind { case directory, other }

  /// What is at `path`: a directory, something else, or nothing (nil).
  private static func kind(of path: String) -> Kind? {
    var status = stat()
    guard stat(path, &status) == 0 else { return nil }
    return status.st_mode & S_IFMT == S_IFDIR ? .directory : .other
  }

  /// The directory a file at `path` goes in: "." for a bare name, "/" for a file at the root
  /// (`a/b/o.npy` -> `a/b`). The same split every output uses.
  /// - Throws: `GraphAttentionError(.file)` when `path` is empty or ends in a slash (it names no file).
  /// - Complexity: O(`path.utf8.count`).
  package static func directory(of path: String) throws -> String {
    try OutputPath(path).directory
  }

  /// A buffered destination for `AtomicFile.write`'s body.
  ///
  /// Small writes are gathered into a 1 MiB buffer; writes at least that large go straight to the
  /// file. Only `AtomicFile.write` creates sinks, and a sink must not be used after its body returns.
  package struct Sink {
    private let descriptor: Int32
    private let path: String
    private var buffer: [UInt8]
    private var used = 0
    private static let capacity = 1 << 20

    init(descriptor: Int32, path: String) {
      self.descriptor = descriptor
      self.path = path
      self.buffer = [UInt8](repeating: 0, count: Self.capacity)
    }

    /// Appends `bytes` to the file.
    ///
    /// - Throws: `GraphAttentionError(.file)` naming the destination path and the `errno` text
    ///   (for example "No space left on device") if the operating system rejects the write.
    /// - Complexity: O(`bytes.count`).
    package mutating func write(_ bytes: UnsafeRawBufferPointer) throws {
      guard bytes.count > 0 else { return }
      if used + bytes.count > Self.capacity {
        try flush()
        if bytes.count >= Self.capacity {
          try writeAll(bytes)
          return
        }
      }
      let offset = used
      buffer.withUnsafeMutableBytes { raw in
        UnsafeMutableRawBufferPointer(rebasing: raw[offset...]).copyMemory(from: bytes)
      }
      used += bytes.count
    }

    /// Writes out whatever is buffered.
    mutating func flush() throws {
      guard used > 0 else { return }
      let count = used
      used = 0
      try buffer.withUnsafeBytes { raw in
        try writeAll(UnsafeRawBufferPointer(rebasing: raw[0..<count]))
      }
    }

    /// Writes all of `bytes`, retrying short writes and `EINTR`.
    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
      guard let base = bytes.baseAddress else { return }
      if case .failure(let code) = transferAll(bytes.count, { done, chunk in posixWrite(descriptor, base + done, chunk) }) {
        throw storageWriteFailure(path, code)
      }
    }
  }
}

/// `write(2)`, reachable under a name that `Sink.write` does not shadow.
private func posixWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
  write(fd, bytes, count)
}
