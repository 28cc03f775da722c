import Foundation
@testable import GraphAttention

/// Runs the CUDA kernels on the CPU, lane by lane, so their logic is tested on machines without a GPU.
///
/// `KernelSource.text` is compiled as host C++ (with `GA_HOST_EMULATION`) together with a prelude
/// that supplies the CUDA built-ins: the double intrinsics as plain IEEE operations (compiled with
/// `-ffp-contract=off`, so nothing is fused, as on the GPU), `threadIdx`/`blockIdx`, `mma.sync` from
/// its documented fragment layouts, and a warp of 32 lanes as fibers (`ucontext`) that meet at every `__shfl_sync`/`__syncwarp`: each lane runs
/// until its next warp operation, then the next lane; a warp operation where some lanes have
/// already returned is reported as a divergence error. The mock driver's `cuLaunchKernel` calls
/// `ga_emulate`, so a test exercises the real host path (encoding, upload, arguments, download)
/// and the real kernel code. It does not test GPU code generation, timing or memory ordering.
enum KernelEmulator {
  typealias Launch = @convention(c) (UnsafePointer<CChar>?, UInt32, UInt32, UInt32, UInt32,
                                     UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32

  /// The compiled emulator's entry point, or why it is unavailable.
  static let launch: Result<Launch, EmulatorUnavailable> = build()

  /// Why the emulator cannot run: no compiler on this machine (a reason to skip), or a failure to
  /// build or load it (a defect: the kernel source or the prelude does not compile).
  struct EmulatorUnavailable: Error, CustomStringConvertible {
    var description: String
    var noCompiler = false
  }

  static func build() -> Result<Launch, EmulatorUnavailable> {
    let compiler = ["/usr/bin/clang++", "/opt/swift/usr/bin/clang++", "/usr/bin/g++"]
      .first { FileManager.default.isExecutableFile(atPath: $0) }
      ?? ProcessInfo.processInfo.environment["PATH"]?.split(separator: ":").map { "\($0)/clang++" }
        .first { FileManager.default.isExecutableFile(atPath: $0) }
    guard let compiler else { return .failure(EmulatorUnavailable(description: "no clang++ or g++ found", noCompiler: true)) }
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("graph-attention-emulator-\(getpid())")
    try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let source = directory.appendingPathComponent("emulator.cpp")
    let library = directory.appendingPathComponent("emulator.so")
    do {
      try (prelude + KernelSource.text + launcher).write(to: source, atomically: true, encoding: .utf8)
    } catch {
      return .failure(EmulatorUnavailable(description: "cannot write \(source.path): \(error)"))
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: compiler)
    process.arguments = ["-std=c++17", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-w", "-o", library.path, source.path]
    let errors = Pipe()
    process.standardError = errors
    do { try process.run() } catch {
      return .failure(EmulatorUnavailable(description: "cannot run \(compiler): \(error)"))
    }
    let log = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      return .failure(EmulatorUnavailable(description: "\(compiler) failed on the emulated kernels:\n\(log)"))
    }
    guard let handle = dlopen(library.path, RTLD_NOW | RTLD_LOCAL), let symbol = dlsym(handle, "ga_emulate") else {
      return .failure(EmulatorUnavailable(description: "cannot load \(library.path)"))
    }
    try? FileManager.default.removeItem(at: directory)
    return .success(unsafeBitCast(symbol, to: Launch.self))
  }

  static let prelude = #"""
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    #include <ucontext.h>
    #include <functional>
    #include <vector>

    #define GA_HOST_EMULATION 1
    #define __device__
    #define __global__
    #define __forceinline__ inline
    #define __restrict__
    #define __launch_bounds__(n)

    struct ga_dim3 { unsigned x, y, z; };
    static ga_dim3 threadIdx, blockIdx, blockDim, gridDim;
    struct float4 { float x, y, z, w; };

    template <typename To, typename From> static inline To ga_bits(From f) { To t; memcpy(&t, &f, sizeof t); return t; }
    static inline long long __double_as_longlong(double x) { return ga_bits<long long>(x); }
    static inline double __longlong_as_double(long long x) { return ga_bits<double>(x); }
    static inline float __int_as_float(int x) { return ga_bits<float>(x); }
    static inline float __uint_as_float(unsigned x) { return ga_bits<float>(x); }
    static inline double __dmul_rn(double a, double b) { return a * b; }
    static inline double __dadd_rn(double a, double b) { return a + b; }
    static inline double __ddiv_rn(double a, double b) { return a / b; }

    static inline float ga_emulated_half_to_float(unsigned short h) {
      unsigned e = (h >> 10) & 0x1f, m = h & 0x3ff;
      float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 0x400), (int)e - 25);
      return (h & 0x8000) ? -v : v;
    }

    // A warp: 32 fibers that run in turn until their next warp-wide operation.
    static ucontext_t ga_main_context, ga_lane_context[32];
    static int ga_lane;
    static unsigned ga_warp_base;
    static bool ga_finished[32], ga_yielded[32];
    static unsigned long long ga_slot[32];
    static float* ga_shared_base;
    static std::function<void()> ga_body;

    static inline float* ga_emulated_shared() { return ga_shared_base; }
    static void ga_yield() {
      ga_yielded[ga_lane] = true;
      swapcontext(&ga_lane_context[ga_lane], &ga_main_context);
    }
    static inline void __syncwarp() { ga_yield(); }
    template <typename T> static T __shfl_sync(unsigned, T value, int source) {
      unsigned long long bits = 0;
      memcpy(&bits, &value, sizeof value);
      ga_slot[ga_lane] = bits;
      ga_yield();  // every lane has written its slot
      T result;
      memcpy(&result, &ga_slot[source & 31], sizeof result);
      ga_yield();  // every lane has read before any writes again
      return result;
    }
    template <typename T> static T __shfl_xor_sync(unsigned mask, T value, int laneMask) {
      return __shfl_sync(mask, value, (ga_lane ^ laneMask) & 31);
    }

    static inline unsigned short ga_emulated_float_to_half(float x) {
      _Float16 h = (_Float16)x;  // round to nearest even, as cvt.rn.f16.f32
      unsigned short bits;
      memcpy(&bits, &h, 2);
      return bits;
    }
    static inline unsigned short ga_emulated_float_to_bfloat16(float x) {
      if (x != x) return 0x7FC0;
      unsigned bits = ga_bits<unsigned>(x);
      return (unsigned short)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }

    // mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: the warp's fragments are exchanged, then each
    // lane computes its four accumulator elements from the documented layouts (see the kernel source).
    static unsigned ga_mma_a[32][4], ga_mma_b[32][2];
    static void ga_emulated_mma(int bf16, float* c, const unsigned* a, unsigned b0, unsigned b1) {
      for (int i = 0; i < 4; ++i) ga_mma_a[ga_lane][i] = a[i];
      ga_mma_b[ga_lane][0] = b0;
      ga_mma_b[ga_lane][1] = b1;
      ga_yield();
      auto value = [bf16](unsigned word, int high) {
        unsigned short bits = (unsigned short)(high ? word >> 16 : word & 0xFFFF);
        return bf16 ? ga_bits<float>((unsigned)bits << 16) : ga_emulated_half_to_float(bits);
      };
      auto A = [&](int r, int k) {
        return value(ga_mma_a[(r % 8) * 4 + (k % 8) / 2][(r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2);
      };
      auto B = [&](int k, int n) { return value(ga_mma_b[n * 4 + (k % 8) / 2][k >= 8 ? 1 : 0], k % 2); };
      const int g = ga_lane >> 2, t = ga_lane & 3;
      float d[4];
      for (int e = 0; e < 4; ++e) {
        const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
        float sum = c[e];
        for (int k = 0; k < 16; ++k) sum += A(row, k) * B(k, col);
        d[e] = sum;
      }
      ga_yield();  // every lane has read the fragments before any writes again
      for (int e = 0; e < 4; ++e) c[e] = d[e];
    }

    """#

  static let launcher = #"""

    static void ga_lane_entry() {
      ga_body();
      ga_finished[ga_lane] = true;
    }

    // Runs one warp to completion; 1 if lanes diverged at a warp operation.
    static int ga_run_warp() {
      static std::vector<char> stacks(32 * (256 << 10));
      for (int lane = 0; lane < 32; ++lane) {
        getcontext(&ga_lane_context[lane]);
        ga_lane_context[lane].uc_stack.ss_sp = &stacks[lane * (256 << 10)];
        ga_lane_context[lane].uc_stack.ss_size = 256 << 10;
        ga_lane_context[lane].uc_link = &ga_main_context;
        makecontext(&ga_lane_context[lane], ga_lane_entry, 0);
        ga_finished[lane] = false;
      }
      while (true) {
        int yielded = 0, finished = 0, alive = 0;
        for (int lane = 0; lane < 32; ++lane) {
          if (ga_finished[lane]) continue;
          ++alive;
          ga_lane = lane;
          ga_yielded[lane] = false;
          threadIdx.x = ga_warp_base + lane;
          swapcontext(&ga_main_context, &ga_lane_context[lane]);
          if (ga_finished[lane]) ++finished; else ++yielded;
        }
        if (alive == 0 || (yielded == 0)) return 0;
        if (finished > 0 || alive < 32) return 1;
      }
    }

    #define GA_ARG(T, i) (*(T*)parameters[i])
    #define GA_EMULATE(NAME, T)                                                                             \
      if (strcmp(kernel, #NAME) == 0)                                                                        \
        body = [parameters] {                                                                                \
          NAME(GA_ARG(const T*, 0), GA_ARG(const T*, 1), GA_ARG(const T*, 2), GA_ARG(float*, 3),             \
               GA_ARG(float*, 4), GA_ARG(float*, 5), GA_ARG(const ga_u64*, 6), GA_ARG(int, 7), GA_ARG(int, 8),\
               GA_ARG(ga_i64, 9), GA_ARG(ga_i64, 10), GA_ARG(ga_i64, 11), GA_ARG(ga_i64, 12),                \
               GA_ARG(ga_i64, 13), GA_ARG(ga_i64, 14), GA_ARG(ga_i64, 15), GA_ARG(float, 16), GA_ARG(int, 17)); \
        };

    // The mock cuLaunchKernel's target: 0 on success, 1 on divergence, 2 for an unknown kernel.
    extern "C" int ga_emulate(const char* kernel, unsigned gx, unsigned gy, unsigned bx, unsigned sharedBytes,
                              void** parameters) {
      std::function<void()> body;
      GA_EMULATE(ga_rows_f32, float)
      GA_EMULATE(ga_rows_f16, ga_f16)
      GA_EMULATE(ga_rows_bf16, ga_bf16)
      GA_EMULATE(ga_tile_f16_d32, ga_f16)
      GA_EMULATE(ga_tile_f16_d64, ga_f16)
      GA_EMULATE(ga_tile_f16_d128, ga_f16)
      GA_EMULATE(ga_tile_bf16_d32, ga_bf16)
      GA_EMULATE(ga_tile_bf16_d64, ga_bf16)
      GA_EMULATE(ga_tile_bf16_d128, ga_bf16)
      if (!body) return 2;
      ga_body = body;
      std::vector<float> shared(sharedBytes / 4 + 1);
      blockDim = {bx, 1, 1};
      gridDim = {gx, gy, 1};
      for (unsigned y = 0; y < gy; ++y) {
        for (unsigned x = 0; x < gx; ++x) {
          blockIdx = {x, y, 0};
          ga_shared_base = shared.data();
          for (unsigned warp = 0; warp < bx / 32; ++warp) {
            ga_warp_base = warp * 32;
            if (ga_run_warp() != 0) return 1;
          }
        }
      }
      return 0;
    }
    """#
}
