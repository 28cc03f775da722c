// The raw C boundary of the CUDA backend: the few driver and NVRTC types, declared here instead of
// imported from CUDA headers so the package builds on machines with no CUDA SDK, and the tables of
// function pointers resolved from the libraries at run time. Nothing outside CUDA/ calls these.

/// `CUresult`: 0 is `CUDA_SUCCESS`.
typealias CUresult = Int32
/// `CUdevice`: a device ordinal.
typealias CUdevice = Int32
/// `CUdeviceptr`: a device address (64-bit on every supported platform).
typealias CUdeviceptr = UInt64
/// `CUcontext`, `CUmodule`, `CUfunction`, `CUstream`: opaque handles.
typealias CUcontext = OpaquePointer
typealias CUmodule = OpaquePointer
typealias CUfunction = OpaquePointer
typealias CUstream = OpaquePointer
/// `nvrtcResult`: 0 is `NVRTC_SUCCESS`.
typealias nvrtcResult = Int32
/// `nvrtcProgram`: an opaque handle.
typealias nvrtcProgram = OpaquePointer

/// `CUdevice_attribute` values used here (cuda.h).
enum CUDeviceAttribute: Int32 {
  case maxThreadsPerBlock = 1
  case maxGridDimY = 6
  case maxSharedMemoryPerBlock = 8
  case multiprocessorCount = 16
  case computeCapabilityMajor = 75
  case computeCapabilityMinor = 76
}

/// Driver API entry points. Names are the exported ones: cuda.h maps `cuMemAlloc` to `cuMemAlloc_v2`
/// and so on, and `dlsym` sees only the exported names.
struct DriverSymbols {
  typealias Init = @convention(c) (UInt32) -> CUresult
  typealias DriverGetVersion = @convention(c) (UnsafeMutablePointer<Int32>?) -> CUresult
  typealias DeviceGetCount = @convention(c) (UnsafeMutablePointer<Int32>?) -> CUresult
  typealias DeviceGet = @convention(c) (UnsafeMutablePointer<CUdevice>?, Int32) -> CUresult
  typealias DeviceGetName = @convention(c) (UnsafeMutablePointer<CChar>?, Int32, CUdevice) -> CUresult
  typealias DeviceGetAttribute = @convention(c) (UnsafeMutablePointer<Int32>?, Int32, CUdevice) -> CUresult
  typealias PrimaryCtxRetain = @convention(c) (UnsafeMutablePointer<CUcontext?>?, CUdevice) -> CUresult
  typealias PrimaryCtxRelease = @convention(c) (CUdevice) -> CUresult
  typealias CtxSetCurrent = @convention(c) (CUcontext?) -> CUresult
  typealias CtxSynchronize = @convention(c) () -> CUresult
  typealias ModuleLoadData = @convention(c) (UnsafeMutablePointer<CUmodule?>?, UnsafeRawPointer?) -> CUresult
  typealias ModuleUnload = @convention(c) (CUmodule?) -> CUresult
  typealias ModuleGetFunction = @convention(c) (UnsafeMutablePointer<CUfunction?>?, CUmodule?, UnsafePointer<CChar>?) -> CUresult
  typealias MemAlloc = @convention(c) (UnsafeMutablePointer<CUdeviceptr>?, Int) -> CUresult
  typealias MemFree = @convention(c) (CUdeviceptr) -> CUresult
  typealias MemGetInfo = @convention(c) (UnsafeMutablePointer<Int>?, UnsafeMutablePointer<Int>?) -> CUresult
  typealias MemcpyHtoD = @convention(c) (CUdeviceptr, UnsafeRawPointer?, Int) -> CUresult
  typealias MemcpyDtoH = @convention(c) (UnsafeMutableRawPointer?, CUdeviceptr, Int) -> CUresult
  typealias LaunchKernel = @convention(c) (
    CUfunction?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, CUstream?,
    UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> CUresult
  typealias GetErrorText = @convention(c) (CUresult, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> CUresult

  var cuInit: Init
  var cuDriverGetVersion: DriverGetVersion
  var cuDeviceGetCount: DeviceGetCount
  var cuDeviceGet: DeviceGet
  var cuDeviceGetName: DeviceGetName
  var cuDeviceGetAttribute: DeviceGetAttribute
  var cuDevicePrimaryCtxRetain: PrimaryCtxRetain
  var cuDevicePrimaryCtxRelease: PrimaryCtxRelease
  var cuCtxSetCurrent: CtxSetCurrent
  var cuCtxSynchronize: CtxSynchronize
  var cuModuleLoadData: ModuleLoadData
  var cuModuleUnload: ModuleUnload
  var cuModuleGetFunction: ModuleGetFunction
  var cuMemAlloc: MemAlloc
  var cuMemFree: MemFree
  var cuMemGetInfo: MemGetInfo
  var cuMemcpyHtoD: MemcpyHtoD
  var cuMemcpyDtoH: MemcpyDtoH
  var cuLaunchKernel: LaunchKernel
  var cuGetErrorName: GetErrorText
  var cuGetErrorString: GetErrorText

  /// Resolves every entry point, failing on the first one the library lacks.
  init(from library: any CUDASymbolSource) throws {
    cuInit = try library.resolve("cuInit")
    cuDriverGetVersion = try library.resolve("cuDriverGetVersion")
    cuDeviceGetCount = try library.resolve("cuDeviceGetCount")
    cuDeviceGet = try library.resolve("cuDeviceGet")
    cuDeviceGetName = try library.resolve("cuDeviceGetName")
    cuDeviceGetAttribute = try library.resolve("cuDeviceGetAttribute")
    cuDevicePrimaryCtxRetain = try library.resolve("cuDevicePrimaryCtxRetain")
    cuDevicePrimaryCtxRelease = try library.resolve("cuDevicePrimaryCtxRelease_v2")
    cuCtxSetCurrent = try library.resolve("cuCtxSetCurrent")
    cuCtxSynchronize = try library.resolve("cuCtxSynchronize")
    cuModuleLoadData = try library.resolve("cuModuleLoadData")
    cuModuleUnload = try library.resolve("cuModuleUnload")
    cuModuleGetFunction = try library.resolve("cuModuleGetFunction")
    cuMemAlloc = try library.resolve("cuMemAlloc_v2")
    cuMemFree = try library.resolve("cuMemFree_v2")
    cuMemGetInfo = try library.resolve("cuMemGetInfo_v2")
    cuMemcpyHtoD = try library.resolve("cuMemcpyHtoD_v2")
    cuMemcpyDtoH = try library.resolve("cuMemcpyDtoH_v2")
    cuLaunchKernel = try library.resolve("cuLaunchKernel")
    cuGetErrorName = try library.resolve("cuGetErrorName")
    cuGetErrorString = try library.resolve("cuGetErrorString")
  }
}

/// NVRTC entry points (nvrtc.h).
struct NVRTCSymbols {
  typealias Version = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?) -> nvrtcResult
  typealias GetNumSupportedArchs = @convention(c) (UnsafeMutablePointer<Int32>?) -> nvrtcResult
  typealias GetSupportedArchs = @convention(c) (UnsafeMutablePointer<Int32>?) -> nvrtcResult
  typealias CreateProgram = @convention(c) (
    UnsafeMutablePointer<nvrtcProgram?>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?, Int32,
    UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?) -> nvrtcResult
  typealias DestroyProgram = @convention(c) (UnsafeMutablePointer<nvrtcProgram?>?) -> nvrtcResult
  typealias CompileProgram = @convention(c) (nvrtcProgram?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> nvrtcResult
  typealias GetSize = @convention(c) (nvrtcProgram?, UnsafeMutablePointer<Int>?) -> nvrtcResult
  typealias GetBytes = @convention(c) (nvrtcProgram?, UnsafeMutablePointer<CChar>?) -> nvrtcResult
  typealias GetErrorString = @convention(c) (nvrtcResult) -> UnsafePointer<CChar>?

  var nvrtcVersion: Version
  var nvrtcGetNumSupportedArchs: GetNumSupportedArchs?
  var nvrtcGetSupportedArchs: GetSupportedArchs?
  var nvrtcCreateProgram: CreateProgram
  var nvrtcDestroyProgram: DestroyProgram
  var nvrtcCompileProgram: CompileProgram
  var nvrtcGetProgramLogSize: GetSize
  var nvrtcGetProgramLog: GetBytes
  var nvrtcGetPTXSize: GetSize
  var nvrtcGetPTX: GetBytes
  /// Absent before CUDA 11.1; then only PTX is produced.
  var nvrtcGetCUBINSize: GetSize?
  var nvrtcGetCUBIN: GetBytes?
  var nvrtcGetErrorString: GetErrorString

  /// Resolves every entry point; the optional ones may be missing from older releases.
  init(from library: any CUDASymbolSource) throws {
    nvrtcVersion = try library.resolve("nvrtcVersion")
    nvrtcGetNumSupportedArchs = library.resolveIfPresent("nvrtcGetNumSupportedArchs")
    nvrtcGetSupportedArchs = library.resolveIfPresent("nvrtcGetSupportedArchs")
    nvrtcCreateProgram = try library.resolve("nvrtcCreateProgram")
    nvrtcDestroyProgram = try library.resolve("nvrtcDestroyProgram")
    nvrtcCompileProgram = try library.resolve("nvrtcCompileProgram")
    nvrtcGetProgramLogSize = try library.resolve("nvrtcGetProgramLogSize")
    nvrtcGetProgramLog = try library.resolve("nvrtcGetProgramLog")
    nvrtcGetPTXSize = try library.resolve("nvrtcGetPTXSize")
    nvrtcGetPTX = try library.resolve("nvrtcGetPTX")
    nvrtcGetCUBINSize = library.resolveIfPresent("nvrtcGetCUBINSize")
    nvrtcGetCUBIN = library.resolveIfPresent("nvrtcGetCUBIN")
    nvrtcGetErrorString = try library.resolve("nvrtcGetErrorString")
  }
}
