#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Compiled kernel images on disk, so NVRTC runs once per (source, architecture, options, NVRTC version).
///
/// Files live in `$GRAPH_ATTENTION_CUDA_CACHE`, else `$XDG_CACHE_HOME/graph-attention/cuda`, else
/// `~/.cache/graph-attention/cuda`, named by a 128-bit hash of the key. They are written atomically
/// (temporary file, then rename), so concurrent processes never read a partial image. The cache is
/// best effort: an unwritable directory only costs a compile per process.
struct KernelCache: Sendable {
  /// The directory, or nil when caching is off.
  var directory: String?

  /// The default location (see the type's documentation); nil when no home directory is known.
  static func defaultDirectory() -> String? {
    if let explicit = CUDALibraryLocator.environment("GRAPH_ATTENTION_CUDA_CACHE"), !explicit.isEmpty {
      return explicit
    }
    if let xdg = CUDALibraryLocator.environment("XDG_CACHE_HOME"), xdg.hasPrefix("/") {
      return xdg + "/graph-attention/cuda"
    }
    if let home = CUDALibraryLocator.environment("HOME"), !home.isEmpty {
      return home + "/.cache/graph-attention/cuda"
    }
    return nil
  }

  /// The file name for a key: `kernels-<hash>-<arch>.<cubin|ptx>`.
  static func fileName(source: String, architecture: String, options: [String], compilerVersion: String, cubin: Bool) -> String {
    let key = [source, architecture, options.joined(separator: "\u{1}"), compilerVersion, cubin ? "cubin" : "ptx"]
      .joined(separator: "\u{0}")
    return "kernels-\(stableHash(key))-\(architecture).\(cubin ? "cubin" : "ptx")"
  }

  /// Two FNV-1a 64-bit hashes with different offset bases, as 32 hex digits: stable across runs and
  /// platforms (unlike `Hasher`), and wide enough that distinct keys do not collide in practice.
  static func stableHash(_ text: String) -> String {
    var a: UInt64 = 0xcbf2_9ce4_8422_2325
    var b: UInt64 = 0x6c62_272e_07bb_0142
    for byte in text.utf8 {
      a = (a ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
      b = (b ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
      b = b &+ (b >> 29)
    }
    func hex(_ x: UInt64) -> String {
      let digits = String(x, radix: 16)
      return String(repeating: "0", count: 16 - digits.count) + digits
    }
    return hex(a) + hex(b)
  }

  /// The cached image, or nil.
  func load(_ name: String) -> [UInt8]? {
    guard let directory, let bytes = storageReadWholeFile(directory + "/" + name, limit: 1 << 30) else { return nil }
    return bytes.isEmpty ? nil : bytes
  }

  /// Stores an image atomically; failures are ignored (the cache is an optimisation).
  /// - Returns: whether the file was written.
  @discardableResult
  func store(_ name: String, _ image: [UInt8]) -> Bool {
    guard let directory, KernelCache.makeDirectories(directory) else { return false }
    do {
      try AtomicFile.write(to: directory + "/" + name) { sink in
        try image.withUnsafeBytes { try sink.write($0) }
      }
      return true
    } catch {
      return false
    }
  }

  /// `mkdir -p`.
  static func makeDirectories(_ path: String) -> Bool {
    var prefix = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
      prefix += "/" + part
      if mkdir(prefix, 0o755) != 0 && errno != EEXIST { return false }
    }
    return true
  }
}
