#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A POSIX error number, kept as a typed value so that callers can tell a full disk from a permission
/// problem without parsing text (modelled on swift-system's `Errno`).
///
/// `GraphAttentionError.errno` carries one when a system call failed:
///
/// ```swift
/// do { try AtomicFile.write(to: "/full/o.bin") { _ in } }
/// catch let error as GraphAttentionError where error.errno == .noSpace { /* free some space */ }
/// ```
public struct Errno: RawRepresentable, Error, Hashable, Sendable, CustomStringConvertible {
  /// The C `errno` value.
  public var rawValue: Int32

  /// Wraps a C `errno` value.
  public init(rawValue: Int32) { self.rawValue = rawValue }

  /// The calling thread's current `errno`.
  public static var current: Errno { Errno(rawValue: errno) }

  /// `EINTR`: a signal interrupted the call (retried by the storage layer, never reported).
  public static var interrupted: Errno { Errno(rawValue: EINTR) }
  /// `ENOENT`: no such file or directory.
  public static var noSuchFileOrDirectory: Errno { Errno(rawValue: ENOENT) }
  /// `EACCES`: permission denied.
  public static var permissionDenied: Errno { Errno(rawValue: EACCES) }
  /// `EPERM`: operation not permitted.
  public static var notPermitted: Errno { Errno(rawValue: EPERM) }
  /// `EEXIST`: the file exists.
  public static var fileExists: Errno { Errno(rawValue: EEXIST) }
  /// `ENOTDIR`: a path component is not a directory.
  public static var notDirectory: Errno { Errno(rawValue: ENOTDIR) }
  /// `EISDIR`: the path is a directory.
  public static var isDirectory: Errno { Errno(rawValue: EISDIR) }
  /// `ENOSPC`: no space left on the device.
  public static var noSpace: Errno { Errno(rawValue: ENOSPC) }
  /// `EDQUOT`: disk quota exceeded.
  public static var diskQuotaExceeded: Errno { Errno(rawValue: EDQUOT) }
  /// `EROFS`: the file system is read-only.
  public static var readOnlyFileSystem: Errno { Errno(rawValue: EROFS) }
  /// `EFBIG`: the file would exceed the file system's size limit.
  public static var fileTooLarge: Errno { Errno(rawValue: EFBIG) }

  /// `strerror`'s text, e.g. "No space left on device".
  public var description: String {
    guard let text = strerror(rawValue) else { return "error \(rawValue)" }
    return String(cString: text)
  }
}
