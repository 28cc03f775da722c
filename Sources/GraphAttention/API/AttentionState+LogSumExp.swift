extension AttentionState {
  /// Each row's log-sum-exp `m + log(l)` (`-inf` for rows without edges), shaped like the query without
  /// its last dimension: with `output()`, what `attentionGradients` needs, so gradients can follow a
  /// composed forward (the gradient of `A` then `B` is the gradient of `A + B`).
  /// - Complexity: O(output) (it shares `output`'s normalisation).
  public func logSumExp() -> Tensor {
    normalized(emptyRows: .zero, sinks: nil).logSumExp
  }

  /// The log-sum-exp with attention sinks (each row's denominator counts `e^(sinks[h])` once), matching
  /// `output(sinks:)`.
  /// - Throws: `GraphAttentionError` (`.option`) unless `sinks` holds one finite logit per query head.
  /// - Complexity: O(output).
  public func logSumExp(sinks: [Float]) throws -> Tensor {
    normalized(emptyRows: .zero, sinks: try checkedSinks(sinks)).logSumExp
  }
}
