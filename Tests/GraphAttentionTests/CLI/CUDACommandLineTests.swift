import Foundation
import GraphAttention
import XCTest

/// `--device cuda` and the CUDA subcommands, run as a user runs them, on a machine without a GPU.
final class CUDACommandLineTests: XCTestCase {

  private func graphAttention(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    try CommandLineRunner.run(arguments)
  }

  func testDeviceCudaWithoutADriverIsAClearErrorAndExitOne() throws {
    if let handle = dlopen("libcuda.so.1", RTLD_NOW) {
      dlclose(handle)
      throw XCTSkip("a CUDA driver is installed here; scripts/gpu_check.sh covers --device cuda")
    }
    for arguments in [["verify", "--mask", "window:4", "--tokens", "32", "--device", "cuda"], ["cuda-info"]] {
      let result = try graphAttention(arguments)
      XCTAssertEqual(result.status, 1, "\(arguments): \(result.stderr)")
      XCTAssertTrue(result.stderr.contains("no CUDA driver found (libcuda.so.1); --device cpu works here"), result.stderr)
    }
    // The CPU stays the default.
    XCTAssertEqual(try graphAttention(["verify", "--mask", "window:4", "--tokens", "32"]).status, 0)
  }

  /// `verify --compose` accumulates the parts through AttentionState (how gpu_check tests the GPU's state path).
  func testVerifyComposesThroughTheState() throws {
    let result = try graphAttention(["verify", "--mask", "global:0,47+window:3+random:0.05:2", "--tokens", "48", "--compose"])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertTrue(result.stdout.hasPrefix("PASS global:0,47+window:3+random:0.05:2 composed L=48"), result.stdout)
  }

  func testDeviceOptionsAreValidated() throws {
    let storageOnCPU = try graphAttention(["verify", "--mask", "full", "--tokens", "8", "--storage", "bf16"])
    XCTAssertNotEqual(storageOnCPU.status, 0)
    XCTAssertTrue(storageOnCPU.stderr.contains("--storage bf16 applies to --device cuda"), storageOnCPU.stderr)
    let badDevice = try graphAttention(["verify", "--mask", "full", "--tokens", "8", "--device", "tpu"])
    XCTAssertNotEqual(badDevice.status, 0)
    let badArch = try graphAttention(["cuda-compile", "--arch", "ampere"])
    XCTAssertNotEqual(badArch.status, 0)
    XCTAssertTrue(badArch.stderr.contains("sm_XY or compute_XY"), badArch.stderr)
  }
}
