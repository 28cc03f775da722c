// Conversions between fp32 and the 16-bit storage types (IEEE binary16, bfloat16), and non-finite scans.
//
// Without F16C enabled at compile time (the package uses no unsafeFlags), Swift's Float16(x) is a
// library call per element (about 5-8 ns on this project's machine); the F16C versions convert 8
// elements per instruction. The portable versions are branch-free so that the compiler vectorises
// them for the baseline ISA, and produce the same bits as the F16C ones.
#include "GraphAttentionConvert.h"
#include "GraphAttentionKernels.h"
#include "HalfPrecision.h"

#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define GA_CONVERT_X86 1
#include <immintrin.h>
#endif

// MARK: - Portable, one element: HalfPrecision.h

void ga_f16_to_f32_portable(const uint16_t *src, float *dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = ga_f16_to_f32_one(src[i]);
}

void ga_f32_to_f16_portable(const float *src, uint16_t *dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = ga_f32_to_f16_one(src[i]);
}

void ga_bf16_to_f32_portable(const uint16_t *src, float *dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = ga_bf16_to_f32_one(src[i]);
}

void ga_f32_to_bf16_portable(const float *src, uint16_t *dst, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = ga_f32_to_bf16_one(src[i]);
}

// MARK: - F16C / AVX2, 8 elements at a time

#if GA_CONVERT_X86
#define GA_F16C __attribute__((target("f16c,avx2")))

GA_F16C static void f16_to_f32_f16c(const uint16_t *src, float *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i)));
    const __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i + 8)));
    _mm256_storeu_ps(dst + i, a);
    _mm256_storeu_ps(dst + i + 8, b);
  }
  for (; i < n; i++) dst[i] = ga_f16_to_f32_one(src[i]);
}

GA_F16C static void f32_to_f16_f16c(const float *src, uint16_t *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(src + i + 8), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128((__m128i *)(dst + i), a);
    _mm_storeu_si128((__m128i *)(dst + i + 8), b);
  }
  for (; i < n; i++) dst[i] = ga_f32_to_f16_one(src[i]);
}

GA_F16C static void bf16_to_f32_avx2(const uint16_t *src, float *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
    _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(wide, 16));
  }
  for (; i < n; i++) dst[i] = ga_bf16_to_f32_one(src[i]);
}

GA_F16C static void f32_to_bf16_avx2(const float *src, uint16_t *dst, int64_t n) {
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i bias = _mm256_set1_epi32(0x7FFF);
  const __m256i magnitude_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i infinity = _mm256_set1_epi32(0x7F800000);
  const __m256i quiet = _mm256_set1_epi32(0x0040);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i u = _mm256_loadu_si256((const __m256i *)(src + i));
    const __m256i high = _mm256_srli_epi32(u, 16);
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(high, one)), 16);
    // Magnitudes compare correctly as signed 32-bit integers (the sign bit is cleared).
    const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, magnitude_mask), infinity);
    const __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(high, quiet), is_nan);
    // Every lane is below 2^16, so the unsigned-saturating pack is exact.
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128((__m128i *)(dst + i), packed);
  }
  for (; i < n; i++) dst[i] = ga_f32_to_bf16_one(src[i]);
}

static int f16c_available = -1;

int ga_convert_uses_f16c(void) {
  if (f16c_available < 0) {
    // The AVX2 level implies F16C (ga_detected_isa checks both), and follows GRAPH_ATTENTION_MAX_KERNEL.
    f16c_available = ga_isa_supported(GA_ISA_AVX2);
  }
  return f16c_available;
}
#else
int ga_convert_uses_f16c(void) { return 0; }
#endif

void ga_f16_to_f32(const uint16_t *src, float *dst, int64_t n) {
#if GA_CONVERT_X86
  if (ga_convert_uses_f16c()) { f16_to_f32_f16c(src, dst, n); return; }
#endif
  ga_f16_to_f32_portable(src, dst, n);
}

void ga_f32_to_f16(const float *src, uint16_t *dst, int64_t n) {
#if GA_CONVERT_X86
  if (ga_convert_uses_f16c()) { f32_to_f16_f16c(src, dst, n); return; }
#endif
  ga_f32_to_f16_portable(src, dst, n);
}

void ga_bf16_to_f32(const uint16_t *src, float *dst, int64_t n) {
#if GA_CONVERT_X86
  if (ga_convert_uses_f16c()) { bf16_to_f32_avx2(src, dst, n); return; }
#endif
  ga_bf16_to_f32_portable(src, dst, n);
}

void ga_f32_to_bf16(const float *src, uint16_t *dst, int64_t n) {
#if GA_CONVERT_X86
  if (ga_convert_uses_f16c()) { f32_to_bf16_avx2(src, dst, n); return; }
#endif
  ga_f32_to_bf16_portable(src, dst, n);
}

// MARK: - Non-finite scans

// Blocks are tested with a branch-free OR reduction (vectorised by the compiler, at the widest instruction set
// the CPU runs: the scan runs before, or in, every checked call, and at 128 bits it cost 3-4% of a window
// forward); only a block that holds a non-finite value is searched element by element.
#define GA_SCAN_BLOCK 4096

#define GA_DEFINE_SCAN_BODY(name, attributes, type, exponent_mask)                 \
  attributes int64_t name(const type *src, int64_t n) {                            \
    for (int64_t start = 0; start < n; start += GA_SCAN_BLOCK) {                   \
      const int64_t end = n - start < GA_SCAN_BLOCK ? n : start + GA_SCAN_BLOCK;   \
      unsigned found = 0;                                                          \
      for (int64_t i = start; i < end; i++) {                                      \
        found |= (src[i] & (exponent_mask)) == (exponent_mask);                    \
      }                                                                            \
      if (found) {                                                                 \
        for (int64_t i = start; i < end; i++) {                                    \
          if ((src[i] & (exponent_mask)) == (exponent_mask)) return i;             \
        }                                                                          \
      }                                                                            \
    }                                                                              \
    return -1;                                                                     \
  }

#if GA_CONVERT_X86
#define GA_DEFINE_SCAN(name, type, exponent_mask)                                                              \
  GA_DEFINE_SCAN_BODY(name##_portable, static, type, exponent_mask)                                           \
  GA_DEFINE_SCAN_BODY(name##_avx2, static __attribute__((target("avx2"))), type, exponent_mask)              \
  GA_DEFINE_SCAN_BODY(name##_avx512, static __attribute__((target("avx512f,avx512bw,avx512vl"))), type, exponent_mask) \
  int64_t name(const type *src, int64_t n) {                                                                  \
    switch (ga_widest_isa()) {                                                                                \
      case GA_ISA_AVX512: return name##_avx512(src, n);                                                       \
      case GA_ISA_AVX2: return name##_avx2(src, n);                                                           \
      default: return name##_portable(src, n);                                                                \
    }                                                                                                         \
  }
#else
#define GA_DEFINE_SCAN(name, type, exponent_mask) GA_DEFINE_SCAN_BODY(name, , type, exponent_mask)
#endif

static int64_t ga_first_nonfinite_bits32(const uint32_t *src, int64_t n);

GA_DEFINE_SCAN(ga_first_nonfinite_bits32, uint32_t, 0x7F800000u)
GA_DEFINE_SCAN(ga_first_nonfinite_f16, uint16_t, 0x7C00u)
GA_DEFINE_SCAN(ga_first_nonfinite_bf16, uint16_t, 0x7F80u)

int64_t ga_first_nonfinite_f32(const float *src, int64_t n) {
  // fp32 values are scanned as their bit patterns (the memory is the same).
  return ga_first_nonfinite_bits32((const uint32_t *)(const void *)src, n);
}
