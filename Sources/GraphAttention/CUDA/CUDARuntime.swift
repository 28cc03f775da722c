#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

import Synchronization

/// The process's CUDA state: the loaded libraries, one primary context and one kernel module per device.
///
/// Everything is created on first use and kept; calls are serialised by a lock (the GPU runs one
/// attention call at a time from this process; the driver's current context is per thread, so each
/// call makes its context current first). `shared` uses the real libraries; tests build their own
/// runtime over mock libraries.
final class CUDARuntime: @unchecked Sendable {
  // @unchecked: every mutable field is accessed only under `lock`.
  let loader: CUDALibraryLoader
  let cache: KernelCache
  private let lock = Mutex(())
  private var driver: CUDADriver?
  private var compiler: NVRTCCompiler?
  private var contexts: [Int: CUDAContext] = [:]
  private var modules: [Int: CUDAModule] = [:]
  /// How each device's module was built (CUBIN or PTX, architecture, NVRTC), for `CUDABackend`.
  private(set) var builds: [Int: String] = [:]

  init(loader: CUDALibraryLoader, cache: KernelCache) {
    self.loader = loader
    self.cache = cache
  }

  /// The runtime over the system's libraries and the default kernel cache.
  static let shared = CUDARuntime(loader: .system, cache: KernelCache(directory: KernelCache.defaultDirectory()))

  /// Runs `body` under the runtime's lock.
  func locked<R>(_ body: () throws -> R) rethrows -> R {
    try lock.withLock { _ in try body() }
  }

  /// The driver, loaded on first use. Call under the lock.
  func loadDriver() throws -> CUDADriver {
    if let driver { return driver }
    let (library, failures) = loader.openDriver()
    guard let library else {
      throw GraphAttentionError(
        .device, "no CUDA driver found (libcuda.so.1); --device cpu works here",
        fix: "install the NVIDIA driver (nvidia-smi must work), or run with --device cpu"
          + (failures.isEmpty ? "" : " [tried: \(failures.joined(separator: "; "))]"))
    }
    let loaded = try CUDADriver(library: library)
    driver = loaded
    return loaded
  }

  /// NVRTC, loaded on first use: the first candidate no newer than `driverVersion` if given (a newer
  /// compiler emits images the driver cannot load). Call under the lock.
  func loadCompiler(driverVersion: Int32?) throws -> NVRTCCompiler {
    if let compiler { return compiler }
    let (library, tried) = loader.openNVRTC { candidate in
      guard let driverVersion else { return true }
      guard let probe = try? NVRTCCompiler(library: candidate) else { return false }
      return probe.encodedVersion <= driverVersion
    }
    guard let library else {
      throw GraphAttentionError(
        .device, "no NVRTC found (libnvrtc.so.13 or .12), which compiles the CUDA kernels at first use",
        fix: "pip install nvidia-cuda-nvrtc (or nvidia-cuda-nvrtc-cu12 for a CUDA 12 driver), or set "
          + "GRAPH_ATTENTION_NVRTC to the directory holding libnvrtc.so; or run with --device cpu [tried: \(tried.prefix(6).joined(separator: ", "))\(tried.count > 6 ? ", ..." : "")]")
    }
    let loaded = try NVRTCCompiler(library: library)
    compiler = loaded
    return loaded
  }

  /// The context of device `ordinal`, created on first use and made current. Call under the lock.
  func context(_ ordinal: Int) throws -> CUDAContext {
    if let context = contexts[ordinal] {
      try context.makeCurrent()
      return context
    }
    let context = try CUDAContext(driver: try loadDriver(), ordinal: ordinal)
    contexts[ordinal] = context
    return context
  }

  /// The kernel module of device `ordinal`, compiled (or read from the cache) and loaded on first use.
  /// Call under the lock.
  func module(_ ordinal: Int) throws -> CUDAModule {
    let context = try context(ordinal)
    if let module = modules[ordinal] { return module }
    let driver = try loadDriver()
    let compiler = try loadCompiler(driverVersion: driver.version)
    let major = try driver.attribute(.computeCapabilityMajor, of: context.device)
    let minor = try driver.attribute(.computeCapabilityMinor, of: context.device)
    let builder = CUDAKernelBuilder(compiler: compiler, cache: cache)
    let image = try builder.image(computeCapability: major, minor)
    let module = try CUDAModule(context: context, image: image.bytes,
                                what: "\(image.isCUBIN ? "CUBIN" : "PTX") for \(image.architecture) from NVRTC "
                                  + "\(compiler.version.major).\(compiler.version.minor) (driver CUDA \(driver.versionString))")
    modules[ordinal] = module
    builds[ordinal] = "\(image.isCUBIN ? "CUBIN" : "PTX") \(image.architecture), NVRTC \(compiler.version.major).\(compiler.version.minor)"
      + (image.fromCache ? " (cached)" : "")
    return module
  }
}
