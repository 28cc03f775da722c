/// Compiles `KernelSource` for one GPU architecture, through the on-disk cache.
///
/// A CUBIN for the exact architecture (`--gpu-architecture=sm_XY`) is preferred: it loads without a
/// JIT step and is what CI checks. Only if that fails (an NVRTC older than the GPU) is PTX produced,
/// for the newest virtual architecture NVRTC knows that does not exceed the GPU's, which the driver
/// then compiles itself.
struct CUDAKernelBuilder {
  let compiler: NVRTCCompiler
  let cache: KernelCache

  /// Options common to every build: C++17 (hex float literals in the random generator).
  static let baseOptions = ["--std=c++17"]

  /// A built image and how it was made.
  struct Image {
    var bytes: [UInt8]
    var isCUBIN: Bool
    /// `sm_XY` or `compute_XY`.
    var architecture: String
    /// Compiler warnings (empty when clean or loaded from the cache).
    var log: String
    var fromCache: Bool
  }

  /// The image for compute capability `major.minor`, from the cache or compiled (and then cached).
  func image(computeCapability major: Int, _ minor: Int) throws -> Image {
    let arch = major * 10 + minor
    do {
      return try build(architecture: "sm_\(arch)", cubin: true)
    } catch let cubinError {
      var virtual = arch
      if let supported = compiler.supportedArchitectures(), let best = supported.filter({ $0 <= arch }).max() {
        virtual = best
      }
      do {
        return try build(architecture: "compute_\(virtual)", cubin: false)
      } catch {
        throw cubinError
      }
    }
  }

  /// Compiles (or loads from the cache) the source for `architecture`.
  func build(architecture: String, cubin: Bool, useCache: Bool = true) throws -> Image {
    let options = CUDAKernelBuilder.baseOptions + ["--gpu-architecture=\(architecture)"]
    let version = "nvrtc \(compiler.version.major).\(compiler.version.minor)"
    let name = KernelCache.fileName(source: KernelSource.text, architecture: architecture, options: options,
                                    compilerVersion: version, cubin: cubin)
    if useCache, let bytes = cache.load(name) {
      return Image(bytes: bytes, isCUBIN: cubin, architecture: architecture, log: "", fromCache: true)
    }
    let output = try compiler.compile(source: KernelSource.text, name: "graph_attention_kernels.cu",
                                      options: options, cubin: cubin)
    if useCache { cache.store(name, output.image) }
    return Image(bytes: output.image, isCUBIN: output.isCUBIN, architecture: architecture, log: output.log, fromCache: false)
  }
}
