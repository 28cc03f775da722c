import Foundation
import GraphAttention
import XCTest

/// The one error metric and softmax tail that `verify`, the demo, `run --check-rows` and the tests share.
final class ReferenceAttentionTests: XCTestCase {
  func testSoftmaxTailAndRelativeError() {
    // Two keys with scores 0 and log 3: weights 1/4 and 3/4.
    let row = ReferenceAttention.softmax(scores: [0, Foundation.log(3)], neighbours: [5, 9], valueDim: 2) { j, c in
      j == 5 ? [4, -8][c] : [0, 8][c]
    }
    XCTAssertEqual(row.degree, 2)
    XCTAssertEqual(row.output[0], 1, accuracy: 1e-15)
    XCTAssertEqual(row.output[1], 4, accuracy: 1e-15)
    XCTAssertEqual(row.magnitude[1], 8, accuracy: 1e-15)
    // Normalised by the largest magnitude (8), not by |o|.
    XCTAssertEqual(ReferenceAttention.relativeError(computed: [1, 4.5][...], reference: row), 0.5 / 8, accuracy: 1e-12)
    XCTAssertEqual(ReferenceAttention.relativeError(computed: [1, 4][...], reference: row), 0)
    // NaN never passes in a row with edges, even when asked for in empty rows.
    XCTAssertEqual(ReferenceAttention.relativeError(computed: [.nan, 4][...], reference: row), .infinity)
    XCTAssertEqual(ReferenceAttention.relativeError(computed: [.nan, 4][...], reference: row, expectNaN: true), .infinity)
    // Empty rows: exactly zero, or NaN when asked.
    let empty = ReferenceAttention.softmax(scores: [], neighbours: [], valueDim: 2) { _, _ in 1 }
    XCTAssertEqual(empty.degree, 0)
    XCTAssertEqual(ReferenceAttention.relativeError(computed: [0, 0][...], reference: empty), 0)
    XCTAssertEqual(ReferenceAttention.relativeError(computed: [0, 1e-30][...], reference: empty), .infinity)
    XCTAssertEqual(ReferenceAttention.relativeError(computed: [.nan, .nan][...], reference: empty, expectNaN: true), 0)
    XCTAssertEqual(ReferenceAttention.relativeError(computed: [0, 0][...], reference: empty, expectNaN: true), .infinity)
  }
}
