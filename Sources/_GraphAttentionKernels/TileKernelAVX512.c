// The AVX-512 tile kernel, shaped like a GEMM micro-kernel.
//
// A tile is 4, 8, 12 or 16 query rows (groups of 4) against a shared sorted list of key positions. Keys
// are taken in chunks (as many as keep the packed chunk in L2, about 256 KiB): each chunk's K is packed
// once, transposed, into blocks [block][d][64 keys], and its V row-major [key][ldv], both widened to fp32
// (fp16 with vcvtph2ps, bf16 by a shift), so contiguous, strided and gathered keys all run the same
// loop and no conversion happens in it. Every group of the tile then walks its own key span over the
// packed chunk, 64 keys (4 zmm columns) at a time, or 16, 32, 48 at the ends of its span:
//   S = Q_group . K_block^T as 4 rows x W columns of zmm accumulators, built from outer products
//       (broadcast q[r][c], one aligned load of K^T[c] per column, W*4 FMAs per c): no horizontal sums;
//   scale, mask (the tile's [group][key][row] mask bytes become a 16-bit lane mask per row and column
//       with one byte compare and a pext), online softmax per row with a vectorised exp, in registers;
//   O[r] = O[r] * e^(m_old - m_new) + P . V_block, as 4 rows x 4 zmm accumulators (64 value columns)
//       per pass, one row of V loaded per key and each weight broadcast from a 64-byte aligned buffer.
// The packing costs one pass over the chunk's K and V for up to 16 rows (the tile's rows share them).
#include "KernelsInternal.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if GA_X86
#include <immintrin.h>

#define GA_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,bmi2,fma,f16c")))
#define GA_AVX512 GA_AVX512_TARGET static inline
#define GA_AVX512_INLINE GA_AVX512_TARGET static inline __attribute__((always_inline))

/// Keys per packed block: 4 zmm columns.
#define GA_PACK_BLOCK 64

// e^x for x <= 0 (online-softmax arguments), the AVX2 kernel's polynomial on 16 lanes: relative error
// below 2e-7; lanes below -87 and -inf give 0.
GA_AVX512_INLINE __m512 exp_avx512(__m512 x) {
  const __m512 low = _mm512_set1_ps(-87.0f);
  const __mmask16 under = _mm512_cmp_ps_mask(x, low, _CMP_LT_OQ);
  x = _mm512_max_ps(x, low);
  const __m512 magic = _mm512_set1_ps(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
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

// In-register 16x16 transpose: r[i] holds row i on entry and column i on return.
GA_AVX512_INLINE void transpose16(__m512 r[16]) {
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

// Packs key positions [first, first + count) of the tile: K transposed into [block][d][64] and V into
// [key][ldv], both fp32, padding (keys past the chunk, columns past d_v) zero.
GA_AVX512 void pack_chunk(const ga_tile *t, int64_t first, int64_t count, float *kt, float *vp, int ldv) {
  const int d = t->key_dim, dv = t->value_dim;
  const int64_t padded = (count + GA_PACK_BLOCK - 1) / GA_PACK_BLOCK * GA_PACK_BLOCK;
  for (int64_t j0 = 0; j0 < padded; j0 += 16) {
    float *dst = kt + (j0 / GA_PACK_BLOCK) * (int64_t)d * GA_PACK_BLOCK + j0 % GA_PACK_BLOCK;
    const int live = count - j0 >= 16 ? 16 : (int)(count - j0 > 0 ? count - j0 : 0);
    int64_t rows[16];
    for (int i = 0; i < live; i++) rows[i] = t->keys[first + j0 + i];
    for (int c0 = 0; c0 < d; c0 += 16) {
      const int cc = d - c0 < 16 ? d - c0 : 16;
      __m512 r[16];
      for (int i = 0; i < 16; i++)
        r[i] = i < live ? load16_kv(t->key, t->kv_type, rows[i] * d + c0, cc) : _mm512_setzero_ps();
      transpose16(r);
      for (int i = 0; i < cc; i++) _mm512_store_ps(dst + (int64_t)(c0 + i) * GA_PACK_BLOCK, r[i]);
    }
    for (int i = 0; i < 16; i++) {
      float *row = vp + (j0 + i) * ldv;
      if (i < live) {
        for (int c = 0; c < ldv; c += 16)
          _mm512_store_ps(row + c, load16_kv(t->value, t->kv_type, rows[i] * dv + c, dv - c));
      } else {
        for (int c = 0; c < ldv; c += 16) _mm512_store_ps(row + c, _mm512_setzero_ps());
      }
    }
  }
}

// Lanes of a 16-key column whose positions pos, pos+1, ... lie in [lo, hi).
GA_AVX512_INLINE __mmask16 range_mask(int64_t pos, int64_t lo, int64_t hi) {
  const int64_t a = lo - pos < 0 ? 0 : (lo - pos > 16 ? 16 : lo - pos);
  const int64_t b = hi - pos < 0 ? 0 : (hi - pos > 16 ? 16 : hi - pos);
  const uint32_t upto_b = b >= 16 ? 0xFFFFu : ((1u << b) - 1);
  const uint32_t below_a = (1u << a) - 1;
  return (__mmask16)(upto_b & ~below_a);
}

// One pass of O = O * factor + P . V over value columns [c0, c0 + 16 NZ) of a group's 4 rows: 4 x NZ zmm
// accumulators; per key one row of packed V (NZ aligned loads) and 4 broadcast weights.
GA_AVX512_INLINE void pv_pass(float *const o[4], int c0, int dv, const float factor[4],
                              const float weights[4][GA_PACK_BLOCK], const float *vp, int ldv, int keys, const int NZ) {
  __mmask16 cols[4];
  for (int z = 0; z < NZ; z++) {
    const int left = dv - c0 - 16 * z;
    cols[z] = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
  }
  __m512 a[4][4];
  for (int r = 0; r < 4; r++) {
    const __m512 f = _mm512_set1_ps(factor[r]);
    for (int z = 0; z < NZ; z++) a[r][z] = _mm512_mul_ps(_mm512_maskz_loadu_ps(cols[z], o[r] + c0 + 16 * z), f);
  }
  const float *v = vp + c0;
  for (int j = 0; j < keys; j++, v += ldv) {
    __m512 x[4];
    for (int z = 0; z < NZ; z++) x[z] = _mm512_load_ps(v + 16 * z);
    for (int r = 0; r < 4; r++) {
      const __m512 p = _mm512_set1_ps(weights[r][j]);
      for (int z = 0; z < NZ; z++) a[r][z] = _mm512_fmadd_ps(p, x[z], a[r][z]);
    }
  }
  for (int r = 0; r < 4; r++)
    for (int z = 0; z < NZ; z++) _mm512_mask_storeu_ps(o[r] + c0 + 16 * z, cols[z], a[r][z]);
}

/// One group's rows against W (1..4) columns of 16 packed keys starting at tile position `pos`, restricted
/// to positions [lo, hi). `kt` points at the first column's K^T[0], `vp` at its first V row.
/// `m`, `l`: the group's 4 running maxima and sums; `acc`: its 4 output rows.
GA_AVX512_INLINE void group_block(const ga_tile *t, int group, const float *kt, const float *vp, int ldv,
                                  int64_t pos, int64_t lo, int64_t hi, float *m, float *l, const int W) {
  const int d = t->key_dim, dv = t->value_dim;
  const float *q0 = t->query[group * 4], *q1 = t->query[group * 4 + 1];
  const float *q2 = t->query[group * 4 + 2], *q3 = t->query[group * 4 + 3];
  __m512 s[4][4];
  for (int r = 0; r < 4; r++)
    for (int w = 0; w < W; w++) s[r][w] = _mm512_setzero_ps();
  // S = Q . K^T: per dimension c, W aligned loads of K^T[c] and 4 broadcasts of q[r][c].
  for (int c = 0; c < d; c++) {
    const float *k = kt + (int64_t)c * GA_PACK_BLOCK;
    __m512 kv[4];
    for (int w = 0; w < W; w++) kv[w] = _mm512_load_ps(k + 16 * w);
    const __m512 b0 = _mm512_set1_ps(q0[c]), b1 = _mm512_set1_ps(q1[c]);
    const __m512 b2 = _mm512_set1_ps(q2[c]), b3 = _mm512_set1_ps(q3[c]);
    for (int w = 0; w < W; w++) {
      s[0][w] = _mm512_fmadd_ps(b0, kv[w], s[0][w]);
      s[1][w] = _mm512_fmadd_ps(b1, kv[w], s[1][w]);
      s[2][w] = _mm512_fmadd_ps(b2, kv[w], s[2][w]);
      s[3][w] = _mm512_fmadd_ps(b3, kv[w], s[3][w]);
    }
  }
  // Lane masks: the group's span, and the tile's mask bytes [group][key][row of group], 64 bytes per
  // column of 16 keys; bit 4i + r of a column's byte mask is row r's key i.
  uint64_t bytes[4];
  __mmask16 span[4];
  for (int w = 0; w < W; w++) {
    const int64_t p = pos + 16 * w;
    span[w] = range_mask(p, lo, hi);
    if (t->mask) {
      const int64_t left = (t->n - p) * 4;
      const __mmask64 readable = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
      const __m512i b = _mm512_maskz_loadu_epi8(readable, t->mask + ((int64_t)group * t->n + p) * 4);
      bytes[w] = _mm512_test_epi8_mask(b, b);
    }
  }
  const __m512 scale = _mm512_set1_ps(t->scale), minus_inf = _mm512_set1_ps(-INFINITY);
  __attribute__((aligned(64))) float weights[4][GA_PACK_BLOCK];
  float factor[4];
  for (int r = 0; r < 4; r++) {
    __m512 mx = minus_inf;
    for (int w = 0; w < W; w++) {
      const __mmask16 lanes = t->mask ? (__mmask16)(span[w] & _pext_u64(bytes[w], 0x1111111111111111ull << r)) : span[w];
      s[r][w] = _mm512_mask_mul_ps(minus_inf, lanes, s[r][w], scale);
      mx = _mm512_max_ps(mx, s[r][w]);
    }
    const float block_max = _mm512_reduce_max_ps(mx);
    const float m_old = m[r];
    const float m_new = block_max > m_old ? block_max : m_old;
    if (m_new == -INFINITY) {  // nothing attended yet: every weight is 0, the state stays empty
      factor[r] = 1.0f;
      for (int w = 0; w < W; w++) _mm512_store_ps(&weights[r][16 * w], _mm512_setzero_ps());
      continue;
    }
    const __m512 shift = _mm512_set1_ps(m_new);
    factor[r] = _mm512_cvtss_f32(exp_avx512(_mm512_set1_ps(m_old - m_new)));  // 0 from -inf, 1 if unchanged
    __m512 sum = _mm512_setzero_ps();
    for (int w = 0; w < W; w++) {
      const __m512 p = exp_avx512(_mm512_sub_ps(s[r][w], shift));
      _mm512_store_ps(&weights[r][16 * w], p);
      sum = _mm512_add_ps(sum, p);
    }
    m[r] = m_new;
    l[r] = l[r] * factor[r] + _mm512_reduce_add_ps(sum);
  }
  // O = O * factor + P . V, 64 value columns (4 zmm) per pass for the 4 rows: 16 accumulators.
  float *o[4] = {t->acc[group * 4], t->acc[group * 4 + 1], t->acc[group * 4 + 2], t->acc[group * 4 + 3]};
  int c0 = 0;
  for (; c0 + 64 <= dv; c0 += 64) pv_pass(o, c0, dv, factor, weights, vp, ldv, 16 * W, 4);
  switch ((dv - c0 + 15) / 16) {
    case 1: pv_pass(o, c0, dv, factor, weights, vp, ldv, 16 * W, 1); break;
    case 2: pv_pass(o, c0, dv, factor, weights, vp, ldv, 16 * W, 2); break;
    case 3: pv_pass(o, c0, dv, factor, weights, vp, ldv, 16 * W, 3); break;
    default: break;
  }
}

GA_AVX512 void group_block_any(const ga_tile *t, int group, const float *kt, const float *vp, int ldv,
                               int64_t pos, int64_t lo, int64_t hi, float *m, float *l, int W) {
  switch (W) {
    case 1: group_block(t, group, kt, vp, ldv, pos, lo, hi, m, l, 1); break;
    case 2: group_block(t, group, kt, vp, ldv, pos, lo, hi, m, l, 2); break;
    case 3: group_block(t, group, kt, vp, ldv, pos, lo, hi, m, l, 3); break;
    default: group_block(t, group, kt, vp, ldv, pos, lo, hi, m, l, 4); break;
  }
}

GA_AVX512_TARGET void ga_tile_attend_avx512(const ga_tile *t) {
  const int d = t->key_dim, ldv = (t->value_dim + 15) & ~15;
  const int groups = t->rows / 4;
  const int64_t chunk = ga_pack_chunk_keys(t->key_dim, t->value_dim);
  float m[GA_MAX_ROWS], l[GA_MAX_ROWS];
  int64_t lo_all = INT64_MAX, hi_all = 0;
  for (int r = 0; r < t->rows; r++) {
    m[r] = *t->m[r];
    l[r] = *t->l[r];
  }
  for (int g = 0; g < groups; g++) {
    if (t->group_begin[g] < lo_all) lo_all = t->group_begin[g];
    if (t->group_end[g] > hi_all) hi_all = t->group_end[g];
  }
  if (hi_all > t->n) hi_all = t->n;
  float *kt = t->pack;
  float *vp = t->pack + chunk * d;
  for (int64_t first = lo_all; first < hi_all; first += chunk) {
    const int64_t count = hi_all - first < chunk ? hi_all - first : chunk;
    pack_chunk(t, first, count, kt, vp, ldv);
    for (int g = 0; g < groups; g++) {
      const int64_t lo = t->group_begin[g] > first ? t->group_begin[g] : first;
      const int64_t hi = t->group_end[g] < first + count ? t->group_end[g] : first + count;
      if (lo >= hi) continue;
      for (int64_t b = (lo - first) / GA_PACK_BLOCK; b * GA_PACK_BLOCK < hi - first; b++) {
        const int64_t start = first + b * GA_PACK_BLOCK;
        const int64_t from = (lo > start ? lo - start : 0) / 16;
        const int64_t to = ((hi < start + GA_PACK_BLOCK ? hi - start : GA_PACK_BLOCK) + 15) / 16;
        group_block_any(t, g, kt + b * (int64_t)d * GA_PACK_BLOCK + from * 16, vp + (b * GA_PACK_BLOCK + from * 16) * ldv,
                        ldv, start + from * 16, lo, hi, m + 4 * g, l + 4 * g, (int)(to - from));
      }
    }
  }
  for (int r = 0; r < t->rows; r++) {
    *t->m[r] = m[r];
    *t->l[r] = l[r];
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
