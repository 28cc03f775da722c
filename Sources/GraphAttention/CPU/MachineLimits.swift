import Dispatch
import _GraphAttentionKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// This machine's measured ceilings, the denominators of "percent of peak".
package enum MachineLimits {
  /// The instruction set whose FMA `measureFMAPeak` times by default: the widest this CPU and OS run.
  package static var fmaKernel: CPUKernel { CPUKernel.widest }

  /// A name for `kernel`'s FMA width, for reports: "AVX-512" (16 lanes), "AVX2/FMA" (8 lanes) or
  /// "portable" (plain C, whatever the baseline compiler makes of it).
  package static func instructionSetName(_ kernel: CPUKernel) -> String {
    switch kernel == .automatic ? CPUKernel.widest : kernel {
    case .avx512: return "AVX-512"
    case .avx2: return "AVX2/FMA"
    default: return "portable"
    }
  }

  /// The fp32 FMA peak in FLOP/s with `threads` threads, measured by running ten independent FMA chains
  /// per thread, as wide as `kernel` (default: the widest this CPU runs; AVX-512 is twice AVX2 on Zen 4/5)
  /// for about `seconds`.
  ///
  /// Take the best of a few calls on a shared machine: other processes only lower it.
  /// - Complexity: about `seconds` of wall time on `threads` cores.
  package static func measureFMAPeak(threads: Int, seconds: Double = 0.3, kernel: CPUKernel = .automatic) -> Double {
    precondition(threads >= 1)
    let isa = (kernel == .automatic ? CPUKernel.widest : kernel).isa
    // Calibrate the iteration count on one thread, then run all threads together.
    var iterations: Int64 = 1 << 20
    while true {
      let start = now()
      blackHole(ga_fma_loop_isa(isa, iterations))
      let elapsed = now() - start
      if elapsed > seconds / 4 { iterations = Int64(Double(iterations) * seconds / elapsed); break }
      iterations *= 4
    }
    let count = iterations
    let start = now()
    DispatchQueue.concurrentPerform(iterations: threads) { _ in blackHole(ga_fma_loop_isa(isa, count)) }
    let elapsed = now() - start
    return Double(count) * Double(ga_fma_loop_isa_flops_per_iteration(isa)) * Double(threads) / elapsed
  }

  /// Streaming read bandwidth in bytes per second with `threads` threads over `bytes` of memory.
  /// - Complexity: allocates and touches `bytes`; a few passes over it.
  package static func measureReadBandwidth(threads: Int, bytes: Int = 1 << 30) -> Double {
    precondition(threads >= 1)
    let count = bytes / 4
    let data = UnsafeMutablePointer<Float>.allocate(capacity: count)
    defer { data.deallocate() }
    data.initialize(repeating: 1, count: count)
    let share = count / threads
    let pointer = UnsafeSendable(data)
    var best = Double.infinity
    for _ in 0..<3 {
      let start = now()
      DispatchQueue.concurrentPerform(iterations: threads) { t in
        blackHole(ga_read_sum(pointer.value + t * share, Int64(share)))
      }
      best = min(best, now() - start)
    }
    return Double(share * threads * 4) / best
  }

  @inline(never)
  private static func blackHole(_ value: Double) {
    if value == .pi { print("") }
  }

  private static func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
  }
}
