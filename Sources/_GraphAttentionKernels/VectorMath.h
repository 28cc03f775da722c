// The vector math of the C kernels (forward tile kernels and backward), for 8 and 16 lanes and one lane:
// e^x, tanh, and the score modifiers (softcap, ALiBi) built on them. Private to this target: included by
// the kernel files, not part of include/.
//
// e^x: Cephes' polynomial on x = n ln2 + r, |r| <= ln2/2: relative error below 2e-7 for x in [-87, 88].
// Lanes below -87 (subnormal results) and -inf give exactly 0; x above 88 is clamped (e^88 < FLT_MAX), so
// no lane overflows to inf or NaN. Online-softmax arguments are <= 0; the backward's exp(s - LSE) may be
// slightly positive through rounding; masked lanes may hold anything, and callers zero them afterwards.
// Inlined into each caller: the functions ask only for the features they use, a subset of every caller's.
#ifndef GRAPH_ATTENTION_VECTOR_MATH_H
#define GRAPH_ATTENTION_VECTOR_MATH_H

#include <stdint.h>

#include "GraphAttentionKernels.h"

// tanh: Eigen's rational approximation (odd degree-13 over even degree-6 polynomials) on [-7.9988, 7.9988],
// clamped outside (tanh is 1 to fp32 there) and x itself below 4e-4; relative error below 3e-7 over all
// of fp32 (measured against double tanh in steps of 1e-5 over [-20, 20]). Every path (scalar, AVX2,
// AVX-512) evaluates the same polynomials in the same order, so paths agree to rounding.
#define GA_TANH_CLAMP 7.99881172180175781f
#define GA_TANH_TINY 0.0004f
#define GA_TANH_NUMERATOR(X2, MADD)                                                                         \
  MADD(X2, MADD(X2, MADD(X2, MADD(X2, MADD(X2, MADD(X2, C(-2.76076847742355e-16f), C(2.00018790482477e-13f)), \
  C(-8.60467152213735e-11f)), C(5.12229709037114e-08f)), C(1.48572235717979e-05f)), C(6.37261928875436e-04f)), \
  C(4.89352455891786e-03f))
#define GA_TANH_DENOMINATOR(X2, MADD) \
  MADD(X2, MADD(X2, MADD(X2, C(1.19825839466702e-06f), C(1.18534705686654e-04f)), C(2.26843463243900e-03f)), C(4.89352518554385e-03f))

static inline float ga_scalar_madd(float a, float b, float c) { return a * b + c; }

/// tanh(x) for one lane, with the vector kernels' polynomial.
static inline float ga_tanh_scalar(float x) {
  if (x < GA_TANH_TINY && x > -GA_TANH_TINY) return x;
  x = x > GA_TANH_CLAMP ? GA_TANH_CLAMP : (x < -GA_TANH_CLAMP ? -GA_TANH_CLAMP : x);
  const float x2 = x * x;
#define C(v) (v)
  const float p = x * GA_TANH_NUMERATOR(x2, ga_scalar_madd), q = GA_TANH_DENOMINATOR(x2, ga_scalar_madd);
#undef C
  return p / q;
}

/// Whether a head's scores are modified at all (the kernels skip the modifier code otherwise).
static inline int ga_has_score_mods(const ga_score_mods *m) { return m->softcap > 0 || m->alibi_slope != 0; }

/// The modified score of one (row, column) pair: softcap, then the ALiBi bias of `row - column` (positions,
/// see `ga_score_mods`). With `slope` non-NULL, also d(modified)/d(s) of the softcap, 1 - tanh^2 (1 without).
static inline float ga_modify_score_scalar(const ga_score_mods *m, float s, int64_t row_minus_column, float *slope) {
  if (m->softcap > 0) {
    const float t = ga_tanh_scalar(s * (1.0f / m->softcap));
    s = m->softcap * t;
    if (slope) *slope = 1.0f - t * t;
  } else if (slope) {
    *slope = 1.0f;
  }
  if (m->alibi_slope != 0) {
    const int64_t distance = row_minus_column + m->alibi_offset;
    s -= m->alibi_slope * (float)(distance < 0 ? -distance : distance);
  }
  return s;
}

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

// In-register 8x8 transpose: r[i] holds row i on entry and column i on return (24 shuffles).
static inline __attribute__((target("avx2,fma"), always_inline)) void ga_transpose8_avx2(__m256 r[8]) {
  __m256 t[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; i++) {
    r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; i++) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; i++) r[i] = t[i];
}

// In-register 16x16 transpose: r[i] holds row i on entry and column i on return.
static inline __attribute__((target("avx512f"), always_inline)) void ga_transpose16_avx512(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // Per 128-bit lane k: u[4i + j] holds column 4k + j of rows 4i..4i+3.
  __m512 u[16];
  for (int i = 0; i < 4; i++) {
    const __m512d ab_lo = _mm512_castps_pd(t[4 * i]), ab_hi = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d cd_lo = _mm512_castps_pd(t[4 * i + 2]), cd_hi = _mm512_castps_pd(t[4 * i + 3]);
    u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(ab_lo, cd_lo));
    u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(ab_lo, cd_lo));
    u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(ab_hi, cd_hi));
    u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(ab_hi, cd_hi));
  }
  // A 4x4 transpose of 128-bit lanes for each j.
  for (int j = 0; j < 4; j++) {
    const __m512 x0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44), x1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
    const __m512 x2 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44), x3 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
    r[j] = _mm512_shuffle_f32x4(x0, x2, 0x88);
    r[4 + j] = _mm512_shuffle_f32x4(x0, x2, 0xDD);
    r[8 + j] = _mm512_shuffle_f32x4(x1, x3, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(x1, x3, 0xDD);
  }
}

static inline __attribute__((target("avx2,fma"), always_inline)) __m256 ga_madd_avx2(__m256 a, __m256 b, __m256 c) {
  return _mm256_fmadd_ps(a, b, c);
}

static inline __attribute__((target("avx2,fma"), always_inline)) __m256 ga_tanh_avx2(__m256 a) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 tiny = _mm256_cmp_ps(_mm256_andnot_ps(sign, a), _mm256_set1_ps(GA_TANH_TINY), _CMP_LT_OQ);
  const __m256 x = _mm256_min_ps(_mm256_max_ps(a, _mm256_set1_ps(-GA_TANH_CLAMP)), _mm256_set1_ps(GA_TANH_CLAMP));
  const __m256 x2 = _mm256_mul_ps(x, x);
#define C(v) _mm256_set1_ps(v)
  const __m256 p = _mm256_mul_ps(x, GA_TANH_NUMERATOR(x2, ga_madd_avx2)), q = GA_TANH_DENOMINATOR(x2, ga_madd_avx2);
#undef C
  return _mm256_blendv_ps(_mm256_div_ps(p, q), a, tiny);
}

static inline __attribute__((target("avx512f"), always_inline)) __m512 ga_madd_avx512(__m512 a, __m512 b, __m512 c) {
  return _mm512_fmadd_ps(a, b, c);
}

static inline __attribute__((target("avx512f"), always_inline)) __m512 ga_tanh_avx512(__m512 a) {
  const __mmask16 tiny = _mm512_cmp_ps_mask(_mm512_abs_ps(a), _mm512_set1_ps(GA_TANH_TINY), _CMP_LT_OQ);
  const __m512 x = _mm512_min_ps(_mm512_max_ps(a, _mm512_set1_ps(-GA_TANH_CLAMP)), _mm512_set1_ps(GA_TANH_CLAMP));
  const __m512 x2 = _mm512_mul_ps(x, x);
#define C(v) _mm512_set1_ps(v)
  const __m512 p = _mm512_mul_ps(x, GA_TANH_NUMERATOR(x2, ga_madd_avx512)), q = GA_TANH_DENOMINATOR(x2, ga_madd_avx512);
#undef C
  return _mm512_mask_blend_ps(tiny, _mm512_div_ps(p, q), a);
}

/// `ga_modify_score_scalar` on 8 lanes: `row_minus_column` holds each lane's position difference (int32);
/// with `slope` non-NULL, also the softcap's derivative per lane.
static inline __attribute__((target("avx2,fma"), always_inline)) __m256 ga_modify_scores_avx2(
    const ga_score_mods *m, __m256 s, __m256i row_minus_column, __m256 *slope) {
  if (m->softcap > 0) {
    const __m256 t = ga_tanh_avx2(_mm256_mul_ps(s, _mm256_set1_ps(1.0f / m->softcap)));
    s = _mm256_mul_ps(_mm256_set1_ps(m->softcap), t);
    if (slope) *slope = _mm256_fnmadd_ps(t, t, _mm256_set1_ps(1.0f));
  } else if (slope) {
    *slope = _mm256_set1_ps(1.0f);
  }
  if (m->alibi_slope != 0) {
    const __m256i distance = _mm256_abs_epi32(_mm256_add_epi32(row_minus_column, _mm256_set1_epi32(m->alibi_offset)));
    s = _mm256_fnmadd_ps(_mm256_set1_ps(m->alibi_slope), _mm256_cvtepi32_ps(distance), s);
  }
  return s;
}

/// `ga_modify_score_scalar` on 16 lanes.
static inline __attribute__((target("avx512f"), always_inline)) __m512 ga_modify_scores_avx512(
    const ga_score_mods *m, __m512 s, __m512i row_minus_column, __m512 *slope) {
  if (m->softcap > 0) {
    const __m512 t = ga_tanh_avx512(_mm512_mul_ps(s, _mm512_set1_ps(1.0f / m->softcap)));
    s = _mm512_mul_ps(_mm512_set1_ps(m->softcap), t);
    if (slope) *slope = _mm512_fnmadd_ps(t, t, _mm512_set1_ps(1.0f));
  } else if (slope) {
    *slope = _mm512_set1_ps(1.0f);
  }
  if (m->alibi_slope != 0) {
    const __m512i distance = _mm512_abs_epi32(_mm512_add_epi32(row_minus_column, _mm512_set1_epi32(m->alibi_offset)));
    s = _mm512_fnmadd_ps(_mm512_set1_ps(m->alibi_slope), _mm512_cvtepi32_ps(distance), s);
  }
  return s;
}
#endif

#endif
