#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// The one place where the library handles EINTR and turns -1 returns into typed errors
// (swift-system 1.8.1 Sources/System/Util.swift).

/// Runs a system call that returns -1 and sets `errno` on failure, retrying it while it fails with
/// `EINTR` when `retryOnInterrupt` is true (swift-system's `valueOrErrno(retryOnInterrupt:)`).
///
/// The one place in the library where `EINTR` is handled: call sites never loop on it themselves.
/// - Returns: the call's result, or the `Errno` it failed with.
@inline(__always)
func valueOrErrno<I: FixedWidthInteger>(retryOnInterrupt: Bool = true, _ call: () -> I) -> Result<I, Errno> {
  while true {
    let result = call()
    if result != -1 { return .success(result) }
    let code = Errno.current
    if retryOnInterrupt && code == .interrupted { continue }
    return .failure(code)
  }
}

/// `valueOrErrno` for calls whose success value carries nothing (`fsync`, `ftruncate`, `rename`).
@inline(__always)
func nothingOrErrno<I: FixedWidthInteger>(retryOnInterrupt: Bool = true, _ call: () -> I) -> Result<Void, Errno> {
  valueOrErrno(retryOnInterrupt: retryOnInterrupt, call).map { _ in () }
}

/// Transfers all of `count` bytes with a call that may transfer fewer (`read`, `write`, `pread`, `pwrite`),
/// retrying on `EINTR`; `transfer(done, chunk)` moves up to `chunk` bytes starting `done` bytes in.
///
/// Each call asks for at most 1 GiB, because Linux transfers at most about 2 GiB per call.
/// - Returns: bytes transferred (less than `count` only when a call returned 0, the end of a file),
///   or the `Errno` of the failed call.
func transferAll(_ count: Int, _ transfer: (_ done: Int, _ chunk: Int) -> Int) -> Result<Int, Errno> {
  var done = 0
  while done < count {
    switch valueOrErrno({ transfer(done, min(count - done, 1 << 30)) }) {
    case .success(0): return .success(done)
    case .success(let n): done += n
    case .failure(let code): return .failure(code)
    }
  }
  return .success(done)
}

/// `strerror`'s text for a raw errno, for the call sites (MappedFile, ScatteredKeyReader) that still
/// keep errno as an `Int32`; new code uses `Errno` and its `description`.
func storageErrnoText(_ code: Int32) -> String {
  Errno(rawValue: code).description
}

/// The whole of a file, or nil when it does not exist, cannot be read, or holds more than `limit` bytes.
/// For small side files (progress records, cached kernel images), read in 64 KiB calls.
/// - Complexity: O(file size).
func storageReadWholeFile(_ path: String, limit: Int) -> [UInt8]? {
  guard case .success(let fd) = valueOrErrno({ open(path, O_RDONLY | O_CLOEXEC) }) else { return nil }
  defer { close(fd) }
  var bytes: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 1 << 16)
  while true {
    let result = buffer.withUnsafeMutableBytes { raw in valueOrErrno { read(fd, raw.baseAddress, raw.count) } }
    guard case .success(let n) = result else { return nil }
    if n == 0 { return bytes }
    bytes += buffer[0..<n]
    if bytes.count > limit { return nil }
  }
}
