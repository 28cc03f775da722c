/// Element types of stored tensors; arithmetic is always fp32.
///
/// Values are converted to `Float` when read (exactly: every fp16 and bf16 value is an fp32 value)
/// and rounded to nearest, ties to even, when stored (see `TensorView.store`).
///
/// One spelling everywhere: the raw value (`f32`, `f16`, `bf16`) is what messages, options, JSON
/// output and progress records use; `init(parsing:)` (and decoding) also accept `fp32`, `float32`,
/// `fp16`, `float16`, `half`, `bfloat16`, the `.npy` strings and the safetensors names.
///
/// ```swift
/// let type = StorageType(parsing: "bf16")     // .bfloat16
/// type?.byteCount                              // 2
/// type?.safetensorsName                        // "BF16"
/// ```
public enum StorageType: String, Sendable, CaseIterable, Codable {
  /// IEEE 754 binary32 (`np.float32`, safetensors `F32`).
  case float32 = "f32"
  /// IEEE 754 binary16 (`np.float16`, safetensors `F16`): 11 significant bits, largest finite 65504.
  case float16 = "f16"
  /// bfloat16 (safetensors `BF16`): the upper 16 bits of a binary32, 8 significant bits, fp32's range.
  case bfloat16 = "bf16"

  /// Decodes any spelling `init(parsing:)` accepts (records written with `float32` still read).
  public init(from decoder: any Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let type = StorageType(parsing: text) else {
      throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown storage type '\(text)'"))
    }
    self = type
  }

  /// Size of one element in bytes: 4 or 2.
  public var byteCount: Int {
    switch self {
    case .float32: return 4
    case .float16, .bfloat16: return 2
    }
  }

  /// The `.npy` type string (`"<f4"`, `"<f2"`), or nil for bfloat16, which `.npy` cannot describe.
  public var npyDescriptor: String? {
    switch self {
    case .float32: return NPYElementType.float32.rawValue
    case .float16: return NPYElementType.float16.rawValue
    case .bfloat16: return nil
    }
  }

  /// The safetensors `dtype` string: `"F32"`, `"F16"` or `"BF16"`.
  public var safetensorsName: String {
    switch self {
    case .float32: return "F32"
    case .float16: return "F16"
    case .bfloat16: return "BF16"
    }
  }

  /// The one spelling for messages and options: `"f32"`, `"f16"` or `"bf16"` (the raw value).
  public var shortName: String { rawValue }

  /// Parses a type name as users write it, ignoring case.
  ///
  /// Accepts `f32`, `float32`, `fp32`; `f16`, `float16`, `fp16`, `half`; `bf16`, `bfloat16`;
  /// also the `.npy` strings `<f4`, `<f2` and the safetensors names `F32`, `F16`, `BF16`.
  /// Returns nil for anything else.
  public init?(parsing text: String) {
    switch text.lowercased() {
    case "f32", "float32", "fp32", "float", "<f4": self = .float32
    case "f16", "float16", "fp16", "half", "<f2": self = .float16
    case "bf16", "bfloat16": self = .bfloat16
    default: return nil
    }
  }

  /// The type with safetensors `dtype` `name` (`"F32"`, `"F16"`, `"BF16"`, exact case), or nil.
  public init?(safetensorsName name: String) {
    guard let type = StorageType.allCases.first(where: { $0.safetensorsName == name }) else { return nil }
    self = type
  }
}
