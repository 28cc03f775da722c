/// A failure reported by the CUDA driver (`CUresult`) or NVRTC (`nvrtcResult`), with the library's own
/// name for it.
///
/// Problems the user can fix before anything runs (no driver, no NVRTC, too little device memory,
/// unsupported sizes) are `GraphAttentionError`s of kind `.device`; this type is for calls that fail
/// once the libraries are loaded, and keeps the code and the call so the failure can be looked up.
///
/// ```swift
/// do { _ = try attention(query: q, key: k, value: v, graph: g, options: .init(device: .cuda())) }
/// catch let error as CUDAError where error.name == "CUDA_ERROR_OUT_OF_MEMORY" { ... }
/// // device: cuLaunchKernel failed: CUDA_ERROR_LAUNCH_FAILED (719), unspecified launch failure.
/// ```
public struct CUDAError: Error, Equatable, CustomStringConvertible, Sendable {
  /// Which library reported the failure.
  public enum Library: String, Equatable, Sendable {
    /// The driver API (`libcuda.so.1`), codes of type `CUresult`.
    case driver
    /// The runtime compiler (`libnvrtc.so`), codes of type `nvrtcResult`.
    case nvrtc
  }

  /// The library that reported it.
  public var library: Library
  /// The C function that failed, e.g. `cuLaunchKernel`.
  public var call: String
  /// The raw `CUresult` or `nvrtcResult`.
  public var code: Int32
  /// The library's name for the code, e.g. `CUDA_ERROR_LAUNCH_FAILED` (from `cuGetErrorName`).
  public var name: String
  /// The library's explanation (from `cuGetErrorString` / `nvrtcGetErrorString`), possibly empty.
  public var message: String
  /// Extra detail: the NVRTC compile log, or what the call was doing.
  public var detail: String

  /// Creates an error from its parts; the backend fills them from the library.
  public init(library: Library, call: String, code: Int32, name: String, message: String = "", detail: String = "") {
    self.library = library
    self.call = call
    self.code = code
    self.name = name
    self.message = message
    self.detail = detail
  }

  /// `"device: <call> failed: <NAME> (<code>), <message>. <detail>"`, one line unless a compile log follows.
  public var description: String {
    var text = "device: \(call) failed: \(name) (\(code))"
    if !message.isEmpty { text += ", \(message)" }
    if !detail.isEmpty { text += ". \(detail)" }
    if let hint = hint { text += ". Fix: \(hint)" }
    return text + (text.hasSuffix(".") ? "" : ".")
  }

  /// What usually helps, for the codes a user can act on.
  var hint: String? {
    switch name {
    case "CUDA_ERROR_OUT_OF_MEMORY": return "use fewer tokens, heads or a smaller batch, fp16/bf16 storage, or free GPU memory"
    case "CUDA_ERROR_NO_DEVICE": return "no GPU is visible (check CUDA_VISIBLE_DEVICES and nvidia-smi), or run with --device cpu"
    case "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "CUDA_ERROR_INVALID_IMAGE", "CUDA_ERROR_NO_BINARY_FOR_GPU":
      return "the NVRTC found is newer than the driver: set GRAPH_ATTENTION_NVRTC to the directory of an NVRTC no newer than the driver's CUDA version, or update the driver"
    default: return nil
    }
  }
}
