#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension AttentionState {
  /// Each row's log-sum-exp `m + log(l)` (`-inf` for rows without edges), shaped like the query without
  /// its last dimension: with `output()`, what `attentionGradients` needs, so gradients can follow a
  /// composed forward (the gradient of `A` then `B` is the gradient of `A + B`).
  /// - Complexity: O(rows).
  public func logSumExp() -> Tensor {
    let values = (0..<sums.count).map { sums[$0] > 0 ? maxima[$0] + log(sums[$0]) : -Float.infinity }
    return Tensor(shape: Array(shape.outputShape.dropLast()), scalars: values)
  }
}
