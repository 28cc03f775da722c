import _GraphAttentionKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension CPUKernel {
  /// The environment variable that chooses the kernel `.automatic` runs: `portable`, `avx2`, `avx512` or
  /// `automatic` (the test scripts run the whole suite once per path with it).
  public static let environmentVariable = "GRAPH_ATTENTION_KERNEL"

  /// The environment variable that caps the kernels the engine treats as present: `portable`, `avx2` or
  /// `avx512`. With `GRAPH_ATTENTION_MAX_KERNEL=avx2` an AVX-512 machine behaves as an AVX2-only one
  /// everywhere (`supported`, `widest`, `.automatic`, the C ABI), so a test that assumes AVX-512 fails
  /// there too. Read once per process, at the first kernel query.
  public static let capEnvironmentVariable = "GRAPH_ATTENTION_MAX_KERNEL"

  /// Whether this CPU and its OS run this kernel (AVX-512 needs CPUID's F/BW/VL/DQ and the OS's ZMM state),
  /// and `GRAPH_ATTENTION_MAX_KERNEL` does not cap it away.
  /// - Complexity: O(1) (CPUID is read once per process).
  public var isSupported: Bool { ga_isa_supported(isa) != 0 }

  /// The widest kernel this CPU runs, ignoring `GRAPH_ATTENTION_MAX_KERNEL`.
  public static var detectedWidest: CPUKernel { CPUKernel(isaCode: ga_detected_isa()) }

  /// The kernels this machine runs, `.automatic` excluded, narrowest first.
  public static var supported: [CPUKernel] { [.portable, .avx2, .avx512].filter(\.isSupported) }

  /// The widest kernel the engine uses on this machine: the CPU's widest, lowered to
  /// `GRAPH_ATTENTION_MAX_KERNEL`'s cap.
  public static var widest: CPUKernel { CPUKernel(isaCode: ga_widest_isa()) }

  private init(isaCode: Int32) {
    switch isaCode {
    case Int32(GA_ISA_AVX512): self = .avx512
    case Int32(GA_ISA_AVX2): self = .avx2
    default: self = .portable
    }
  }

  /// Why the widest kernel is what it is, for error messages: "avx2", or "avx2, capped by
  /// GRAPH_ATTENTION_MAX_KERNEL=avx2 on an avx512 CPU".
  static var widestDescription: String {
    let widest = CPUKernel.widest, detected = CPUKernel.detectedWidest
    guard widest != detected else { return widest.rawValue }
    return "\(widest.rawValue), capped by \(capEnvironmentVariable)=\(widest.rawValue) on an \(detected.rawValue) CPU"
  }

  /// Checks `GRAPH_ATTENTION_MAX_KERNEL`: unset, or one of `portable`, `avx2`, `avx512`.
  /// - Throws: `GraphAttentionError(.option)` naming the variable for any other value.
  static func checkCapEnvironment() throws {
    guard let raw = getenv(capEnvironmentVariable) else { return }
    let name = String(cString: raw)
    guard let kernel = CPUKernel(rawValue: name.lowercased()), kernel != .automatic else {
      throw GraphAttentionError(.option, "\(capEnvironmentVariable)=\(name) names no CPU kernel",
                                fix: "set it to portable, avx2 or avx512, or unset it")
    }
  }

  /// The C kernels' code for this kernel.
  var isa: Int32 {
    switch self {
    case .automatic: return Int32(GA_ISA_AUTOMATIC)
    case .portable: return Int32(GA_ISA_PORTABLE)
    case .avx2: return Int32(GA_ISA_AVX2)
    case .avx512: return Int32(GA_ISA_AVX512)
    }
  }

  /// The concrete kernel a call runs: `.automatic` becomes `GRAPH_ATTENTION_KERNEL`'s choice or the widest.
  /// - Throws: `GraphAttentionError(.option)` for a kernel this CPU does not run, or an unknown name in
  ///   the environment variable.
  public func resolved() throws -> CPUKernel {
    try CPUKernel.checkCapEnvironment()
    var choice = self
    if self == .automatic, let raw = getenv(CPUKernel.environmentVariable) {
      let name = String(cString: raw)
      guard let named = CPUKernel(rawValue: name.lowercased()) else {
        throw GraphAttentionError(.option, "\(CPUKernel.environmentVariable)=\(name) names no CPU kernel",
                                  fix: "set it to one of \(CPUKernel.allCases.map(\.rawValue).joined(separator: ", ")), or unset it")
      }
      choice = named
    }
    if choice == .automatic { return CPUKernel.widest }
    guard choice.isSupported else {
      throw GraphAttentionError(.option, "the \(choice.rawValue) CPU kernel does not run on this CPU (widest: \(CPUKernel.widestDescription))",
                                fix: "choose one of \(CPUKernel.supported.map(\.rawValue).joined(separator: ", ")) or automatic")
    }
    return choice
  }
}
