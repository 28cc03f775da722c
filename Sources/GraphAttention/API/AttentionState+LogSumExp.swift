extension AttentionState {
  /// Each row's log-sum-exp `m + log(l)` (`-inf` for rows without edges), shaped like the query without
  /// its last dimension: with `output()`, what `attentionGradients` needs, so gradients can follow a
  /// composed forward (the gradient of `A` then `B` is the gradient of `A + B`).
  /// - Complexity: O(rows).
  public func logSumExp() -> Tensor {
    rowLogSumExps(sinks: nil)
  }

  /// The log-sum-exp with attention sinks (each row's denominator counts `e^(sinks[h])` once), matching
  /// `output(sinks:)`.
  /// - Throws: `GraphAttentionError` (`.option`) unless `sinks` holds one finite logit per query head.
  /// - Complexity: O(rows).
  public func logSumExp(sinks: [Float]) throws -> Tensor {
    rowLogSumExps(sinks: try checkedSinks(sinks))
  }

  /// Each row's log-sum-exp from `CPUExecutor.normalization`, the formula `output` normalises with.
  private func rowLogSumExps(sinks: [Float]?) -> Tensor {
    let values = (0..<sums.count).map { row in
      CPUExecutor.normalization(maximum: maxima[row], sum: sums[row],
                                sink: sinks?[(row / shape.queryCount) % shape.queryHeads]).logSumExp
    }
    return Tensor(shape: Array(shape.outputShape.dropLast()), scalars: values)
  }
}
