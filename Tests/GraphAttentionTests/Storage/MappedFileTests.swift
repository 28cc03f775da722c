import Foundation
import GraphAttention
import XCTest

/// Memory mappings (resident-set control), views, and the counter-based random tensor generator.
final class MappedFileTests: XCTestCase {
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws {
    directory = try StorageScratchDirectory()
  }

  override func tearDown() {
    directory.remove()
  }

  /// Touching 64 MiB of a mapped file grows the resident set by about that much; `dropPages`
  /// gives it back, and the data (dirty pages of a read-write mapping included) is still there.
  func testDropPagesBoundsTheResidentSet() throws {
    let bytes = 64 << 20
    let output = try TensorFile.create(directory.path("big.npy"), shape: [bytes / 4], type: .float32)
    let view = output.view
    let before = residentBytes()
    let floats = view.base.assumingMemoryBound(to: Float.self)
    for i in stride(from: 0, to: view.count, by: 1024) { floats[i] = Float(i) }
    let touched = residentBytes()
    XCTAssertGreaterThan(touched - before, bytes / 2, "writing 64 MiB should fault pages in")
    view.dropPages(elements: 0..<view.count)
    let dropped = residentBytes()
    XCTAssertLessThan(dropped - before, bytes / 8, "dropPages should release them")
    // Nothing was lost: the pages come back from the page cache.
    for i in stride(from: 0, to: view.count, by: 1024 * 97) { XCTAssertEqual(view.element(i), Float(i)) }
    try output.commit()

    let input = try TensorFile.open(output.path)
    input.mappedFile?.adviseSequential()
    input.willNeed(elements: 0..<1024)
    let start = residentBytes()
    var sum: Float = 0
    let values = input.base.assumingMemoryBound(to: Float.self)
    for i in stride(from: 0, to: input.count, by: 1024) { sum += values[i] }
    XCTAssertGreaterThan(sum, 0)
    XCTAssertGreaterThan(residentBytes() - start, bytes / 2)
    input.dropPages(elements: 0..<input.count)
    XCTAssertLessThan(residentBytes() - start, bytes / 8)
    // A scan for non-finite values over a mapped file releases its pages as it goes.
    XCTAssertNil(input.firstNonFinite(name: "q"))
    XCTAssertLessThan(residentBytes() - start, bytes / 8)
  }

  func testViewsOfTensorsAndHeapMemory() {
    let tensor = Tensor.random(shape: [2, 3, 4], seed: 5)
    let view = TensorView(tensor)
    XCTAssertEqual(view.count, 24)
    XCTAssertEqual(view.byteCount, 96)
    XCTAssertNil(view.mappedFile)
    XCTAssertEqual((0..<24).map(view.element), tensor.scalars)
    XCTAssertEqual(Tensor(view), tensor)
    view.dropPages(elements: 0..<24)  // heap: nothing to do, nothing breaks

    let heap = MutableTensorView(allocating: [3, 5], type: .float16)
    XCTAssertEqual((0..<15).map(heap.element), [Float](repeating: 0, count: 15))
    heap.setElement(14, 1 / 3)
    XCTAssertEqual(heap.readOnly.element(14), Float(Float16(1 / 3 as Float)))
    let empty = TensorView(Tensor(shape: [0], scalars: []))
    XCTAssertEqual(empty.count, 0)
  }

  // MARK: - Random tensors

  func testGeneratorIsTensorRandomAndCounterBased() {
    for seed: UInt64 in [0, 1, 42, .max] {
      let tensor = Tensor.random(shape: [3, 7, 11], seed: seed)
      let generator = RandomTensorGenerator(seed: seed)
      XCTAssertEqual((0..<tensor.scalars.count).map(generator.value), tensor.scalars)
      var middle = [Float](repeating: 0, count: 50)
      middle.withUnsafeMutableBufferPointer { generator.fill($0.baseAddress!, elements: 100..<150) }
      XCTAssertEqual(middle, Array(tensor.scalars[100..<150]))
    }
    XCTAssertEqual(RandomTensorGenerator(seed: 7, stream: 2), RandomTensorGenerator(seed: 9))
    let far = RandomTensorGenerator(seed: 3)
    var values = [Float](repeating: 0, count: 4)
    values.withUnsafeMutableBufferPointer { far.fill($0.baseAddress!, elements: (1 << 40)..<((1 << 40) + 4)) }
    XCTAssertEqual(values, (0..<4).map { far.value(at: (1 << 40) + $0) })
    XCTAssertTrue(values.allSatisfy { $0 >= -1 && $0 <= 1 })
  }

  /// The parallel, page-dropping fill of a mapped output writes what the element-wise definition says.
  func testParallelFillOfAMappedOutput() throws {
    for type in StorageType.allCases {
      let path = directory.path("g-\(type).safetensors")
      let output = try TensorFile.create(path, shape: [3, 1000, 7], type: type)
      let generator = RandomTensorGenerator(seed: 77, stream: 1)
      let reports = ProgressRecorder()
      generator.fill(output.view, threads: 2, chunkBytes: 4096, progress: { reports.record($0) })
      try output.commit()
      XCTAssertEqual(reports.maximum, 21_000)
      let view = try TensorFile.open(path)
      for i in 0..<view.count where view.element(i) != generator.value(at: i, storedAs: type) {
        XCTFail("\(type) element \(i): \(view.element(i)) != \(generator.value(at: i, storedAs: type))")
        break
      }
    }
  }

  // MARK: - Helpers

  /// This process's resident set in bytes, from /proc/self/statm.
  private func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * MappedFile.pageSize : 0
  }
}

/// Collects progress reports from worker threads.
final class ProgressRecorder: @unchecked Sendable {
  private let lock = NSLock()
  private var values: [Int] = []
  func record(_ value: Int) { lock.lock(); values.append(value); lock.unlock() }
  var maximum: Int { lock.lock(); defer { lock.unlock() }; return values.max() ?? 0 }
}
