import Foundation
import GraphAttention
import XCTest

/// Memory-mapped tensors in .npy and .safetensors files: round trips, header validation, atomic
/// commit and abandon, disk-space checks, resume, and 64-bit offsets in sparse files.
final class TensorFileTests: XCTestCase {
  private var directory: StorageScratchDirectory!

  override func setUpWithError() throws {
    directory = try StorageScratchDirectory()
  }

  override func tearDown() {
    directory.remove()
  }

  // MARK: - Round trips

  func testEveryTypeRoundTripsThroughEveryFormat() throws {
    let shape = [2, 5, 3]
    let values = (0..<30).map { Float($0) * 0.37 - 5 + 0x1p-12 }
    for type in StorageType.allCases {
      for format in ["npy", "safetensors"] where !(type == .bfloat16 && format == "npy") {
        let path = directory.path("t-\(type).\(format)")
        let output = try TensorFile.create(path, shape: shape, type: type, name: "values")
        XCTAssertEqual(output.view.shape, shape)
        XCTAssertEqual(output.view.type, type)
        values.withUnsafeBufferPointer { output.view.store($0, at: 0) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "visible before commit")
        try output.commit()
        XCTAssertTrue(output.isCommitted)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output.temporaryPath))

        let view = try TensorFile.open(path, name: format == "npy" ? nil : "values")
        XCTAssertEqual(view.shape, shape)
        XCTAssertEqual(view.type, type)
        XCTAssertNotNil(view.mappedFile)
        XCTAssertEqual(Int(bitPattern: view.base) % 64, 0, "data is 64-byte aligned")
        XCTAssertEqual((0..<30).map(view.element), values.map { TensorView.rounded($0, to: type) }, "\(type) \(format)")
        XCTAssertEqual(Tensor(view).scalars, values.map { TensorView.rounded($0, to: type) })
        let listed = try TensorFile.tensors(in: path)
        XCTAssertEqual(listed.map(\.shape), [shape])
        XCTAssertEqual(listed.first?.type, type)
      }
    }
  }

  /// Files written by the existing .npy writer (as np.save writes them) open through the mapping.
  func testOpensNPYWriterFiles() throws {
    let tensor = Tensor.random(shape: [3, 4, 5], seed: 9)
    try tensor.write(npyFile: directory.path("q.npy"))
    let view = try TensorFile.open(directory.path("q.npy"))
    XCTAssertEqual(Tensor(view), tensor)
    let halves = tensor.scalars.map { Float16($0) }
    try NPYWriter.write(halves, shape: [60], to: directory.path("h.npy"))
    let half = try TensorFile.open(directory.path("h.npy"))
    XCTAssertEqual(half.type, .float16)
    XCTAssertEqual((0..<60).map(half.element), halves.map(Float.init))
  }

  func testSeveralTensorsInOneSafetensorsFile() throws {
    let path = directory.path("qkv.safetensors")
    let entries = ["q", "k", "v"].enumerated().map { TensorFile.Entry(name: $1, shape: [1, 3 + $0, 5], type: .bfloat16) }
    let output = try TensorFile.create(path, tensors: entries)
    XCTAssertEqual(output.names, ["q", "k", "v"])
    for (t, view) in output.views.enumerated() {
      for i in 0..<view.count { view.setElement(i, Float(t * 100 + i)) }
    }
    try output.commit()
    for (t, name) in ["q", "k", "v"].enumerated() {
      let view = try TensorFile.open(path, name: name)
      XCTAssertEqual(view.shape, [1, 3 + t, 5])
      XCTAssertEqual((0..<view.count).map(view.element), (0..<view.count).map { TensorView.rounded(Float(t * 100 + $0), to: .bfloat16) })
    }
    // The header is what the safetensors reference implementation expects.
    let bytes = try directory.read("qkv.safetensors")
    let length = Int(bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
    XCTAssertEqual((8 + length) % 64, 0)
    let json = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + length)])) as? [String: Any]
    let k = json?["k"] as? [String: Any]
    XCTAssertEqual(k?["dtype"] as? String, "BF16")
    XCTAssertEqual(k?["shape"] as? [Int], [1, 4, 5])
    XCTAssertEqual(k?["data_offsets"] as? [Int], [30, 70])
    XCTAssertEqual(bytes.count, 8 + length + 2 * (15 + 20 + 25))
    assertStorageError(.option, mentions: ["3 tensors", "q [1, 3, 5] BF16", "k [1, 4, 5] BF16"]) { _ = try TensorFile.open(path) }
    assertStorageError(.file, mentions: ["no tensor named 'o'", "q [1, 3, 5] BF16, k [1, 4, 5] BF16, v [1, 5, 5] BF16"]) {
      _ = try TensorFile.open(path, name: "o")
    }
  }

  /// A .safetensors file in the layout of the reference implementation (8-byte padding, metadata, keys
  /// in any order, escapes in names) opens.
  func testOpensForeignSafetensors() throws {
    let data = storageLittleEndianBytes([1, 2, 3, 4, 5, 6] as [Float]) + storageLittleEndianBytes([0x3C00, 0xC000] as [UInt16])
    let header = #"{"h\u00e9\"x":{"shape":[2],"dtype":"F16","data_offsets":[24,28]},"__metadata__":{"format":"np"},"# +
      #""w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24],"extra":[1,{"a":null}]}}"#
    let path = try directory.write(safetensors(header: header, pad: 8) + data, to: "f.safetensors")
    let w = try TensorFile.open(path, name: "w")
    XCTAssertEqual((0..<6).map(w.element), [1, 2, 3, 4, 5, 6])
    let h = try TensorFile.open(path, name: "hé\"x")
    XCTAssertEqual((0..<2).map(h.element), [1, -2])
    XCTAssertEqual(try TensorFile.tensors(in: path).map(\.name), ["w", "hé\"x"])
  }

  /// Headers not padded to the element size (MLX writes such safetensors files): the tensor is copied to
  /// aligned memory, with the same values.
  func testOpensTensorsWhoseDataIsNotAligned() throws {
    let values: [Float] = [1.5, -2, 3.25, 1e-3, -7, 65504]
    let halves = values.map { Float16($0).bitPattern }
    for pad in [1, 3, 5, 6, 7] {
      let header = #"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"h":{"dtype":"F16","shape":[6],"data_offsets":[24,36]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[36,38]}}"#
      var bytes = safetensors(header: header, pad: 1)
      bytes.insert(contentsOf: [UInt8](repeating: UInt8(ascii: " "), count: pad), at: bytes.count)
      bytes.replaceSubrange(0..<8, with: storageLittleEndianBytes([UInt64(bytes.count - 8)]))
      bytes += storageLittleEndianBytes(values) + storageLittleEndianBytes(halves) + [0x80, 0x3F]
      let path = try directory.write(bytes, to: "mlx\(pad).safetensors")
      let a = try TensorFile.open(path, name: "a")
      XCTAssertEqual(a.shape, [2, 3])
      XCTAssertEqual((0..<6).map(a.element), values, "pad \(pad)")
      XCTAssertEqual(Int(bitPattern: a.base) % 4, 0)
      XCTAssertEqual((0..<6).map(try TensorFile.open(path, name: "h").element), values.map { Float(Float16($0)) })
      XCTAssertEqual(try TensorFile.open(path, name: "b").element(0), 1)
    }
    let npy = try directory.write(storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }   ",
                                                      data: storageLittleEndianBytes([1, 2] as [Float]), pad: false), to: "unaligned.npy")
    XCTAssertEqual((0..<2).map(try TensorFile.open(npy).element), [1, 2])
  }

  /// fp64 inputs (`<f8`, `F64`) are rounded to fp32 while reading, as the README says.
  func testOpensFloat64ByRoundingToFloat32() throws {
    let doubles: [Double] = [1, -0.1, 1e-40, 3.4e38, 1e39, .nan, -.infinity, 1 + 0x1p-24, 1 + 0x1p-24 + 0x1p-40]
    let expected = doubles.map(Float.init)
    let npy = try directory.write(storageNPYFileBytes(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 3), }",
                                                      data: storageLittleEndianBytes(doubles.map(\.bitPattern))), to: "f8.npy")
    let header = #"{"x":{"dtype":"F64","shape":[9],"data_offsets":[0,72]}}"#
    let safetensorsPath = try directory.write(safetensors(header: header, pad: 4) + storageLittleEndianBytes(doubles.map(\.bitPattern)), to: "f64.safetensors")
    for view in [try TensorFile.open(npy), try TensorFile.open(safetensorsPath)] {
      XCTAssertEqual(view.type, StorageType.float32)
      XCTAssertEqual(view.count, 9)
      XCTAssertEqual((0..<9).map { view.element($0).bitPattern }, expected.map(\.bitPattern))
    }
    XCTAssertEqual(try TensorFile.open(npy).shape, [3, 3])
  }

  // MARK: - Validation

  func testMalformedFilesAreReportedNotTrapped() throws {
    let floats = storageLittleEndianBytes([1, 2, 3, 4] as [Float])
    let cases: [(String, [UInt8], GraphAttentionError.Kind, [String])] = [
      ("empty.npy", [], .file, ["empty"]),
      ("text.npy", Array("hello, world".utf8), .file, ["neither"]),
      ("short.npy", storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", data: floats), .file, ["truncated", "20 bytes"]),
      ("c8.npy", storageNPYFileBytes(header: "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", data: floats), .dtype, ["<c8", "complex", "a.real.astype('<f4')"]),
      ("i4.npy", storageNPYFileBytes(header: "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", data: floats), .dtype, ["<i4"]),
      ("fortran.npy", storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", data: floats), .file, ["Fortran"]),
      ("big.npy", storageNPYFileBytes(header: "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", data: floats), .dtype, ["big-endian"]),
      ("json.safetensors", safetensors(header: #"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]"#) + floats, .file, ["not valid JSON"]),
      ("missing.safetensors", safetensors(header: #"{"a":{"dtype":"F32","shape":[4]}}"#) + floats, .file, ["lacks data_offsets"]),
      ("range.safetensors", safetensors(header: #"{"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#) + floats, .file, ["outside the 16 data bytes"]),
      ("size.safetensors", safetensors(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#) + floats, .file, ["needs 12 bytes", "span 16"]),
      ("float.safetensors", safetensors(header: #"{"a":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}}"#) + floats, .file, ["shape"]),
      ("bool.safetensors", safetensors(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[false,16]}}"#) + floats, .file, ["data_offsets"]),
      ("twice.safetensors", safetensors(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{}}"#) + floats, .file, ["twice"]),
      ("i64.safetensors", safetensors(header: #"{"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#) + floats, .dtype, ["I64"]),
      ("c64.safetensors", safetensors(header: #"{"a":{"dtype":"C64","shape":[2],"data_offsets":[0,16]}}"#) + floats, .dtype, ["C64", "F64"]),
      ("huge.safetensors", [0, 0, 0, 0, 0, 0, 0, 0x10] + Array("{}".utf8), .file, ["not a valid .safetensors", "header of"]),
      ("long.safetensors", [200, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8), .file, ["truncated", "200 bytes"]),
      ("meta.safetensors", safetensors(header: #"{"__metadata__":{"n":1}}"#), .file, ["__metadata__ 'n'"]),
    ]
    for (name, bytes, kind, mentions) in cases {
      let path = try directory.write(bytes, to: name)
      assertStorageError(kind, mentions: [path] + mentions) { _ = try TensorFile.open(path) }
    }
    assertStorageError(.file, mentions: ["cannot open", "No such file"]) { _ = try TensorFile.open(self.directory.path("none.npy")) }
    assertStorageError(.file, mentions: ["directory"]) { _ = try TensorFile.open(self.directory.url.path) }
    assertStorageError(.file, mentions: ["empty"]) { _ = try MappedFile(path: self.directory.path("empty.npy"), access: .readWrite) }
  }

  func testCreateRejectsBadRequestsBeforeCreatingAnything() throws {
    assertStorageError(.dtype, mentions: ["bfloat16", "o.safetensors"]) {
      _ = try TensorFile.create(self.directory.path("o.npy"), shape: [2], type: .bfloat16)
    }
    assertStorageError(.file, mentions: ["format", ".npy", ".safetensors"]) {
      _ = try TensorFile.create(self.directory.path("o.bin"), shape: [2], type: .float32)
    }
    assertStorageError(.file, mentions: ["does not exist"]) {
      _ = try TensorFile.create(self.directory.path("missing/o.npy"), shape: [2], type: .float32)
    }
    assertStorageError(.shape, mentions: ["negative"]) {
      _ = try TensorFile.create(self.directory.path("o.npy"), shape: [2, -1], type: .float32)
    }
    assertStorageError(.shape, mentions: ["2^63"]) {
      _ = try TensorFile.create(self.directory.path("o.npy"), shape: [1 << 40, 1 << 40], type: .float32)
    }
    assertStorageError(.option, mentions: ["one array"]) {
      _ = try TensorFile.create(self.directory.path("o.npy"), tensors: [.init(name: "a", shape: [1], type: .float32),
                                                                         .init(name: "b", shape: [1], type: .float32)])
    }
    assertStorageError(.option, mentions: ["'a'", "repeated"]) {
      _ = try TensorFile.create(self.directory.path("o.safetensors"), tensors: [.init(name: "a", shape: [1], type: .float32),
                                                                                 .init(name: "a", shape: [1], type: .float32)])
    }
    // 2^50 bytes: refused with the space needed and free, and nothing is left behind.
    assertStorageError(.resource, mentions: ["needs 1048576.00 GiB", "GiB free on /"]) {
      _ = try TensorFile.create(self.directory.path("huge.npy"), shape: [1 << 24, 1 << 25], type: .float16)
    }
    XCTAssertEqual(try directory.entries(), [])
  }

  // MARK: - Commit, abandon, resume

  func testAbandonAndDeinitLeaveTheExistingFileUntouched() throws {
    let path = directory.path("o.npy")
    try Tensor(shape: [3], scalars: [7, 8, 9]).write(npyFile: path)
    let before = try directory.read("o.npy")

    let abandoned = try TensorFile.create(path, shape: [4], type: .float16)
    abandoned.view.setElement(0, 1)
    XCTAssertEqual(try directory.entries().count, 2)
    abandoned.abandon()
    abandoned.abandon()
    XCTAssertEqual(try directory.entries(), ["o.npy"])
    XCTAssertEqual(try directory.read("o.npy"), before)
    assertStorageError(.file, mentions: ["abandoned"]) { try abandoned.commit() }

    do {
      let dropped = try TensorFile.create(path, shape: [4], type: .float16)
      dropped.view.setElement(1, 2)
    }
    XCTAssertEqual(try directory.entries(), ["o.npy"])
    XCTAssertEqual(try directory.read("o.npy"), before)

    // Commit replaces it, keeping its permissions; a second commit does nothing.
    chmod(path, 0o640)
    let replaced = try TensorFile.create(path, shape: [4], type: .float16)
    replaced.view.setElement(3, -1.5)
    try replaced.commit()
    try replaced.commit()
    XCTAssertEqual(try directory.entries(), ["o.npy"])
    XCTAssertEqual(try NPYArray(contentsOf: path).floats(name: "o"), [0, 0, 0, -1.5])
    XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int, 0o640)
    // The views outlive the commit (they keep the mapping alive).
    XCTAssertEqual(replaced.view.element(3), -1.5)
  }

  func testResumeContinuesAPartialOutput() throws {
    let path = directory.path("o.safetensors")
    let partial = TensorFile.resumePath(for: path)
    XCTAssertEqual(partial, directory.path(".o.safetensors.partial"))
    do {
      let first = try TensorFile.create(path, shape: [2, 8], type: .bfloat16, name: "o", resumable: true)
      XCTAssertEqual(first.temporaryPath, partial)
      for i in 0..<8 { first.view.setElement(i, Float(i)) }
      // Dropped without commit: a resumable output stays for the next run.
    }
    XCTAssertTrue(FileManager.default.fileExists(atPath: partial))
    XCTAssertFalse(FileManager.default.fileExists(atPath: path))

    assertStorageError(.file, mentions: ["shape [2, 8] and dtype BF16", "[2, 9]", "delete"]) {
      _ = try TensorFile.reopenForResume(temporaryPath: partial, shape: [2, 9], type: .bfloat16)
    }
    assertStorageError(.file, mentions: ["no tensor named 'x'"]) {
      _ = try TensorFile.reopenForResume(temporaryPath: partial, shape: [2, 8], type: .bfloat16, name: "x")
    }
    let second = try TensorFile.reopenForResume(temporaryPath: partial, shape: [2, 8], type: .bfloat16)
    XCTAssertEqual(second.path, path)
    XCTAssertEqual((0..<8).map(second.view.element), (0..<8).map(Float.init))
    for i in 8..<16 { second.view.setElement(i, Float(i)) }
    try second.commit()
    XCTAssertEqual(try directory.entries(), ["o.safetensors"])
    XCTAssertEqual(Tensor(try TensorFile.open(path)).scalars, (0..<16).map(Float.init))

    // abandon() removes a resumable file too.
    let third = try TensorFile.create(path, shape: [1], type: .float32, resumable: true)
    third.abandon()
    XCTAssertEqual(try directory.entries(), ["o.safetensors"])
  }

  /// Outputs reserve their disk blocks when created: a disk filled later by another writer is
  /// then an error at creation, not a SIGBUS half-way through a run.
  func testCreateReservesTheOutputsBlocks() throws {
    let path = directory.path("reserved.npy")
    let output = try TensorFile.create(path, shape: [4 << 20], type: .float32)   // 16 MiB, nothing written
    var info = stat()
    XCTAssertEqual(stat(output.temporaryPath, &info), 0)
    XCTAssertGreaterThanOrEqual(Int(info.st_blocks) * 512, 16 << 20, "the blocks must be reserved, not sparse")
    output.abandon()
    let sparse = try TensorFile.create(path, shape: [4 << 20], type: .float32, reservingBlocks: false)
    XCTAssertEqual(stat(sparse.temporaryPath, &info), 0)
    XCTAssertLessThan(Int(info.st_blocks) * 512, 1 << 20)
    sparse.abandon()
  }

  // MARK: - 64-bit offsets

  /// A sparse fp16 .npy of 2^32 + 64 elements (8 GiB, never written except near 2^31 and 2^32):
  /// elements past both 32-bit boundaries are stored and read back, and the file takes almost no disk.
  func testSixtyFourBitOffsetsInSparseFiles() throws {
    let space = try DiskSpace(of: directory.url.path)
    let count = (1 << 32) + 64
    guard space.availableBytes > 2 * count + (1 << 30) else {
      throw XCTSkip("needs \(2 * count) bytes free for the disk-space check (the file itself stays sparse)")
    }
    let probes = [0, (1 << 31) - 1, 1 << 31, (1 << 31) + 5, (1 << 32) - 1, 1 << 32, (1 << 32) + 7, count - 1]
    for (name, type) in [("big.npy", StorageType.float16), ("big.safetensors", .bfloat16)] {
      let path = directory.path(name)
      let output = try TensorFile.create(path, shape: [1, count], type: type, reservingBlocks: false)
      for (i, index) in probes.enumerated() { output.view.setElement(index, Float(i + 1) * 0.5) }
      try output.commit()

      var info = stat()
      XCTAssertEqual(stat(path, &info), 0)
      XCTAssertGreaterThan(Int(info.st_size), 2 * count)
      XCTAssertLessThan(Int(info.st_blocks) * 512, 16 << 20, "the file should stay sparse")

      let view = try TensorFile.open(path)
      XCTAssertEqual(view.count, count)
      XCTAssertEqual(view.byteCount, 2 * count)
      for (i, index) in probes.enumerated() { XCTAssertEqual(view.element(index), Float(i + 1) * 0.5, "\(name)[\(index)]") }
      XCTAssertEqual(view.element((1 << 32) + 1), 0)
      var row = [Float](repeating: -1, count: 16)
      row.withUnsafeMutableBufferPointer { view.copyFloats((1 << 32)..<((1 << 32) + 16), to: $0.baseAddress!) }
      XCTAssertEqual(row[0], 3, "index 2^32 holds probe 6 * 0.5")
      XCTAssertEqual(row[7], 3.5)
      try FileManager.default.removeItem(atPath: path)
    }
  }

  // MARK: - Helpers

  /// A .safetensors file: length, header padded with spaces to `pad`, no data.
  private func safetensors(header: String, pad: Int = 8) -> [UInt8] {
    var text = Array(header.utf8)
    text += [UInt8](repeating: UInt8(ascii: " "), count: (pad - (8 + text.count) % pad) % pad)
    return storageLittleEndianBytes([UInt64(text.count)]) + text
  }
}
