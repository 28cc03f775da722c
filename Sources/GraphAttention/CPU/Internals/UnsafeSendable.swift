/// A value (usually a pointer) handed to worker threads, which the caller guarantees they use without
/// races: each thread writes disjoint elements, or all only read.
struct UnsafeSendable<Value>: @unchecked Sendable {
  let value: Value
  init(_ value: Value) { self.value = value }
}
