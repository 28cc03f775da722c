// The AVX2 tile kernel's parts that read keys and values, instantiated once per storage type.
// Kernels.c includes this file three times with GA_KV (the stored element type), GA_FN(name) (the
// instance's name) and GA_LOAD8 / GA_LOAD_TAIL (8 elements, or the first `count`, widened to fp32).
// No include guard on purpose.

// Eight dot products q_a . k_b over d, where (a, b) runs over the register block's pairs.
// rows == 4: pairs (row r, key j0 + h) at lane h*4 + r; rows == 1: (row 0, key j0 + h) at lane h.
GA_AVX2 __m256 GA_FN(dots4x2)(const float *const q[4], const GA_KV *k0, const GA_KV *k1, int d) {
  __m256 a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
  int c = 0;
  for (; c + 8 <= d; c += 8) {
    const __m256 x0 = GA_LOAD8(k0 + c), x1 = GA_LOAD8(k1 + c);
    for (int r = 0; r < 4; r++) {
      const __m256 qr = _mm256_loadu_ps(q[r] + c);
      a[r] = _mm256_fmadd_ps(qr, x0, a[r]);
      a[4 + r] = _mm256_fmadd_ps(qr, x1, a[4 + r]);
    }
  }
  if (c < d) {
    const __m256i m = tail_mask(d - c);
    const __m256 x0 = GA_LOAD_TAIL(k0 + c, d - c), x1 = GA_LOAD_TAIL(k1 + c, d - c);
    for (int r = 0; r < 4; r++) {
      const __m256 qr = _mm256_maskload_ps(q[r] + c, m);
      a[r] = _mm256_fmadd_ps(qr, x0, a[r]);
      a[4 + r] = _mm256_fmadd_ps(qr, x1, a[4 + r]);
    }
  }
  return sum8(a);
}

GA_AVX2 __m256 GA_FN(dots1x8)(const float *q, const GA_KV *const k[8], int d) {
  __m256 a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
  int c = 0;
  for (; c + 8 <= d; c += 8) {
    const __m256 qv = _mm256_loadu_ps(q + c);
    for (int h = 0; h < 8; h++) a[h] = _mm256_fmadd_ps(qv, GA_LOAD8(k[h] + c), a[h]);
  }
  if (c < d) {
    const __m256i m = tail_mask(d - c);
    const __m256 qv = _mm256_maskload_ps(q + c, m);
    for (int h = 0; h < 8; h++) a[h] = _mm256_fmadd_ps(qv, GA_LOAD_TAIL(k[h] + c, d - c), a[h]);
  }
  return sum8(a);
}

// acc[r] (value_dim floats) += sum over the block's keys of p[key][r] * v[key]; R rows, W vectors of 8 per pass.
#undef GA_PV_PASS
#undef GA_PV_TAIL
#define GA_PV_PASS(R, W)                                                                              \
  for (; c + 8 * (W) <= dv; c += 8 * (W)) {                                                           \
    __m256 a[R][W];                                                                                   \
    for (int r = 0; r < (R); r++)                                                                     \
      for (int w = 0; w < (W); w++) a[r][w] = _mm256_loadu_ps(g->acc[r] + c + 8 * w);                \
    for (int64_t j = 0; j < count; j++) {                                                             \
      const GA_KV *v = (const GA_KV *)t->value + t->keys[block + j] * dv + c;                                        \
      __m256 x[W];                                                                                    \
      for (int w = 0; w < (W); w++) x[w] = GA_LOAD8(v + 8 * w);                                \
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
      const __m256 x = GA_LOAD_TAIL((const GA_KV *)t->value + t->keys[block + j] * dv + c, dv - c);                 \
      for (int r = 0; r < (R); r++) a[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(weights + j * (R) + r), x, a[r]); \
    }                                                                                                 \
    for (int r = 0; r < (R); r++) _mm256_maskstore_ps(g->acc[r] + c, m, a[r]);                        \
  }

GA_AVX2 void GA_FN(pv4)(const ga_tile *t, const ga_group *g, const float *weights, int64_t block, int64_t count) {
  const int dv = t->value_dim;
  int c = 0;
  // Two vectors per row: 8 accumulators + 2 values + 1 weight fit the 16 registers without a spill
  // (a spilled accumulator puts a store-load round trip on its FMA chain).
  GA_PV_PASS(4, 2)
  GA_PV_PASS(4, 1)
  GA_PV_TAIL(4)
}

GA_AVX2 void GA_FN(pv1)(const ga_tile *t, const ga_group *g, const float *weights, int64_t block, int64_t count) {
  const int dv = t->value_dim;
  int c = 0;
  GA_PV_PASS(1, 8)
  GA_PV_PASS(1, 1)
  GA_PV_TAIL(1)
}

// One group's pass over key positions [begin, begin + count) (count <= GA_KEY_BLOCK): scores, softmax, P.V.
GA_AVX2 void GA_FN(attend_group_block)(const ga_tile *t, const ga_group *g, int64_t begin, int64_t count) {
  float *scores = t->scratch;
  const int d = t->key_dim;
  const __m256 scale = _mm256_set1_ps(t->scale);
  int64_t padded;
  if (g->rows == 4) {
    padded = (count + 1) & ~(int64_t)1;
    for (int64_t j = 0; j < padded; j += 2) {
      const GA_KV *k0 = (const GA_KV *)t->key + t->keys[begin + j] * d;
      const GA_KV *k1 = j + 1 < count ? (const GA_KV *)t->key + t->keys[begin + j + 1] * d : k0;
      _mm256_store_ps(scores + j * 4, _mm256_mul_ps(GA_FN(dots4x2)(g->query, k0, k1, d), scale));
    }
    if (ga_has_score_mods(&t->mods)) {
      for (int64_t j = 0; j < count; j++)
        for (int r = 0; r < 4; r++)
          scores[j * 4 + r] = ga_modify_score_scalar(&t->mods, scores[j * 4 + r], g->position[r] - key_position(t, begin + j), NULL);
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
      const GA_KV *k[8];
      for (int h = 0; h < 8; h++) {
        const int64_t idx = j + h < count ? j + h : count - 1;
        k[h] = (const GA_KV *)t->key + t->keys[begin + idx] * d;
      }
      _mm256_store_ps(scores + j, _mm256_mul_ps(GA_FN(dots1x8)(g->query[0], k, d), scale));
    }
    if (ga_has_score_mods(&t->mods))
      for (int64_t j = 0; j < count; j++)
        scores[j] = ga_modify_score_scalar(&t->mods, scores[j], g->position[0] - key_position(t, begin + j), NULL);
    for (int64_t j = count; j < padded; j++) scores[j] = -INFINITY;
    // Single-row tiles hold exactly the row's keys: no mask.
  }
  softmax_block(t, g, scores, padded);
  if (g->rows == 4) GA_FN(pv4)(t, g, scores, begin, count); else GA_FN(pv1)(t, g, scores, begin, count);
}

GA_AVX2 void GA_FN(attend_avx2)(const ga_tile *t) {
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
      g->position[r] = t->row_position[row];
    }
    g->mask = t->mask ? t->mask + (int64_t)gi * t->n * 4 : NULL;
  }
  // Block-major: each block of GA_KEY_BLOCK keys of K and V is brought into L1 once and used by every group.
  for (int64_t block = 0; block < t->n; block += GA_KEY_BLOCK) {
    const int64_t block_end = t->n - block < GA_KEY_BLOCK ? t->n : block + GA_KEY_BLOCK;
    for (int gi = 0; gi < group_count; gi++) {
      const int64_t lo = t->rows == 1 || t->group_begin[gi] < block ? block : t->group_begin[gi];
      const int64_t hi = t->rows == 1 || t->group_end[gi] > block_end ? block_end : t->group_end[gi];
      if (lo < hi) GA_FN(attend_group_block)(t, &groups[gi], lo, hi - lo);
    }
  }
}
