/// Which implementation `TensorView.convert` and `TensorView.store` use.
public enum ConversionKernel: Sendable, Equatable {
  /// F16C/AVX2 where the CPU has it (checked once at run time), else the portable loop.
  case fastest
  /// The portable loop, bit-identical to the fast one; for tests and benchmarks that compare them.
  case portable
}

/// A contiguous C-order tensor in some storage: heap or memory-mapped file. Keeps its owner alive.
///
/// A view is a typed window on raw memory: `count` elements of `type` starting at `base`, in C
/// (row-major) order for `shape` (`[tokens, dim]`, `[heads, tokens, dim]` or
/// `[batch, heads, tokens, dim]` for attention). Offsets are 64-bit, so tensors of more than 2^32
/// elements work. Reading converts to `Float`; arithmetic is always fp32.
///
/// ```swift
/// let k = try TensorFile.open("k.npy")                   // fp16, [8, 160_000_000, 64], mapped
/// var row = [Float](repeating: 0, count: 64)
/// row.withUnsafeMutableBufferPointer { out in
///   TensorView.convert(k.base + 12_345 * 64 * k.type.byteCount, type: k.type, count: 64, to: out.baseAddress!)
/// }
/// ```
///
/// The view does not synchronise anything: concurrent reads are fine, and concurrent writes through
/// a `MutableTensorView` must touch disjoint elements.
public struct TensorView: @unchecked Sendable {
  /// Extent of each dimension, outermost first.
  public let shape: [Int]
  /// The element type in memory.
  public let type: StorageType
  /// The first element. Aligned to `type.byteCount` for views made by this library.
  public let base: UnsafeRawPointer
  /// What keeps `base` valid: a `MappedFile` for file views, a private box for heap views, or nil
  /// when the caller guarantees the memory outlives the view.
  public let owner: AnyObject?
  /// Number of elements: the product of `shape` (1 for `[]`), 64-bit.
  public let count: Int

  /// Bytes the elements occupy: `count * type.byteCount`.
  public var byteCount: Int { count &* type.byteCount }

  /// The mapped file the view points into, or nil for heap memory.
  public var mappedFile: MappedFile? { owner as? MappedFile }

  /// Wraps memory that `owner` keeps alive.
  ///
  /// - Precondition: every extent is non-negative and `count * type.byteCount` fits in `Int`.
  public init(shape: [Int], type: StorageType, base: UnsafeRawPointer, owner: AnyObject?) {
    self.count = storageCheckedCount(shape, type)
    self.shape = shape
    self.type = type
    self.base = base
    self.owner = owner
  }

  /// An fp32 view of an in-memory `Tensor`, sharing (not copying) its scalars.
  ///
  /// The view's owner holds the scalar array, so the view stays valid however long it lives; later
  /// changes to `tensor` (a value type) are not seen by the view.
  /// - Complexity: O(1).
  public init(_ tensor: Tensor) {
    let box = TensorScalarsBox(tensor.scalars)
    self.init(shape: tensor.shape, type: .float32, base: UnsafeRawPointer(box.base), owner: box)
  }

  /// Element `flatIndex` (C order) converted to `Float`: the slow path, for checks and tests.
  /// - Precondition: `0 <= flatIndex < count`.
  /// - Complexity: O(1).
  public func element(_ flatIndex: Int) -> Float {
    precondition(flatIndex >= 0 && flatIndex < count, "TensorView: element \(flatIndex) out of range 0..<\(count)")
    return storageLoad(base, type, flatIndex)
  }

  /// Converts elements `range` (flat, C order) to fp32 at `destination`.
  /// - Precondition: `range` lies within `0..<count`; `destination` holds `range.count` floats.
  /// - Complexity: O(`range.count`), F16C-vectorised where available.
  public func copyFloats(_ range: Range<Int>, to destination: UnsafeMutablePointer<Float>) {
    precondition(range.lowerBound >= 0 && range.upperBound <= count, "TensorView: range \(range) out of 0..<\(count)")
    TensorView.convert(base + range.lowerBound &* type.byteCount, type: type, count: range.count, to: destination)
  }

  /// The first NaN or infinity, reported as an error naming `name` and the element's index, or nil
  /// when every element is finite.
  ///
  /// The message has the form `"<name>[h, i, c] is nan"`. For a view into a mapped file the scan
  /// proceeds in 64 MiB steps and drops the pages behind it, so it does not grow the resident set.
  /// - Complexity: O(`count`), a branch-free vectorised pass; bound by memory or disk bandwidth.
  public func firstNonFinite(name: String) -> GraphAttentionError? {
    guard let flat = storageFirstNonFinite(base, type, count, mappedFile) else { return nil }
    var index = [Int](repeating: 0, count: shape.count)
    var rest = flat
    for axis in stride(from: shape.count - 1, through: 0, by: -1) where shape[axis] > 0 {
      index[axis] = rest % shape[axis]
      rest /= shape[axis]
    }
    let value = element(flat)
    return GraphAttentionError(
      .value, "\(name)\(index) is \(value) (flat element \(flat))",
      fix: "remove NaN and infinity from the \(name) (e.g. np.nan_to_num) before running")
  }

  /// Releases the memory pages holding elements `range` from the resident set, if the view is
  /// memory-mapped (see `MappedFile.dropPages`); does nothing for heap memory.
  /// - Complexity: O(pages).
  public func dropPages(elements range: Range<Int>) {
    guard let file = mappedFile else { return }
    file.dropPages(byteRange: storageByteRange(base, in: file, range, type))
  }

  /// Asks the kernel to read elements `range` ahead (`MADV_WILLNEED`) if the view is memory-mapped.
  /// - Complexity: O(1).
  public func willNeed(elements range: Range<Int>) {
    guard let file = mappedFile else { return }
    file.willNeed(byteRange: storageByteRange(base, in: file, range, type))
  }

  // MARK: - Bulk conversion

  /// Whether `convert` and `store` use F16C/AVX2 on this CPU (else the portable loops).
  public static var conversionUsesF16C: Bool { StorageKernels.usesF16C }

  /// Converts `count` elements of `type` at `source` to fp32 at `destination`, exactly.
  ///
  /// fp16 subnormals and infinities convert exactly and NaNs keep sign and payload (made quiet);
  /// bf16 is a 16-bit shift; fp32 is copied.
  /// About 0.1-0.3 ns per element with F16C; the portable loop is bit-identical.
  /// - Precondition: the ranges do not overlap.
  /// - Complexity: O(`count`).
  public static func convert(_ source: UnsafeRawPointer, type: StorageType, count: Int,
                             to destination: UnsafeMutablePointer<Float>, kernel: ConversionKernel = .fastest) {
    precondition(count >= 0, "TensorView.convert: negative count \(count)")
    StorageKernels.convert(source, type: type, count: count, to: destination, portable: kernel == .portable)
  }

  /// Rounds `count` fp32 values at `source` to `type` at `destination`.
  ///
  /// fp16: round to nearest, ties to even; magnitudes from 65520 up become infinity; results below
  /// 2^-14 become subnormals (or zero). bf16: round to nearest, ties to even, NaN preserved (sign and
  /// top payload bits kept, quiet bit set, so a NaN never rounds to infinity). fp32 is copied.
  /// - Precondition: the ranges do not overlap.
  /// - Complexity: O(`count`).
  public static func store(_ source: UnsafePointer<Float>, count: Int, to destination: UnsafeMutableRawPointer,
                           type: StorageType, kernel: ConversionKernel = .fastest) {
    precondition(count >= 0, "TensorView.store: negative count \(count)")
    StorageKernels.store(source, count: count, to: destination, type: type, portable: kernel == .portable)
  }

  /// `value` rounded to `type` and back: what storing it and reading it again gives.
  /// - Complexity: O(1).
  public static func rounded(_ value: Float, to type: StorageType) -> Float {
    guard type != .float32 else { return value }
    var input = value
    var bits: UInt16 = 0
    var output: Float = 0
    store(&input, count: 1, to: &bits, type: type)
    convert(&bits, type: type, count: 1, to: &output)
    return output
  }
}

/// A writable contiguous C-order tensor: heap memory or a read-write memory-mapped file.
///
/// The same layout as `TensorView`. Writes from several threads must touch disjoint elements.
///
/// ```swift
/// let output = try TensorFile.create("o.npy", shape: [4, 1 << 20, 64], type: .float16)
/// output.view.setElement(0, 1.5)
/// try output.commit()
/// ```
public struct MutableTensorView: @unchecked Sendable {
  /// Extent of each dimension, outermost first.
  public let shape: [Int]
  /// The element type in memory.
  public let type: StorageType
  /// The first element.
  public let base: UnsafeMutableRawPointer
  /// What keeps `base` valid (a `MappedFile`, a private heap allocation), or nil.
  public let owner: AnyObject?
  /// Number of elements: the product of `shape`, 64-bit.
  public let count: Int

  /// Bytes the elements occupy: `count * type.byteCount`.
  public var byteCount: Int { count &* type.byteCount }

  /// The mapped file the view points into, or nil for heap memory.
  public var mappedFile: MappedFile? { owner as? MappedFile }

  /// The same memory, read-only.
  public var readOnly: TensorView { TensorView(shape: shape, type: type, base: UnsafeRawPointer(base), owner: owner) }

  /// Wraps memory that `owner` keeps alive.
  /// - Precondition: every extent is non-negative and `count * type.byteCount` fits in `Int`.
  public init(shape: [Int], type: StorageType, base: UnsafeMutableRawPointer, owner: AnyObject?) {
    self.count = storageCheckedCount(shape, type)
    self.shape = shape
    self.type = type
    self.base = base
    self.owner = owner
  }

  /// A zero-filled tensor on the heap, freed when the last copy of the view goes away.
  /// - Precondition: every extent is non-negative and the byte size fits in `Int`.
  /// - Complexity: O(bytes) to zero the memory.
  public init(allocating shape: [Int], type: StorageType) {
    let count = storageCheckedCount(shape, type)
    let allocation = HeapAllocation(byteCount: count &* type.byteCount)
    self.init(shape: shape, type: type, base: allocation.base, owner: allocation)
  }

  /// Element `flatIndex` converted to `Float`.
  /// - Precondition: `0 <= flatIndex < count`.
  public func element(_ flatIndex: Int) -> Float {
    precondition(flatIndex >= 0 && flatIndex < count, "MutableTensorView: element \(flatIndex) out of range 0..<\(count)")
    return storageLoad(UnsafeRawPointer(base), type, flatIndex)
  }

  /// Stores `value`, rounded to `type` (nearest, ties to even), at `flatIndex`: the slow path.
  /// - Precondition: `0 <= flatIndex < count`.
  public func setElement(_ flatIndex: Int, _ value: Float) {
    precondition(flatIndex >= 0 && flatIndex < count, "MutableTensorView: element \(flatIndex) out of range 0..<\(count)")
    var input = value
    TensorView.store(&input, count: 1, to: base + flatIndex &* type.byteCount, type: type)
  }

  /// Stores `values` (fp32, rounded to `type`) at flat elements `start ..< start + values.count`.
  /// - Precondition: the elements lie within `0..<count`.
  /// - Complexity: O(`values.count`).
  public func store(_ values: UnsafeBufferPointer<Float>, at start: Int) {
    precondition(start >= 0 && start <= count && values.count <= count - start,
                 "MutableTensorView: \(values.count) values at \(start) exceed \(count) elements")
    guard let source = values.baseAddress else { return }
    TensorView.store(source, count: values.count, to: base + start &* type.byteCount, type: type)
  }

  /// Releases the pages of elements `range` from the resident set if the view is memory-mapped
  /// (queued for write-back first: no data is lost); does nothing for heap memory.
  /// - Complexity: O(pages).
  public func dropPages(elements range: Range<Int>) {
    guard let file = mappedFile else { return }
    file.dropPages(byteRange: storageByteRange(UnsafeRawPointer(base), in: file, range, type))
  }
}

extension Tensor {
  /// Copies a view into an fp32 tensor (fp16 and bf16 are converted exactly).
  /// - Complexity: O(`view.count`) time and `4 * view.count` bytes.
  public init(_ view: TensorView) {
    let n = view.count
    let scalars = [Float](unsafeUninitializedCapacity: n) { buffer, initialized in
      if n > 0, let destination = buffer.baseAddress {
        TensorView.convert(view.base, type: view.type, count: n, to: destination)
      }
      initialized = n
    }
    self.init(shape: view.shape, scalars: scalars)
  }
}

// MARK: - Implementation details

/// Keeps a tensor's scalar array alive and exposes its (immutable, hence stable) element buffer.
final class TensorScalarsBox: @unchecked Sendable {
  let scalars: [Float]
  let base: UnsafePointer<Float>

  init(_ scalars: [Float]) {
    self.scalars = scalars
    // The array is never mutated while the box lives, so its heap buffer neither moves nor is freed.
    self.base = scalars.withUnsafeBufferPointer { $0.baseAddress } ?? UnsafePointer(storageEmptyBuffer)
  }
}

/// A zero-filled heap block, 64-byte aligned, freed in `deinit`.
final class HeapAllocation: @unchecked Sendable {
  let base: UnsafeMutableRawPointer
  let byteCount: Int

  init(byteCount: Int) {
    self.byteCount = byteCount
    base = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
    base.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
  }

  deinit {
    base.deallocate()
  }
}

/// A valid address for views of zero elements (never dereferenced).
nonisolated(unsafe) private let storageEmptyBuffer: UnsafeMutablePointer<Float> = {
  let buffer = UnsafeMutablePointer<Float>.allocate(capacity: 16)
  buffer.initialize(repeating: 0, count: 16)
  return buffer
}()

/// The element count of `shape`, trapping on a negative extent or a byte size overflowing `Int`.
func storageCheckedCount(_ shape: [Int], _ type: StorageType) -> Int {
  let elements = npyElementCount(shape)
  precondition(elements != nil, "tensor shape \(shape) has a negative extent or overflows Int")
  let (_, overflow) = (elements ?? 0).multipliedReportingOverflow(by: type.byteCount)
  precondition(!overflow, "tensor shape \(shape) of \(type) overflows a 64-bit byte count")
  return elements ?? 0
}

/// One element converted to `Float`.
@inline(__always)
func storageLoad(_ base: UnsafeRawPointer, _ type: StorageType, _ index: Int) -> Float {
  switch type {
  case .float32:
    return base.loadUnaligned(fromByteOffset: index &* 4, as: Float.self)
  case .float16, .bfloat16:
    var output: Float = 0
    StorageKernels.convert(base + index &* 2, type: type, count: 1, to: &output, portable: true)
    return output
  }
}

/// The byte range inside `file`'s mapping that elements `range` of a view at `base` occupy.
func storageByteRange(_ base: UnsafeRawPointer, in file: MappedFile, _ range: Range<Int>, _ type: StorageType) -> Range<Int> {
  let offset = UnsafeRawPointer(file.base).distance(to: base)
  return (offset + range.lowerBound &* type.byteCount)..<(offset + range.upperBound &* type.byteCount)
}

/// First non-finite element; over a mapping, in 64 MiB steps that drop the pages behind.
func storageFirstNonFinite(_ base: UnsafeRawPointer, _ type: StorageType, _ count: Int, _ file: MappedFile?) -> Int? {
  guard let file else { return StorageKernels.firstNonFinite(base, type: type, count: count) }
  let step = (64 << 20) / type.byteCount
  var start = 0
  while start < count {
    let n = min(step, count - start)
    let chunk = base + start &* type.byteCount
    if let found = StorageKernels.firstNonFinite(chunk, type: type, count: n) { return start + found }
    let offset = UnsafeRawPointer(file.base).distance(to: chunk)
    file.dropPages(byteRange: offset..<(offset + n &* type.byteCount))
    start += n
  }
  return nil
}
