import Foundation
import GraphAttention
import XCTest

final class NPYArrayTests: XCTestCase {
  private var scratch: StorageScratchDirectory!

  override func setUpWithError() throws {
    scratch = try StorageScratchDirectory()
  }

  override func tearDown() {
    scratch.remove()
  }

  // MARK: - Reading headers exactly as numpy writes them

  func testReadsFloat32MatrixWrittenByNumpy() throws {
    // Byte-for-byte what np.save(path, np.array([[1, 2, 3], [4, 5, 6.5]], dtype='<f4')) writes.
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" + String(repeating: " ", count: 58) + "\n"
    let bytes = [0x93] + Array("NUMPY".utf8) + [1, 0, 118, 0] + Array(header.utf8)
      + storageLittleEndianBytes([1, 2, 3, 4, 5, 6.5] as [Float])
    XCTAssertEqual((bytes.count - 24) % 64, 0)
    let array = try NPYArray(contentsOf: try scratch.write(bytes, to: "a.npy"))
    XCTAssertEqual(array.shape, [2, 3])
    XCTAssertEqual(array.elementType, .float32)
    XCTAssertEqual(array.count, 6)
    XCTAssertEqual(array.bytes.count, 24)
    XCTAssertEqual(try array.floats(name: "--q"), [1, 2, 3, 4, 5, 6.5])
  }

  func testReadsFloat16VectorIncludingSpecialValues() throws {
    let bits: [UInt16] = [0x3C00, 0xC000, 0x3800, 0x7BFF]  // 1, -2, 0.5, 65504
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }" + String(repeating: " ", count: 20),
                   data: storageLittleEndianBytes(bits)), to: "h.npy")
    let array = try NPYArray(contentsOf: path)
    XCTAssertEqual(array.shape, [4])
    XCTAssertEqual(array.elementType, .float16)
    XCTAssertEqual(try array.floats(name: "--k"), [1, -2, 0.5, 65504])

    // Zeros, subnormals, infinities and NaN convert exactly as Float(Float16) does.
    let specials: [UInt16] = [0x0000, 0x8000, 0x0001, 0x83FF, 0x0400, 0x7C00, 0xFC00, 0x7E00, 0x3555]
    let specialPath = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f2', 'fortran_order': False, 'shape': (9,), }", data: storageLittleEndianBytes(specials)),
      to: "specials.npy")
    let converted = try NPYArray(contentsOf: specialPath).floats(name: "--k")
    for (bitsValue, value) in zip(specials, converted) {
      let expected = Float(Float16(bitPattern: bitsValue))
      if expected.isNaN {
        // The storage layer's one NaN rule: sign and payload kept, quiet bit set.
        XCTAssertEqual(value.bitPattern, UInt32(bitsValue & 0x8000) << 16 | 0x7FC0_0000 | UInt32(bitsValue & 0x3FF) << 13)
      } else {
        XCTAssertEqual(value.bitPattern, expected.bitPattern, "half bits \(String(bitsValue, radix: 16))")
      }
    }
  }

  func testFloat16ConversionMatchesFloat16ForEveryBitPattern() throws {
    let all = (0...UInt16.max).map { $0 }
    let array = NPYArray(shape: [all.count], elementType: .float16, bytes: storageLittleEndianBytes(all))
    let converted = try array.floats(name: "x")
    for (bitsValue, value) in zip(all, converted) {
      let expected = Float(Float16(bitPattern: bitsValue))
      if expected.isNaN {
        // The storage layer's one NaN rule: sign and payload kept, quiet bit set.
        XCTAssertEqual(value.bitPattern, UInt32(bitsValue & 0x8000) << 16 | 0x7FC0_0000 | UInt32(bitsValue & 0x3FF) << 13)
      } else if value.bitPattern != expected.bitPattern {
        XCTFail("half \(String(bitsValue, radix: 16)): got \(value), expected \(expected)")
        return
      }
    }
  }

  func testReadsFloat64AndRoundsToFloat() throws {
    let values: [Double] = [0.1, -1e300, 3.141592653589793]
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                   data: storageLittleEndianBytes(values.map(\.bitPattern))), to: "d.npy")
    let floats = try NPYArray(contentsOf: path).floats(name: "--v")
    XCTAssertEqual(floats[0], Float(0.1))
    XCTAssertEqual(floats[1], -Float.infinity)
    XCTAssertEqual(floats[2], Float(3.141592653589793))
  }

  func testReadsInt32AndRefusesItAsFloats() throws {
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }",
                   data: storageLittleEndianBytes([1, -2, 3, Int32.max] as [Int32])), to: "i.npy")
    let array = try NPYArray(contentsOf: path)
    XCTAssertEqual(array.elementType, .int32)
    XCTAssertFalse(array.elementType.isFloatingPoint)
    XCTAssertEqual(try array.integers(name: "--rows"), [1, -2, 3, Int64(Int32.max)])
    assertStorageError(.dtype, mentions: ["--rows", "<i4", "astype('<f4')"]) { _ = try array.floats(name: "--rows") }
  }

  func testReadsUInt64AndRejectsValuesAboveInt64Max() throws {
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<u8', 'fortran_order': False, 'shape': (2,), }",
                   data: storageLittleEndianBytes([7, UInt64(Int64.max)] as [UInt64])), to: "u.npy")
    let array = try NPYArray(contentsOf: path)
    XCTAssertEqual(array.elementType, .uint64)
    XCTAssertEqual(try array.integers(name: "--cols"), [7, Int64.max])

    let tooLarge = NPYArray(shape: [3], elementType: .uint64, bytes: storageLittleEndianBytes([1, 2, UInt64(Int64.max) + 1] as [UInt64]))
    assertStorageError(.index, mentions: ["--cols", "9223372036854775808", "position 2"]) {
      _ = try tooLarge.integers(name: "--cols")
    }
  }

  func testIntegersRefusesFloatArrays() throws {
    let array = NPYArray(shape: [1], elementType: .float32, bytes: storageLittleEndianBytes([1] as [Float]))
    assertStorageError(.dtype, mentions: ["--indptr", "<f4", "astype('<i8')"]) { _ = try array.integers(name: "--indptr") }
  }

  func testReadsSmallIntegerTypesAndByteOrderMarks() throws {
    let cases: [(descr: String, type: NPYElementType, data: [UInt8], expected: [Int64])] = [
      ("|u1", .uint8, [0, 255], [0, 255]),
      ("|i1", .int8, [0x80, 0x7F], [-128, 127]),
      ("|b1", .bool, [1, 0], [1, 0]),
      ("<i2", .int16, storageLittleEndianBytes([-300, 300] as [Int16]), [-300, 300]),
      ("=u2", .uint16, storageLittleEndianBytes([65535, 1] as [UInt16]), [65535, 1]),
      ("=i8", .int64, storageLittleEndianBytes([-5, 5] as [Int64]), [-5, 5]),
      ("|u4", .uint32, storageLittleEndianBytes([UInt32.max, 0] as [UInt32]), [Int64(UInt32.max), 0]),
    ]
    for (index, testCase) in cases.enumerated() {
      let path = try scratch.write(
        storageNPYFileBytes(header: "{'descr': '\(testCase.descr)', 'fortran_order': False, 'shape': (2,), }", data: testCase.data),
        to: "small\(index).npy")
      let array = try NPYArray(contentsOf: path)
      XCTAssertEqual(array.elementType, testCase.type, testCase.descr)
      XCTAssertEqual(try array.integers(name: "x"), testCase.expected, testCase.descr)
    }
    let native = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '=f4', 'fortran_order': False, 'shape': (1,), }", data: storageLittleEndianBytes([2.5] as [Float])),
      to: "native.npy")
    XCTAssertEqual(try NPYArray(contentsOf: native).floats(name: "x"), [2.5])
  }

  func testReadsVersion2And3Headers() throws {
    for version: UInt8 in [2, 3] {
      let path = try scratch.write(
        storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
                     data: storageLittleEndianBytes([1, 2, 3] as [Float]), version: version), to: "v\(version).npy")
      let array = try NPYArray(contentsOf: path)
      XCTAssertEqual(array.shape, [3])
      XCTAssertEqual(try array.floats(name: "x"), [1, 2, 3])
    }
  }

  func testReadsScalarShape() throws {
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", data: storageLittleEndianBytes([Double(2.5).bitPattern])),
      to: "scalar.npy")
    let array = try NPYArray(contentsOf: path)
    XCTAssertEqual(array.shape, [])
    XCTAssertEqual(array.count, 1)
    XCTAssertEqual(try array.floats(name: "x"), [2.5])
  }

  func testReadsEmptyArray() throws {
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<i8', 'fortran_order': False, 'shape': (0, 5), }", data: []), to: "empty.npy")
    let array = try NPYArray(contentsOf: path)
    XCTAssertEqual(array.shape, [0, 5])
    XCTAssertEqual(array.count, 0)
    XCTAssertEqual(try array.integers(name: "x"), [])
  }

  func testAcceptsOtherKeyOrderQuotesAndSpacing() throws {
    let headers = [
      "{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}",
      "{\"fortran_order\": False, \"descr\": \"<f4\", \"shape\": (2, ),}",
      "  {  'descr' : '<f4' ,\n 'shape' : ( 2 , ) , 'fortran_order' : False , }  \n",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }",
    ]
    for (index, header) in headers.enumerated() {
      let path = try scratch.write(storageNPYFileBytes(header: header, data: storageLittleEndianBytes([1, -1] as [Float])), to: "order\(index).npy")
      let array = try NPYArray(contentsOf: path)
      XCTAssertEqual(array.shape, [2], header)
      XCTAssertEqual(try array.floats(name: "x"), [1, -1], header)
    }
  }

  func testIgnoresBytesAfterTheData() throws {
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", data: storageLittleEndianBytes([4] as [Float]) + [9, 9]),
      to: "trailing.npy")
    XCTAssertEqual(try NPYArray(contentsOf: path).floats(name: "x"), [4])
  }

  func testElementTypeProperties() {
    XCTAssertEqual(NPYElementType.float16.byteCount, 2)
    XCTAssertEqual(NPYElementType.float32.byteCount, 4)
    XCTAssertEqual(NPYElementType.float64.byteCount, 8)
    XCTAssertEqual(NPYElementType.int32.byteCount, 4)
    XCTAssertEqual(NPYElementType.int64.byteCount, 8)
    XCTAssertEqual(NPYElementType.uint32.byteCount, 4)
    XCTAssertEqual(NPYElementType.uint64.byteCount, 8)
    XCTAssertEqual(NPYElementType.allCases.filter(\.isFloatingPoint), [.float16, .float32, .float64])
    XCTAssertEqual(NPYElementType(rawValue: "<f2"), .float16)
  }

  // MARK: - Writer round trips

  func testFloat32RoundTripAndNumpyIdenticalHeader() throws {
    let path = scratch.path("out.npy")
    try NPYWriter.write([1, 2, 3, 4, 5, 6.5] as [Float], shape: [2, 3], to: path)
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" + String(repeating: " ", count: 58) + "\n"
    let expected = [0x93] + Array("NUMPY".utf8) + [1, 0, 118, 0] + Array(header.utf8)
      + storageLittleEndianBytes([1, 2, 3, 4, 5, 6.5] as [Float])
    XCTAssertEqual(try scratch.read("out.npy"), expected)
    let array = try NPYArray(contentsOf: path)
    XCTAssertEqual(array.shape, [2, 3])
    XCTAssertEqual(try array.floats(name: "x"), [1, 2, 3, 4, 5, 6.5])
  }

  func testFloat32BufferRoundTrip() throws {
    let values = (0..<1_000).map { Float($0) * 0.25 - 7 }
    let path = scratch.path("buffer.npy")
    try values.withUnsafeBufferPointer { try NPYWriter.write($0, shape: [10, 4, 25], to: path) }
    let array = try NPYArray(contentsOf: path)
    XCTAssertEqual(array.shape, [10, 4, 25])
    XCTAssertEqual(try array.floats(name: "x"), values)
  }

  func testFloat16RoundTrip() throws {
    let values: [Float16] = [0, -0.0, 1, -2.5, 65504, .infinity, 0.000_061_04, 0.000_000_06]
    let path = scratch.path("half.npy")
    try NPYWriter.write(values, shape: [2, 4], to: path)
    let array = try NPYArray(contentsOf: path)
    XCTAssertEqual(array.elementType, .float16)
    XCTAssertEqual(array.shape, [2, 4])
    XCTAssertEqual(try array.floats(name: "x").map(\.bitPattern), values.map { Float($0).bitPattern })
  }

  func testInt64RoundTrip() throws {
    let values: [Int64] = [0, -1, Int64.max, Int64.min, 42, 7]
    let path = scratch.path("index.npy")
    try NPYWriter.write(values, shape: [3, 2], to: path)
    let array = try NPYArray(contentsOf: path)
    XCTAssertEqual(array.elementType, .int64)
    XCTAssertEqual(array.shape, [3, 2])
    XCTAssertEqual(try array.integers(name: "x"), values)
  }

  func testWriterShapesAndAlignment() throws {
    let shapes: [[Int]] = [[], [0], [1], [7], [123_456_789_012, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]
    for (index, shape) in shapes.enumerated() {
      let count = shape.reduce(1, *)
      let values = (0..<count).map { Float($0) }
      let name = "shape\(index).npy"
      try NPYWriter.write(values, shape: shape, to: scratch.path(name))
      let bytes = try scratch.read(name)
      let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
      XCTAssertEqual(bytes[6], 1)
      XCTAssertEqual((10 + headerLength) % 64, 0, "\(shape)")
      XCTAssertEqual(bytes[10 + headerLength - 1], UInt8(ascii: "\n"))
      XCTAssertEqual(bytes.count, 10 + headerLength + 4 * count)
      let array = try NPYArray(contentsOf: scratch.path(name))
      XCTAssertEqual(array.shape, shape)
      XCTAssertEqual(try array.floats(name: "x"), values)
    }
  }

  func testWriterIntoMissingDirectoryFails() {
    let path = scratch.path("missing/out.npy")
    assertStorageError(.file, mentions: ["does not exist", "missing", "--output"]) {
      try NPYWriter.write([1] as [Float], shape: [1], to: path)
    }
  }

  // MARK: - Rejections

  func testRejectsBigEndian() throws {
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", data: [0x3F, 0x80, 0, 0]), to: "be.npy")
    assertStorageError(.dtype, mentions: ["big-endian", path, "np.save(path, a.astype('<f4'))"]) { _ = try NPYArray(contentsOf: path) }

    let intPath = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '>i8', 'fortran_order': False, 'shape': (1,), }", data: [UInt8](repeating: 0, count: 8)),
      to: "be-int.npy")
    assertStorageError(.dtype, mentions: ["big-endian", "np.save(path, a.astype('<i8'))"]) { _ = try NPYArray(contentsOf: intPath) }
  }

  func testRejectsFortranOrder() throws {
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", data: [UInt8](repeating: 0, count: 16)),
      to: "f.npy")
    assertStorageError(.file, mentions: ["Fortran", "fortran_order", path, "np.save(path, np.ascontiguousarray(a))"]) {
      _ = try NPYArray(contentsOf: path)
    }
  }

  func testRejectsObjectArrays() throws {
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", data: [UInt8](repeating: 0, count: 16)),
      to: "o.npy")
    assertStorageError(.file, mentions: ["object", path]) { _ = try NPYArray(contentsOf: path) }
  }

  func testRejectsStructuredDtypes() throws {
    let headers = [
      "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (2,), }",
      "{'descr': '|V8', 'fortran_order': False, 'shape': (2,), }",
    ]
    for (index, header) in headers.enumerated() {
      let path = try scratch.write(storageNPYFileBytes(header: header, data: [UInt8](repeating: 0, count: 16)), to: "s\(index).npy")
      assertStorageError(.file, mentions: ["structured", path]) { _ = try NPYArray(contentsOf: path) }
    }
  }

  func testRejectsUnsupportedElementTypes() throws {
    for (index, descr) in ["<c8", "<U4", "<M8[ns]", "<f16"].enumerated() {
      let path = try scratch.write(
        storageNPYFileBytes(header: "{'descr': '\(descr)', 'fortran_order': False, 'shape': (1,), }", data: [UInt8](repeating: 0, count: 16)),
        to: "t\(index).npy")
      let mentions = descr == "<c8" ? ["complex", "a.real"] : ["not supported"]
      assertStorageError(.dtype, mentions: [descr, path] + mentions) { _ = try NPYArray(contentsOf: path) }
    }
  }

  func testRejectsBadMagic() throws {
    let path = try scratch.write(Array("just some text, not numpy".utf8), to: "text.npy")
    assertStorageError(.file, mentions: ["magic", path]) { _ = try NPYArray(contentsOf: path) }
    let empty = try scratch.write([], to: "empty.npy")
    assertStorageError(.file, mentions: ["magic", empty]) { _ = try NPYArray(contentsOf: empty) }
  }

  func testRejectsUnknownVersion() throws {
    var bytes = storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", data: [0, 0, 0, 0])
    bytes[6] = 4
    let path = try scratch.write(bytes, to: "v4.npy")
    assertStorageError(.file, mentions: ["version 4.0", path]) { _ = try NPYArray(contentsOf: path) }
  }

  func testRejectsTruncatedHeader() throws {
    let whole = storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", data: [0, 0, 0, 0])
    for cut in [8, 11, 40] {
      let path = try scratch.write(Array(whole.prefix(cut)), to: "cut\(cut).npy")
      assertStorageError(.file, mentions: ["truncated", "header", path]) { _ = try NPYArray(contentsOf: path) }
    }
  }

  func testRejectsHeadersThatAreNotDictLiterals() throws {
    let headers = [
      "[1, 2, 3]",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } extra",
      "{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}",
      "{'descr': '<f4', 'fortran_order': maybe, 'shape': (1,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': [1]}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (3)}",
      "{'descr': '<f4', 'fortran_order': False}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
      "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
      "{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
    ]
    for (index, header) in headers.enumerated() {
      let path = try scratch.write(storageNPYFileBytes(header: header, data: [0, 0, 0, 0]), to: "bad\(index).npy")
      assertStorageError(.file, mentions: ["header", path]) { _ = try NPYArray(contentsOf: path) }
    }
  }

  func testRejectsNegativeAndOverflowingShapes() throws {
    let negative = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }", data: []), to: "neg.npy")
    assertStorageError(.file, mentions: ["negative", negative]) { _ = try NPYArray(contentsOf: negative) }

    let overflow = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", data: []),
      to: "overflow.npy")
    assertStorageError(.file, mentions: ["overflows", overflow]) { _ = try NPYArray(contentsOf: overflow) }

    let byteOverflow = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }", data: []),
      to: "byteoverflow.npy")
    assertStorageError(.file, mentions: ["overflows", byteOverflow]) { _ = try NPYArray(contentsOf: byteOverflow) }

    let huge = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }", data: []),
      to: "huge.npy")
    assertStorageError(.file, mentions: ["64-bit", huge]) { _ = try NPYArray(contentsOf: huge) }
  }

  func testRejectsShortDataSection() throws {
    let path = try scratch.write(
      storageNPYFileBytes(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data: [UInt8](repeating: 0, count: 20)),
      to: "short.npy")
    assertStorageError(.file, mentions: ["truncated", "needs 24 bytes", "only 20 bytes", path]) { _ = try NPYArray(contentsOf: path) }
  }

  func testReportsMissingFilesAndDirectories() throws {
    let missing = scratch.path("nope.npy")
    assertStorageError(.file, mentions: ["No such file or directory", missing]) { _ = try NPYArray(contentsOf: missing) }
    assertStorageError(.file, mentions: ["Is a directory", scratch.url.path]) { _ = try NPYArray(contentsOf: scratch.url.path) }
    let underFile = try scratch.write([1], to: "plain") + "/x.npy"
    assertStorageError(.file, mentions: ["Not a directory", underFile]) { _ = try NPYArray(contentsOf: underFile) }
  }
}
