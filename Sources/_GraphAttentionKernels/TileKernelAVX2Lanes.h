// The AVX2 form of the AVX-512 kernel's design (TileKernelAVX512.c): tiles of 4-16 rows with the rows in
// the lanes of two 8-lane vectors (rows 0-7 and 8-15). Q^T is packed once per tile; per 64-key block,
// S^T[j] = sum over c of Q^T[c] * k_j[c] for 6 keys at a time (12 ymm accumulators, one broadcast of
// k_j[c] per key per c: outer products, no horizontal sums); score modifiers; masks become -inf by blend; the online
// softmax runs vertically on both halves; O += P.V per group of 4 rows, 4 x 3 ymm accumulators (24 value
// columns) per pass. fp16/bf16 K and V rows are widened into fp32 rows once per block.
// Included once by Kernels.c, after the AVX2 helpers (ga_exp_avx2 from VectorMath.h, tail_mask, the fp16/bf16 loaders).

#define GA_LANE_KEYS 6
#define GA_AVX2_INLINE GA_AVX2 __attribute__((always_inline))

// `count` (<= 8) elements of a key or value row from element `offset`, widened to fp32, zeros after.
GA_AVX2 __m256 lanes_load8(const void *base, int type, int64_t offset, int count) {
  switch (type) {
    case GA_FLOAT16:
      return count >= 8 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + offset)))
                        : load_tail_f16((const uint16_t *)base + offset, count);
    case GA_BFLOAT16:
      return count >= 8 ? load8_bf16((const uint16_t *)base + offset) : load_tail_bf16((const uint16_t *)base + offset, count);
    default:
      return count >= 8 ? _mm256_loadu_ps((const float *)base + offset)
                        : _mm256_maskload_ps((const float *)base + offset, tail_mask(count));
  }
}

GA_AVX2 void lanes_widen_block(const ga_tile *t, int64_t first, int64_t count, float *kbuf, float *vbuf, int ldv,
                               const float **kp, const float **vp) {
  const int d = t->key_dim, dv = t->value_dim;
  for (int64_t j = 0; j < count; j++) {
    const int64_t key = t->keys[first + j];
    float *kr = kbuf + j * d, *vr = vbuf + j * ldv;
    int c = 0;
    for (; c + 8 <= d; c += 8) _mm256_storeu_ps(kr + c, lanes_load8(t->key, t->kv_type, key * d + c, 8));
    if (c < d) _mm256_maskstore_ps(kr + c, tail_mask(d - c), lanes_load8(t->key, t->kv_type, key * d + c, d - c));
    for (c = 0; c < ldv; c += 8) _mm256_storeu_ps(vr + c, lanes_load8(t->value, t->kv_type, key * dv + c, dv - c < 0 ? 0 : dv - c));
    kp[j] = kr;
    vp[j] = vr;
  }
}

// Scores of keys j0..j0+5 of the block (fewer at its end) from the scaled Q^T, masked and stored as 16-float
// rows; key positions in [0, shared) and [all_begin, all_end) are attended by every row (rows' spans only).
GA_AVX2_INLINE void lanes_score_keys(const ga_tile *t, int groups, const float *qt, const float *const *kp, int64_t first,
                              int64_t j0, int64_t count, const int32_t *begin, const int32_t *end,
                              int64_t shared, int64_t all_begin, int64_t all_end, float *scores) {
  const int d = t->key_dim;
  const float *k[GA_LANE_KEYS];
  for (int i = 0; i < GA_LANE_KEYS; i++) k[i] = kp[j0 + i < count ? j0 + i : j0];
  __m256 lo[GA_LANE_KEYS], hi[GA_LANE_KEYS];
  for (int i = 0; i < GA_LANE_KEYS; i++) lo[i] = hi[i] = _mm256_setzero_ps();
  for (int c = 0; c < d; c++) {
    const __m256 q0 = _mm256_load_ps(qt + c * 16), q1 = _mm256_load_ps(qt + c * 16 + 8);
    for (int i = 0; i < GA_LANE_KEYS; i++) {
      const __m256 b = _mm256_broadcast_ss(k[i] + c);
      lo[i] = _mm256_fmadd_ps(b, q0, lo[i]);
      hi[i] = _mm256_fmadd_ps(b, q1, hi[i]);
    }
  }
  const __m256 minus_inf = _mm256_set1_ps(-INFINITY);
  for (int i = 0; i < GA_LANE_KEYS && j0 + i < count; i++) {
    const int64_t p = first + j0 + i;
    __m256i on_lo, on_hi;  // all-ones lanes attend
    if (p < shared || (p >= all_begin && p < all_end)) {
      on_lo = on_hi = _mm256_set1_epi32(-1);  // lanes past the tile's rows are never read
    } else if (!t->mask && t->has_row_spans) {
      const __m256i position = _mm256_set1_epi32((int32_t)p);
      const __m256i b0 = _mm256_loadu_si256((const __m256i *)begin), b1 = _mm256_loadu_si256((const __m256i *)(begin + 8));
      const __m256i e0 = _mm256_loadu_si256((const __m256i *)end), e1 = _mm256_loadu_si256((const __m256i *)(end + 8));
      on_lo = _mm256_andnot_si256(_mm256_cmpgt_epi32(b0, position), _mm256_cmpgt_epi32(e0, position));
      on_hi = _mm256_andnot_si256(_mm256_cmpgt_epi32(b1, position), _mm256_cmpgt_epi32(e1, position));
    } else {
      uint32_t w[4] = {0, 0, 0, 0};
      for (int g = 0; g < groups; g++) {
        if (t->mask) memcpy(&w[g], t->mask + ((int64_t)g * t->n + p) * 4, 4);
        else if (t->group_begin[g] <= p && p < t->group_end[g]) w[g] = 0x01010101u;
      }
      const __m128i bytes = _mm_loadu_si128((const __m128i *)w);
      const __m256i zero = _mm256_setzero_si256();
      on_lo = _mm256_xor_si256(_mm256_cmpeq_epi32(_mm256_cvtepu8_epi32(bytes), zero), _mm256_set1_epi32(-1));
      on_hi = _mm256_xor_si256(_mm256_cmpeq_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8)), zero), _mm256_set1_epi32(-1));
    }
    __m256 v_lo = lo[i], v_hi = hi[i];
    if (ga_has_score_mods(&t->mods)) {
      const __m256i column = _mm256_set1_epi32((int32_t)(t->key_positions ? t->key_positions[p] : t->keys[p]));
      const __m256i rows_lo = _mm256_loadu_si256((const __m256i *)t->row_position);
      const __m256i rows_hi = _mm256_loadu_si256((const __m256i *)(t->row_position + 8));
      v_lo = ga_modify_scores_avx2(&t->mods, v_lo, _mm256_sub_epi32(rows_lo, column), NULL);
      v_hi = ga_modify_scores_avx2(&t->mods, v_hi, _mm256_sub_epi32(rows_hi, column), NULL);
    }
    _mm256_store_ps(scores + (j0 + i) * 16, _mm256_blendv_ps(minus_inf, v_lo, _mm256_castsi256_ps(on_lo)));
    _mm256_store_ps(scores + (j0 + i) * 16 + 8, _mm256_blendv_ps(minus_inf, v_hi, _mm256_castsi256_ps(on_hi)));
  }
}

// O = O * factor + P . V over value columns [c0, c0 + 8 NZ) of rows r0..r0+3 (NZ <= 3, a constant once
// inlined); `full`: all 8 NZ columns exist (plain loads; masked loads and stores only at the row's end).
GA_AVX2_INLINE void lanes_pv_pass(const ga_tile *t, int r0, int c0, const float *factor, const float *weights,
                                  const float *const *vp, int64_t count, const int NZ, const int full) {
  const int dv = t->value_dim;
  __m256i cols[3];
  for (int z = 0; z < NZ; z++) cols[z] = tail_mask(dv - c0 - 8 * z >= 8 ? 8 : dv - c0 - 8 * z);
  __m256 a[4][3];
  for (int r = 0; r < 4; r++) {
    const __m256 f = _mm256_set1_ps(factor[r0 + r]);
    for (int z = 0; z < NZ; z++)
      a[r][z] = _mm256_mul_ps(full ? _mm256_loadu_ps(t->acc[r0 + r] + c0 + 8 * z) : _mm256_maskload_ps(t->acc[r0 + r] + c0 + 8 * z, cols[z]), f);
  }
  for (int64_t j = 0; j < count; j++) {
    const float *v = vp[j] + c0;
    __m256 x[3];
    for (int z = 0; z < NZ; z++) x[z] = full ? _mm256_loadu_ps(v + 8 * z) : _mm256_maskload_ps(v + 8 * z, cols[z]);
    const float *p = weights + j * 16 + r0;
    for (int r = 0; r < 4; r++) {
      const __m256 w = _mm256_broadcast_ss(p + r);
      for (int z = 0; z < NZ; z++) a[r][z] = _mm256_fmadd_ps(w, x[z], a[r][z]);
    }
  }
  for (int r = 0; r < 4; r++)
    for (int z = 0; z < NZ; z++) {
      if (full) _mm256_storeu_ps(t->acc[r0 + r] + c0 + 8 * z, a[r][z]);
      else _mm256_maskstore_ps(t->acc[r0 + r] + c0 + 8 * z, cols[z], a[r][z]);
    }
}

GA_AVX2 void attend_avx2_lanes(const ga_tile *t) {
  const int d = t->key_dim, dv = t->value_dim, ldv = (dv + 15) & ~15;
  const int rows = t->rows, groups = rows / 4;
  float *qt = t->pack;
  float *scores = qt + (int64_t)d * 16;
  float *kbuf = scores + 64 * 16;
  float *vbuf = kbuf + 64 * (int64_t)d;
  // Q^T, scaled (one multiply per element instead of one per score).
  for (int c = 0; c < d; c++)
    for (int r = 0; r < 16; r++) qt[c * 16 + r] = r < rows ? t->scale * t->query[r][c] : 0.0f;
  // The next tile's rows usually follow this tile's last row in memory: fetch them into L2 while this tile
  // computes (a prefetch never faults, so a guess past the end of Q is harmless).
  for (int64_t e = 0; e < (int64_t)GA_MAX_ROWS * d; e += 16) _mm_prefetch((const char *)(t->query[rows - 1] + d + e), _MM_HINT_T1);
  int32_t begin[16], end[16];
  __attribute__((aligned(32))) float state[16];
  for (int r = 0; r < 16; r++) {
    begin[r] = r < rows ? t->row_begin[r] : 0;
    end[r] = r < rows ? t->row_end[r] : 0;
  }
  for (int r = 0; r < 16; r++) state[r] = r < rows ? *t->m[r] : -INFINITY;
  __m256 m_lo = _mm256_load_ps(state), m_hi = _mm256_load_ps(state + 8);
  for (int r = 0; r < 16; r++) state[r] = r < rows ? *t->l[r] : 0.0f;
  __m256 l_lo = _mm256_load_ps(state), l_hi = _mm256_load_ps(state + 8);
  const ga_tile_extent extent = ga_tile_extent_of(t);
  const int64_t lo_all = extent.first, hi_all = extent.end, all_begin = extent.all_begin, all_end = extent.all_end;
  const float *kp[64], *vp[64];
  const __m256 minus_inf = _mm256_set1_ps(-INFINITY), zero = _mm256_setzero_ps();
  __attribute__((aligned(32))) float factor[16];
  for (int64_t first = lo_all; first < hi_all; first += 64) {
    const int64_t count = hi_all - first < 64 ? hi_all - first : 64;
    if (t->kv_type == GA_FLOAT32) {
      for (int64_t j = 0; j < count; j++) {
        kp[j] = (const float *)t->key + t->keys[first + j] * d;
        vp[j] = (const float *)t->value + t->keys[first + j] * dv;
      }
    } else {
      lanes_widen_block(t, first, count, kbuf, vbuf, ldv, kp, vp);
    }
    for (int64_t j0 = 0; j0 < count; j0 += GA_LANE_KEYS) lanes_score_keys(t, groups, qt, kp, first, j0, count, begin, end, extent.shared, all_begin, all_end, scores);
    __m256 mx_lo = minus_inf, mx_hi = minus_inf;
    for (int64_t j = 0; j < count; j++) {
      mx_lo = _mm256_max_ps(mx_lo, _mm256_load_ps(scores + j * 16));
      mx_hi = _mm256_max_ps(mx_hi, _mm256_load_ps(scores + j * 16 + 8));
    }
    const __m256 new_lo = _mm256_max_ps(m_lo, mx_lo), new_hi = _mm256_max_ps(m_hi, mx_hi);
    // A row with nothing attended yet (m = -inf) shifts by 0: its scores are all -inf, so its weights are 0.
    const __m256 shift_lo = _mm256_blendv_ps(new_lo, zero, _mm256_cmp_ps(new_lo, minus_inf, _CMP_EQ_OQ));
    const __m256 shift_hi = _mm256_blendv_ps(new_hi, zero, _mm256_cmp_ps(new_hi, minus_inf, _CMP_EQ_OQ));
    const __m256 f_lo = ga_exp_avx2(_mm256_sub_ps(m_lo, shift_lo)), f_hi = ga_exp_avx2(_mm256_sub_ps(m_hi, shift_hi));
    __m256 sum_lo = zero, sum_hi = zero;
    for (int64_t j = 0; j < count; j++) {
      const __m256 p0 = ga_exp_avx2(_mm256_sub_ps(_mm256_load_ps(scores + j * 16), shift_lo));
      const __m256 p1 = ga_exp_avx2(_mm256_sub_ps(_mm256_load_ps(scores + j * 16 + 8), shift_hi));
      _mm256_store_ps(scores + j * 16, p0);
      _mm256_store_ps(scores + j * 16 + 8, p1);
      sum_lo = _mm256_add_ps(sum_lo, p0);
      sum_hi = _mm256_add_ps(sum_hi, p1);
    }
    l_lo = _mm256_fmadd_ps(l_lo, f_lo, sum_lo);
    l_hi = _mm256_fmadd_ps(l_hi, f_hi, sum_hi);
    m_lo = new_lo;
    m_hi = new_hi;
    _mm256_store_ps(factor, f_lo);
    _mm256_store_ps(factor + 8, f_hi);
    for (int g = 0; g < groups; g++) {
      // A group without keys in this block keeps its m (its lanes were all masked), so its factor is 1.
      if (t->group_end[g] <= first || t->group_begin[g] >= first + count) continue;
      int c0 = 0;
      for (; c0 + 24 <= dv; c0 += 24) lanes_pv_pass(t, 4 * g, c0, factor, scores, vp, count, 3, 1);
      switch (dv - c0) {
        case 0: break;
        case 8: lanes_pv_pass(t, 4 * g, c0, factor, scores, vp, count, 1, 1); break;
        case 16: lanes_pv_pass(t, 4 * g, c0, factor, scores, vp, count, 2, 1); break;
        default:
          switch ((dv - c0 + 7) / 8) {
            case 1: lanes_pv_pass(t, 4 * g, c0, factor, scores, vp, count, 1, 0); break;
            case 2: lanes_pv_pass(t, 4 * g, c0, factor, scores, vp, count, 2, 0); break;
            default: lanes_pv_pass(t, 4 * g, c0, factor, scores, vp, count, 3, 0); break;
          }
      }
    }
  }
  _mm256_store_ps(state, m_lo);
  _mm256_store_ps(state + 8, m_hi);
  for (int r = 0; r < rows; r++) *t->m[r] = state[r];
  _mm256_store_ps(state, l_lo);
  _mm256_store_ps(state + 8, l_hi);
  for (int r = 0; r < rows; r++) *t->l[r] = state[r];
}
