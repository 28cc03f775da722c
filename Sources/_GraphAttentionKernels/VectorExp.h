// The one vectorised e^x of the C kernels (forward tile kernels and backward), for 8 and 16 lanes. Private
// to this target: included by the kernel files, not part of include/.
//
// Cephes' polynomial on x = n ln2 + r, |r| <= ln2/2: relative error below 2e-7 for x in [-87, 88].
// Lanes below -87 (subnormal results) and -inf give exactly 0; x above 88 is clamped (e^88 < FLT_MAX), so
// no lane overflows to inf or NaN. Online-softmax arguments are <= 0; the backward's exp(s - LSE) may be
// slightly positive through rounding; masked lanes may hold anything, and callers zero them afterwards.
// Inlined into each caller: the functions ask only for the features they use, a subset of every caller's.
#ifndef GRAPH_ATTENTION_VECTOR_EXP_H
#define GRAPH_ATTENTION_VECTOR_EXP_H

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define GA_EXP_LOW -87.0f
#define GA_EXP_HIGH 88.0f
#define GA_EXP_MAGIC 12582912.0f  // 1.5 * 2^23: adding it rounds to an integer

static inline __attribute__((target("avx2,fma"), always_inline)) __m256 ga_exp_avx2(__m256 x) {
  const __m256 low = _mm256_set1_ps(GA_EXP_LOW);
  const __m256 under = _mm256_cmp_ps(x, low, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, low), _mm256_set1_ps(GA_EXP_HIGH));
  const __m256 magic = _mm256_set1_ps(GA_EXP_MAGIC);
  const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
  const __m256 n = _mm256_sub_ps(t, magic);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic)), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

static inline __attribute__((target("avx512f"), always_inline)) __m512 ga_exp_avx512(__m512 x) {
  const __m512 low = _mm512_set1_ps(GA_EXP_LOW);
  const __mmask16 under = _mm512_cmp_ps_mask(x, low, _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, low), _mm512_set1_ps(GA_EXP_HIGH));
  const __m512 magic = _mm512_set1_ps(GA_EXP_MAGIC);
  const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic);
  const __m512 n = _mm512_sub_ps(t, magic);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i bits = _mm512_slli_epi32(
      _mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(magic)), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mul_ps((__mmask16)~under, p, _mm512_castsi512_ps(bits));
}
#endif

#endif
