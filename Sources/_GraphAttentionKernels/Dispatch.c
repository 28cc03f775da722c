// Which kernel runs: the instruction sets this CPU and OS run (CPUID, XGETBV), lowered to the cap
// GRAPH_ATTENTION_MAX_KERNEL names; the choice of tile kernel per tile; and the FMA and read loops that
// measure the machine's limits (MachineLimits).
#include "KernelsInternal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if GA_X86
#include <cpuid.h>
#include <immintrin.h>
static int widest_isa = -1;

// AVX-512 needs the CPU's features (CPUID leaf 7: F, BW, VL, DQ; BMI2 for pext) and the OS's consent:
// OSXSAVE set and XCR0 enabling SSE, AVX, opmask, ZMM_Hi256 and Hi16_ZMM state (bits 1, 2, 5, 6, 7).
static int detect_widest_isa(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return GA_ISA_PORTABLE;
  const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1, avx = (c >> 28) & 1;
  if (!osxsave || !avx) return GA_ISA_PORTABLE;
  unsigned xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6) != 0x6) return GA_ISA_PORTABLE;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return GA_ISA_PORTABLE;
  const int avx2 = (b >> 5) & 1, bmi2 = (b >> 8) & 1;
  const int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
  if (!(avx2 && fma && f16c)) return GA_ISA_PORTABLE;
  if (avx512f && avx512dq && avx512bw && avx512vl && bmi2 && (xcr0_lo & 0xE0) == 0xE0) return GA_ISA_AVX512;
  return GA_ISA_AVX2;
}

int ga_detected_isa(void) {
  if (widest_isa < 0) widest_isa = detect_widest_isa();  // idempotent: a race writes the same value
  return widest_isa;
}

int ga_widest_isa(void) {
  const int detected = ga_detected_isa(), cap = ga_isa_cap();
  return cap != GA_ISA_AUTOMATIC && cap < detected ? cap : detected;
}

int ga_uses_avx2(void) { return ga_widest_isa() >= GA_ISA_AVX2; }
#else
int ga_detected_isa(void) { return GA_ISA_PORTABLE; }
int ga_widest_isa(void) { return GA_ISA_PORTABLE; }
int ga_uses_avx2(void) { return 0; }
#endif

int ga_isa_supported(int isa) { return isa <= ga_widest_isa(); }

static int isa_cap = -1;

// Read once: tests and CI set the cap before the first call, so every later query sees the same value.
int ga_isa_cap(void) {
  if (isa_cap < 0) {
    const char *raw = getenv("GRAPH_ATTENTION_MAX_KERNEL");
    int cap = GA_ISA_AUTOMATIC;
    if (raw && strcasecmp(raw, "portable") == 0) cap = GA_ISA_PORTABLE;
    else if (raw && strcasecmp(raw, "avx2") == 0) cap = GA_ISA_AVX2;
    else if (raw && strcasecmp(raw, "avx512") == 0) cap = GA_ISA_AVX512;
    isa_cap = cap;  // idempotent, as above
  }
  return isa_cap;
}

int64_t ga_pack_floats(int key_dim, int value_dim) {
  // Q^T (16 x d), a block's scores (128 x 16: the AVX-512 kernel's block; the AVX2 one uses 64), and fp32 copies
  // of a block's fp16/bf16 K and V rows (the AVX2 kernel keeps O^T, 16 x d_v, in the part of them it leaves).
  return 16 * (int64_t)key_dim + 128 * 16 + 128 * (int64_t)key_dim + 128 * (int64_t)((value_dim + 15) & ~15);
}

void ga_tile_attend(const ga_tile *tile) {
  int isa = tile->force_portable ? GA_ISA_PORTABLE : tile->isa;
  if (isa == GA_ISA_AUTOMATIC || !ga_isa_supported(isa)) isa = ga_widest_isa();
#if GA_X86
  // Tiles of groups of 4 rows run with the rows in the lanes (AVX-512, else AVX2) given a pack buffer;
  // single rows (scattered keys, nothing to share a pack with) take the AVX2 dot-product kernel.
  if (isa == GA_ISA_AVX512 && tile->pack && tile->rows % 4 == 0) {
    ga_tile_attend_avx512(tile);
    return;
  }
  if (isa >= GA_ISA_AVX2 && tile->pack && tile->rows % 4 == 0) {
    ga_tile_attend_avx2_lanes(tile);
    return;
  }
  // The AVX2 kernel with dot products handles 1 row or groups of 4; other row counts take the portable path.
  if (isa >= GA_ISA_AVX2 && (tile->rows == 1 || tile->rows % 4 == 0)) {
    ga_tile_attend_avx2_rows(tile);
    return;
  }
#endif
  ga_tile_attend_portable(tile);
}

// MARK: - Machine limits

#if GA_X86
__attribute__((target("avx2,fma"))) static double fma_loop_avx2(int64_t iterations) {
  // Ten independent chains cover the FMA latency (4-5 cycles) on both FMA pipes.
  __m256 a0 = _mm256_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0;
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; i++) {
    a0 = _mm256_fmadd_ps(a0, x, y); a1 = _mm256_fmadd_ps(a1, x, y); a2 = _mm256_fmadd_ps(a2, x, y);
    a3 = _mm256_fmadd_ps(a3, x, y); a4 = _mm256_fmadd_ps(a4, x, y); a5 = _mm256_fmadd_ps(a5, x, y);
    a6 = _mm256_fmadd_ps(a6, x, y); a7 = _mm256_fmadd_ps(a7, x, y); a8 = _mm256_fmadd_ps(a8, x, y);
    a9 = _mm256_fmadd_ps(a9, x, y);
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                           _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
  s = _mm256_add_ps(s, _mm256_add_ps(a8, a9));
  float lanes[8];
  _mm256_storeu_ps(lanes, s);
  return lanes[0] + lanes[7];
}
#endif

double ga_fma_loop_isa(int isa, int64_t iterations) {
#if GA_X86
  if (isa == GA_ISA_AVX512 && ga_isa_supported(GA_ISA_AVX512)) return ga_fma_loop_avx512(iterations);
  if (isa >= GA_ISA_AVX2 && ga_isa_supported(GA_ISA_AVX2)) return fma_loop_avx2(iterations);
#endif
  float a[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  for (int64_t i = 0; i < iterations * 10; i++)
    for (int h = 0; h < 8; h++) a[h] = a[h] * 0.999999f + 1e-7f;
  return a[0];
}

int64_t ga_fma_loop_isa_flops_per_iteration(int isa) {
  return isa == GA_ISA_AVX512 && ga_isa_supported(GA_ISA_AVX512) ? 10 * 16 * 2 : 10 * 8 * 2;
}

double ga_fma_loop(int64_t iterations) { return ga_fma_loop_isa(ga_widest_isa(), iterations); }

int64_t ga_fma_loop_flops_per_iteration(void) { return ga_fma_loop_isa_flops_per_iteration(ga_widest_isa()); }

double ga_read_sum(const float *data, int64_t count) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) { s0 += data[i]; s1 += data[i + 1]; s2 += data[i + 2]; s3 += data[i + 3]; }
  for (; i < count; i++) s0 += data[i];
  return (double)s0 + s1 + s2 + s3;
}
