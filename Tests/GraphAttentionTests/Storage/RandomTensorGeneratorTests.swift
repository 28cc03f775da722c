import GraphAttention
import XCTest

final class RandomTensorGeneratorTests: XCTestCase {
  /// Seeds S and S + 1 used to be one stream shifted by one element (`q.flat[1:] == k.flat[:-1]`).
  func testSeedsGiveIndependentStreamsNotShiftedCopies() {
    let n = 1 << 16
    let streams = (1...3).map { Tensor.random(shape: [n], seed: UInt64($0)).scalars }
    for a in 0..<3 {
      for b in 0..<3 where a != b {
        // No shift of one stream against another (within +-64) repeats more than chance allows:
        // two independent 2^-31-step values agree with probability about 2^-31.
        for shift in -64...64 {
          var equal = 0
          for i in max(0, -shift)..<min(n, n - shift) where streams[a][i] == streams[b][i + shift] { equal += 1 }
          XCTAssertLessThan(equal, 3, "seed \(a + 1) vs seed \(b + 1) shifted by \(shift)")
        }
        // Uncorrelated, also one element apart: |r| < 5 / sqrt(n) (5 standard errors).
        for shift in [-1, 0, 1] {
          let range = max(0, -shift)..<min(n, n - shift)
          let x = range.map { Double(streams[a][$0]) }, y = range.map { Double(streams[b][$0 + shift]) }
          XCTAssertLessThan(abs(correlation(x, y)), 5 / Double(n).squareRoot(), "seed \(a + 1) vs \(b + 1), shift \(shift)")
        }
      }
    }
    // Each stream is uniform on [-1, 1]: mean ~ 0, variance ~ 1/3.
    for s in streams {
      let mean = s.reduce(0) { $0 + Double($1) } / Double(n)
      let variance = s.reduce(0) { $0 + Double($1) * Double($1) } / Double(n) - mean * mean
      XCTAssertLessThan(abs(mean), 0.02)
      XCTAssertEqual(variance, 1.0 / 3, accuracy: 0.01)
      XCTAssertTrue(s.allSatisfy { $0 >= -1 && $0 <= 1 })
    }
  }

  /// `generate`'s Q, K, V are streams 0, 1, 2 of one seed: independent too, and equal to Tensor.random.
  func testGeneratorMatchesTensorRandomAndStreamsAreIndependent() {
    let n = 4096
    for seed: UInt64 in [0, 1, 7, .max] {
      let tensor = Tensor.random(shape: [n], seed: seed).scalars
      let generator = RandomTensorGenerator(seed: seed)
      for i in stride(from: 0, to: n, by: 97) { XCTAssertEqual(generator.value(at: i), tensor[i]) }
      let q = (0..<n).map { RandomTensorGenerator(seed: seed, stream: 0).value(at: $0) }
      let k = (0..<n).map { RandomTensorGenerator(seed: seed, stream: 1).value(at: $0) }
      XCTAssertEqual(q, tensor)
      XCTAssertNotEqual(Array(q.dropFirst()), Array(k.dropLast()))
      XCTAssertLessThan(abs(correlation(q.map(Double.init), k.map(Double.init))), 5 / Double(n).squareRoot())
    }
  }

  private func correlation(_ x: [Double], _ y: [Double]) -> Double {
    let n = Double(x.count)
    let mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
    var sxy = 0.0, sxx = 0.0, syy = 0.0
    for i in x.indices {
      sxy += (x[i] - mx) * (y[i] - my)
      sxx += (x[i] - mx) * (x[i] - mx)
      syy += (y[i] - my) * (y[i] - my)
    }
    return sxy / (sxx * syy).squareRoot()
  }
}
