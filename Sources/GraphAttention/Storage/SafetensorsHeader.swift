/// The header of a `.safetensors` file: parsing with full validation, and encoding.
///
/// ## Format
/// 8 bytes: the header length `N`, unsigned little-endian; `N` bytes: a UTF-8 JSON object mapping
/// each tensor name to `{"dtype": "F16", "shape": [2, 3], "data_offsets": [begin, end]}`, plus an
/// optional `"__metadata__"` object of string values; then the data. Offsets count from the first
/// byte after the header. The header may end in spaces; this writer pads it so the data starts at a
/// multiple of 64 bytes, and lays tensors out back to back in the order given (no holes, as the
/// reference implementation requires).
///
/// The JSON is parsed by a small strict parser here rather than Foundation's `JSONSerialization`:
/// the library does not otherwise depend on Foundation, and integers must stay exact 64-bit values
/// (distinct from booleans and floats), which `NSNumber` does not guarantee.
struct SafetensorsHeader {
  /// One tensor's entry, validated: `end - begin` is its byte size when the dtype is known.
  struct Entry {
    var name: String
    var dtype: String
    var shape: [Int]
    /// Offsets from the start of the data section.
    var begin: Int
    var end: Int
  }

  /// The tensors, sorted by `begin`.
  var entries: [Entry]
  /// Absolute offset of the data section: `8 + N`.
  var dataStart: Int

  /// Byte sizes of the dtypes the format defines.
  static let dtypeSizes: [String: Int] = [
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
  ]

  /// Headers above this size are refused (the reference implementation's limit is 100 MB).
  static let maximumHeaderLength = 100_000_000

  /// Parses and validates the header of the file whose bytes are `file`.
  ///
  /// - Throws: `GraphAttentionError(.file)` naming `path` for a truncated file, an implausible header
  ///   length, malformed JSON, missing or mistyped fields, offsets outside the file, or a byte range
  ///   that does not match the shape and dtype.
  static func parse(_ file: UnsafeRawBufferPointer, path: String) throws -> SafetensorsHeader {
    guard file.count >= 8 else {
      throw malformed(path, "the file has \(file.count) bytes, fewer than the 8-byte header length")
    }
    let declared = file.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
    guard declared <= UInt64(maximumHeaderLength) else {
      throw malformed(path, "it declares a header of \(declared) bytes, more than the 100 MB allowed")
    }
    let length = Int(declared)
    guard length <= file.count - 8 else {
      throw GraphAttentionError(
        .file, "\(path) is truncated: its safetensors header needs \(length) bytes but only \(file.count - 8) follow the length field",
        fix: "the file is incomplete; write it again")
    }
    let bytes = [UInt8](UnsafeRawBufferPointer(rebasing: file[8..<(8 + length)]))
    var parser = JSONParser(bytes: bytes)
    let root: JSONValue
    do {
      root = try parser.parseDocument()
    } catch let error as JSONParser.Failure {
      throw malformed(path, "its header is not valid JSON: \(error.message)")
    }
    guard case .object(let members) = root else {
      throw malformed(path, "its header is not a JSON object")
    }
    let dataLength = file.count - 8 - length
    var entries: [Entry] = []
    var seen = Set<String>()
    for (name, value) in members {
      guard seen.insert(name).inserted else { throw malformed(path, "the name '\(name)' appears twice") }
      if name == "__metadata__" {
        guard case .object(let metadata) = value else { throw malformed(path, "'__metadata__' is not an object") }
        for (key, item) in metadata {
          guard case .string = item else { throw malformed(path, "__metadata__ '\(key)' is not a string") }
        }
        continue
      }
      guard case .object(let fields) = value else { throw malformed(path, "tensor '\(name)' is not an object") }
      var dtype: String?, shape: [Int]?, offsets: [Int]?
      for (key, field) in fields {
        switch key {
        case "dtype":
          guard case .string(let text) = field else { throw malformed(path, "the dtype of '\(name)' is not a string") }
          dtype = text
        case "shape":
          guard let extents = integers(field) else {
            throw malformed(path, "the shape of '\(name)' is not a list of non-negative integers")
          }
          shape = extents
        case "data_offsets":
          guard let pair = integers(field), pair.count == 2 else {
            throw malformed(path, "the data_offsets of '\(name)' are not two non-negative integers")
          }
          offsets = pair
        default:
          continue  // unknown fields are ignored, as the reference implementation does
        }
      }
      guard let dtype, let shape, let offsets else {
        let missing = [("dtype", dtype == nil), ("shape", shape == nil), ("data_offsets", offsets == nil)]
          .filter(\.1).map(\.0).joined(separator: ", ")
        throw malformed(path, "tensor '\(name)' lacks \(missing)")
      }
      let (begin, end) = (offsets[0], offsets[1])
      guard begin <= end, end <= dataLength else {
        throw GraphAttentionError(
          .file, "\(path): tensor '\(name)' has data_offsets [\(begin), \(end)] outside the \(dataLength) data bytes of the file",
          fix: "the file is truncated or corrupt; write it again")
      }
      if let size = dtypeSizes[dtype] {
        guard let count = npyElementCount(shape), case let (bytes, false) = count.multipliedReportingOverflow(by: size) else {
          throw malformed(path, "the shape \(shape) of '\(name)' overflows a 64-bit byte count")
        }
        guard end - begin == bytes else {
          throw GraphAttentionError(
            .file, "\(path): tensor '\(name)' of shape \(shape) and dtype \(dtype) needs \(bytes) bytes, but its data_offsets [\(begin), \(end)] span \(end - begin)",
            fix: "the file is corrupt; write it again")
        }
      }
      entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
    }
    entries.sort { ($0.begin, $0.name) < ($1.begin, $1.name) }
    return SafetensorsHeader(entries: entries, dataStart: 8 + length)
  }

  /// The bytes of a header (length field included) for `tensors` laid out back to back, padded with
  /// spaces so the data starts at a multiple of 64; and each tensor's absolute data offset.
  static func encode(_ tensors: [(name: String, shape: [Int], type: StorageType)],
                     metadata: [(String, String)] = [("format", "pt")]) -> (bytes: [UInt8], offsets: [Int]) {
    var json = "{\"__metadata__\":{"
    json += metadata.map { "\(JSONText.quoted($0.0)):\(JSONText.quoted($0.1))" }.joined(separator: ",")
    json += "}"
    var position = 0
    var relative: [Int] = []
    for tensor in tensors {
      let bytes = storageCheckedCount(tensor.shape, tensor.type) * tensor.type.byteCount
      json += ",\(JSONText.quoted(tensor.name)):{\"dtype\":\"\(tensor.type.safetensorsName)\",\"shape\":["
      json += tensor.shape.map(String.init).joined(separator: ",")
      json += "],\"data_offsets\":[\(position),\(position + bytes)]}"
      relative.append(position)
      position += bytes
    }
    json += "}"
    var header = Array(json.utf8)
    header += repeatElement(UInt8(ascii: " "), count: (64 - (8 + header.count) % 64) % 64)
    var bytes = (0..<8).map { UInt8(truncatingIfNeeded: UInt64(header.count) >> (8 * $0)) }
    bytes += header
    return (bytes, relative.map { $0 + bytes.count })
  }

  /// The non-negative integers of a JSON array, or nil if it is not such an array.
  private static func integers(_ value: JSONValue) -> [Int]? {
    guard case .array(let items) = value else { return nil }
    var result: [Int] = []
    for item in items {
      guard case .integer(let n) = item, n >= 0 else { return nil }
      result.append(n)
    }
    return result
  }

  private static func malformed(_ path: String, _ what: String) -> GraphAttentionError {
    GraphAttentionError(.file, "\(path) is not a valid .safetensors file: \(what)",
                        fix: "write it again with safetensors.numpy.save_file or safetensors.torch.save_file")
  }
}
