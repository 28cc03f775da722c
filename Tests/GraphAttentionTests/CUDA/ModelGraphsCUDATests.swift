@testable import GraphAttention
import XCTest

/// The CUDA kernels do not know the model graphs yet: they are refused with a message, never encoded.
final class ModelGraphsCUDATests: XCTestCase {
  func testUnsupportedGraphsAreNamed() throws {
    for (spec, lq, lk, words) in [("prefix:4", 8, 8, "prefix:4"), ("documents:0,8&causal", 8, 8, "documents:0,8&causal"),
                                  ("causal", 2, 8, "align"), ("window:3:causal", 9, 8, "align"), ("random:0.1:2:per-head", 8, 8, "per-head")] {
      let problem = CUDAGraphEncoding.unsupported(try Graph(parsing: spec), queryCount: lq, keyCount: lk)
      XCTAssertTrue(problem?.contains(words) == true, "\(spec): \(problem ?? "nil")")
    }
    for spec in ["causal", "window:3:causal+global:0", "random:0.1:2", "full"] {
      XCTAssertNil(CUDAGraphEncoding.unsupported(try Graph(parsing: spec), queryCount: 8, keyCount: 8), spec)
    }
  }
}
