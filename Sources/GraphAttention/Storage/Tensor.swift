/// A dense fp32 tensor in C order (row-major): the engine's in-memory input and output type.
///
/// Attention tensors have rank 2 `[tokens, dim]` (one head, the paper's case), rank 3
/// `[heads, tokens, dim]` or rank 4 `[batch, heads, tokens, dim]` (PyTorch's layout).
/// fp16 files are converted to fp32 on load; arithmetic is always fp32.
public struct Tensor: Sendable, Equatable {
  /// The extent of each dimension, outermost first.
  public var shape: [Int]
  /// `shape.reduce(1, *)` elements in C order.
  public var scalars: [Float]

  /// Wraps `scalars` with `shape`; their counts must agree.
  public init(shape: [Int], scalars: [Float]) {
    precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
    precondition(shape.reduce(1, *) == scalars.count, "shape \(shape) needs \(shape.reduce(1, *)) scalars, got \(scalars.count)")
    self.shape = shape
    self.scalars = scalars
  }

  /// A tensor of `shape` filled with `value`.
  public init(shape: [Int], repeating value: Float) {
    self.init(shape: shape, scalars: [Float](repeating: value, count: shape.reduce(1, *)))
  }

  /// A tensor of uniformly distributed values in `[-1, 1]`: `RandomTensorGenerator(seed: seed)`'s
  /// elements, in C order. Different seeds give independent streams.
  /// - Complexity: O(count), about 1 ns per element.
  public static func random(shape: [Int], seed: UInt64) -> Tensor {
    let count = shape.reduce(1, *)
    let scalars = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
      if let base = buffer.baseAddress { RandomTensorGenerator(seed: seed).fill(base, elements: 0..<count) }
      initialized = count
    }
    return Tensor(shape: shape, scalars: scalars)
  }

  /// Reads a `.npy` file of fp32 (`<f4`), fp16 (`<f2`) or fp64 (`<f8`) values.
  /// - Parameter name: what the tensor is (e.g. "query"), used in error messages.
  /// - Throws: `GraphAttentionError` for missing or malformed files and non-float dtypes.
  public init(npyFile path: String, name: String) throws {
    let array = try NPYArray(contentsOf: path)
    try self.init(shape: array.shape, scalars: array.floats(name: "\(name) (\(path))"))
  }

  /// Writes the tensor as a little-endian fp32 `.npy` file, atomically (temporary file, then rename).
  public func write(npyFile path: String) throws {
    try NPYWriter.write(scalars, shape: shape, to: path)
  }

  /// The position and kind of the first NaN or infinity, or nil if all values are finite.
  /// - Complexity: O(count).
  public func firstNonFinite() -> (index: [Int], value: Float)? {
    // The storage layer's one non-finite scan (vectorised C, the same for every storage type).
    let found: Int? = scalars.withUnsafeBytes { raw in
      raw.baseAddress.flatMap { StorageKernels.firstNonFinite($0, type: .float32, count: scalars.count) }
    }
    guard let flat = found else { return nil }
    var index = [Int](repeating: 0, count: shape.count)
    var rest = flat
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
      index[axis] = rest % shape[axis]
      rest /= shape[axis]
    }
    return (index, scalars[flat])
  }
}
