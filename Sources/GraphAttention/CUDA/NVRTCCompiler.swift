/// NVRTC with typed results: compiles CUDA C source to a CUBIN or PTX image.
final class NVRTCCompiler: @unchecked Sendable {
  // @unchecked: immutable after init; NVRTC programs are created per call.
  let library: any CUDASymbolSource
  let symbols: NVRTCSymbols
  /// `(major, minor)` of NVRTC, e.g. (13, 0).
  let version: (major: Int, minor: Int)

  init(library: any CUDASymbolSource) throws {
    self.library = library
    let symbols = try NVRTCSymbols(from: library)
    self.symbols = symbols
    var major: Int32 = 0, minor: Int32 = 0
    let result = symbols.nvrtcVersion(&major, &minor)
    guard result == 0 else {
      throw CUDAError(library: .nvrtc, call: "nvrtcVersion", code: result, name: NVRTCCompiler.name(of: result, symbols))
    }
    self.version = (Int(major), Int(minor))
  }

  /// The version in the driver's encoding (1000 * major + 10 * minor), to compare with `CUDADriver.version`.
  var encodedVersion: Int32 { Int32(version.major * 1000 + version.minor * 10) }

  /// The `sm_XX` numbers this NVRTC can target (e.g. 75, 80, 86, 89, 90, ...), or nil if it cannot say.
  func supportedArchitectures() -> [Int]? {
    guard let count = symbols.nvrtcGetNumSupportedArchs, let list = symbols.nvrtcGetSupportedArchs else { return nil }
    var n: Int32 = 0
    guard count(&n) == 0, n > 0 else { return nil }
    var archs = [Int32](repeating: 0, count: Int(n))
    guard list(&archs) == 0 else { return nil }
    return archs.map(Int.init)
  }

  /// What one compilation produced.
  struct Output {
    /// The CUBIN, or PTX text with its terminating NUL, ready for `cuModuleLoadData`.
    var image: [UInt8]
    /// Whether `image` is a CUBIN (else PTX).
    var isCUBIN: Bool
    /// The compiler's log: warnings (empty for a clean compile).
    var log: String
  }

  /// Compiles `source` with `options`; `cubin` selects the CUBIN (for `--gpu-architecture=sm_XX`) or PTX.
  /// - Throws: `CUDAError` (`NVRTC_ERROR_COMPILATION` with the log as detail, or another NVRTC failure).
  func compile(source: String, name: String, options: [String], cubin: Bool) throws -> Output {
    var program: nvrtcProgram?
    try check(symbols.nvrtcCreateProgram(&program, source, name, 0, nil, nil), "nvrtcCreateProgram")
    defer { _ = symbols.nvrtcDestroyProgram(&program) }

    let cOptions = options.map { strdup($0) }
    defer { cOptions.forEach { free($0) } }
    let result = cOptions.map { UnsafePointer($0) }.withUnsafeBufferPointer { pointers in
      symbols.nvrtcCompileProgram(program, Int32(pointers.count), pointers.baseAddress)
    }
    let log = programLog(program)
    try check(result, "nvrtcCompileProgram", detail: "options \(options.joined(separator: " "))"
              + (log.isEmpty ? "" : "; compiler log:\n\(log)"))

    if cubin {
      guard let getSize = symbols.nvrtcGetCUBINSize, let get = symbols.nvrtcGetCUBIN else {
        throw CUDAError(library: .nvrtc, call: "nvrtcGetCUBIN", code: -1, name: "NVRTC_CUBIN_UNAVAILABLE",
                        message: "this NVRTC predates CUBIN output (CUDA 11.1)")
      }
      var size = 0
      try check(getSize(program, &size), "nvrtcGetCUBINSize")
      guard size > 0 else {
        // NVRTC returns no CUBIN when the architecture was virtual (compute_XX): report, PTX follows.
        throw CUDAError(library: .nvrtc, call: "nvrtcGetCUBIN", code: -1, name: "NVRTC_NO_CUBIN",
                        message: "the compilation produced no CUBIN")
      }
      var image = [UInt8](repeating: 0, count: size)
      try image.withUnsafeMutableBytes { try check(get(program, $0.baseAddress!.assumingMemoryBound(to: CChar.self)), "nvrtcGetCUBIN") }
      return Output(image: image, isCUBIN: true, log: log)
    }
    var size = 0
    try check(symbols.nvrtcGetPTXSize(program, &size), "nvrtcGetPTXSize")
    var image = [UInt8](repeating: 0, count: max(size, 1))
    try image.withUnsafeMutableBytes { try check(symbols.nvrtcGetPTX(program, $0.baseAddress!.assumingMemoryBound(to: CChar.self)), "nvrtcGetPTX") }
    return Output(image: image, isCUBIN: false, log: log)
  }

  private func programLog(_ program: nvrtcProgram?) -> String {
    var size = 0
    guard symbols.nvrtcGetProgramLogSize(program, &size) == 0, size > 1 else { return "" }
    var buffer = [CChar](repeating: 0, count: size)
    guard symbols.nvrtcGetProgramLog(program, &buffer) == 0 else { return "" }
    var log = Substring(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    while let last = log.last, last.isWhitespace { log = log.dropLast() }
    return String(log)
  }

  private func check(_ result: nvrtcResult, _ call: String, detail: @autoclosure () -> String = "") throws {
    guard result != 0 else { return }
    throw CUDAError(library: .nvrtc, call: call, code: result, name: NVRTCCompiler.name(of: result, symbols),
                    message: "", detail: detail())
  }

  /// NVRTC's name for a result (`nvrtcGetErrorString` returns names such as `NVRTC_ERROR_COMPILATION`).
  static func name(of result: nvrtcResult, _ symbols: NVRTCSymbols) -> String {
    symbols.nvrtcGetErrorString(result).map { String(cString: $0) } ?? "nvrtcResult \(result)"
  }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
