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

  /// Whether this CPU and its OS run this kernel (AVX-512 needs CPUID's F/BW/VL/DQ and the OS's ZMM state).
  /// - Complexity: O(1) (CPUID is read once per process).
  public var isSupported: Bool { ga_isa_supported(isa) != 0 }

  /// The kernels this machine runs, `.automatic` excluded, narrowest first.
  public static var supported: [CPUKernel] { [.portable, .avx2, .avx512].filter(\.isSupported) }

  /// The widest kernel this machine runs.
  public static var widest: CPUKernel {
    switch ga_widest_isa() {
    case Int32(GA_ISA_AVX512): return .avx512
    case Int32(GA_ISA_AVX2): return .avx2
    default: return .portable
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
      throw GraphAttentionError(.option, "the \(choice.rawValue) CPU kernel does not run on this CPU (widest: \(CPUKernel.widest.rawValue))",
                                fix: "choose one of \(CPUKernel.supported.map(\.rawValue).joined(separator: ", ")) or automatic")
    }
    return choice
  }
}
