#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where an output file goes, and the one implementation of the steps every output takes: split the
/// path, check that the directory can receive a file, create a temporary file beside it, and rename
/// that over the path once complete (`AtomicFile`, `TensorFile.create` and the command line's early
/// checks all use it). It also names every file a job keeps beside its output, all hidden
/// (`.<name>.<role>`): the resumable partial output, the lock, the progress record and temporaries.
///
/// Messages name the path and what to do; errors from system calls keep their `Errno`.
struct OutputPath {
  /// `path` made absolute with its directory's symlinks resolved (the file itself need not exist), so
  /// that one file named by a relative and an absolute path, or through a link, compares equal; `path`
  /// unchanged when its directory cannot be resolved.
  /// - Complexity: O(path length), one or two `realpath` calls.
  static func canonical(_ path: String) -> String {
    if let resolved = realpath(path, nil) {
      defer { free(resolved) }
      return String(cString: resolved)
    }
    guard let location = try? OutputPath(path), let resolved = realpath(location.directory, nil) else { return path }
    defer { free(resolved) }
    let base = String(cString: resolved)
    return (base == "/" ? "" : base) + "/" + location.name
  }

  /// The path as given.
  let path: String
  /// Its directory: "." when the path has no slash, "/" for a file at the root.
  let directory: String
  /// Everything up to and including the last slash ("" when there is none).
  let prefix: String
  /// The last component.
  let name: String

  /// Splits `path`.
  /// - Throws: `GraphAttentionError(.file)` when `path` is empty or ends in a slash (names no file).
  init(_ path: String) throws {
    let bytes = Array(path.utf8)
    guard !bytes.isEmpty, bytes.last != UInt8(ascii: "/") else {
      throw GraphAttentionError(.file, "cannot write to '\(path)': it does not name a file",
                                fix: "give an output file name, e.g. out.npy")
    }
    self.path = path
    guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else {
      (directory, prefix, name) = (".", "", path)
      return
    }
    directory = slash == 0 ? "/" : String(decoding: bytes[..<slash], as: UTF8.self)
    prefix = String(decoding: bytes[...slash], as: UTF8.self)
    name = String(decoding: bytes[(slash + 1)...], as: UTF8.self)
  }

  /// `prefix + other`: a file beside this one.
  func sibling(_ other: String) -> String { prefix + other }

  // MARK: - The files beside an output

  /// `.<name>.<role>` beside this file: hidden, so a listing shows outputs only, and tied to this one
  /// output by its name.
  func hidden(_ role: String) -> String { sibling(".\(name).\(role)") }

  /// The fixed temporary file of a resumable output, `.<name>.partial` (kept while a job is interrupted).
  var partialPath: String { hidden("partial") }

  /// The lock a streamed job holds on this output for its whole run, `.<name>.lock`.
  var lockPath: String { hidden("lock") }

  /// The progress record of a streamed job onto this output, `.<name>.progress.json`.
  var progressRecordPath: String { hidden("progress.json") }

  /// Where versions before 0.2 kept the progress record (`<name>.progress.json`, not hidden): read only to
  /// tell the user to move it.
  var unhiddenProgressRecordPath: String { path + ".progress.json" }

  /// The output a hidden temporary file is for: `o.npy` for `.o.npy.partial` or `.o.npy.tmp-123-abc`, else nil.
  /// - Complexity: O(`name` length).
  static func outputName(ofTemporary name: String) -> String? {
    guard name.hasPrefix("."), name.count > 1 else { return nil }
    let body = String(name.dropFirst())
    if body.hasSuffix(".partial"), body.count > 8 { return String(body.dropLast(8)) }
    // The last ".tmp-" that is not at the start.
    let bytes = Array(body.utf8), marker = Array(".tmp-".utf8)
    var start = bytes.count - marker.count
    while start > 0 {
      if Array(bytes[start..<(start + marker.count)]) == marker {
        return String(decoding: bytes[..<start], as: UTF8.self)
      }
      start -= 1
    }
    return nil
  }

  /// Checks, before any work, that a new file can be created at `path`.
  ///
  /// - Returns: the permission bits of the regular file already at `path`, to give the new one, or nil.
  /// - Throws: `GraphAttentionError(.file)` when the directory is missing, is not a directory (saying
  ///   which component is a file), cannot be written, is on a read-only or pseudo file system (/proc),
  ///   or `path` is a directory.
  @discardableResult
  func checkWritable() throws -> mode_t? {
    var info = stat()
    if case .failure(let code) = nothingOrErrno({ stat(directory, &info) }) {
      if code == .notDirectory || code == .noSuchFileOrDirectory, let file = firstNonDirectory() {
        throw GraphAttentionError(.file, "cannot write \(path): \(file) is a file, not a directory",
                                  fix: "choose an --output whose directories exist, or move \(file) away", errno: .notDirectory)
      }
      if code == .noSuchFileOrDirectory {
        throw GraphAttentionError(.file, "cannot write \(path): directory \(directory) does not exist",
                                  fix: "create it (mkdir -p \(directory)) or choose another --output", errno: code)
      }
      throw GraphAttentionError(.file, "cannot write \(path): directory \(directory) is not accessible: \(code)",
                                fix: "check the directory's permissions or choose another --output", errno: code)
    }
    guard info.st_mode & S_IFMT == S_IFDIR else {
      throw GraphAttentionError(.file, "cannot write \(path): \(directory) is a file, not a directory",
                                fix: "choose an --output whose directories exist, or move \(directory) away", errno: .notDirectory)
    }
    if case .failure(let code) = nothingOrErrno({ access(directory, W_OK | X_OK) }) {
      throw notWritable(code)
    }
    // Root passes `access`, yet nothing can be created on a read-only mount or a pseudo file system.
    var volume = statvfs()
    if statvfs(directory, &volume) == 0 {
      if volume.f_flag & UInt(ST_RDONLY) != 0 { throw notWritable(.readOnlyFileSystem) }
      if volume.f_blocks == 0 {
        throw GraphAttentionError(.file, "cannot write \(path): \(directory) is not writable (a pseudo file system with no storage, such as /proc)",
                                  fix: "choose an --output on a disk", errno: .permissionDenied)
      }
    }
    var existing = stat()
    guard stat(path, &existing) == 0 else { return nil }
    if existing.st_mode & S_IFMT == S_IFDIR {
      throw GraphAttentionError(.file, "cannot write \(path): it is a directory",
                                fix: "choose a file name inside the directory, e.g. \(path)/out.npy", errno: .isDirectory)
    }
    return existing.st_mode & S_IFMT == S_IFREG ? existing.st_mode & 0o7777 : nil
  }

  /// `checkWritable()`'s verdict kept with the path, so a job that checks before its work creates the file
  /// later without checking again.
  func checked() throws -> CheckedOutputPath { CheckedOutputPath(location: self, existingMode: try checkWritable()) }

  /// The error for a directory that refuses new files, worded by its errno.
  func notWritable(_ code: Errno) -> GraphAttentionError {
    switch code {
    case .readOnlyFileSystem:
      return GraphAttentionError(.file, "cannot write \(path): \(directory) is on a read-only file system",
                                 fix: "choose an --output on a writable file system", errno: code)
    case .noSpace, .diskQuotaExceeded:
      return GraphAttentionError(.resource, "cannot write \(path): no space left on the file system of \(directory) (\(code))",
                                 fix: "free space there or choose another --output", errno: code)
    default:
      return GraphAttentionError(.file, "cannot write \(path): directory \(directory) is not writable (\(code))",
                                 fix: "make it writable (chmod u+w \(directory)) or choose another --output", errno: code)
    }
  }

  /// The first component of `directory` that exists but is not a directory, if any.
  private func firstNonDirectory() -> String? {
    var current = directory.hasPrefix("/") ? "" : "."
    for component in directory.split(separator: "/", omittingEmptySubsequences: true) {
      current = current == "." ? String(component) : current + "/" + component
      var info = stat()
      guard stat(current, &info) == 0 else { return nil }
      if info.st_mode & S_IFMT != S_IFDIR { return current }
    }
    return nil
  }

  /// Creates a new temporary file beside `path`, named `.<name>.tmp-<pid>-<random>`, exclusively.
  ///
  /// - Parameter flags: access flags added to `O_CREAT | O_EXCL | O_CLOEXEC` (`O_WRONLY` or `O_RDWR`).
  /// - Returns: the open descriptor (the caller owns it) and the temporary path.
  func createTemporary(flags: Int32) throws -> (descriptor: Int32, path: String) {
    var failure = Errno.fileExists
    // Retry on the (unlikely) name collision with another writer's temporary file.
    for _ in 0..<16 {
      let temporary = hidden("tmp-\(getpid())-\(String(UInt64.random(in: .min ... .max), radix: 16))")
      switch valueOrErrno({ open(temporary, flags | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }) {
      case .success(let fd): return (fd, temporary)
      case .failure(let code): failure = code
      }
      if failure != .fileExists { break }
    }
    throw temporaryFailure(failure)
  }

  /// Creates (or truncates) the file at `temporary`, a fixed name beside `path` (resumable outputs).
  func createFixedTemporary(_ temporary: String, flags: Int32) throws -> Int32 {
    switch valueOrErrno({ open(temporary, flags | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }) {
    case .success(let fd): return fd
    case .failure(let code): throw temporaryFailure(code)
    }
  }

  private func temporaryFailure(_ code: Errno) -> GraphAttentionError {
    switch code {
    case .readOnlyFileSystem, .permissionDenied, .notPermitted, .noSpace, .diskQuotaExceeded, .noSuchFileOrDirectory:
      return notWritable(code)
    default:
      return GraphAttentionError(.file, "cannot create a temporary file next to \(path): \(code)",
                                 fix: "check that \(directory) is writable and the disk is not full", errno: code)
    }
  }

  /// Flushes `descriptor` (the temporary file's) to disk and renames `temporary` over `path`, then
  /// syncs the directory so the rename survives a crash. `rename` within one file system is atomic.
  func commit(descriptor: Int32, temporary: String) throws {
    if case .failure(let code) = nothingOrErrno({ fsync(descriptor) }) {
      throw GraphAttentionError(.file, "cannot flush \(temporary) to disk: \(code)",
                                fix: "check free disk space and the device; the previous \(path), if any, is unchanged", errno: code)
    }
    if case .failure(let code) = nothingOrErrno({ rename(temporary, path) }) {
      throw GraphAttentionError(.file, "cannot move \(temporary) into place at \(path): \(code)",
                                fix: "check permissions on \(directory); the previous \(path), if any, is unchanged", errno: code)
    }
    syncDirectory()
  }

  /// Best-effort flush of the directory entry; some file systems refuse `fsync` on directories,
  /// which is harmless here.
  func syncDirectory() {
    guard case .success(let fd) = valueOrErrno({ open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }) else { return }
    _ = nothingOrErrno { fsync(fd) }
    close(fd)
  }
}

/// An output path that passed `OutputPath.checkWritable()`, with the permission bits of the file it replaces.
struct CheckedOutputPath {
  /// The output.
  let location: OutputPath
  /// The permission bits of the regular file already there, for the new one; nil when there is none.
  let existingMode: mode_t?
}

/// Writes all of `bytes` to `descriptor` at `offset` (`pwrite`), retrying short writes and `EINTR`.
/// - Throws: `GraphAttentionError(.file)` naming `path`, with the errno (`.resource` when the disk is full).
func storageWriteAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int = 0, path: String) throws {
  guard let base = bytes.baseAddress else { return }
  let written = transferAll(bytes.count) { done, chunk -> Int in
    pwrite(descriptor, base + done, chunk, off_t(offset &+ done))
  }
  if case .failure(let code) = written {
    throw storageWriteFailure(path, code)
  }
}

/// The error for a failed write to `path`.
func storageWriteFailure(_ path: String, _ code: Errno) -> GraphAttentionError {
  let full = code == .noSpace || code == .diskQuotaExceeded
  return GraphAttentionError(full ? .resource : .file, "cannot write \(path): \(code)",
                             fix: full ? "free disk space or write to a larger file system; the previous file (if any) is unchanged"
                               : "check permissions and the device; the previous file (if any) is unchanged", errno: code)
}

extension OutputPath {
  /// `notWritable(code)` for a dummy path, so tests can check the wording of errors that need a
  /// read-only mount to provoke.
  static func notWritableForTesting(_ code: Errno) -> GraphAttentionError {
    // swiftlint:disable:next force_try
    try! OutputPath("/read-only/o.npy").notWritable(code)
  }
}
