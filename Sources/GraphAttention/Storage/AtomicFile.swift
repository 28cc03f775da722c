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
public enum AtomicFile {
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
  public static func write(to path: String, _ body: (inout AtomicFile.Sink) throws -> Void) throws {
    let (directory, prefix, name) = try splitPath(path)
    try checkDirectory(directory, for: path)

    var existing = stat()
    let existingMode: mode_t?
    if stat(path, &existing) == 0 {
      if existing.st_mode & S_IFMT == S_IFDIR {
        throw GraphAttentionError(
          .file, "cannot write \(path): it is a directory",
          fix: "choose a file name inside the directory, e.g. \(path.hasSuffix("/") ? path : path + "/")out.npy")
      }
      existingMode = existing.st_mode & S_IFMT == S_IFREG ? existing.st_mode & 0o7777 : nil
    } else {
      existingMode = nil
    }

    // Retry on the (unlikely) name collision with another writer's temporary file.
    var temporary = ""
    var fd: Int32 = -1
    for _ in 0..<16 {
      let random = String(UInt64.random(in: .min ... .max), radix: 16)
      temporary = prefix + ".\(name).tmp-\(getpid())-\(random)"
      repeat {
        fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
      } while fd < 0 && errno == EINTR
      if fd >= 0 || errno != EEXIST { break }
    }
    guard fd >= 0 else {
      let code = errno
      throw GraphAttentionError(
        .file, "cannot create a temporary file next to \(path): \(storageErrnoText(code))",
        fix: "check that \(directory) is writable and the disk is not full")
    }

    var closed = false
    var renamed = false
    defer {
      if !closed { close(fd) }
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

    var status: Int32
    repeat { status = fsync(fd) } while status != 0 && errno == EINTR
    guard status == 0 else { throw failure("cannot flush \(path) to disk", errno) }
    closed = true
    guard close(fd) == 0 else { throw failure("cannot finish writing \(path)", errno) }
    guard rename(temporary, path) == 0 else { throw failure("cannot move the new file into place at \(path)", errno) }
    renamed = true
    syncDirectory(directory)
  }

  /// A buffered destination for `AtomicFile.write`'s body.
  ///
  /// Small writes are gathered into a 1 MiB buffer; writes at least that large go straight to the
  /// file. Only `AtomicFile.write` creates sinks, and a sink must not be used after its body returns.
  public struct Sink {
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
    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws {
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

    /// Loops over `write(2)`, which may write less than asked or be interrupted by a signal.
    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
      guard let base = bytes.baseAddress else { return }
      var done = 0
      while done < bytes.count {
        let n = posixWrite(descriptor, base + done, min(bytes.count - done, 1 << 30))
        if n < 0 {
          let code = errno
          if code == EINTR { continue }
          throw failure("cannot write \(path)", code)
        }
        done += n
      }
    }
  }

  // MARK: - Helpers

  /// Splits a path into its directory ("." when there is none), everything up to and including the
  /// last slash ("" when there is none), and its last component.
  private static func splitPath(_ path: String) throws -> (directory: String, prefix: String, name: String) {
    let bytes = Array(path.utf8)
    guard !bytes.isEmpty, bytes.last != UInt8(ascii: "/") else {
      throw GraphAttentionError(.file, "cannot write to '\(path)': it does not name a file",
                                fix: "give an output file name, e.g. out.npy")
    }
    guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return (".", "", path) }
    let directory = slash == 0 ? "/" : String(decoding: bytes[..<slash], as: UTF8.self)
    return (directory, String(decoding: bytes[...slash], as: UTF8.self), String(decoding: bytes[(slash + 1)...], as: UTF8.self))
  }

  /// Fails early, with advice, when the output directory cannot receive the file.
  private static func checkDirectory(_ directory: String, for path: String) throws {
    var info = stat()
    guard stat(directory, &info) == 0 else {
      let code = errno
      if code == ENOENT {
        throw GraphAttentionError(.file, "cannot write \(path): directory \(directory) does not exist",
                                  fix: "create it (mkdir -p \(directory)) or choose another --output")
      }
      throw GraphAttentionError(.file, "cannot write \(path): directory \(directory) is not accessible: \(storageErrnoText(code))",
                                fix: "check the directory's permissions or choose another --output")
    }
    guard info.st_mode & S_IFMT == S_IFDIR else {
      throw GraphAttentionError(.file, "cannot write \(path): \(directory) is not a directory",
                                fix: "choose another --output whose parent is a directory")
    }
    guard access(directory, W_OK | X_OK) == 0 else {
      let code = errno
      throw GraphAttentionError(.file, "cannot write \(path): directory \(directory) is not writable: \(storageErrnoText(code))",
                                fix: "make the directory writable (chmod u+w \(directory)) or choose another --output")
    }
  }

  /// Best-effort flush of the directory entry so the rename itself survives a crash; some file
  /// systems refuse `fsync` on directories, which is harmless here.
  private static func syncDirectory(_ directory: String) {
    let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    fsync(fd)
    close(fd)
  }
}

/// A `.file` error for a failed system call on an output file.
private func failure(_ what: String, _ code: Int32) -> GraphAttentionError {
  GraphAttentionError(.file, "\(what): \(storageErrnoText(code))",
                      fix: "check free disk space and permissions; the previous file (if any) is unchanged")
}

/// `write(2)`, reachable under a name that `Sink.write` does not shadow.
private func posixWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
  write(fd, bytes, count)
}
