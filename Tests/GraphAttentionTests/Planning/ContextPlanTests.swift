import GraphAttention
import XCTest

/// The memory and disk arithmetic behind `graph-attention plan`.
final class ContextPlanTests: XCTestCase {
  func testInMemoryAndOnDiskLimits() throws {
    let request = ContextPlan.Request(headDim: 32, heads: 2, storage: .float16, memoryBytes: 8 << 30, diskBytes: 100 << 30, threads: 4)
    let plan = try ContextPlan(graph: try .window(256), request: request)
    XCTAssertEqual(plan.tokenTerms.map(\.bytes), [128, 128, 128, 128])
    XCTAssertEqual(plan.bytesPerToken, 512)
    XCTAssertEqual(plan.engineBytes, (64 + 4) << 20)
    XCTAssertEqual(plan.maxTokensInMemory, ((8 << 30) - (68 << 20)) / 512)
    XCTAssertEqual(plan.memoryBytes(tokens: plan.maxTokensInMemory) <= 8 << 30, true)
    XCTAssertGreaterThan(plan.memoryBytes(tokens: plan.maxTokensInMemory + 1), 8 << 30)
    XCTAssertEqual(plan.maxTokensOnDisk, ((100 << 30) - ContextPlan.headerAllowance) / 512)
    XCTAssertEqual(plan.maxTokensStreamed, plan.maxTokensOnDisk)
    XCTAssertEqual(plan.streamingLimit, .disk)
    // A window's resident set does not depend on L.
    let small = plan.residentTerms(tokens: 1 << 20).reduce(0) { $0 + $1.bytes }
    let large = plan.residentTerms(tokens: 1 << 30).reduce(0) { $0 + $1.bytes }
    XCTAssertEqual(small, large)
    XCTAssertLessThan(large, 256 << 20)
    XCTAssertEqual(plan.edgesPerHead(tokens: 160_000_000).edges, Double(160_000_000 * 513 - 256 * 257))
    XCTAssertFalse(plan.edgesPerHead(tokens: 10).isUpperBound)
  }

  /// Random keys are scattered: the resident set grows with L, so memory can bound the streamed length.
  func testRandomGraphsCanBeBoundByMemory() throws {
    let request = ContextPlan.Request(headDim: 64, storage: .bfloat16, memoryBytes: 1 << 30, diskBytes: 1 << 40, chunkRows: 4096)
    let plan = try ContextPlan(graph: try Graph(parsing: "window:16+random:0.0001:1"), request: request)
    XCTAssertEqual(plan.streamingLimit, .memory)
    XCTAssertLessThan(plan.maxTokensStreamed, plan.maxTokensOnDisk)
    XCTAssertLessThanOrEqual(plan.residentTerms(tokens: plan.maxTokensStreamed).reduce(0) { $0 + $1.bytes }, 1 << 30)
    XCTAssertGreaterThan(plan.residentTerms(tokens: plan.maxTokensStreamed + 1).reduce(0) { $0 + $1.bytes }, 1 << 30)
    XCTAssertTrue(plan.edgesPerHead(tokens: 1000).isUpperBound)
  }

  func testExplicitGraphsFixTheLength() throws {
    let pattern = try ExplicitGraph(rowOffsets: [0, 2, 3, 3], columns: [0, 2, 1])
    let request = ContextPlan.Request(headDim: 8, storage: .float32, memoryBytes: 1 << 30, diskBytes: 1 << 30)
    let plan = try ContextPlan(graph: .explicit(pattern), request: request)
    XCTAssertEqual(plan.fixedLength?.queries, 3)
    XCTAssertEqual(plan.maxTokensInMemory, 3)
    XCTAssertEqual(plan.maxTokensStreamed, 3)
    XCTAssertEqual(plan.graphBytes, 8 * 4 + 4 * 3)
    XCTAssertEqual(plan.edgesPerHead(tokens: 99).edges, 3)
  }

  func testBadRequestsAreErrors() {
    let graph = Graph.causal
    XCTAssertThrowsError(try ContextPlan(graph: graph, request: .init(headDim: 0, storage: .float32, memoryBytes: 1, diskBytes: 1)))
    XCTAssertThrowsError(try ContextPlan(graph: graph, request: .init(headDim: 8, heads: 4, keyValueHeads: 3, storage: .float32,
                                                                      memoryBytes: 1, diskBytes: 1)))
    // Too little memory for the engine: nothing fits, and that is an answer, not an error.
    let tiny = try? ContextPlan(graph: graph, request: .init(headDim: 8, storage: .float32, memoryBytes: 1 << 20, diskBytes: 1 << 30))
    XCTAssertEqual(tiny?.maxTokensInMemory, 0)
    XCTAssertEqual(tiny?.maxTokensStreamed, 0)
  }
}
