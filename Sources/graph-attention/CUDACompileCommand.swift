import ArgumentParser
import Foundation
import GraphAttention

/// `graph-attention cuda-compile`: compiles every CUDA kernel with NVRTC, no GPU needed (the CI check).
struct CUDACompileCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cuda-compile",
    abstract: "Compile every CUDA kernel with NVRTC for the given architectures (no GPU needed); fail on any error or warning.",
    discussion: """
      Uses the same code path as --device cuda (the NVRTC found at run time: $GRAPH_ATTENTION_NVRTC, the \
      linker's search path, /usr/local/cuda, or pip's nvidia-cuda-nvrtc in python3's site-packages) but \
      bypasses the kernel cache. sm_XY builds a CUBIN, compute_XY PTX. Exits 1 if NVRTC is missing, a \
      compile fails, the compiler prints any warning, or a kernel is missing from the image.
      """
  )

  @Option(name: .customLong("arch"), help: "Target architecture, e.g. sm_80, sm_90 or compute_80; repeatable.")
  var architectures: [String] = ["sm_80", "sm_90"]

  @Option(help: "Also write the CUDA C source to this file, for reading or compiling with other tools.")
  var emitSource: String?

  @Flag(help: "Accept compiler warnings (print them but exit 0).") var allowWarnings = false

  func validate() throws {
    for arch in architectures where !(arch.hasPrefix("sm_") || arch.hasPrefix("compute_")) || Int(arch.split(separator: "_").last ?? "") == nil {
      throw ValidationError("--arch \(arch) is not of the form sm_XY or compute_XY, e.g. sm_90.")
    }
  }

  func run() throws {
    if let emitSource {
      try checkOutputWritable(emitSource)
      try CUDABackend.kernelSource.write(toFile: emitSource, atomically: true, encoding: .utf8)
    }
    let results = try CUDABackend.compileKernels(architectures: architectures)
    var failed = false
    for result in results {
      let warnings = result.log.isEmpty ? "no warnings" : "WARNINGS:\n\(result.log)"
      let missing = result.missingKernels.isEmpty ? "" : "; MISSING KERNELS: \(result.missingKernels.joined(separator: ", "))"
      print("\(result.architecture): \(result.isCUBIN ? "CUBIN" : "PTX") of \(result.imageBytes) bytes, kernels "
        + "\(CUDABackend.kernelNames.joined(separator: ", ")), \(warnings)\(missing)")
      if !result.missingKernels.isEmpty || (!result.log.isEmpty && !allowWarnings) { failed = true }
    }
    if let first = results.first { print("compiler: \(first.compiler)") }
    if failed {
      Console.note("cuda-compile: FAIL (warnings or missing kernels above)")
      throw ExitCode(1)
    }
    print("cuda-compile: PASS, \(CUDABackend.kernelNames.count) kernels x \(results.count) architectures")
  }
}

/// `graph-attention cuda-info`: the GPU the CUDA backend would use.
struct CUDAInfoCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cuda-info",
    abstract: "Describe a CUDA device (name, compute capability, memory, driver); exit 1 without a driver."
  )

  @Option(parsing: .unconditional, help: "The GPU ordinal.") var cudaDevice: Int = 0
  @Flag(help: "Print one JSON object.") var json = false

  func validate() throws {
    guard cudaDevice >= 0 else { throw ValidationError("--cuda-device must be >= 0, got \(cudaDevice).") }
  }

  func run() throws {
    let info = try CUDABackend.device(cudaDevice)
    let capability = "\(info.computeCapability.major).\(info.computeCapability.minor)"
    if json {
      print(Console.json([
        "ordinal": info.ordinal, "name": info.name, "compute_capability": capability,
        "multiprocessors": info.multiprocessors, "total_memory": info.totalMemory, "free_memory": info.freeMemory,
        "driver_cuda_version": info.driverCUDAVersion,
      ]))
    } else {
      print("""
        device           \(info.ordinal): \(info.name)
        compute          sm_\(info.computeCapability.major)\(info.computeCapability.minor), \(info.multiprocessors) SMs
        memory           \(Console.format(bytes: Double(info.freeMemory))) free of \(Console.format(bytes: Double(info.totalMemory)))
        driver           CUDA \(info.driverCUDAVersion)
        """)
    }
  }
}
