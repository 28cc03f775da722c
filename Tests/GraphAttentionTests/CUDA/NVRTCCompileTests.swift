@testable import GraphAttention
import XCTest

/// The kernels compiled by the real NVRTC when one is installed (CI: `pip install nvidia-cuda-nvrtc`,
/// see scripts/compile_cuda_kernels.sh); skipped with the reason otherwise. No GPU is involved.
final class NVRTCCompileTests: XCTestCase {
  func testKernelsCompileCleanlyForAmpere() throws {
    let runtime = CUDARuntime(loader: .system, cache: KernelCache(directory: nil))
    let results: [CUDABackend.Compilation]
    do {
      results = try CUDABackend.compileKernels(architectures: ["sm_80"], runtime: runtime)
    } catch let error as GraphAttentionError where error.kind == .device {
      throw XCTSkip("NVRTC not found, kernels not compiled here (scripts/compile_cuda_kernels.sh installs it): \(error.problem)")
    }
    let result = try XCTUnwrap(results.first)
    XCTAssertTrue(result.isCUBIN)
    XCTAssertEqual(result.log, "", "NVRTC warnings")
    XCTAssertEqual(result.missingKernels, [])
  }
}
