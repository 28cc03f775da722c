/// An arithmetic progression of key indices: `start, start + stride, ..., start + (count - 1) * stride`.
///
/// A query row's neighbourhood is a list of runs, sorted by `start`, whose spans
/// `[start, last]` do not overlap. Kernels specialise on the run's shape: contiguous runs
/// (`stride == 1`) stream keys, strided runs come from dilated graphs, and single-key runs
/// (`count == 1`) are gathers.
public struct KeyRun: Equatable, Hashable, Sendable, CustomStringConvertible {
  /// The first key index.
  public var start: Int
  /// The number of keys, at least 1.
  public var count: Int
  /// The distance between consecutive keys, at least 1.
  public var stride: Int

  /// Creates a run; `count >= 1`, `stride >= 1`, `start >= 0`.
  @inlinable
  public init(start: Int, count: Int, stride: Int = 1) {
    assert(count >= 1 && stride >= 1 && start >= 0)
    self.start = start
    self.count = count
    self.stride = stride
  }

  /// The last key index of the run.
  @inlinable
  public var last: Int { start &+ (count &- 1) &* stride }

  /// Whether `key` is one of the run's keys. O(1).
  @inlinable
  public func contains(_ key: Int) -> Bool {
    key >= start && key <= last && (key &- start) % stride == 0
  }

  /// `start+count*stride` notation, e.g. `10+5*3` for keys 10, 13, 16, 19, 22.
  public var description: String { stride == 1 ? "\(start)..\(last)" : "\(start)+\(count)*\(stride)" }
}
