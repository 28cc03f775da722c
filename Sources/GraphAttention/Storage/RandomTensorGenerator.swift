import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Seeded random tensor values, counter-based: any element can be computed alone, in O(1).
///
/// ## The generator (a stable definition: `graph-attention generate` files depend on it)
/// With `golden = 0x9E3779B97F4A7C15` and the key `key = mix64(seed &+ 0x2545F4914F6CDD1D)`, element `e`
/// (flat, C order) is `Float(Int32(truncatingIfNeeded: mix64(((e + 1) &* golden) ^ key) >> 32)) * 2^-31`,
/// where `mix64` is SplitMix64's output function. The values are uniform on [-1, 1] in steps of
/// 2^-31 before rounding to fp32 (1.0 itself appears only through that rounding).
///
/// The seed enters through the key, mixed, not as a counter offset: seeds S and S + 1 give unrelated
/// streams (before 2026-12 the seed offset the counter, so seed S + 1 was seed S's stream shifted by one
/// element, and Q, K, V of `generate` were shifted copies of each other).
/// This is exactly `Tensor.random(shape:seed:)`: `RandomTensorGenerator(seed: s).value(at: e)`
/// equals `Tensor.random(shape: shape, seed: s).scalars[e]` for every shape.
///
/// `graph-attention generate --seed S` writes Q with seed `S`, K with `S + 1` and V with `S + 2`
/// (`init(seed:stream:)` with streams 0, 1, 2), the same inputs `verify` uses; 16-bit files hold the
/// values rounded to nearest even (`value(at:storedAs:)`).
///
/// ```swift
/// let k = RandomTensorGenerator(seed: 7, stream: 1)        // K of `generate --seed 7`
/// let file = try TensorFile.open("k.npy")
/// assert(file.element(123_456_789) == k.value(at: 123_456_789, storedAs: file.type))
/// ```
public struct RandomTensorGenerator: Sendable, Hashable {
  /// The seed of this tensor's stream.
  public let seed: UInt64

  /// The stream of `Tensor.random(shape:seed:)` with `seed`.
  public init(seed: UInt64) {
    self.seed = seed
  }

  /// Tensor `stream` of `graph-attention generate --seed seed`: Q is stream 0, K 1, V 2 (seed `seed + stream`).
  public init(seed: UInt64, stream: Int) {
    self.seed = seed &+ UInt64(truncatingIfNeeded: stream)
  }

  @usableFromInline static let golden: UInt64 = 0x9E37_79B9_7F4A_7C15

  /// The seed, mixed: every element's counter is XORed with it before the output mix.
  @inlinable var key: UInt64 { RandomGraph.mix64(seed &+ 0x2545_F491_4F6C_DD1D) }

  /// Element `index` in fp32.
  /// - Precondition: `index >= 0`.
  /// - Complexity: O(1), a few nanoseconds.
  @inlinable
  public func value(at index: Int) -> Float {
    precondition(index >= 0, "RandomTensorGenerator: negative index \(index)")
    let bits = RandomGraph.mix64((UInt64(index &+ 1) &* RandomTensorGenerator.golden) ^ key)
    return Float(Int32(truncatingIfNeeded: bits >> 32)) * 0x1p-31
  }

  /// Element `index` as a file of `type` holds it: `value(at:)` rounded to nearest even.
  /// - Complexity: O(1).
  public func value(at index: Int, storedAs type: StorageType) -> Float {
    TensorView.rounded(value(at: index), to: type)
  }

  /// Writes elements `elements` in fp32 to `destination[0 ..< elements.count]`.
  /// - Precondition: `elements.lowerBound >= 0`.
  /// - Complexity: O(`elements.count`), about 1 ns per element per core.
  public func fill(_ destination: UnsafeMutablePointer<Float>, elements: Range<Int>) {
    precondition(elements.lowerBound >= 0, "RandomTensorGenerator: negative index \(elements.lowerBound)")
    let golden = RandomTensorGenerator.golden
    let key = self.key
    var counter = UInt64(elements.lowerBound) &* golden
    for i in 0..<elements.count {
      counter &+= golden
      destination[i] = Float(Int32(truncatingIfNeeded: RandomGraph.mix64(counter ^ key) >> 32)) * 0x1p-31
    }
  }

  /// Writes elements `elements` of the tensor into the same elements of `view`, rounded to its type.
  /// - Precondition: `elements` lies within `0 ..< view.count`.
  /// - Complexity: O(`elements.count`) on the calling thread; no allocation.
  public func fill(_ view: MutableTensorView, elements: Range<Int>) {
    precondition(elements.lowerBound >= 0 && elements.upperBound <= view.count,
                 "RandomTensorGenerator: elements \(elements) outside 0..<\(view.count)")
    let block = 4096
    withUnsafeTemporaryAllocation(of: Float.self, capacity: block) { buffer in
      guard let scratch = buffer.baseAddress else { return }
      var position = elements.lowerBound
      while position < elements.upperBound {
        let n = min(block, elements.upperBound - position)
        fill(scratch, elements: position..<(position + n))
        TensorView.store(scratch, count: n, to: view.base + position &* view.type.byteCount, type: view.type)
        position += n
      }
    }
  }

  /// Fills all of `view` on `threads` threads in chunks of about `chunkBytes`, releasing each chunk's
  /// pages once written (`dropPages`), so a memory-mapped output of any size is written with bounded
  /// memory.
  ///
  /// - Parameters:
  ///   - threads: worker threads (default: every processor).
  ///   - chunkBytes: bytes of `view` per work item (default 64 MiB).
  ///   - progress: called from worker threads with the number of elements written so far, after each chunk.
  /// - Complexity: O(`view.count`); bound by the generator on fast disks, by write-back otherwise.
  public func fill(_ view: MutableTensorView, threads: Int? = nil, chunkBytes: Int = 64 << 20,
                   progress: (@Sendable (Int) -> Void)? = nil) {
    let workers = max(1, threads ?? Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    let chunk = max(4096, chunkBytes / view.type.byteCount)
    let chunks = (view.count + chunk - 1) / chunk
    let counter = StorageCounter()
    DispatchQueue.concurrentPerform(iterations: min(workers, max(chunks, 1))) { _ in
      while true {
        let index = counter.next()
        guard index < chunks else { return }
        let range = (index * chunk)..<min(view.count, (index + 1) * chunk)
        fill(view, elements: range)
        view.dropPages(elements: range)
        let done = counter.finish(range.count)
        progress?(done)
      }
    }
  }
}

/// Hands out chunk indices and sums finished elements, under a lock (work items are large).
final class StorageCounter: Sendable {
  private let counts = Mutex((issued: 0, finished: 0))

  func next() -> Int {
    counts.withLock { counts in
      defer { counts.issued += 1 }
      return counts.issued
    }
  }

  func finish(_ elements: Int) -> Int {
    counts.withLock { counts in
      counts.finished += elements
      return counts.finished
    }
  }
}
