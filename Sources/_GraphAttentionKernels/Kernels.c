// The CPU tile kernel: up to four query rows against a shared key list, online softmax in 64-key blocks.
//
// Scores of a block are kept key-major, [key][row], so that one 8-lane vector holds two keys of four rows
// (or eight keys of one row): the 8 dot products of a register block reduce into one vector with a
// horizontal-add tree, the softmax runs on whole vectors, and P.V broadcasts one weight per (key, row).
#include "GraphAttentionKernels.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define GA_X86 1
#include <immintrin.h>
#endif

// MARK: - Portable kernel (baseline ISA; the compiler may vectorise it)

static void attend_portable(const ga_tile *t) {
  float *scores = t->scratch;
  for (int64_t block = 0; block < t->n; block += GA_KEY_BLOCK) {
    const int64_t count = t->n - block < GA_KEY_BLOCK ? t->n - block : GA_KEY_BLOCK;
    for (int r = 0; r < t->rows; r++) {
      float *s = scores;  // rows are independent: one row of scratch serves all
      float block_max = -INFINITY;
      for (int64_t j = 0; j < count; j++) {
        if (t->mask && !t->mask[(int64_t)(r / 4) * t->n * 4 + (block + j) * 4 + r % 4]) { s[j] = -INFINITY; continue; }
        const float *k = t->key + t->keys[block + j] * t->key_dim;
        float dot = 0;
        for (int c = 0; c < t->key_dim; c++) dot += t->query[r][c] * k[c];
        s[j] = dot * t->scale;
        if (s[j] > block_max) block_max = s[j];
      }
      float m = *t->m[r];
      float *acc = t->acc[r];
      if (block_max > m) {
        if (m != -INFINITY) {
          const float factor = expf(m - block_max);
          *t->l[r] *= factor;
          for (int c = 0; c < t->value_dim; c++) acc[c] *= factor;
        }
        m = block_max;
        *t->m[r] = m;
      }
      if (m == -INFINITY) continue;  // nothing attended yet: every weight is 0
      float sum = 0;
      for (int64_t j = 0; j < count; j++) {
        const float p = s[j] == -INFINITY ? 0.0f : expf(s[j] - m);
        if (p == 0) continue;
        sum += p;
        const float *v = t->value + t->keys[block + j] * t->value_dim;
        for (int c = 0; c < t->value_dim; c++) acc[c] += p * v[c];
      }
      *t->l[r] += sum;
    }
  }
}

void ga_tile_attend_portable(const ga_tile *tile) { attend_portable(tile); }

#if GA_X86
// MARK: - AVX2 + FMA kernel

#define GA_AVX2 __attribute__((target("avx2,fma"))) static inline

// e^x for x <= 0 (online-softmax arguments): Cephes' polynomial on x = n ln2 + r, |r| <= ln2/2, relative
// error below 2e-7; lanes below -87 (subnormal results) and -inf give 0.
GA_AVX2 __m256 exp_avx2(__m256 x) {
  const __m256 low = _mm256_set1_ps(-87.0f);
  const __m256 under = _mm256_cmp_ps(x, low, _CMP_LT_OQ);
  x = _mm256_max_ps(x, low);
  const __m256 magic = _mm256_set1_ps(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
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
} ga_group;

// Eight dot products q_a . k_b over d, where (a, b) runs over the register block's pairs.
// rows == 4: pairs (row r, key j0 + h) at lane h*4 + r; rows == 1: (row 0, key j0 + h) at lane h.
GA_AVX2 __m256 dots4x2(const float *const q[4], const float *k0, const float *k1, int d) {
  __m256 a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
  int c = 0;
  for (; c + 8 <= d; c += 8) {
    const __m256 x0 = _mm256_loadu_ps(k0 + c), x1 = _mm256_loadu_ps(k1 + c);
    for (int r = 0; r < 4; r++) {
      const __m256 qr = _mm256_loadu_ps(q[r] + c);
      a[r] = _mm256_fmadd_ps(qr, x0, a[r]);
      a[4 + r] = _mm256_fmadd_ps(qr, x1, a[4 + r]);
    }
  }
  if (c < d) {
    const __m256i m = tail_mask(d - c);
    const __m256 x0 = _mm256_maskload_ps(k0 + c, m), x1 = _mm256_maskload_ps(k1 + c, m);
    for (int r = 0; r < 4; r++) {
      const __m256 qr = _mm256_maskload_ps(q[r] + c, m);
      a[r] = _mm256_fmadd_ps(qr, x0, a[r]);
      a[4 + r] = _mm256_fmadd_ps(qr, x1, a[4 + r]);
    }
  }
  return sum8(a);
}

GA_AVX2 __m256 dots1x8(const float *q, const float *const k[8], int d) {
  __m256 a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
  int c = 0;
  for (; c + 8 <= d; c += 8) {
    const __m256 qv = _mm256_loadu_ps(q + c);
    for (int h = 0; h < 8; h++) a[h] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k[h] + c), a[h]);
  }
  if (c < d) {
    const __m256i m = tail_mask(d - c);
    const __m256 qv = _mm256_maskload_ps(q + c, m);
    for (int h = 0; h < 8; h++) a[h] = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k[h] + c, m), a[h]);
  }
  return sum8(a);
}

// acc[r] (value_dim floats) += sum over the block's keys of p[key][r] * v[key]; R rows, W vectors of 8 per pass.
#define GA_PV_PASS(R, W)                                                                              \
  for (; c + 8 * (W) <= dv; c += 8 * (W)) {                                                           \
    __m256 a[R][W];                                                                                   \
    for (int r = 0; r < (R); r++)                                                                     \
      for (int w = 0; w < (W); w++) a[r][w] = _mm256_loadu_ps(g->acc[r] + c + 8 * w);                \
    for (int64_t j = 0; j < count; j++) {                                                             \
      const float *v = t->value + t->keys[block + j] * dv + c;                                        \
      __m256 x[W];                                                                                    \
      for (int w = 0; w < (W); w++) x[w] = _mm256_loadu_ps(v + 8 * w);                                \
      for (int r = 0; r < (R); r++) {                                                                 \
        const __m256 p = _mm256_broadcast_ss(weights + j * (R) + r);                                  \
        for (int w = 0; w < (W); w++) a[r][w] = _mm256_fmadd_ps(p, x[w], a[r][w]);                    \
      }                                                                                               \
    }                                                                                                 \
    for (int r = 0; r < (R); r++)                                                                     \
      for (int w = 0; w < (W); w++) _mm256_storeu_ps(g->acc[r] + c + 8 * w, a[r][w]);                 \
  }

#define GA_PV_TAIL(R)                                                                                 \
  if (c < dv) {                                                                                       \
    const __m256i m = tail_mask(dv - c);                                                              \
    __m256 a[R];                                                                                      \
    for (int r = 0; r < (R); r++) a[r] = _mm256_maskload_ps(g->acc[r] + c, m);                        \
    for (int64_t j = 0; j < count; j++) {                                                             \
      const __m256 x = _mm256_maskload_ps(t->value + t->keys[block + j] * dv + c, m);                 \
      for (int r = 0; r < (R); r++) a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(weights + j * (R) + r), x, a[r]); \
    }                                                                                                 \
    for (int r = 0; r < (R); r++) _mm256_maskstore_ps(g->acc[r] + c, m, a[r]);                        \
  }

GA_AVX2 void pv4(const ga_tile *t, const ga_group *g, const float *weights, int64_t block, int64_t count) {
  const int dv = t->value_dim;
  int c = 0;
  // Two vectors per row: 8 accumulators + 2 values + 1 weight fit the 16 registers without a spill
  // (a spilled accumulator puts a store-load round trip on its FMA chain).
  GA_PV_PASS(4, 2)
  GA_PV_PASS(4, 1)
  GA_PV_TAIL(4)
}

GA_AVX2 void pv1(const ga_tile *t, const ga_group *g, const float *weights, int64_t block, int64_t count) {
  const int dv = t->value_dim;
  int c = 0;
  GA_PV_PASS(1, 8)
  GA_PV_PASS(1, 1)
  GA_PV_TAIL(1)
}

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
  const __m256 factor = exp_avx2(_mm256_sub_ps(m_old, shift));  // 1 when m is unchanged, 0 from -inf
  __m256 sum = _mm256_setzero_ps();
  for (int64_t i = 0; i < total; i += 8) {
    const __m256 p = exp_avx2(_mm256_sub_ps(_mm256_load_ps(scores + i), shift));
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

// One group's pass over key positions [begin, begin + count) (count <= GA_KEY_BLOCK): scores, softmax, P.V.
GA_AVX2 void attend_group_block(const ga_tile *t, const ga_group *g, int64_t begin, int64_t count) {
  float *scores = t->scratch;
  const int d = t->key_dim;
  const __m256 scale = _mm256_set1_ps(t->scale);
  int64_t padded;
  if (g->rows == 4) {
    padded = (count + 1) & ~(int64_t)1;
    for (int64_t j = 0; j < padded; j += 2) {
      const float *k0 = t->key + t->keys[begin + j] * d;
      const float *k1 = j + 1 < count ? t->key + t->keys[begin + j + 1] * d : k0;
      _mm256_store_ps(scores + j * 4, _mm256_mul_ps(dots4x2(g->query, k0, k1, d), scale));
    }
    if (g->mask) {
      // 8 mask bytes cover the 8 score lanes of two keys: widen, compare, blend.
      const __m256 minus_inf = _mm256_set1_ps(-INFINITY);
      const uint8_t *mask = g->mask + begin * 4;
      for (int64_t j = 0; j + 2 <= count; j += 2) {
        int64_t bytes;
        memcpy(&bytes, mask + j * 4, 8);
        const __m256i wide = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
        const __m256 off = _mm256_castsi256_ps(_mm256_cmpeq_epi32(wide, _mm256_setzero_si256()));
        _mm256_store_ps(scores + j * 4, _mm256_blendv_ps(_mm256_load_ps(scores + j * 4), minus_inf, off));
      }
      if (count & 1) {
        for (int r = 0; r < 4; r++) if (!mask[(count - 1) * 4 + r]) scores[(count - 1) * 4 + r] = -INFINITY;
      }
    }
    if (count < padded) for (int r = 0; r < 4; r++) scores[count * 4 + r] = -INFINITY;
  } else {
    padded = (count + 7) & ~(int64_t)7;
    for (int64_t j = 0; j < padded; j += 8) {
      const float *k[8];
      for (int h = 0; h < 8; h++) {
        const int64_t idx = j + h < count ? j + h : count - 1;
        k[h] = t->key + t->keys[begin + idx] * d;
      }
      _mm256_store_ps(scores + j, _mm256_mul_ps(dots1x8(g->query[0], k, d), scale));
    }
    for (int64_t j = count; j < padded; j++) scores[j] = -INFINITY;
    // Single-row tiles hold exactly the row's keys: no mask.
  }
  softmax_block(t, g, scores, padded);
  if (g->rows == 4) pv4(t, g, scores, begin, count); else pv1(t, g, scores, begin, count);
}

__attribute__((target("avx2,fma"))) static void attend_avx2(const ga_tile *t) {
  ga_group groups[GA_MAX_ROWS / GA_GROUP_ROWS];
  const int group_count = t->rows == 1 ? 1 : t->rows / 4;
  for (int gi = 0; gi < group_count; gi++) {
    ga_group *g = &groups[gi];
    g->rows = t->rows == 1 ? 1 : 4;
    for (int r = 0; r < g->rows; r++) {
      const int row = gi * 4 + r;
      g->query[r] = t->query[row];
      g->m[r] = t->m[row];
      g->l[r] = t->l[row];
      g->acc[r] = t->acc[row];
    }
    g->mask = t->mask ? t->mask + (int64_t)gi * t->n * 4 : NULL;
  }
  // Block-major: each 64-key block of K and V is brought into L1 once and used by every group.
  for (int64_t block = 0; block < t->n; block += GA_KEY_BLOCK) {
    const int64_t block_end = t->n - block < GA_KEY_BLOCK ? t->n : block + GA_KEY_BLOCK;
    for (int gi = 0; gi < group_count; gi++) {
      const int64_t lo = t->rows == 1 || t->group_begin[gi] < block ? block : t->group_begin[gi];
      const int64_t hi = t->rows == 1 || t->group_end[gi] > block_end ? block_end : t->group_end[gi];
      if (lo < hi) attend_group_block(t, &groups[gi], lo, hi - lo);
    }
  }
}

static int avx2_available = -1;

int ga_uses_avx2(void) {
  if (avx2_available < 0) {
    __builtin_cpu_init();
    avx2_available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return avx2_available;
}
#else
int ga_uses_avx2(void) { return 0; }
#endif

void ga_tile_attend(const ga_tile *tile) {
#if GA_X86
  // The AVX2 kernel handles 1 row or groups of 4; other row counts take the portable path.
  if (!tile->force_portable && (tile->rows == 1 || tile->rows % 4 == 0) && ga_uses_avx2()) {
    attend_avx2(tile);
    return;
  }
#endif
  attend_portable(tile);
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

double ga_fma_loop(int64_t iterations) {
#if GA_X86
  if (ga_uses_avx2()) return fma_loop_avx2(iterations);
#endif
  float a[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  for (int64_t i = 0; i < iterations * 10; i++)
    for (int h = 0; h < 8; h++) a[h] = a[h] * 0.999999f + 1e-7f;
  return a[0];
}

int64_t ga_fma_loop_flops_per_iteration(void) { return ga_uses_avx2() ? 10 * 8 * 2 : 10 * 8 * 2; }

double ga_read_sum(const float *data, int64_t count) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) { s0 += data[i]; s1 += data[i + 1]; s2 += data[i + 2]; s3 += data[i + 3]; }
  for (; i < count; i++) s0 += data[i];
  return (double)s0 + s1 + s2 + s3;
}
