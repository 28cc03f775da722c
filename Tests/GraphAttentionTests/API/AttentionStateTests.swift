import GraphAttention
import XCTest

/// Composition through the carried state equals the union, and never double counts.
final class AttentionStateTests: XCTestCase {
  let q = Inputs.tensor([2, 120, 16], seed: 11)
  let k = Inputs.tensor([2, 120, 16], seed: 12)
  let v = Inputs.tensor([2, 120, 16], seed: 13)

  private func composed(_ specs: [String]) throws -> Tensor {
    var state = try AttentionState(query: q, value: v)
    for spec in specs { try state.accumulate(query: q, key: k, value: v, graph: try Graph(parsing: spec)) }
    return state.output()
  }

  func testBigBirdInPartsEqualsTheUnionAndTheDefinition() throws {
    let parts = ["window:10", "global:0,60,119", "random:0.05:3"]
    let union = try attention(query: q, key: k, value: v, graph: try Graph(parsing: parts.joined(separator: "+")))
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let reference = DenseReference.attention(query: q, key: k, value: v, shape: shape,
                                             mask: .window(10) + .global([0, 60, 119]) + .random(0.05, seed: 3))
    for order in [parts, parts.reversed(), [parts[1], parts[2], parts[0]]] {
      let o = try composed(order)
      DenseReference.assertClose(o, reference, valueDim: 16, "composition \(order)")
      for (a, b) in zip(o.scalars, union.scalars) { XCTAssertEqual(a, b, accuracy: 2e-6) }
    }
  }

  /// The paper's chained kernels count an edge twice when two graphs share it; the state must not.
  func testOverlappingGraphsAreCountedOnce() throws {
    let shape = try AttentionShape(query: q.shape, key: k.shape, value: v.shape)
    let reference = DenseReference.attention(query: q, key: k, value: v, shape: shape, mask: .window(6) + .causal)
    DenseReference.assertClose(try composed(["window:6", "window:4", "causal", "window:6"]), reference, valueDim: 16, "overlap")
    let dilated = DenseReference.attention(query: q, key: k, value: v, shape: shape, mask: .dilated(9, 2) + .window(5) + .blocked(16, 1))
    DenseReference.assertClose(try composed(["dilated:9:2", "window:5", "blocked:16:1"]), dilated, valueDim: 16, "strided overlap")
  }

  func testEmptyStateAndEmptyRows() throws {
    let state = try AttentionState(query: q, value: v)
    XCTAssertTrue(state.output().scalars.allSatisfy { $0 == 0 })
    XCTAssertTrue(state.output(emptyRows: .nan).scalars.allSatisfy(\.isNaN))
  }

  func testMismatchedTensorsAreRejected() throws {
    var state = try AttentionState(query: q, value: v)
    XCTAssertThrowsError(try state.accumulate(query: Inputs.tensor([2, 60, 16], seed: 1), key: Inputs.tensor([2, 60, 16], seed: 2),
                                              value: Inputs.tensor([2, 60, 16], seed: 3), graph: .full)) { error in
      XCTAssertEqual((error as? GraphAttentionError)?.kind, .shape)
    }
  }
}
