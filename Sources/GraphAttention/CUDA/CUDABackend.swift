/// The CUDA backend's own entry points: what GPU is there, and compiling the kernels ahead of time.
///
/// Attention itself runs through `attention` and `AttentionState.accumulate` with `AttentionOptions.device`
/// set to `.cuda`. Nothing here needs a CUDA SDK: the driver (`libcuda.so.1`)
/// and NVRTC (`libnvrtc.so.13` or `.12`, e.g. from `pip install nvidia-cuda-nvrtc`) are opened at
/// run time, and `compileKernels` needs only NVRTC, so CI without a GPU compiles every kernel.
public enum CUDABackend {
  /// A GPU as the driver describes it.
  public struct DeviceInfo: Sendable, Equatable {
    /// The ordinal `AttentionDevice.cuda(ordinal:)` takes.
    public var ordinal: Int
    /// The product name, e.g. "NVIDIA H100 80GB HBM3".
    public var name: String
    /// Compute capability, e.g. (9, 0) for sm_90.
    public var computeCapability: (major: Int, minor: Int)
    /// Streaming multiprocessors.
    public var multiprocessors: Int
    /// Device memory in bytes: total, and free now.
    public var totalMemory: Int
    /// Free device memory in bytes when asked.
    public var freeMemory: Int
    /// The newest CUDA version the driver supports, e.g. "12.8".
    public var driverCUDAVersion: String

    /// Equal when every field is.
    public static func == (a: DeviceInfo, b: DeviceInfo) -> Bool {
      a.ordinal == b.ordinal && a.name == b.name && a.computeCapability == b.computeCapability
        && a.multiprocessors == b.multiprocessors && a.totalMemory == b.totalMemory && a.freeMemory == b.freeMemory
        && a.driverCUDAVersion == b.driverCUDAVersion
    }
  }

  /// Describes CUDA device `ordinal`.
  /// - Throws: `GraphAttentionError` (`.device`) without a driver or such a device; `CUDAError` if a call fails.
  public static func device(_ ordinal: Int = 0) throws -> DeviceInfo {
    try device(ordinal, runtime: .shared)
  }

  static func device(_ ordinal: Int, runtime: CUDARuntime) throws -> DeviceInfo {
    try runtime.locked {
      let context = try runtime.context(ordinal)
      let driver = context.driver
      let memory = try context.memoryInfo()
      return DeviceInfo(
        ordinal: ordinal, name: try driver.name(of: context.device),
        computeCapability: (try driver.attribute(.computeCapabilityMajor, of: context.device),
                            try driver.attribute(.computeCapabilityMinor, of: context.device)),
        multiprocessors: try driver.attribute(.multiprocessorCount, of: context.device),
        totalMemory: memory.total, freeMemory: memory.free, driverCUDAVersion: driver.versionString)
    }
  }

  /// How the kernels of device `ordinal` were built ("CUBIN sm_90, NVRTC 12.8 (cached)"), or nil
  /// before the first CUDA call on it.
  public static func build(ofDevice ordinal: Int = 0) -> String? {
    CUDARuntime.shared.locked { CUDARuntime.shared.builds[ordinal] }
  }

  /// The names of the kernels every build exports (`extern "C"`), one per storage type.
  public static var kernelNames: [String] { KernelSource.kernelNames }

  /// The CUDA C source of the kernels, as compiled by NVRTC.
  public static var kernelSource: String { KernelSource.text }

  /// The result of compiling the kernels for one architecture.
  public struct Compilation: Sendable {
    /// `sm_XY` (CUBIN) or `compute_XY` (PTX).
    public var architecture: String
    /// Whether the image is a CUBIN.
    public var isCUBIN: Bool
    /// The image size in bytes.
    public var imageBytes: Int
    /// The compiler's log; empty for a clean compile, else warnings.
    public var log: String
    /// The kernels of `kernelNames` that the image does not contain (empty when all are there).
    public var missingKernels: [String]
    /// The NVRTC that compiled it: version and library file.
    public var compiler: String
  }

  /// Compiles every kernel for each architecture (`sm_80`, `sm_90`, ... for CUBIN; `compute_80` for
  /// PTX) with NVRTC alone, bypassing the cache: the check CI runs on machines without a GPU.
  /// - Throws: `GraphAttentionError` (`.device`) when NVRTC is not found; `CUDAError`
  ///   (`NVRTC_ERROR_COMPILATION` with the compiler log) when a compile fails.
  public static func compileKernels(architectures: [String]) throws -> [Compilation] {
    try compileKernels(architectures: architectures, runtime: .shared)
  }

  static func compileKernels(architectures: [String], runtime: CUDARuntime) throws -> [Compilation] {
    try runtime.locked {
      let compiler = try runtime.loadCompiler(driverVersion: nil)
      let builder = CUDAKernelBuilder(compiler: compiler, cache: runtime.cache)
      return try architectures.map { architecture in
        let cubin = !architecture.hasPrefix("compute_")
        let image = try builder.build(architecture: architecture, cubin: cubin, useCache: false)
        let missing = KernelSource.kernelNames.filter { !contains(image.bytes, Array($0.utf8)) }
        return Compilation(architecture: architecture, isCUBIN: image.isCUBIN, imageBytes: image.bytes.count,
                           log: image.log, missingKernels: missing,
                           compiler: "NVRTC \(compiler.version.major).\(compiler.version.minor) (\(compiler.library.path))")
      }
    }
  }

  /// Whether `needle` occurs in `bytes` (a kernel's name in the image's symbol table or PTX; a plain
  /// scan, images are about a megabyte).
  private static func contains(_ bytes: [UInt8], _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, needle.count <= bytes.count else { return needle.isEmpty }
    let first = needle[0]
    var i = 0
    while i <= bytes.count - needle.count {
      if bytes[i] == first, bytes[i..<(i + needle.count)].elementsEqual(needle) { return true }
      i += 1
    }
    return false
  }
}
