#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where C symbols come from: a library opened with `dlopen`, or a table of test doubles.
///
/// The seam that makes the CUDA backend testable without a GPU: tests hand the loader sources that
/// lack a library, lack a symbol, or return failure codes (see Tests/GraphAttentionTests/CUDA).
protocol CUDASymbolSource: AnyObject, Sendable {
  /// The file the symbols come from, for error messages.
  var path: String { get }
  /// The address of `name`, or nil if the library does not export it.
  func address(of name: String) -> UnsafeMutableRawPointer?
}

extension CUDASymbolSource {
  /// The function `name` as the C function type `F`, or a `.device` error naming the missing symbol.
  func resolve<F>(_ name: String, as type: F.Type = F.self) throws -> F {
    guard let function: F = resolveIfPresent(name) else {
      throw GraphAttentionError(
        .device, "\(path) has no symbol \(name); the library is too old or not the one expected",
        fix: "install a current NVIDIA driver and CUDA 12 or 13 NVRTC, or run with --device cpu")
    }
    return function
  }

  /// The function `name` as `F`, or nil if the library does not export it.
  func resolveIfPresent<F>(_ name: String, as type: F.Type = F.self) -> F? {
    precondition(MemoryLayout<F>.size == MemoryLayout<UnsafeMutableRawPointer>.size, "\(F.self) is not a C function pointer")
    guard let address = address(of: name) else { return nil }
    return unsafeBitCast(address, to: F.self)
  }
}

/// A shared library opened with `dlopen`, kept open for the life of the process.
///
/// Never closed: the CUDA driver and NVRTC keep global state (contexts, loaded modules) whose
/// handles this process may still hold, and unloading them under those handles is undefined.
final class DynamicLibrary: CUDASymbolSource, @unchecked Sendable {
  // @unchecked: `handle` is written once in init; dlsym is thread-safe.
  let path: String
  private let handle: UnsafeMutableRawPointer

  private init(path: String, handle: UnsafeMutableRawPointer) {
    self.path = path
    self.handle = handle
  }

  /// Opens the first of `candidates` (file names searched by the dynamic linker, or paths) that loads.
  /// - Returns: the library, or nil with the `dlerror` text of each failed attempt.
  static func open(firstOf candidates: [String]) -> (library: DynamicLibrary?, failures: [String]) {
    var failures: [String] = []
    for candidate in candidates {
      if let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) {
        return (DynamicLibrary(path: candidate, handle: handle), failures)
      }
      failures.append(dlerror().map { String(cString: $0) } ?? "\(candidate): cannot be opened")
    }
    return (nil, failures)
  }

  func address(of name: String) -> UnsafeMutableRawPointer? {
    dlsym(handle, name)
  }
}
