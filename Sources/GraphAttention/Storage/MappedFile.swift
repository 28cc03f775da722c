#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import _GraphAttentionSystem

/// One memory mapping of a whole file: read-only for inputs, shared read-write for outputs.
///
/// The class owns the mapping and the file descriptor and releases both in `deinit`; views into
/// the mapping (`TensorView`, `MutableTensorView`) keep their `MappedFile` alive through `owner`.
/// Mapping costs address space only: pages are read from the file when first touched and can be
/// released again with `dropPages`, so files much larger than RAM can be used with a bounded
/// resident set.
///
/// ```swift
/// let file = try MappedFile(path: "k.npy")              // read-only
/// file.adviseSequential()
/// // ... read file.base[0..<file.byteCount] ...
/// file.dropPages(byteRange: 0..<(64 << 20))              // the first 64 MiB leave the resident set
/// ```
///
/// Writes through a read-only mapping crash (SIGSEGV): use `.readWrite` for outputs. If the file is
/// truncated by another process while mapped, touching the missing pages raises SIGBUS; the same
/// happens when a sparse output cannot get disk blocks, which is why `TensorFile.create` checks free
/// space first and reserves the blocks; `StreamingAttention` turns either into an error naming the file.
public final class MappedFile: @unchecked Sendable {
  /// How the file is opened and mapped.
  public enum Access: Sendable, Equatable {
    /// `O_RDONLY`, `PROT_READ`, `MAP_SHARED`: the file is never modified.
    case readOnly
    /// `O_RDWR`, `PROT_READ | PROT_WRITE`, `MAP_SHARED`: stores reach the file (after `sync`, durably).
    case readWrite
  }

  /// The path the file was opened with.
  public let path: String
  /// The first byte of the file; page-aligned. Writable only with `.readWrite` access.
  public let base: UnsafeMutableRawPointer
  /// The file's size in bytes when it was mapped (the mapping's length); at least 1.
  public let byteCount: Int
  /// How the file was mapped.
  public let access: Access
  /// The open descriptor, kept for `fsync` on commit; closed in `deinit`.
  let descriptor: Int32

  /// The virtual-memory page size in bytes (4096 on x86-64 Linux).
  public static let pageSize: Int = max(1, Int(sysconf(Int32(_SC_PAGESIZE))))

  /// Opens and maps the whole file at `path`.
  ///
  /// - Parameters:
  ///   - path: a regular, non-empty file.
  ///   - access: `.readOnly` (default) for inputs, `.readWrite` to modify the file in place.
  /// - Throws: `GraphAttentionError(.file)` naming `path` with the `errno` text when the file is
  ///   missing, not readable (or writable), a directory or not a regular file, empty, or cannot be
  ///   mapped (for example `ENOMEM` when the address space is exhausted).
  /// - Complexity: O(1): no data is read.
  public convenience init(path: String, access: Access = .readOnly) throws {
    let flags = (access == .readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC
    let fd: Int32
    switch valueOrErrno({ open(path, flags) }) {
    case .success(let opened): fd = opened
    case .failure(let code):
      throw GraphAttentionError(.file, "cannot open \(path)\(access == .readWrite ? " for writing" : ""): \(code)",
                                fix: mappedOpenFix(code.rawValue, access), errno: code)
    }
    try self.init(adopting: fd, path: path, access: access)
  }

  /// Maps the file open at `fd`, which the new object owns from now on (closed on failure too).
  init(adopting fd: Int32, path: String, access: Access) throws {
    var info = stat()
    guard fstat(fd, &info) == 0 else {
      let code = errno
      close(fd)
      throw GraphAttentionError(.file, "cannot inspect \(path): \(storageErrnoText(code))", fix: mappedOpenFix(code, access))
    }
    guard info.st_mode & S_IFMT == S_IFREG else {
      close(fd)
      let what = info.st_mode & S_IFMT == S_IFDIR ? "a directory" : "not a regular file (a pipe or device cannot be memory-mapped)"
      throw GraphAttentionError(.file, "cannot map \(path): it is \(what)",
                                fix: "pass a regular .npy or .safetensors file")
    }
    let size = Int(info.st_size)
    guard size > 0 else {
      close(fd)
      throw GraphAttentionError(.file, "\(path) is empty (0 bytes), so it holds no tensor",
                                fix: "pass a complete .npy or .safetensors file; re-create it if a previous write failed")
    }
    let protection = access == .readOnly ? PROT_READ : PROT_READ | PROT_WRITE
    let address = mmap(nil, size, protection, MAP_SHARED, fd, 0)
    guard let address, address != MAP_FAILED else {
      let code = errno
      close(fd)
      throw GraphAttentionError(
        .resource, "cannot memory-map \(path) (\(size) bytes): \(storageErrnoText(code))",
        fix: code == ENOMEM
          ? "the address space or the map count is exhausted; close other mappings or raise `ulimit -v`"
          : "put the file on a local file system that supports mmap")
    }
    self.path = path
    self.base = address
    self.byteCount = size
    self.access = access
    self.descriptor = fd
  }

  deinit {
    munmap(base, byteCount)
    close(descriptor)
  }

  /// Tells the kernel the whole file will be read in order (`MADV_SEQUENTIAL`: aggressive read-ahead,
  /// pages behind may be freed early). Advice only; failures are ignored.
  /// - Complexity: O(1).
  public func adviseSequential() {
    madvise(base, byteCount, MADV_SEQUENTIAL)
  }

  /// Tells the kernel pages will be touched in no particular order (`MADV_RANDOM`: no read-ahead),
  /// useful for keys and values gathered by random graphs. Advice only; failures are ignored.
  /// - Complexity: O(1).
  public func adviseRandom() {
    madvise(base, byteCount, MADV_RANDOM)
  }

  /// Starts reading `byteRange` into the page cache in the background (`MADV_WILLNEED`).
  ///
  /// The range is widened to whole pages and clipped to the file. Advice only; failures are ignored.
  /// - Complexity: O(1) for the caller; the kernel reads asynchronously.
  public func willNeed(byteRange: Range<Int>) {
    guard let (start, length) = pageRange(byteRange) else { return }
    madvise(base + start, length, MADV_WILLNEED)
  }

  /// Releases the pages of `byteRange` from this process's resident set (`MADV_DONTNEED`), so that
  /// streaming over a file larger than RAM keeps memory bounded.
  ///
  /// The range is widened to whole pages (so a page shared with a neighbouring range is dropped too)
  /// and clipped to the file. This never loses data: the mapping is a shared file mapping, so a
  /// dropped page is read back from the page cache or the file when touched again, and the dirty
  /// pages of a `.readWrite` mapping are first sent to disk (`sync_file_range(SYNC_FILE_RANGE_WRITE)`,
  /// asynchronous; `msync(MS_ASYNC)` does nothing on Linux), so they do not pile up as dirty page cache;
  /// `evictCleanPages` then drops them from the page cache once written. Concurrent reads and writes
  /// of the range by other threads are safe.
  /// - Complexity: O(pages in the range).
  public func dropPages(byteRange: Range<Int>) {
    guard let (start, length) = pageRange(byteRange) else { return }
    if access == .readWrite {
      msync(base + start, length, MS_ASYNC)
      _ = nothingOrErrno { ga_start_writeback(descriptor, Int64(start), Int64(length)) }
    }
    madvise(base + start, length, MADV_DONTNEED)
  }

  /// Asks the kernel to drop the clean page-cache pages of `byteRange` (`POSIX_FADV_DONTNEED`): pages of a
  /// streamed output already written back by `dropPages`, so a long run does not fill the page cache (which a
  /// container's memory limit counts). Pages still dirty or being written are kept. Advice only.
  /// - Complexity: O(pages in the range).
  public func evictCleanPages(byteRange: Range<Int>) {
    guard let (start, length) = pageRange(byteRange) else { return }
    #if os(Linux)
    _ = posix_fadvise(descriptor, off_t(start), off_t(length), POSIX_FADV_DONTNEED)
    #endif
  }

  /// A new read-only descriptor of this same file, with its own read-ahead state (advised
  /// `POSIX_FADV_RANDOM` on Linux), for positioned reads (`pread`) that must not disturb the mapping's
  /// sequential read-ahead. It is opened through `/proc/self/fd`, so it reaches the mapped file even if
  /// the path was renamed or replaced since; where that is unavailable, through `path`.
  ///
  /// Ownership: the caller owns the descriptor and closes it.
  /// - Throws: `GraphAttentionError(.file)` with the errno when neither open succeeds.
  /// - Complexity: O(1).
  public func openRandomAccessDescriptor() throws -> Int32 {
    var result = valueOrErrno { open("/proc/self/fd/\(descriptor)", O_RDONLY | O_CLOEXEC) }
    if case .failure = result { result = valueOrErrno { open(path, O_RDONLY | O_CLOEXEC) } }
    switch result {
    case .success(let fd):
      #if os(Linux)
      _ = posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM)
      #endif
      return fd
    case .failure(let code):
      throw GraphAttentionError(.file, "cannot reopen \(path) for reading: \(code)",
                                fix: "check that the file still exists and is readable", errno: code)
    }
  }

  /// Writes every modified page to the file and waits for the device (`msync(MS_SYNC)`).
  ///
  /// Does nothing for read-only mappings.
  /// - Throws: `GraphAttentionError(.file)` with the `errno` text (for example an I/O error or a full
  ///   disk on some file systems).
  /// - Complexity: O(dirty pages), bounded by the disk's write speed.
  public func sync() throws {
    guard access == .readWrite else { return }
    if case .failure(let code) = nothingOrErrno({ msync(base, byteCount, MS_SYNC) }) {
      throw GraphAttentionError(.file, "cannot write \(path) to disk: \(code)",
                                fix: "check free disk space and the device; the output is incomplete", errno: code)
    }
  }

  /// `byteRange` widened to whole pages and clipped to the mapping, as (offset, length); nil if empty.
  private func pageRange(_ byteRange: Range<Int>) -> (Int, Int)? {
    let lower = max(0, byteRange.lowerBound)
    let upper = min(byteCount, byteRange.upperBound)
    guard lower < upper else { return nil }
    let page = MappedFile.pageSize
    let start = lower / page * page
    let end = min((upper + page - 1) / page * page, (byteCount + page - 1) / page * page)
    return (start, end - start)
  }
}

/// Advice for the usual reasons `open` fails on a file to be mapped.
private func mappedOpenFix(_ code: Int32, _ access: MappedFile.Access) -> String {
  switch code {
  case ENOENT, ENOTDIR: return "check the path; no file exists there"
  case EACCES, EPERM:
    return access == .readOnly
      ? "make the file readable (chmod +r) or run as a user who can read it"
      : "make the file writable (chmod u+w) or choose another output"
  case EISDIR: return "pass a file, not a directory"
  case EROFS: return "the file system is read-only; choose an output on a writable one"
  default: return "check that the file exists and is accessible"
  }
}
