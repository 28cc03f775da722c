#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Free and total space of the file system holding a path, from `statvfs`.
///
/// ```swift
/// let space = try DiskSpace(of: "/data/run")
/// print(space.availableBytes, space.mountPoint)        // 77309411328 /
/// try DiskSpace.require(80 << 30, at: "/data/run", for: "/data/run/q.npy")   // throws: needs 80.00 GiB, 72.00 GiB free on /
/// ```
package struct DiskSpace: Sendable, Equatable {
  /// Bytes an unprivileged process may still allocate (`f_bavail * f_frsize`).
  package let availableBytes: Int
  /// The file system's size in bytes (`f_blocks * f_frsize`).
  package let totalBytes: Int
  /// The directory the file system is mounted on (found by walking up while the device stays the same).
  package let mountPoint: String

  /// Measures the file system holding `path` (a file or directory that exists).
  /// - Throws: `GraphAttentionError(.file)` when `path` does not exist or cannot be inspected.
  /// - Complexity: a few system calls per directory level of `path`.
  package init(of path: String) throws {
    var info = statvfs()
    guard statvfs(path, &info) == 0 else {
      let code = Errno.current
      throw GraphAttentionError(.file, "cannot measure free space at \(path): \(code)",
                                fix: "check that the directory exists and is accessible", errno: code)
    }
    let fragment = Int(info.f_frsize > 0 ? info.f_frsize : info.f_bsize)
    let (available, o1) = Int(info.f_bavail).multipliedReportingOverflow(by: fragment)
    let (total, o2) = Int(info.f_blocks).multipliedReportingOverflow(by: fragment)
    self.availableBytes = o1 ? Int.max : available
    self.totalBytes = o2 ? Int.max : total
    self.mountPoint = storageMountPoint(of: path)
  }

  /// Throws unless the file system holding `directory` has at least `bytes` available.
  ///
  /// - Parameters:
  ///   - bytes: the space the caller is about to use.
  ///   - directory: an existing directory on the target file system.
  ///   - what: what needs the space, for the message (an output path, "q, k and v").
  ///   - advice: how else to need less space, ending the message's fix (it names the caller's options).
  /// - Throws: `GraphAttentionError(.resource)` of the form
  ///   "<what> needs 8.00 GiB, 3.21 GiB free on /data", before anything is created.
  package static func require(_ bytes: Int, at directory: String, for what: String,
                             advice: String = "or use a smaller shape") throws {
    let space = try DiskSpace(of: directory)
    guard bytes <= space.availableBytes else {
      throw GraphAttentionError(
        .resource,
        "\(what) needs \(storageGiB(bytes)) GiB, \(storageGiB(space.availableBytes)) GiB free on \(space.mountPoint)",
        fix: "free space on \(space.mountPoint), write to a larger file system, \(advice)")
    }
  }
}

/// `bytes / 2^30` with two decimals, e.g. "8.00"; computed without Foundation.
func storageGiB(_ bytes: Int) -> String {
  let hundredths = (Double(bytes) / 1_073_741_824 * 100).rounded()
  guard hundredths < 9e15 else { return String(Double(bytes) / 1_073_741_824) }
  let value = Int(hundredths)
  let fraction = value % 100
  return "\(value / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}

/// The mount point of the file system holding `path`: its real path walked up while `st_dev` stays
/// the same. Falls back to `path` when it cannot be resolved.
func storageMountPoint(of path: String) -> String {
  guard let resolved = realpath(path, nil) else { return path }
  var current = String(cString: resolved)
  free(resolved)
  var info = stat()
  guard stat(current, &info) == 0 else { return current }
  let device = info.st_dev
  while current != "/" {
    let parent = current.lastIndex(of: "/").map { $0 == current.startIndex ? "/" : String(current[..<$0]) } ?? "/"
    var parentInfo = stat()
    guard stat(parent, &parentInfo) == 0, parentInfo.st_dev == device else { break }
    current = parent
  }
  return current
}
