// The AVX2 + FMA tile kernels: up to GA_MAX_ROWS query rows against a shared key list, online softmax in blocks of
// GA_KEY_BLOCK keys (GraphAttentionKernels.h).
//
// Scores of a block are kept key-major, [key][row], so that one 8-lane vector holds two keys of four rows
// (or eight keys of one row): the 8 dot products of a register block reduce into one vector with a
// horizontal-add tree, the softmax runs on whole vectors, and P.V broadcasts one weight per (key, row).
#include "KernelsInternal.h"
#include "HalfPrecision.h"
#include "VectorMath.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if GA_X86
#include <immintrin.h>

// MARK: - AVX2 + FMA kernel

#define GA_AVX2 __attribute__((target("avx2,fma,f16c"))) static inline

// Eight horizontal sums at once: lane i of the result is the sum of a[i]'s lanes.
GA_AVX2 __m256 sum8(const __m256 a[8]) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Lanes [0, count) enabled, for the tail of a dimension that is not a multiple of 8.
GA_AVX2 __m256i tail_mask(int count) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes);
}

// A group of 4 rows of a tile (or its single row): the kernel's view of one register block.
typedef struct {
  const float *query[4];
  float *m[4];
  float *l[4];
  float *acc[4];
  const uint8_t *mask;     // the group's [key][row] mask bytes, or NULL
  int rows;                // 1 or 4
  int32_t position[4];     // the rows' query positions (ALiBi)
} ga_group;

GA_AVX2 void scale_row(float *acc, int dv, float factor) {
  const __m256 f = _mm256_set1_ps(factor);
  int c = 0;
  for (; c + 8 <= dv; c += 8) _mm256_storeu_ps(acc + c, _mm256_mul_ps(_mm256_loadu_ps(acc + c), f));
  for (; c < dv; c++) acc[c] *= factor;
}

// Softmax step shared by both shapes: raise m per row, rescale, turn scores into weights, add to l.
// `scores` is [padded][rows] key-major with masked and padding entries at -inf; padded % (8 / rows) == 0.
// Everything stays in vectors: with 4 rows, lanes r and r + 4 hold row r (two keys per vector), so the
// row maxima and sums combine the two 128-bit halves; with 1 row, all 8 lanes are the row's.
GA_AVX2 void softmax_block(const ga_tile *t, const ga_group *g, float *scores, int64_t padded) {
  const int rows = g->rows;
  const int64_t total = padded * rows;
  __m256 mx = _mm256_set1_ps(-INFINITY);
  for (int64_t i = 0; i < total; i += 8) mx = _mm256_max_ps(mx, _mm256_load_ps(scores + i));
  mx = _mm256_max_ps(mx, _mm256_permute2f128_ps(mx, mx, 1));
  if (rows == 1) {
    mx = _mm256_max_ps(mx, _mm256_permute_ps(mx, 0x4E));
    mx = _mm256_max_ps(mx, _mm256_permute_ps(mx, 0xB1));
  }
  float old_m[4], old_l[4];
  for (int r = 0; r < 4; r++) {
    old_m[r] = *g->m[r % rows];
    old_l[r] = *g->l[r % rows];
  }
  const __m128 m4 = _mm_loadu_ps(old_m);
  const __m256 m_old = _mm256_set_m128(m4, m4);
  const __m256 m_new = _mm256_max_ps(m_old, mx);
  // A row with nothing attended yet (m = -inf) shifts by 0: its scores are all -inf, so its weights are 0.
  const __m256 minus_inf = _mm256_set1_ps(-INFINITY);
  const __m256 shift = _mm256_blendv_ps(m_new, _mm256_setzero_ps(), _mm256_cmp_ps(m_new, minus_inf, _CMP_EQ_OQ));
  const __m256 factor = ga_exp_avx2(_mm256_sub_ps(m_old, shift));  // 1 when m is unchanged, 0 from -inf
  __m256 sum = _mm256_setzero_ps();
  for (int64_t i = 0; i < total; i += 8) {
    const __m256 p = ga_exp_avx2(_mm256_sub_ps(_mm256_load_ps(scores + i), shift));
    _mm256_store_ps(scores + i, p);
    sum = _mm256_add_ps(sum, p);
  }
  sum = _mm256_add_ps(sum, _mm256_permute2f128_ps(sum, sum, 1));
  if (rows == 1) {
    sum = _mm256_add_ps(sum, _mm256_permute_ps(sum, 0x4E));
    sum = _mm256_add_ps(sum, _mm256_permute_ps(sum, 0xB1));
  }
  const __m128 l4 = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(old_l), _mm256_castps256_ps128(factor)), _mm256_castps256_ps128(sum));
  float new_m[4], new_l[4], scale[4];
  _mm_storeu_ps(new_m, _mm256_castps256_ps128(m_new));
  _mm_storeu_ps(new_l, l4);
  _mm_storeu_ps(scale, _mm256_castps256_ps128(factor));
  for (int r = 0; r < rows; r++) {
    *g->m[r] = new_m[r];
    *g->l[r] = new_l[r];
    if (scale[r] != 1.0f && old_m[r] != -INFINITY) scale_row(g->acc[r], t->value_dim, scale[r]);
  }
}

// MARK: - Instances per storage type of K and V

#define GA_KV float
#define GA_FN(name) name##_f32
#define GA_LOAD8(p) _mm256_loadu_ps(p)
#define GA_LOAD_TAIL(p, count) _mm256_maskload_ps((p), tail_mask(count))
#include "TileKernelAVX2Rows.inc"
#undef GA_KV
#undef GA_FN
#undef GA_LOAD8
#undef GA_LOAD_TAIL

// fp16 widens with F16C (vcvtph2ps); a tail is copied into a zeroed buffer first so nothing past the
// row is read.
GA_AVX2 __m256 load_tail_f16(const uint16_t *p, int count) {
  uint16_t buffer[8] = {0};
  memcpy(buffer, p, (size_t)count * 2);
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)buffer));
}
#define GA_KV uint16_t
#define GA_FN(name) name##_f16
#define GA_LOAD8(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define GA_LOAD_TAIL(p, count) load_tail_f16((p), (count))
#include "TileKernelAVX2Rows.inc"
#undef GA_FN
#undef GA_LOAD8
#undef GA_LOAD_TAIL

// bf16 is the top half of an fp32: widen to 32 bits and shift.
GA_AVX2 __m256 load8_bf16(const uint16_t *p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
GA_AVX2 __m256 load_tail_bf16(const uint16_t *p, int count) {
  uint16_t buffer[8] = {0};
  memcpy(buffer, p, (size_t)count * 2);
  return load8_bf16(buffer);
}
#define GA_FN(name) name##_bf16
#define GA_LOAD8(p) load8_bf16(p)
#define GA_LOAD_TAIL(p, count) load_tail_bf16((p), (count))
#include "TileKernelAVX2Rows.inc"
#undef GA_KV
#undef GA_FN
#undef GA_LOAD8
#undef GA_LOAD_TAIL

// MARK: - The AVX2 kernel with rows in lanes, for tiles of several rows (a pack buffer given)

#include "TileKernelAVX2Lanes.inc"

void ga_tile_attend_avx2_rows(const ga_tile *tile) {
  switch (tile->kv_type) {
    case GA_FLOAT16: attend_avx2_f16(tile); return;
    case GA_BFLOAT16: attend_avx2_bf16(tile); return;
    default: attend_avx2_f32(tile); return;
  }
}

void ga_tile_attend_avx2_lanes(const ga_tile *tile) { attend_avx2_lanes(tile); }
#endif
