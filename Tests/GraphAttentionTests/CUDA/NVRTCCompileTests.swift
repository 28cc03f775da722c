import Foundation
@testable import GraphAttention
import XCTest

/// The kernels compiled by the real NVRTC, when asked (`GRAPH_ATTENTION_TEST_NVRTC=1`) and one is
/// installed; skipped with the reason otherwise. A compile takes about ten seconds, so CI runs it
/// once, for every architecture, in scripts/compile_cuda_kernels.sh instead. No GPU is involved.
final class NVRTCCompileTests: XCTestCase {
  func testKernelsCompileCleanlyForAmpere() throws {
    guard ProcessInfo.processInfo.environment["GRAPH_ATTENTION_TEST_NVRTC"] == "1" else {
      throw XCTSkip("set GRAPH_ATTENTION_TEST_NVRTC=1 to compile the kernels with NVRTC here (CI: scripts/compile_cuda_kernels.sh)")
    }
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
