import Dispatch
import _GraphAttentionKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// This machine's measured ceilings, the denominators of "percent of peak".
public enum MachineLimits {
  /// The fp32 FMA peak in FLOP/s with `threads` threads, measured by running ten independent
  /// 8-lane FMA chains per thread (AVX2/FMA where available) for about `seconds`.
  ///
  /// Take the best of a few calls on a shared machine: other processes only lower it.
  /// - Complexity: about `seconds` of wall time on `threads` cores.
  public static func measureFMAPeak(threads: Int, seconds: Double = 0.3) -> Double {
    precondition(threads >= 1)
    // Calibrate the iteration count on one thread, then run all threads together.
    var iterations: Int64 = 1 << 20
    while true {
      let start = now()
      blackHole(ga_fma_loop(iterations))
      let elapsed = now() - start
      if elapsed > seconds / 4 { iterations = Int64(Double(iterations) * seconds / elapsed); break }
      iterations *= 4
    }
    let count = iterations
    let start = now()
    DispatchQueue.concurrentPerform(iterations: threads) { _ in blackHole(ga_fma_loop(count)) }
    let elapsed = now() - start
    return Double(count) * Double(ga_fma_loop_flops_per_iteration()) * Double(threads) / elapsed
  }

  /// Streaming read bandwidth in bytes per second with `threads` threads over `bytes` of memory.
  /// - Complexity: allocates and touches `bytes`; a few passes over it.
  public static func measureReadBandwidth(threads: Int, bytes: Int = 1 << 30) -> Double {
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
