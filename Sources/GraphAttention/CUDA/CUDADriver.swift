/// The driver API with typed results: each call checks its `CUresult` and throws a `CUDAError` named
/// by `cuGetErrorName`. Owns nothing but the symbol table; handles are owned by `CUDAContext`,
/// `CUDAModule` and `CUDADeviceBuffer`.
final class CUDADriver: @unchecked Sendable {
  // @unchecked: immutable after init; the driver API itself is thread-safe.
  let library: any CUDASymbolSource
  let symbols: DriverSymbols
  /// `cuDriverGetVersion`: 1000 * major + 10 * minor of the newest CUDA the driver supports, e.g. 12080.
  private(set) var version: Int32 = 0

  /// Resolves the symbols and initialises the driver (`cuInit(0)`).
  init(library: any CUDASymbolSource) throws {
    self.library = library
    self.symbols = try DriverSymbols(from: library)
    try check(symbols.cuInit(0), "cuInit")
    var v: Int32 = 0
    try check(symbols.cuDriverGetVersion(&v), "cuDriverGetVersion")
    version = v
  }

  /// The driver's CUDA version as `major.minor`.
  var versionString: String { "\(version / 1000).\((version % 1000) / 10)" }

  /// Throws the driver's error for a failed call.
  func check(_ result: CUresult, _ call: String, detail: @autoclosure () -> String = "") throws {
    guard result != 0 else { return }
    throw error(result, call, detail: detail())
  }

  /// The `CUDAError` for `result`, with the driver's name and text for it.
  func error(_ result: CUresult, _ call: String, detail: String = "") -> CUDAError {
    var name: UnsafePointer<CChar>?
    var text: UnsafePointer<CChar>?
    let nameKnown = symbols.cuGetErrorName(result, &name) == 0 && name != nil
    let textKnown = symbols.cuGetErrorString(result, &text) == 0 && text != nil
    return CUDAError(library: .driver, call: call, code: result,
                     name: nameKnown ? String(cString: name!) : "CUresult \(result)",
                     message: textKnown ? String(cString: text!) : "", detail: detail)
  }

  func deviceCount() throws -> Int {
    var count: Int32 = 0
    try check(symbols.cuDeviceGetCount(&count), "cuDeviceGetCount")
    return Int(count)
  }

  func device(_ ordinal: Int) throws -> CUdevice {
    var device: CUdevice = 0
    try check(symbols.cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet", detail: "device \(ordinal)")
    return device
  }

  func attribute(_ attribute: CUDeviceAttribute, of device: CUdevice) throws -> Int {
    var value: Int32 = 0
    try check(symbols.cuDeviceGetAttribute(&value, attribute.rawValue, device), "cuDeviceGetAttribute",
              detail: "attribute \(attribute)")
    return Int(value)
  }

  func name(of device: CUdevice) throws -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    try check(symbols.cuDeviceGetName(&buffer, Int32(buffer.count), device), "cuDeviceGetName")
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}

/// A device's primary context, retained for the life of this object and released in deinit.
///
/// The primary context is the one the CUDA runtime (and so PyTorch) uses, so buffers and modules
/// here coexist with theirs in one process.
final class CUDAContext: @unchecked Sendable {
  // @unchecked: the handle is immutable; callers serialise use through CUDARuntime's lock.
  let driver: CUDADriver
  let device: CUdevice
  let ordinal: Int
  let handle: CUcontext

  init(driver: CUDADriver, ordinal: Int) throws {
    let count = try driver.deviceCount()
    guard ordinal >= 0, ordinal < count else {
      throw GraphAttentionError(.device, "CUDA device \(ordinal) does not exist; the driver sees \(count) device(s)",
                                fix: count == 0 ? "check nvidia-smi and CUDA_VISIBLE_DEVICES, or run with --device cpu"
                                                : "use a device ordinal in 0..<\(count)")
    }
    self.driver = driver
    self.ordinal = ordinal
    self.device = try driver.device(ordinal)
    var context: CUcontext?
    try driver.check(driver.symbols.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain")
    guard let context else {
      throw driver.error(201, "cuDevicePrimaryCtxRetain", detail: "the driver returned no context")
    }
    self.handle = context
    try makeCurrent()
  }

  /// Makes this context current on the calling thread (the driver tracks the current context per thread).
  func makeCurrent() throws {
    try driver.check(driver.symbols.cuCtxSetCurrent(handle), "cuCtxSetCurrent")
  }

  func synchronize() throws {
    try driver.check(driver.symbols.cuCtxSynchronize(), "cuCtxSynchronize")
  }

  /// `(free, total)` device memory in bytes.
  func memoryInfo() throws -> (free: Int, total: Int) {
    var free = 0, total = 0
    try driver.check(driver.symbols.cuMemGetInfo(&free, &total), "cuMemGetInfo")
    return (free, total)
  }

  deinit {
    _ = driver.symbols.cuDevicePrimaryCtxRelease(device)
  }
}

/// Device memory from `cuMemAlloc` (never managed memory), freed in deinit.
final class CUDADeviceBuffer: @unchecked Sendable {
  // @unchecked: the address is immutable; callers serialise use through CUDARuntime's lock.
  /// Keeps the context alive as long as its memory.
  let context: CUDAContext
  let address: CUdeviceptr
  let byteCount: Int

  /// Allocates `byteCount` bytes (at least 1: the driver rejects empty allocations).
  init(context: CUDAContext, byteCount: Int) throws {
    self.context = context
    self.byteCount = max(1, byteCount)
    var address: CUdeviceptr = 0
    try context.driver.check(context.driver.symbols.cuMemAlloc(&address, self.byteCount), "cuMemAlloc",
                             detail: "allocating \(self.byteCount) bytes")
    self.address = address
  }

  /// Copies `bytes` from the host to the start of the buffer.
  func upload(_ bytes: UnsafeRawBufferPointer) throws {
    precondition(bytes.count <= byteCount)
    guard bytes.count > 0 else { return }
    try context.driver.check(context.driver.symbols.cuMemcpyHtoD(address, bytes.baseAddress, bytes.count), "cuMemcpyHtoD")
  }

  /// Copies the start of the buffer into `bytes`.
  func download(into bytes: UnsafeMutableRawBufferPointer) throws {
    precondition(bytes.count <= byteCount)
    guard bytes.count > 0 else { return }
    try context.driver.check(context.driver.symbols.cuMemcpyDtoH(bytes.baseAddress, address, bytes.count), "cuMemcpyDtoH")
  }

  deinit {
    _ = context.driver.symbols.cuCtxSetCurrent(context.handle)
    _ = context.driver.symbols.cuMemFree(address)
  }
}

/// A loaded module (CUBIN or PTX image), unloaded in deinit.
final class CUDAModule: @unchecked Sendable {
  // @unchecked: immutable after init; callers serialise use through CUDARuntime's lock.
  let context: CUDAContext
  let handle: CUmodule
  private var functions: [String: CUfunction] = [:]

  /// Loads `image` (a CUBIN, or PTX with a terminating NUL) into `context`.
  init(context: CUDAContext, image: [UInt8], what: String) throws {
    self.context = context
    try context.makeCurrent()
    var module: CUmodule?
    let result = image.withUnsafeBytes { context.driver.symbols.cuModuleLoadData(&module, $0.baseAddress) }
    try context.driver.check(result, "cuModuleLoadData", detail: "loading \(what)")
    guard let module else { throw context.driver.error(200, "cuModuleLoadData", detail: "no module returned for \(what)") }
    self.handle = module
  }

  /// The kernel `name` (an `extern "C"` function of the source).
  func function(_ name: String) throws -> CUfunction {
    if let cached = functions[name] { return cached }
    var function: CUfunction?
    try context.driver.check(context.driver.symbols.cuModuleGetFunction(&function, handle, name), "cuModuleGetFunction",
                             detail: "kernel \(name)")
    guard let function else { throw context.driver.error(500, "cuModuleGetFunction", detail: "kernel \(name)") }
    functions[name] = function
    return function
  }

  deinit {
    _ = context.driver.symbols.cuCtxSetCurrent(context.handle)
    _ = context.driver.symbols.cuModuleUnload(handle)
  }
}
