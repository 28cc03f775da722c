// The AVX-512 tile kernel, shaped like a GEMM micro-kernel with the tile's rows in the vector lanes.
//
// A tile is 4, 8, 12 or 16 query rows (groups of 4) against a shared sorted list of key positions. Row r of
// the tile is lane r of every vector: Q is packed once per tile, transposed, as Q^T[c] = 16 lanes, and
//   S^T[j] = sum over c of Q^T[c] * k_j[c]  (8 keys at a time: 8 zmm accumulators, one broadcast of
//       k_j[c] and one FMA per key per c, one load of Q^T[c] shared by the 8): outer products, no
//       horizontal sum; K rows are read in place through the tile's key list, so contiguous, strided
//       and gathered keys run the same loop and no K is copied or transposed (each element of K is one
//       broadcast for all 16 rows; a transposed pack would cost a load, shuffle and store per element
//       for the same single use);
//   scale, score modifiers (softcap, ALiBi: VectorMath.h), mask (per key, the tile's 4 mask bytes of each group become a 16-lane mask with one byte
//       test), online softmax per lane over blocks of 128 keys: maxima, exp, sums are all vertical, and
//       (m, l) of all 16 rows live in two registers for the whole tile;
//   O[r] = O[r] * e^(m_old - m_new) + P . V per group of 4 rows, 4 x 4 zmm accumulators (64 value
//       columns) per pass: one row of V loaded per key, each weight broadcast from the block's buffer.
// fp16 and bf16 keys and values are widened into fp32 rows once per block (vcvtph2ps, or a shift), never
// in the inner loops.
#include "KernelsInternal.h"
#include "VectorMath.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if GA_X86
#include <immintrin.h>

#define GA_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,bmi2,fma,f16c")))
#define GA_AVX512 GA_AVX512_TARGET static inline
#define GA_AVX512_INLINE GA_AVX512_TARGET static inline __attribute__((always_inline))

/// Keys per softmax block (scores of a block are kept as 128 x 16 floats, 8 KiB): 128 halves the per-block
/// bookkeeping of 64 (maxima, rescaling the accumulators) and measured 5-15% faster on windows and dilated graphs.
#define GA_BLOCK_KEYS 128
/// Keys per register block of scores.
#define GA_SCORE_KEYS 8

// `count` (<= 16) elements of a key or value row from element `offset`, widened to fp32, zeros after.
GA_AVX512_INLINE __m512 load16_kv(const void *base, int type, int64_t offset, int count) {
  const __mmask16 m = count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1);
  switch (type) {
    case GA_FLOAT16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + offset));
    case GA_BFLOAT16:
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + offset)), 16));
    default:
      return _mm512_maskz_loadu_ps(m, (const float *)base + offset);
  }
}

// Widens key positions [first, first + count) of the tile's K and V into fp32 rows (K: d floats each,
// V: ldv floats each) and points kp / vp at them.
GA_AVX512 void widen_block(const ga_tile *t, int64_t first, int64_t count, float *kbuf, float *vbuf, int ldv,
                           const float **kp, const float **vp) {
  const int d = t->key_dim, dv = t->value_dim;
  for (int64_t j = 0; j < count; j++) {
    const int64_t key = t->keys[first + j];
    float *kr = kbuf + j * d, *vr = vbuf + j * ldv;
    for (int c = 0; c < d; c += 16) {
      const int cc = d - c < 16 ? d - c : 16;
      _mm512_mask_storeu_ps(kr + c, cc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cc) - 1),
                            load16_kv(t->key, t->kv_type, key * d + c, cc));
    }
    for (int c = 0; c < ldv; c += 16) _mm512_storeu_ps(vr + c, load16_kv(t->value, t->kv_type, key * dv + c, dv - c));
    kp[j] = kr;
    vp[j] = vr;
  }
}

// The 16 lanes (rows) that attend to key position `p`: from the rows' spans (two compares), the tile's
// mask bytes of each group (4 bytes per group and key), or with neither, the groups whose span holds p;
// `live` limits them to the tile's rows.
GA_AVX512_INLINE __mmask16 key_lanes(const ga_tile *t, int groups, int64_t p, __mmask16 live, __m512i begin, __m512i end) {
  if (!t->mask && t->has_row_spans) {
    const __m512i position = _mm512_set1_epi32((int32_t)p);
    return _mm512_mask_cmple_epi32_mask(_mm512_cmpgt_epi32_mask(end, position), begin, position) & live;
  }
  if (t->mask) {
    uint32_t w[4] = {0, 0, 0, 0};
    for (int g = 0; g < groups; g++) memcpy(&w[g], t->mask + ((int64_t)g * t->n + p) * 4, 4);
    const __m128i bytes = _mm_loadu_si128((const __m128i *)w);
    return _mm_test_epi8_mask(bytes, bytes) & live;
  }
  unsigned lanes = 0;
  for (int g = 0; g < groups; g++)
    if (t->group_begin[g] <= p && p < t->group_end[g]) lanes |= 0xFu << (4 * g);
  return (__mmask16)lanes & live;
}

// One pass of O = O * factor + P . V over value columns [c0, c0 + 16 NZ) of rows r0..r0+3: 4 x NZ zmm
// accumulators; per key one row of V (NZ loads, the last masked at the row's end) and 4 broadcast weights.
GA_AVX512_INLINE void pv_pass(const ga_tile *t, int r0, int c0, const float *factor, const float *weights,
                              const float *const *vp, int64_t count, const int NZ) {
  const int dv = t->value_dim;
  __mmask16 cols[4];
  for (int z = 0; z < NZ; z++) {
    const int left = dv - c0 - 16 * z;
    cols[z] = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
  }
  __m512 a[4][4];
  for (int r = 0; r < 4; r++) {
    const __m512 f = _mm512_set1_ps(factor[r0 + r]);
    for (int z = 0; z < NZ; z++) a[r][z] = _mm512_mul_ps(_mm512_maskz_loadu_ps(cols[z], t->acc[r0 + r] + c0 + 16 * z), f);
  }
  for (int64_t j = 0; j < count; j++) {
    const float *v = vp[j] + c0;
    __m512 x[4];
    for (int z = 0; z < NZ; z++) x[z] = _mm512_maskz_loadu_ps(cols[z], v + 16 * z);
    const float *p = weights + j * 16 + r0;
    for (int r = 0; r < 4; r++) {
      const __m512 w = _mm512_set1_ps(p[r]);
      for (int z = 0; z < NZ; z++) a[r][z] = _mm512_fmadd_ps(w, x[z], a[r][z]);
    }
  }
  for (int r = 0; r < 4; r++)
    for (int z = 0; z < NZ; z++) _mm512_mask_storeu_ps(t->acc[r0 + r] + c0 + 16 * z, cols[z], a[r][z]);
}

// S^T for keys j0..j0+7 of the block (fewer at its end: the missing ones repeat the first) from the
// scaled Q^T, masked, stored as 16-lane rows of `scores` and folded into the lanes' block maxima `mx`.
// Key positions in [0, shared) and [all_begin, all_end) are attended by every live lane (rows' spans only).
GA_AVX512_INLINE void score_keys(const ga_tile *t, int groups, const float *qt, const float *const *kp, int64_t first,
                                 int64_t j0, int64_t count, __mmask16 live, int64_t shared, int64_t all_begin, int64_t all_end,
                                 float *scores, __m512 *mx) {
  const int d = t->key_dim;
  const float *k[GA_SCORE_KEYS];
  for (int i = 0; i < GA_SCORE_KEYS; i++) k[i] = kp[j0 + i < count ? j0 + i : j0];
  // Even and odd dimensions accumulate separately: 16 independent FMA chains cover the FMA latency (4
  // cycles on 2 pipes needs 8) with room for the broadcast loads' latency.
  __m512 s[GA_SCORE_KEYS], odd[GA_SCORE_KEYS];
  for (int i = 0; i < GA_SCORE_KEYS; i++) s[i] = odd[i] = _mm512_setzero_ps();
  int c = 0;
  for (; c + 2 <= d; c += 2) {
    const __m512 q0 = _mm512_load_ps(qt + c * 16), q1 = _mm512_load_ps(qt + c * 16 + 16);
    for (int i = 0; i < GA_SCORE_KEYS; i++) {
      s[i] = _mm512_fmadd_ps(_mm512_set1_ps(k[i][c]), q0, s[i]);
      odd[i] = _mm512_fmadd_ps(_mm512_set1_ps(k[i][c + 1]), q1, odd[i]);
    }
  }
  if (c < d) {
    const __m512 q0 = _mm512_load_ps(qt + c * 16);
    for (int i = 0; i < GA_SCORE_KEYS; i++) s[i] = _mm512_fmadd_ps(_mm512_set1_ps(k[i][c]), q0, s[i]);
  }
  for (int i = 0; i < GA_SCORE_KEYS; i++) s[i] = _mm512_add_ps(s[i], odd[i]);
  const __m512 minus_inf = _mm512_set1_ps(-INFINITY);
  const __m512i begin = _mm512_loadu_si512(t->row_begin), end = _mm512_loadu_si512(t->row_end);
  const int modified = ga_has_score_mods(&t->mods);
  const __m512i rows = _mm512_loadu_si512(t->row_position);
  __m512 block_max = *mx;
  for (int i = 0; i < GA_SCORE_KEYS && j0 + i < count; i++) {
    const int64_t p = first + j0 + i;
    const __mmask16 lanes = p < shared || (p >= all_begin && p < all_end) ? live : key_lanes(t, groups, p, live, begin, end);
    __m512 v = s[i];
    if (modified) {
      const int64_t column = t->key_positions ? t->key_positions[p] : t->keys[p];
      v = ga_modify_scores_avx512(&t->mods, v, _mm512_sub_epi32(rows, _mm512_set1_epi32((int32_t)column)), NULL);
    }
    v = _mm512_mask_mov_ps(minus_inf, lanes, v);
    _mm512_store_ps(scores + (j0 + i) * 16, v);
    block_max = _mm512_max_ps(block_max, v);
  }
  *mx = block_max;
}

GA_AVX512_TARGET void ga_tile_attend_avx512(const ga_tile *t) {
  const int d = t->key_dim, dv = t->value_dim, ldv = (dv + 15) & ~15;
  const int rows = t->rows, groups = rows / 4;
  const __mmask16 live = rows >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rows) - 1);
  float *qt = t->pack;                            // [d][16]
  float *scores = qt + (int64_t)d * 16;           // [GA_BLOCK_KEYS][16]: scores, then weights
  float *kbuf = scores + GA_BLOCK_KEYS * 16;      // [GA_BLOCK_KEYS][d], fp16/bf16 only
  float *vbuf = kbuf + GA_BLOCK_KEYS * (int64_t)d; // [GA_BLOCK_KEYS][ldv], fp16/bf16 only
  // Q^T, scaled: lane r of qt[c] is scale * row r's q[c] (one multiply per element instead of one per
  // score); lanes past the tile's rows are 0 (and masked).
  const __m512 scale = _mm512_set1_ps(t->scale);
  for (int c0 = 0; c0 < d; c0 += 16) {
    const int cc = d - c0 < 16 ? d - c0 : 16;
    const __mmask16 cm = cc >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cc) - 1);
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = i < rows ? _mm512_maskz_loadu_ps(cm, t->query[i] + c0) : _mm512_setzero_ps();
    ga_transpose16_avx512(r);
    for (int i = 0; i < cc; i++) _mm512_store_ps(qt + (c0 + i) * 16, _mm512_mul_ps(r[i], scale));
  }
  // The next tile's rows usually follow this tile's last row in memory: fetch them into L2 while this tile
  // computes (a prefetch never faults, so a guess past the end of Q is harmless).
  for (int64_t e = 0; e < (int64_t)GA_MAX_ROWS * d; e += 16) _mm_prefetch((const char *)(t->query[rows - 1] + d + e), _MM_HINT_T1);
  __attribute__((aligned(64))) float state[16];
  for (int r = 0; r < 16; r++) state[r] = r < rows ? *t->m[r] : -INFINITY;
  __m512 m = _mm512_load_ps(state);
  for (int r = 0; r < 16; r++) state[r] = r < rows ? *t->l[r] : 0.0f;
  __m512 l = _mm512_load_ps(state);
  const ga_tile_extent extent = ga_tile_extent_of(t);
  const int64_t lo_all = extent.first, hi_all = extent.end, all_begin = extent.all_begin, all_end = extent.all_end;
  const float *kp[GA_BLOCK_KEYS], *vp[GA_BLOCK_KEYS];
  const __m512 minus_inf = _mm512_set1_ps(-INFINITY);
  __attribute__((aligned(64))) float factor[16];
  for (int64_t first = lo_all; first < hi_all; first += GA_BLOCK_KEYS) {
    const int64_t count = hi_all - first < GA_BLOCK_KEYS ? hi_all - first : GA_BLOCK_KEYS;
    if (t->kv_type == GA_FLOAT32) {
      for (int64_t j = 0; j < count; j++) {
        kp[j] = (const float *)t->key + t->keys[first + j] * d;
        vp[j] = (const float *)t->value + t->keys[first + j] * dv;
      }
    } else {
      widen_block(t, first, count, kbuf, vbuf, ldv, kp, vp);
    }
    __m512 mx = minus_inf;
    for (int64_t j0 = 0; j0 < count; j0 += GA_SCORE_KEYS)
      score_keys(t, groups, qt, kp, first, j0, count, live, extent.shared, all_begin, all_end, scores, &mx);
    // Online softmax, all 16 rows at once.
    const __m512 m_new = _mm512_max_ps(m, mx);
    // A row with nothing attended yet (m = -inf) shifts by 0: its scores are all -inf, so its weights are 0.
    const __m512 shift = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(m_new, minus_inf, _CMP_EQ_OQ), m_new, _mm512_setzero_ps());
    const __m512 f = ga_exp_avx512(_mm512_sub_ps(m, shift));  // 1 where m is unchanged, 0 from -inf
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < count; j++) {
      const __m512 p = ga_exp_avx512(_mm512_sub_ps(_mm512_load_ps(scores + j * 16), shift));
      _mm512_store_ps(scores + j * 16, p);
      sum = _mm512_add_ps(sum, p);
    }
    l = _mm512_fmadd_ps(l, f, sum);
    m = m_new;
    _mm512_store_ps(factor, f);
    for (int g = 0; g < groups; g++) {
      if (t->group_end[g] <= first || t->group_begin[g] >= first + count) continue;  // no key of this block
      int c0 = 0;
      for (; c0 + 64 <= dv; c0 += 64) pv_pass(t, 4 * g, c0, factor, scores, vp, count, 4);
      switch ((dv - c0 + 15) / 16) {
        case 1: pv_pass(t, 4 * g, c0, factor, scores, vp, count, 1); break;
        case 2: pv_pass(t, 4 * g, c0, factor, scores, vp, count, 2); break;
        case 3: pv_pass(t, 4 * g, c0, factor, scores, vp, count, 3); break;
        default: break;
      }
    }
    // Groups skipped above keep factor 1 only if their m did not move: it cannot, their lanes were masked.
  }
  _mm512_store_ps(state, m);
  for (int r = 0; r < rows; r++) *t->m[r] = state[r];
  _mm512_store_ps(state, l);
  for (int r = 0; r < rows; r++) *t->l[r] = state[r];
}

// MARK: - One row against gathered keys (random and explicit graphs)

// Sixteen horizontal sums at once, in 45 shuffles and adds: lane e of the result is the sum of the lanes of
// a[4 * (e % 4) + e / 4] (the slots' order is a 4x4 transpose of the lanes': callers load key e into that slot).
GA_AVX512_INLINE __m512 sum16(const __m512 a[16]) {
  __m512 v[8], u[4];
  // Halves of 256 bits, then quarters of 128: u[j]'s 128-bit lane L holds 4 partial sums of slot 4j + L.
  for (int i = 0; i < 8; i++)
    v[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44), _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
  for (int j = 0; j < 4; j++)
    u[j] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0x88), _mm512_shuffle_f32x4(v[2 * j], v[2 * j + 1], 0xDD));
  const __m512 x = _mm512_add_ps(_mm512_unpacklo_ps(u[0], u[1]), _mm512_unpackhi_ps(u[0], u[1]));
  const __m512 y = _mm512_add_ps(_mm512_unpacklo_ps(u[2], u[3]), _mm512_unpackhi_ps(u[2], u[3]));
  return _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x44), _mm512_shuffle_ps(x, y, 0xEE));
}

/// How far a score may exceed the running maximum before the gathered-row kernel rescales (weights stay below
/// e^8 ~ 3000: far from fp32 overflow, and no precision is lost, the rescale being exact up to rounding).
#define GA_LAZY_RESCALE 8.0f

/// Bytes of one stored key or value element.
#define GA_KV_BYTES(type) ((type) == GA_FLOAT32 ? 4 : 2)

// The row kernel for one storage type and (when the compiler sees constants) one pair of dimensions.
GA_AVX512_INLINE void gather_row(const ga_tile *t, const float *query, int32_t position, const uint32_t *columns,
                                 int64_t n, float *m_io, float *l_io, float *acc, const int d, const int dv, const int type,
                                 const int prefetch) {
  const void *key = t->key, *value = t->value;
  const int modified = ga_has_score_mods(&t->mods);
  const __m512 scale = _mm512_set1_ps(t->scale), minus_inf = _mm512_set1_ps(-INFINITY);
  float m = *m_io;
  // l stays in lanes (summed once at the end): no horizontal sum on the path from one block to the next.
  __m512 l = _mm512_setzero_ps();
  float l_in = *l_io;
  for (int64_t b = 0; b < n; b += 16) {
    const int count = n - b < 16 ? (int)(n - b) : 16;
    const uint32_t *cols = columns + b;
    const __mmask16 valid = count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1);
    // Rows scattered over L3 and DRAM: fetch the next block's key rows and this block's value rows (needed after
    // the softmax) while this block's scores are computed. Not when the rows are in L2 (a gather by key blocks):
    // there the prefetches only take load slots (measured 10% slower; 20% faster row by row at density 1e-3).
    if (prefetch) {
      const int64_t ahead = n - b - 16 < 16 ? n - b - 16 : 16;
      for (int64_t h = 0; h < ahead; h++)
        for (int64_t o = 0; o < (int64_t)d * GA_KV_BYTES(type); o += 64) _mm_prefetch((const char *)key + (int64_t)cols[16 + h] * d * GA_KV_BYTES(type) + o, _MM_HINT_T0);
      for (int h = 0; h < count; h++)
        for (int64_t o = 0; o < (int64_t)dv * GA_KV_BYTES(type); o += 64) _mm_prefetch((const char *)value + (int64_t)cols[h] * dv * GA_KV_BYTES(type) + o, _MM_HINT_T0);
    }
    // Scores: q . k for 16 keys, 16 independent FMA chains over d, then one transposing sum.
    // Scalar address arithmetic: vectorised, the 16 offsets would each be extracted to a register (2 uops each).
    int64_t slot_row[16];
#pragma clang loop vectorize(disable) unroll(full)
    for (int s = 0; s < 16; s++) {
      const int e = 4 * (s & 3) + (s >> 2);
      slot_row[s] = (int64_t)cols[e < count ? e : 0];
    }
    __m512 a[16];
    for (int s = 0; s < 16; s++) a[s] = _mm512_setzero_ps();
    for (int c = 0; c < d; c += 16) {
      const int w = d - c < 16 ? d - c : 16;
      const __m512 qc = _mm512_maskz_loadu_ps(w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1), query + c);
      for (int s = 0; s < 16; s++) a[s] = _mm512_fmadd_ps(qc, load16_kv(key, type, slot_row[s] * d + c, w), a[s]);
    }
    __m512 scores = _mm512_mul_ps(sum16(a), scale);
    if (modified) {
      __attribute__((aligned(64))) float s16[16];
      _mm512_store_ps(s16, scores);
      for (int e = 0; e < count; e++) s16[e] = ga_modify_score_scalar(&t->mods, s16[e], (int64_t)position - cols[e], NULL);
      scores = _mm512_load_ps(s16);
    }
    scores = _mm512_mask_mov_ps(minus_inf, valid, scores);
    // Lazy rescaling: m moves only when a score exceeds it by more than GA_LAZY_RESCALE, so weights stay below
    // e^GA_LAZY_RESCALE and the (predicted) branch keeps the block maximum off the path to the weights: the next
    // block's scores and weights start before this one's maximum is known. The result is the same softmax.
    const float block_max = _mm512_reduce_max_ps(scores);
    float factor = 1.0f;
    if (__builtin_expect(block_max > m + GA_LAZY_RESCALE, 0)) {
      factor = m == -INFINITY ? 0.0f : expf(m - block_max);
      l_in *= factor;
      l = _mm512_mul_ps(l, _mm512_set1_ps(factor));
      m = block_max;
    }
    const __m512 p = _mm512_maskz_mov_ps(valid, ga_exp_avx512(_mm512_sub_ps(scores, _mm512_set1_ps(m))));
    l = _mm512_add_ps(l, p);
    // acc = acc * factor + P . V, 64 columns per pass; even and odd keys in separate accumulators (8 chains).
    const __m512 f = _mm512_set1_ps(factor);
    for (int c = 0; c < dv; c += 64) {
      __mmask16 lanes[4];
      for (int z = 0; z < 4; z++) {
        const int left = dv - c - 16 * z;
        lanes[z] = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
      }
      __m512 even[4], odd[4];
      for (int z = 0; z < 4; z++) {
        even[z] = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes[z], acc + c + 16 * z), f);
        odd[z] = _mm512_setzero_ps();
      }
      int h = 0;
      for (; h + 2 <= count; h += 2) {
        const int64_t v0 = (int64_t)cols[h] * dv + c, v1 = (int64_t)cols[h + 1] * dv + c;
        const __m512 p0 = _mm512_permutexvar_ps(_mm512_set1_epi32(h), p), p1 = _mm512_permutexvar_ps(_mm512_set1_epi32(h + 1), p);
        for (int z = 0; z < 4; z++) {
          if (!lanes[z]) continue;
          even[z] = _mm512_fmadd_ps(p0, load16_kv(value, type, v0 + 16 * z, dv - c - 16 * z), even[z]);
          odd[z] = _mm512_fmadd_ps(p1, load16_kv(value, type, v1 + 16 * z, dv - c - 16 * z), odd[z]);
        }
      }
      if (h < count) {
        const int64_t v0 = (int64_t)cols[h] * dv + c;
        const __m512 p0 = _mm512_permutexvar_ps(_mm512_set1_epi32(h), p);
        for (int z = 0; z < 4; z++)
          if (lanes[z]) even[z] = _mm512_fmadd_ps(p0, load16_kv(value, type, v0 + 16 * z, dv - c - 16 * z), even[z]);
      }
      for (int z = 0; z < 4; z++) _mm512_mask_storeu_ps(acc + c + 16 * z, lanes[z], _mm512_add_ps(even[z], odd[z]));
    }
  }
  *m_io = m;
  *l_io = l_in + _mm512_reduce_add_ps(l);
}

GA_AVX512_TARGET void ga_gather_row_avx512(const ga_tile *t, const float *query, int32_t position, const uint32_t *columns,
                                           int64_t n, float *m, float *l, float *acc, int prefetch) {
  // Constant instances for the common head sizes (the loops over d unroll, masks fold away).
  const int d = t->key_dim, dv = t->value_dim;
  switch (t->kv_type) {
    case GA_FLOAT16:
      if (d == 64 && dv == 64) gather_row(t, query, position, columns, n, m, l, acc, 64, 64, GA_FLOAT16, prefetch);
      else if (d == 128 && dv == 128) gather_row(t, query, position, columns, n, m, l, acc, 128, 128, GA_FLOAT16, prefetch);
      else gather_row(t, query, position, columns, n, m, l, acc, d, dv, GA_FLOAT16, prefetch);
      return;
    case GA_BFLOAT16:
      if (d == 64 && dv == 64) gather_row(t, query, position, columns, n, m, l, acc, 64, 64, GA_BFLOAT16, prefetch);
      else if (d == 128 && dv == 128) gather_row(t, query, position, columns, n, m, l, acc, 128, 128, GA_BFLOAT16, prefetch);
      else gather_row(t, query, position, columns, n, m, l, acc, d, dv, GA_BFLOAT16, prefetch);
      return;
    default:
      if (d == 64 && dv == 64) gather_row(t, query, position, columns, n, m, l, acc, 64, 64, GA_FLOAT32, prefetch);
      else if (d == 128 && dv == 128) gather_row(t, query, position, columns, n, m, l, acc, 128, 128, GA_FLOAT32, prefetch);
      else gather_row(t, query, position, columns, n, m, l, acc, d, dv, GA_FLOAT32, prefetch);
      return;
  }
}

__attribute__((target("avx512f"))) double ga_fma_loop_avx512(int64_t iterations) {
  // Ten independent 16-lane chains cover the FMA latency (4 cycles) on two 512-bit FMA pipes.
  __m512 a0 = _mm512_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0;
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iterations; i++) {
    a0 = _mm512_fmadd_ps(a0, x, y); a1 = _mm512_fmadd_ps(a1, x, y); a2 = _mm512_fmadd_ps(a2, x, y);
    a3 = _mm512_fmadd_ps(a3, x, y); a4 = _mm512_fmadd_ps(a4, x, y); a5 = _mm512_fmadd_ps(a5, x, y);
    a6 = _mm512_fmadd_ps(a6, x, y); a7 = _mm512_fmadd_ps(a7, x, y); a8 = _mm512_fmadd_ps(a8, x, y);
    a9 = _mm512_fmadd_ps(a9, x, y);
  }
  const __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                 _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)), _mm512_add_ps(a8, a9)));
  return _mm512_reduce_add_ps(s);
}
#else
void ga_tile_attend_avx512(const ga_tile *tile) { ga_tile_attend_portable(tile); }
double ga_fma_loop_avx512(int64_t iterations) { return (double)iterations; }
#endif
