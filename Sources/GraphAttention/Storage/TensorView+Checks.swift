extension TensorView {
  /// Throws for the first NaN or infinity among `elements` (all when nil), naming its index in the
  /// tensor's shape, e.g. `value: query[0, 12, 4] is inf`.
  /// - Complexity: O(elements), vectorised.
  public func requireFinite(name: String, elements: Range<Int>? = nil) throws {
    let range = elements ?? 0..<count
    let slice = TensorView(shape: [range.count], type: type, base: base + range.lowerBound * type.byteCount, owner: owner)
    guard slice.firstNonFinite(name: name) != nil else { return }
    var flat = range.lowerBound
    while flat < range.upperBound, element(flat).isFinite { flat += 1 }
    let bad = element(flat)
    var index = [Int](repeating: 0, count: shape.count)
    var rest = flat
    for axis in stride(from: shape.count - 1, through: 0, by: -1) {
      index[axis] = rest % shape[axis]
      rest /= shape[axis]
    }
    throw GraphAttentionError(.value, "\(name)\(index) is \(bad)",
                              fix: "remove NaN and infinity from the \(name) (e.g. np.nan_to_num) before running")
  }
}
