#if canImport(Glibc)
import Glibc
#endif
@testable import GraphAttention

// Test doubles for libcuda and NVRTC: C-callable functions over process-global state, so the backend's
// loading, error and ownership paths run on machines without a GPU. "Device memory" is host memory
// from malloc, so copies round-trip and leaks are counted.

/// What the mock libraries do and saw; reset by `MockCUDA.reset()` before each test.
struct MockCUDAState {
  var launchResult: CUresult = 0
  var compileResult: nvrtcResult = 0
  var compileLog = ""
  var freeMemory = 70 << 30
  var totalMemory = 80 << 30
  var computeCapability: (Int32, Int32) = (9, 0)
  var nvrtcVersion: (Int32, Int32) = (12, 8)
  var compiles = 0
  var compileOptions: [[String]] = []
  var liveAllocations = 0
  var contextsRetained = 0
  var contextsReleased = 0
  var modulesLoaded = 0
  var modulesUnloaded = 0
  /// Each launch's grid, block, shared memory, and its 18 arguments copied as 8 bytes each.
  var launches: [(grid: (UInt32, UInt32, UInt32), block: UInt32, shared: UInt32, arguments: [MockArgument])] = []
  var lastGraphWords: [UInt64] = []
  /// Kernel names in the order `cuModuleGetFunction` handed out handles (0x3000 + index).
  var functionNames: [String] = []
  /// When set, launches run the kernels in the CPU emulator (KernelEmulator) instead of doing nothing.
  var emulator: KernelEmulator.Launch?
}

nonisolated(unsafe) var mockCUDA = MockCUDAState()

/// A kernel argument as the launch saw it (8 bytes, little-endian).
struct MockArgument {
  var bits: UInt64
  func load<T: BitwiseCopyable>(as type: T.Type) -> T {
    withUnsafeBytes(of: bits) { $0.load(as: T.self) }
  }
}

/// A symbol table standing in for a dlopen'ed library.
final class MockLibrary: CUDASymbolSource, @unchecked Sendable {
  let path: String
  private let symbols: [String: UnsafeMutableRawPointer]

  init(path: String, symbols: [String: UnsafeMutableRawPointer], removing missing: Set<String> = []) {
    self.path = path
    self.symbols = symbols.filter { !missing.contains($0.key) }
  }

  func address(of name: String) -> UnsafeMutableRawPointer? { symbols[name] }
}

enum MockCUDA {
  static func reset() { mockCUDA = MockCUDAState() }

  static func pointer<F>(_ function: F) -> UnsafeMutableRawPointer {
    unsafeBitCast(function, to: UnsafeMutableRawPointer.self)
  }

  static func cString(_ s: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
  }

  static let errorNames: DriverSymbols.GetErrorText = { code, out in
    switch code {
    case 719: out?.pointee = MockCUDA.cString("CUDA_ERROR_LAUNCH_FAILED")
    case 2: out?.pointee = MockCUDA.cString("CUDA_ERROR_OUT_OF_MEMORY")
    case 222: out?.pointee = MockCUDA.cString("CUDA_ERROR_UNSUPPORTED_PTX_VERSION")
    default: return 1
    }
    return 0
  }

  static let errorStrings: DriverSymbols.GetErrorText = { code, out in
    switch code {
    case 719: out?.pointee = MockCUDA.cString("unspecified launch failure")
    case 2: out?.pointee = MockCUDA.cString("out of memory")
    default: return 1
    }
    return 0
  }

  /// The driver's symbols, all present and succeeding unless the state says otherwise.
  static var driverSymbols: [String: UnsafeMutableRawPointer] {
    [
      "cuInit": pointer({ _ in 0 } as DriverSymbols.Init),
      "cuDriverGetVersion": pointer({ v in v?.pointee = 12080; return 0 } as DriverSymbols.DriverGetVersion),
      "cuDeviceGetCount": pointer({ n in n?.pointee = 1; return 0 } as DriverSymbols.DeviceGetCount),
      "cuDeviceGet": pointer({ d, ordinal in d?.pointee = ordinal; return 0 } as DriverSymbols.DeviceGet),
      "cuDeviceGetName": pointer({ buffer, length, _ in
        let name = "Mock GPU"
        for (i, byte) in name.utf8.enumerated() where i < Int(length) - 1 { buffer?[i] = CChar(bitPattern: byte) }
        buffer?[min(name.utf8.count, Int(length) - 1)] = 0
        return 0
      } as DriverSymbols.DeviceGetName),
      "cuDeviceGetAttribute": pointer({ value, attribute, _ in
        switch attribute {
        case 75: value?.pointee = mockCUDA.computeCapability.0
        case 76: value?.pointee = mockCUDA.computeCapability.1
        case 8: value?.pointee = 49152
        case 16: value?.pointee = 132
        default: value?.pointee = 1024
        }
        return 0
      } as DriverSymbols.DeviceGetAttribute),
      "cuDevicePrimaryCtxRetain": pointer({ context, _ in
        context?.pointee = OpaquePointer(bitPattern: 0x1000)
        mockCUDA.contextsRetained += 1
        return 0
      } as DriverSymbols.PrimaryCtxRetain),
      "cuDevicePrimaryCtxRelease_v2": pointer({ _ in mockCUDA.contextsReleased += 1; return 0 } as DriverSymbols.PrimaryCtxRelease),
      "cuCtxSetCurrent": pointer({ _ in 0 } as DriverSymbols.CtxSetCurrent),
      "cuCtxSynchronize": pointer({ 0 } as DriverSymbols.CtxSynchronize),
      "cuModuleLoadData": pointer({ module, _ in
        module?.pointee = OpaquePointer(bitPattern: 0x2000)
        mockCUDA.modulesLoaded += 1
        return 0
      } as DriverSymbols.ModuleLoadData),
      "cuModuleUnload": pointer({ _ in mockCUDA.modulesUnloaded += 1; return 0 } as DriverSymbols.ModuleUnload),
      "cuModuleGetFunction": pointer({ function, _, name in
        let kernel = String(cString: name!)
        if !mockCUDA.functionNames.contains(kernel) { mockCUDA.functionNames.append(kernel) }
        function?.pointee = OpaquePointer(bitPattern: 0x3000 + mockCUDA.functionNames.firstIndex(of: kernel)!)
        return 0
      } as DriverSymbols.ModuleGetFunction),
      "cuMemAlloc_v2": pointer({ address, size in
        guard let memory = malloc(size) else { return 2 }
        address?.pointee = CUdeviceptr(UInt(bitPattern: memory))
        mockCUDA.liveAllocations += 1
        return 0
      } as DriverSymbols.MemAlloc),
      "cuMemFree_v2": pointer({ address in
        free(UnsafeMutableRawPointer(bitPattern: UInt(address)))
        mockCUDA.liveAllocations -= 1
        return 0
      } as DriverSymbols.MemFree),
      "cuMemGetInfo_v2": pointer({ free, total in
        free?.pointee = mockCUDA.freeMemory
        total?.pointee = mockCUDA.totalMemory
        return 0
      } as DriverSymbols.MemGetInfo),
      "cuMemcpyHtoD_v2": pointer({ destination, source, count in
        memcpy(UnsafeMutableRawPointer(bitPattern: UInt(destination))!, source!, count)
        return 0
      } as DriverSymbols.MemcpyHtoD),
      "cuMemcpyDtoH_v2": pointer({ destination, source, count in
        memcpy(destination!, UnsafeRawPointer(bitPattern: UInt(source))!, count)
        return 0
      } as DriverSymbols.MemcpyDtoH),
      "cuLaunchKernel": pointer({ function, gx, gy, gz, bx, _, _, shared, _, parameters, _ in
        var arguments: [MockArgument] = []
        for i in 0..<18 { arguments.append(MockArgument(bits: parameters?[i]?.load(as: UInt64.self) ?? 0)) }
        mockCUDA.launches.append(((gx, gy, gz), bx, shared, arguments))
        // The graph words: argument 6 is their device address, argument 7 the component count.
        if let graph = parameters?[6]?.load(as: UInt64.self), let count = parameters?[7]?.load(as: Int32.self),
           let words = UnsafePointer<UInt64>(bitPattern: UInt(graph)) {
          mockCUDA.lastGraphWords = Array(UnsafeBufferPointer(start: words, count: 8 * Int(count)))
        }
        if mockCUDA.launchResult == 0, let emulator = mockCUDA.emulator {
          let kernel = mockCUDA.functionNames[Int(bitPattern: UnsafeRawPointer(function)) - 0x3000]
          return emulator(kernel, gx, gy, bx, shared, parameters) == 0 ? 0 : 719
        }
        return mockCUDA.launchResult
      } as DriverSymbols.LaunchKernel),
      "cuGetErrorName": pointer(errorNames),
      "cuGetErrorString": pointer(errorStrings),
    ]
  }

  static let fakeImage = Array("\u{7f}ELF mock cubin ga_rows_f32 ga_rows_f16 ga_rows_bf16".utf8)

  /// NVRTC's symbols.
  static var nvrtcSymbols: [String: UnsafeMutableRawPointer] {
    [
      "nvrtcVersion": pointer({ major, minor in
        major?.pointee = mockCUDA.nvrtcVersion.0
        minor?.pointee = mockCUDA.nvrtcVersion.1
        return 0
      } as NVRTCSymbols.Version),
      "nvrtcCreateProgram": pointer({ program, _, _, _, _, _ in
        program?.pointee = OpaquePointer(bitPattern: 0x4000)
        return 0
      } as NVRTCSymbols.CreateProgram),
      "nvrtcDestroyProgram": pointer({ _ in 0 } as NVRTCSymbols.DestroyProgram),
      "nvrtcCompileProgram": pointer({ _, count, options in
        mockCUDA.compiles += 1
        mockCUDA.compileOptions.append((0..<Int(count)).map { String(cString: options![$0]!) })
        return mockCUDA.compileResult
      } as NVRTCSymbols.CompileProgram),
      "nvrtcGetProgramLogSize": pointer({ _, size in size?.pointee = mockCUDA.compileLog.utf8.count + 1; return 0 } as NVRTCSymbols.GetSize),
      "nvrtcGetProgramLog": pointer({ _, buffer in
        for (i, byte) in mockCUDA.compileLog.utf8.enumerated() { buffer?[i] = CChar(bitPattern: byte) }
        buffer?[mockCUDA.compileLog.utf8.count] = 0
        return 0
      } as NVRTCSymbols.GetBytes),
      "nvrtcGetPTXSize": pointer({ _, size in size?.pointee = MockCUDA.fakeImage.count + 1; return 0 } as NVRTCSymbols.GetSize),
      "nvrtcGetPTX": pointer({ _, buffer in
        for (i, byte) in MockCUDA.fakeImage.enumerated() { buffer?[i] = CChar(bitPattern: byte) }
        buffer?[MockCUDA.fakeImage.count] = 0
        return 0
      } as NVRTCSymbols.GetBytes),
      "nvrtcGetCUBINSize": pointer({ _, size in size?.pointee = MockCUDA.fakeImage.count; return 0 } as NVRTCSymbols.GetSize),
      "nvrtcGetCUBIN": pointer({ _, buffer in
        for (i, byte) in MockCUDA.fakeImage.enumerated() { buffer?[i] = CChar(bitPattern: byte) }
        return 0
      } as NVRTCSymbols.GetBytes),
      "nvrtcGetErrorString": pointer({ code in
        code == 6 ? MockCUDA.cString("NVRTC_ERROR_COMPILATION") : MockCUDA.cString("NVRTC_ERROR_MOCK")
      } as NVRTCSymbols.GetErrorString),
    ]
  }

  /// A runtime over the mock libraries; `missingDriver`/`missingNVRTC` make a library absent, and
  /// `missingSymbols` removes entry points from them.
  static func runtime(missingDriver: Bool = false, missingNVRTC: Bool = false, missingSymbols: Set<String> = [],
                      cacheDirectory: String? = nil) -> CUDARuntime {
    let driver = MockLibrary(path: "mock/libcuda.so.1", symbols: driverSymbols, removing: missingSymbols)
    let nvrtc = MockLibrary(path: "mock/libnvrtc.so.12", symbols: nvrtcSymbols, removing: missingSymbols)
    let loader = CUDALibraryLoader(
      openDriver: { missingDriver ? (nil, ["libcuda.so.1: cannot open shared object file"]) : (driver, []) },
      openNVRTC: { accept in missingNVRTC ? (nil, ["libnvrtc.so.13", "libnvrtc.so.12"]) : (accept(nvrtc) ? nvrtc : nvrtc, ["mock"]) })
    return CUDARuntime(loader: loader, cache: KernelCache(directory: cacheDirectory))
  }
}
