#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive claim on an output path for the whole of a streamed job: `flock(LOCK_EX | LOCK_NB)` on a
/// hidden lock file `.<name>.lock` beside the output.
///
/// Why: two jobs onto one output would share its fixed resumable temporary file (`.<name>.partial`) and
/// its progress record, and the later one could commit rows of the earlier. A second job, or a `--resume`
/// while the original still runs, is refused at once. The kernel releases the lock when the process dies
/// (even by SIGKILL), so a killed job never blocks the next one. The file is removed when released;
/// a waiter that locked a removed file notices (the path's inode changed) and tries again.
final class OutputLock {
  /// The lock file's path.
  let path: String
  private let descriptor: Int32

  /// Takes the lock for `location`, or throws naming the process that holds it.
  /// - Throws: `GraphAttentionError(.file)` when another job holds it or the lock file cannot be created.
  init(location: OutputPath) throws {
    let output = location.path, path = location.lockPath
    self.path = path
    for _ in 0..<16 {
      let fd: Int32
      switch valueOrErrno({ open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }) {
      case .success(let opened): fd = opened
      case .failure(let code):
        throw GraphAttentionError(.file, "cannot create the lock file \(path) for \(output): \(code)",
                                  fix: "check that the output's directory is writable", errno: code)
      }
      if case .failure(let failure) = nothingOrErrno({ flock(fd, LOCK_EX | LOCK_NB) }) {
        let code = failure.rawValue
        let holder = storageReadWholeFile(path, limit: 64).map { String(decoding: $0, as: UTF8.self).filter(\.isNumber) } ?? ""
        close(fd)
        if code == EWOULDBLOCK {
          throw GraphAttentionError(
            .file, "another run is writing \(output) (it holds \(path)\(holder.isEmpty ? "" : ", process \(holder)"))",
            fix: "wait for it to finish (or stop it, then add --resume to continue it), or choose another --output")
        }
        throw GraphAttentionError(.file, "cannot lock \(path): \(failure)",
                                  fix: "put the output on a local file system that supports flock", errno: failure)
      }
      // The holder before us may have removed the file between our open and our lock: then retry.
      var mine = stat(), current = stat()
      if fstat(fd, &mine) == 0, stat(path, &current) == 0, mine.st_ino == current.st_ino, mine.st_dev == current.st_dev {
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        descriptor = fd
        return
      }
      close(fd)
    }
    throw GraphAttentionError(.file, "cannot lock \(path): it keeps being replaced", fix: "stop the other runs writing \(output)")
  }

  deinit {
    // Remove first, then unlock: a waiter that then locks the removed file sees the new inode and retries.
    unlink(path)
    close(descriptor)
  }
}
