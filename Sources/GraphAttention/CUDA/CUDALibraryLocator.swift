#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How the backend finds and opens `libcuda` and NVRTC; replaced by test doubles in the unit tests.
struct CUDALibraryLoader: Sendable {
  /// Opens the driver library: the library, or nil with why each candidate failed.
  var openDriver: @Sendable () -> (library: (any CUDASymbolSource)?, failures: [String])
  /// Opens NVRTC: the first candidate that `accept`s (the runtime prefers one no newer than the
  /// driver), else the first that opened at all, else nil with the candidates tried.
  var openNVRTC: @Sendable (_ accept: (any CUDASymbolSource) -> Bool) -> (library: (any CUDASymbolSource)?, tried: [String])

  /// The real loader: `dlopen` on the locations of `CUDALibraryLocator`.
  static let system = CUDALibraryLoader(
    openDriver: {
      DynamicLibrary.open(firstOf: CUDALibraryLocator.driverCandidates())
    },
    openNVRTC: { accept in
      // python3 is asked for its site-packages only when the usual places have no acceptable NVRTC.
      var tried: [String] = []
      var fallback: (any CUDASymbolSource)?
      for candidates in [CUDALibraryLocator.nvrtcCandidates(), CUDALibraryLocator.pipNVRTCCandidates()] {
        for candidate in candidates {
          tried.append(candidate)
          guard let library = DynamicLibrary.open(firstOf: [candidate]).library else { continue }
          if accept(library) { return (library, tried) }
          if fallback == nil { fallback = library }
        }
      }
      return (fallback, tried)
    }
  )
}

/// Where the driver and NVRTC libraries are looked for.
enum CUDALibraryLocator {
  /// The driver is installed with the NVIDIA kernel module; the dynamic linker finds it (WSL keeps it apart).
  static func driverCandidates() -> [String] {
    var candidates: [String] = []
    if let explicit = environment("GRAPH_ATTENTION_CUDA_DRIVER"), !explicit.isEmpty { candidates.append(explicit) }
    candidates += ["libcuda.so.1", "libcuda.so", "/usr/lib/wsl/lib/libcuda.so.1"]
    return candidates
  }

  static let nvrtcNames = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]

  /// NVRTC, in order: `$GRAPH_ATTENTION_NVRTC` (a directory or the library file), the dynamic linker's
  /// search path (CUDA 13, 12, unversioned), `/usr/local/cuda`; then `pipNVRTCCandidates`.
  static func nvrtcCandidates() -> [String] {
    var candidates: [String] = []
    if let explicit = environment("GRAPH_ATTENTION_NVRTC"), !explicit.isEmpty {
      if explicit.hasSuffix(".so") || explicit.contains(".so.") {
        candidates.append(explicit)
      } else {
        candidates += nvrtcNames.map { explicit + "/" + $0 }
      }
    }
    candidates += nvrtcNames
    candidates += nvrtcNames.map { "/usr/local/cuda/lib64/" + $0 }
    return candidates
  }

  /// The pip wheels in python3's site-packages: `nvidia-cuda-nvrtc` (`nvidia/cu13/lib`) and
  /// `nvidia-cuda-nvrtc-cu12` (`nvidia/cuda_nvrtc/lib`, which PyTorch's CUDA 12 wheels install).
  static func pipNVRTCCandidates() -> [String] {
    pythonSitePackages().flatMap { site in
      ["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"].flatMap { folder in nvrtcNames.map { "\(site)/\(folder)/\($0)" } }
    }
  }

  static func environment(_ name: String) -> String? {
    getenv(name).map { String(cString: $0) }
  }

  /// python3's site-packages folders (system and user), or none when python3 is absent.
  /// Asked once per process: starting python costs tens of milliseconds.
  static func pythonSitePackages() -> [String] {
    pythonSites
  }

  private static let pythonSites: [String] = {
    let script = "python3 -c 'import site; print(\"\\n\".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null"
    guard let pipe = popen(script, "r") else { return [] }
    var output = ""
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, Int32(buffer.count), pipe) != nil {
      output += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    pclose(pipe)
    return output.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
  }()
}
