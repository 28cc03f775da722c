// The backward tile kernels: one shape serves both passes (see GraphAttentionBackward.h).
//
// Each 16-column block is packed transposed, [dim][16 columns], so that a row's 16 scores (and 16 dP
// values) accumulate in one vector by broadcasting the row's elements: no horizontal sums. The
// gradient updates then read the columns' rows as they lie (row-major) and broadcast one ds (or p) per
// column. Rows are register-blocked four at a time, so a packed block is read once per four rows.
#include "GraphAttentionBackward.h"
#include "VectorMath.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define GA_X86 1
#include <immintrin.h>
#endif

int64_t ga_backward_scratch_floats(int a_dim, int b_dim) {
  // Packed A and B of a pair of blocks, then lse, delta, and p and ds of four rows, for 32 columns (the AVX2
  // kernel keeps ds of all 16 rows for its 16-column blocks in the same room); then the tile's rows interleaved
  // by group, [group][c][4 rows], for a and b.
  return 2 * (int64_t)GA_BW_BLOCK * (a_dim + b_dim) + 12 * 2 * GA_BW_BLOCK + (int64_t)GA_BW_MAX_ROWS * (a_dim + b_dim);
}

// MARK: - Portable kernel (plain C; the compiler may vectorise it for the baseline ISA)

static inline float lse_of(const ga_backward_tile *t, int r, int64_t col) {
  return t->col_lse ? t->col_lse[col] : t->row_lse[r];
}
static inline float delta_of(const ga_backward_tile *t, int r, int64_t col) {
  return t->col_delta ? t->col_delta[col] : t->row_delta[r];
}

static void backward_portable(const ga_backward_tile *t) {
  const int da = t->a_dim, db = t->b_dim, modified = ga_has_score_mods(&t->mods);
  for (int r = 0; r < t->rows; r++) {
    const float *a = t->a[r], *b = t->b[r];
    float *ga = t->grad_a[r], *gb = t->grad_b[r];
    for (int64_t j = 0; j < t->n; j++) {
      if (t->mask && !t->mask[(int64_t)r * t->n + j]) continue;
      const int64_t col = t->columns[j];
      const float *A = t->A + col * da, *B = t->B + col * db;
      float s = 0, dp = 0;
      for (int c = 0; c < da; c++) s += a[c] * A[c];
      for (int c = 0; c < db; c++) dp += b[c] * B[c];
      float slope = 1.0f, z = s * t->scale;
      if (modified) z = ga_modify_score_scalar(&t->mods, z, t->row_position[r] - col, &slope);
      const float p = expf(z - lse_of(t, r, col));
      const float ds = p * (dp - delta_of(t, r, col)) * slope;
      for (int c = 0; c < da; c++) ga[c] += ds * A[c];
      if (gb)
        for (int c = 0; c < db; c++) gb[c] += p * B[c];
      if (t->grad_A) {
        float *gA = t->grad_A + (col - t->grad_A_first) * da;
        for (int c = 0; c < da; c++) gA[c] += ds * a[c];
      }
    }
  }
}

#if GA_X86
// The tile's rows, interleaved per group of four, [group][c][4]: the score loops then broadcast every
// row's element from one pointer (eight row pointers left too few registers; they were reloaded per step).
static void interleave_rows(const ga_backward_tile *t, float *ra, float *rb) {
  const int da = t->a_dim, db = t->b_dim;
  for (int r = 0; r < t->rows; r++) {
    float *a = ra + (r / 4) * 4 * da + r % 4, *b = rb + (r / 4) * 4 * db + r % 4;
    for (int c = 0; c < da; c++) a[c * 4] = t->a[r][c];
    for (int c = 0; c < db; c++) b[c * 4] = t->b[r][c];
  }
}

// MARK: - AVX-512 kernel (16 columns per block)

#define GA_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) static inline
/// Columns of the AVX-512 kernel's step: a pair of 16-column blocks.
#define GA_AVX512_PAIR 32

// grad[r] (dim floats) += sum over the block's columns j of w[r][j] * X_j, R rows, V vectors of 16 per pass
// (R x V accumulators; each loaded row of X serves R rows, each broadcast weight V vectors).
#define GA_AVX512_UPDATE_PASS(R, V, grad, w, X, dim)                                                      \
  for (; c + 16 * (V) <= (dim); c += 16 * (V)) {                                                          \
    __m512 acc[R][V];                                                                                     \
    for (int r = 0; r < (R); r++)                                                                         \
      for (int u = 0; u < (V); u++) acc[r][u] = _mm512_loadu_ps(grad[r] + c + 16 * u);                   \
    for (int j = 0; j < count; j++) {                                                                     \
      const float *x = (X) + cols[j] * (int64_t)(dim) + c;                                                \
      __m512 xv[V];                                                                                       \
      for (int u = 0; u < (V); u++) xv[u] = _mm512_loadu_ps(x + 16 * u);                                  \
      for (int r = 0; r < (R); r++) {                                                                     \
        const __m512 weight = _mm512_set1_ps(w[r * GA_AVX512_PAIR + j]);                                     \
        for (int u = 0; u < (V); u++) acc[r][u] = _mm512_fmadd_ps(weight, xv[u], acc[r][u]);              \
      }                                                                                                   \
    }                                                                                                     \
    for (int r = 0; r < (R); r++)                                                                         \
      for (int u = 0; u < (V); u++) _mm512_storeu_ps(grad[r] + c + 16 * u, acc[r][u]);                    \
  }

#define GA_AVX512_UPDATE(R, grad, w, X, dim)                                                               \
  do {                                                                                                      \
    int c = 0;                                                                                              \
    GA_AVX512_UPDATE_PASS(R, 4, grad, w, X, dim)                                                            \
    GA_AVX512_UPDATE_PASS(R, 2, grad, w, X, dim)                                                            \
    for (; c < (dim); c += 16) {                                                                            \
      const __mmask16 tail = (dim) - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << ((dim) - c)) - 1);   \
      __m512 acc[R];                                                                                        \
      for (int r = 0; r < (R); r++) acc[r] = _mm512_maskz_loadu_ps(tail, grad[r] + c);                    \
      for (int j = 0; j < count; j++) {                                                                     \
        const __m512 x0 = _mm512_maskz_loadu_ps(tail, (X) + cols[j] * (int64_t)(dim) + c);                   \
        for (int r = 0; r < (R); r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(w[r * GA_AVX512_PAIR + j]), x0, acc[r]); \
      }                                                                                                     \
      for (int r = 0; r < (R); r++) _mm512_mask_storeu_ps(grad[r] + c, tail, acc[r]);                       \
    }                                                                                                       \
  } while (0)

// grad_A[column] += sum over rows r of ds[r][j] * a_r for the block's `count` columns j: the R rows' vectors
// stay in registers (64 dimensions per pass), each column's gradient is loaded and stored once per pass. Per
// group, unlike the AVX2 kernel's update over the whole tile: with 32 registers the rows stay in registers, and
// the tile-wide form measured equal at d = 64 and 3-4% slower at d = 128.
GA_AVX512 __attribute__((always_inline)) void column_update_avx512(const ga_backward_tile *t, int r0, const int R, int count,
                                                                   const int64_t *cols, const float *dsw) {
  const int da = t->a_dim;
  for (int c = 0; c < da; c += 64) {
    __mmask16 m[4];
    __m512 a[4][4];
    for (int u = 0; u < 4; u++) {
      const int left = da - c - 16 * u;
      m[u] = left >= 16 ? (__mmask16)0xFFFF : (left > 0 ? (__mmask16)((1u << left) - 1) : (__mmask16)0);
    }
    for (int r = 0; r < R; r++)
      for (int u = 0; u < 4; u++) a[r][u] = _mm512_maskz_loadu_ps(m[u], t->a[r0 + r] + c + 16 * u);
    for (int j = 0; j < count; j++) {
      float *g = t->grad_A + (cols[j] - t->grad_A_first) * (int64_t)da + c;
      __m512 x[4];
      for (int u = 0; u < 4; u++) x[u] = _mm512_maskz_loadu_ps(m[u], g + 16 * u);
      for (int r = 0; r < R; r++) {
        const __m512 w = _mm512_set1_ps(dsw[r * GA_AVX512_PAIR + j]);
        for (int u = 0; u < 4; u++) x[u] = _mm512_fmadd_ps(w, a[r][u], x[u]);
      }
      for (int u = 0; u < 4; u++) _mm512_mask_storeu_ps(g + 16 * u, m[u], x[u]);
    }
  }
}

// Rows r0..r0+R-1 of the tile against a pair of packed blocks (32 columns; `count` <= 32 of them are real):
// 4R accumulators (S and dP of both blocks), so each broadcast row element serves two column vectors and
// 4R independent FMA chains cover the FMA latency. p and ds are stored as [row][32].
#define GA_AVX512_GROUP(R)                                                                                  \
  GA_AVX512 void group_avx512_##R(const ga_backward_tile *t, int r0, int64_t block, int count,              \
                                  const int64_t *cols, const float *A0, const float *B0, const float *A1,   \
                                  const float *B1, const float *lse, const float *delta, float *pw,          \
                                  float *dsw, const float *ra, const float *rb, const int32_t *colpos) {     \
    const int da = t->a_dim, db = t->b_dim;                                                                 \
    __m512 s0[R], dp0[R], s1[R], dp1[R];                                                                    \
    float *ga[R], *gb[R];                                                                                   \
    for (int r = 0; r < (R); r++) {                                                                         \
      s0[r] = dp0[r] = s1[r] = dp1[r] = _mm512_setzero_ps();                                                \
      ga[r] = t->grad_a[r0 + r];                                                                            \
      gb[r] = t->grad_b[r0 + r];                                                                            \
    }                                                                                                       \
    const int both = da < db ? da : db;                                                                     \
    for (int c = 0; c < both; c++) {                                                                        \
      const __m512 x0 = _mm512_load_ps(A0 + c * GA_BW_BLOCK), x1 = _mm512_load_ps(A1 + c * GA_BW_BLOCK);    \
      const __m512 y0 = _mm512_load_ps(B0 + c * GA_BW_BLOCK), y1 = _mm512_load_ps(B1 + c * GA_BW_BLOCK);    \
      for (int r = 0; r < (R); r++) {                                                                       \
        const __m512 a = _mm512_set1_ps(ra[c * 4 + r]), b = _mm512_set1_ps(rb[c * 4 + r]);                  \
        s0[r] = _mm512_fmadd_ps(a, x0, s0[r]);                                                              \
        s1[r] = _mm512_fmadd_ps(a, x1, s1[r]);                                                              \
        dp0[r] = _mm512_fmadd_ps(b, y0, dp0[r]);                                                            \
        dp1[r] = _mm512_fmadd_ps(b, y1, dp1[r]);                                                            \
      }                                                                                                     \
    }                                                                                                       \
    for (int c = both; c < da; c++) {                                                                       \
      const __m512 x0 = _mm512_load_ps(A0 + c * GA_BW_BLOCK), x1 = _mm512_load_ps(A1 + c * GA_BW_BLOCK);    \
      for (int r = 0; r < (R); r++) {                                                                       \
        const __m512 a = _mm512_set1_ps(ra[c * 4 + r]);                                                     \
        s0[r] = _mm512_fmadd_ps(a, x0, s0[r]);                                                              \
        s1[r] = _mm512_fmadd_ps(a, x1, s1[r]);                                                              \
      }                                                                                                     \
    }                                                                                                       \
    for (int c = both; c < db; c++) {                                                                       \
      const __m512 y0 = _mm512_load_ps(B0 + c * GA_BW_BLOCK), y1 = _mm512_load_ps(B1 + c * GA_BW_BLOCK);    \
      for (int r = 0; r < (R); r++) {                                                                       \
        const __m512 b = _mm512_set1_ps(rb[c * 4 + r]);                                                     \
        dp0[r] = _mm512_fmadd_ps(b, y0, dp0[r]);                                                            \
        dp1[r] = _mm512_fmadd_ps(b, y1, dp1[r]);                                                            \
      }                                                                                                     \
    }                                                                                                       \
    for (int h = 0; h < 2; h++) {                                                                           \
      const int n = count - 16 * h < 0 ? 0 : (count - 16 * h > 16 ? 16 : count - 16 * h);                   \
      const __mmask16 valid = n == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);                     \
      for (int r = 0; r < (R); r++)                                                                         \
        weights_avx512(t, r0 + r, block + 16 * h, valid, h ? s1[r] : s0[r], h ? dp1[r] : dp0[r],            \
                       lse ? lse + 16 * h : NULL, delta ? delta + 16 * h : NULL,                            \
                       colpos ? colpos + 16 * h : NULL, pw + r * GA_AVX512_PAIR + 16 * h,                    \
                       dsw + r * GA_AVX512_PAIR + 16 * h);                                                  \
    }                                                                                                       \
    GA_AVX512_UPDATE(R, ga, dsw, t->A, da);                                                                 \
    if (gb[0]) GA_AVX512_UPDATE(R, gb, pw, t->B, db);                                                       \
    if (t->grad_A) column_update_avx512(t, r0, R, count, cols, dsw);                                      \
  }

// p and ds of row `row` against 16 columns (lanes `valid` real) from its scores s and dP values dp: the mask,
// the score modifiers (softcap's derivative scales ds), p = exp(z - lse), ds = p (dp - delta).
GA_AVX512 __attribute__((always_inline)) void weights_avx512(const ga_backward_tile *t, int row, int64_t position, __mmask16 valid,
                                                             __m512 s, __m512 dp, const float *lse, const float *delta,
                                                             const int32_t *colpos, float *pw, float *dsw) {
  __mmask16 m = valid;
  if (t->mask) {
    const __m128i bytes = _mm_maskz_loadu_epi8(valid, t->mask + (int64_t)row * t->n + position);
    m = _mm_mask_cmpneq_epi8_mask(valid, bytes, _mm_setzero_si128());
  }
  const __m512 l = lse ? _mm512_load_ps(lse) : _mm512_set1_ps(t->row_lse[row]);
  const __m512 d = delta ? _mm512_load_ps(delta) : _mm512_set1_ps(t->row_delta[row]);
  const __m512 scale = _mm512_set1_ps(t->scale);
  if (colpos) {
    __m512 slope;
    const __m512i diff = _mm512_sub_epi32(_mm512_set1_epi32(t->row_position[row]), _mm512_load_si512(colpos));
    const __m512 z = ga_modify_scores_avx512(&t->mods, _mm512_mul_ps(s, scale), diff, &slope);
    const __m512 p = _mm512_maskz_mov_ps(m, ga_exp_avx512(_mm512_sub_ps(z, l)));
    _mm512_store_ps(pw, p);
    _mm512_store_ps(dsw, _mm512_maskz_mul_ps(m, _mm512_mul_ps(p, slope), _mm512_sub_ps(dp, d)));
    return;
  }
  const __m512 p = _mm512_maskz_mov_ps(m, ga_exp_avx512(_mm512_fmsub_ps(s, scale, l)));
  _mm512_store_ps(pw, p);
  _mm512_store_ps(dsw, _mm512_maskz_mul_ps(m, p, _mm512_sub_ps(dp, d)));
}

// dst[c][0..16) = src[cols[j]][c] for j < count (zero beyond), c < dim: 16x16 in-register transposes
// (ga_transpose16_avx512), 16 loads and 16 stores per 256 elements.
GA_AVX512 void pack_avx512(float *dst, const float *src, const int64_t *cols, int count, int dim) {
  for (int c0 = 0; c0 < dim; c0 += 16) {
    const int width = dim - c0 < 16 ? dim - c0 : 16;
    const __mmask16 m = width == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << width) - 1);
    __m512 r[16];
    for (int j = 0; j < 16; j++) r[j] = j < count ? _mm512_maskz_loadu_ps(m, src + cols[j] * (int64_t)dim + c0) : _mm512_setzero_ps();
    ga_transpose16_avx512(r);
    float *out = dst + (int64_t)c0 * GA_BW_BLOCK;
    if (width == 16) {  // a fixed count keeps r[] in registers (a variable one became a memcpy from the stack)
      for (int i = 0; i < 16; i++) _mm512_store_ps(out + i * GA_BW_BLOCK, r[i]);
    } else {
      for (int i = 0; i < 16; i++)
        if (i < width) _mm512_store_ps(out + i * GA_BW_BLOCK, r[i]);
    }
  }
}

// The packed block of the tile's columns from entry `block` (a multiple of `width`) on, found in the panel
// (see uses_panel), packed there on first use.
static inline const float *panel_block(const ga_backward_tile *t, int64_t block, int width, int is_b,
                                       void (*pack)(float *, const float *, const int64_t *, int, int)) {
  ga_backward_panel *panel = t->panel;
  const int64_t index = ((t->columns[0] - panel->first) / panel->stride + block) / width;
  const int dim = is_b ? t->b_dim : t->a_dim;
  float *base = (is_b ? panel->B : panel->A) + index * width * (int64_t)dim;
  // One flag per block and side: bit 0 A, bit 1 B.
  if (!(panel->packed[index] & (1 << is_b))) {
    int64_t cols[16];
    const int64_t start = panel->first + index * width * panel->stride;
    const int64_t left = (panel->limit - start + panel->stride - 1) / panel->stride;
    const int count = left < width ? (int)left : width;
    for (int j = 0; j < width; j++) cols[j] = start + (j < count ? j : 0) * panel->stride;
    pack(base, is_b ? t->B : t->A, cols, count, dim);
    panel->packed[index] |= (uint8_t)(1 << is_b);
  }
  return base;
}

// Whether the tile reads its blocks from its panel: its columns step evenly by the panel's stride (contiguous
// for windows, the dilation for dilated graphs) from a whole number of blocks after the panel's first column
// and end inside it. A tile that steps evenly but does not fit (the first of an item, or of the next residue
// class of a dilated graph) moves the panel to itself, forgetting what was packed.
static inline int uses_panel(const ga_backward_tile *t, int width) {
  ga_backward_panel *panel = t->panel;
  // A tile of less than a block packs its own: a panel block would pack columns it does not need.
  if (!panel || t->n < width) return 0;
  const int64_t first = t->columns[0], last = t->columns[t->n - 1];
  const int64_t step = t->columns[1] - first;
  if (step < 1 || last - first != (t->n - 1) * step) return 0;
  // Sorted distinct columns with the first and last `step` apart per entry are contiguous when step is 1;
  // a wider step must be checked column by column ([0, 2, 3, 6] passes the test above).
  if (step > 1)
    for (int64_t j = 2; j < t->n; j++)
      if (t->columns[j] - t->columns[j - 1] != step) return 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    if (panel->stride == step && first >= panel->first && (first - panel->first) % (step * width) == 0) {
      const int64_t end_block = ((first - panel->first) / step + t->n + width - 1) / width;
      if (end_block * width <= panel->capacity) return 1;
    }
    if ((t->n + width - 1) / width * width > panel->capacity) return 0;
    panel->first = first;
    panel->stride = step;
    memset(panel->packed, 0, (size_t)(panel->capacity / 8));
  }
  return 0;
}

GA_AVX512_GROUP(1)
GA_AVX512_GROUP(2)
GA_AVX512_GROUP(3)
GA_AVX512_GROUP(4)

GA_AVX512 void backward_avx512(const ga_backward_tile *t) {
  const int da = t->a_dim, db = t->b_dim;
  float *At = t->scratch, *Bt = At + GA_AVX512_PAIR * da;
  float *lse = Bt + GA_AVX512_PAIR * db, *delta = lse + GA_AVX512_PAIR;
  float *pw = delta + GA_AVX512_PAIR, *dsw = pw + 4 * GA_AVX512_PAIR;
  float *ra = dsw + 4 * GA_AVX512_PAIR, *rb = ra + GA_BW_MAX_ROWS * da;
  __attribute__((aligned(64))) int32_t positions[GA_AVX512_PAIR];
  const int32_t *colpos = ga_has_score_mods(&t->mods) ? positions : NULL;
  const int shared = uses_panel(t, GA_BW_BLOCK);
  interleave_rows(t, ra, rb);
  for (int64_t block = 0; block < t->n; block += GA_AVX512_PAIR) {
    const int count = t->n - block < GA_AVX512_PAIR ? (int)(t->n - block) : GA_AVX512_PAIR;
    const int64_t *cols = t->columns + block;
    if (colpos) for (int j = 0; j < GA_AVX512_PAIR; j++) positions[j] = j < count ? (int32_t)cols[j] : 0;
    // Each block packed transposed, [dim][16], zero beyond its columns (masked, but kept finite), or found
    // packed in the panel; a pair's missing second block repeats the first (its lanes are all masked).
    const float *A0 = At, *B0 = Bt, *A1 = At + GA_BW_BLOCK * da, *B1 = Bt + GA_BW_BLOCK * db;
    const int second = count > GA_BW_BLOCK ? count - GA_BW_BLOCK : 0;
    if (shared) {
      A0 = panel_block(t, block, GA_BW_BLOCK, 0, pack_avx512);
      B0 = panel_block(t, block, GA_BW_BLOCK, 1, pack_avx512);
      A1 = second ? panel_block(t, block + GA_BW_BLOCK, GA_BW_BLOCK, 0, pack_avx512) : A0;
      B1 = second ? panel_block(t, block + GA_BW_BLOCK, GA_BW_BLOCK, 1, pack_avx512) : B0;
    } else {
      pack_avx512(At, t->A, cols, count < GA_BW_BLOCK ? count : GA_BW_BLOCK, da);
      pack_avx512(Bt, t->B, cols, count < GA_BW_BLOCK ? count : GA_BW_BLOCK, db);
      if (second) {
        pack_avx512(At + GA_BW_BLOCK * da, t->A, cols + GA_BW_BLOCK, second, da);
        pack_avx512(Bt + GA_BW_BLOCK * db, t->B, cols + GA_BW_BLOCK, second, db);
      } else {
        A1 = A0;
        B1 = B0;
      }
    }
    if (t->col_lse) {
      for (int j = 0; j < GA_AVX512_PAIR; j++) {
        lse[j] = j < count ? t->col_lse[cols[j]] : 0;
        delta[j] = j < count ? t->col_delta[cols[j]] : 0;
      }
    }
    const float *l = t->col_lse ? lse : NULL, *d = t->col_lse ? delta : NULL;
    int r = 0;
    for (; r + 4 <= t->rows; r += 4) group_avx512_4(t, r, block, count, cols, A0, B0, A1, B1, l, d, pw, dsw, ra + r * da, rb + r * db, colpos);
    switch (t->rows - r) {
      case 3: group_avx512_3(t, r, block, count, cols, A0, B0, A1, B1, l, d, pw, dsw, ra + r * da, rb + r * db, colpos); break;
      case 2: group_avx512_2(t, r, block, count, cols, A0, B0, A1, B1, l, d, pw, dsw, ra + r * da, rb + r * db, colpos); break;
      case 1: group_avx512_1(t, r, block, count, cols, A0, B0, A1, B1, l, d, pw, dsw, ra + r * da, rb + r * db, colpos); break;
      default: break;
    }
  }
}

// MARK: - AVX2 + FMA kernel (8 columns per packed block, two blocks per step)

#define GA_BW_AVX2 __attribute__((target("avx2,fma"))) static inline
#define GA_AVX2_BLOCK 8

// Lanes [0, count) enabled.
GA_BW_AVX2 __m256i bw_lanes_avx2(int count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#define GA_AVX2_UPDATE(R, grad, w, X, dim)                                                                 \
  do {                                                                                                      \
    int c = 0;                                                                                              \
    for (; c + 16 <= (dim); c += 16) {                                                                      \
      __m256 acc[R][2];                                                                                     \
      for (int r = 0; r < (R); r++) {                                                                       \
        acc[r][0] = _mm256_loadu_ps(grad[r] + c);                                                           \
        acc[r][1] = _mm256_loadu_ps(grad[r] + c + 8);                                                       \
      }                                                                                                     \
      for (int j = 0; j < count; j++) {                                                                     \
        const float *x = (X) + cols[j] * (int64_t)(dim) + c;                                                \
        const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);                                   \
        for (int r = 0; r < (R); r++) {                                                                     \
          const __m256 weight = _mm256_broadcast_ss(w + r * GA_BW_BLOCK + j);                               \
          acc[r][0] = _mm256_fmadd_ps(weight, x0, acc[r][0]);                                               \
          acc[r][1] = _mm256_fmadd_ps(weight, x1, acc[r][1]);                                               \
        }                                                                                                   \
      }                                                                                                     \
      for (int r = 0; r < (R); r++) {                                                                       \
        _mm256_storeu_ps(grad[r] + c, acc[r][0]);                                                           \
        _mm256_storeu_ps(grad[r] + c + 8, acc[r][1]);                                                       \
      }                                                                                                     \
    }                                                                                                       \
    for (; c < (dim); c += 8) {                                                                             \
      const __m256i tail = bw_lanes_avx2((dim) - c);                                                        \
      __m256 acc[R];                                                                                        \
      for (int r = 0; r < (R); r++) acc[r] = _mm256_maskload_ps(grad[r] + c, tail);                        \
      for (int j = 0; j < count; j++) {                                                                     \
        const __m256 x0 = _mm256_maskload_ps((X) + cols[j] * (int64_t)(dim) + c, tail);                     \
        for (int r = 0; r < (R); r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(w + r * GA_BW_BLOCK + j), x0, acc[r]); \
      }                                                                                                     \
      for (int r = 0; r < (R); r++) _mm256_maskstore_ps(grad[r] + c, tail, acc[r]);                        \
    }                                                                                                       \
  } while (0)

// grad_A[column] += sum over the tile's rows r of ds[r][j] * a_r for the block's `count` columns j, once all
// groups have their ds: 4 columns x 16 dimensions of accumulators (8 independent FMA chains over the rows,
// each row's two vectors loaded once per 4 columns), then one load, add and store of each column's gradient per
// pass. Run per group of 4 rows instead, each column's gradient went through memory 4 times per block, every
// group's FMAs waiting on the previous group's store. Masked loads and stores only for a last partial pass: on
// AMD cores a vmaskmovps store is microcoded.
GA_BW_AVX2 __attribute__((always_inline)) void column_update_pass_avx2(const ga_backward_tile *t, int j0, int nj,
                                                                       const int64_t *cols, const float *dsw, int c,
                                                                       const int full) {
  const int da = t->a_dim;
  const __m256i m0 = bw_lanes_avx2(da - c), m1 = bw_lanes_avx2(da - c - 8);
  __m256 acc[4][2];
  for (int j = 0; j < 4; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
  for (int r = 0; r < t->rows; r++) {
    const float *a = t->a[r] + c;
    const __m256 a0 = full ? _mm256_loadu_ps(a) : _mm256_maskload_ps(a, m0);
    const __m256 a1 = full ? _mm256_loadu_ps(a + 8) : _mm256_maskload_ps(a + 8, m1);
    for (int j = 0; j < 4; j++) {
      const __m256 w = _mm256_broadcast_ss(dsw + r * GA_BW_BLOCK + j0 + j);
      acc[j][0] = _mm256_fmadd_ps(w, a0, acc[j][0]);
      acc[j][1] = _mm256_fmadd_ps(w, a1, acc[j][1]);
    }
  }
  for (int j = 0; j < nj; j++) {
    float *g = t->grad_A + (cols[j0 + j] - t->grad_A_first) * (int64_t)da + c;
    if (full) {
      _mm256_storeu_ps(g, _mm256_add_ps(_mm256_loadu_ps(g), acc[j][0]));
      _mm256_storeu_ps(g + 8, _mm256_add_ps(_mm256_loadu_ps(g + 8), acc[j][1]));
    } else {
      _mm256_maskstore_ps(g, m0, _mm256_add_ps(_mm256_maskload_ps(g, m0), acc[j][0]));
      _mm256_maskstore_ps(g + 8, m1, _mm256_add_ps(_mm256_maskload_ps(g + 8, m1), acc[j][1]));
    }
  }
}

// `dsw` holds ds of every row of the tile, [row][GA_BW_BLOCK], zero past the block's `count` columns.
GA_BW_AVX2 void column_update_avx2(const ga_backward_tile *t, int count, const int64_t *cols, const float *dsw) {
  const int da = t->a_dim;
  for (int j0 = 0; j0 < count; j0 += 4) {
    const int nj = count - j0 < 4 ? count - j0 : 4;
    int c = 0;
    for (; c + 16 <= da; c += 16) column_update_pass_avx2(t, j0, nj, cols, dsw, c, 1);
    if (c < da) column_update_pass_avx2(t, j0, nj, cols, dsw, c, 0);
  }
}

// acc[h][r] = the R interleaved rows' ([c][4 rows]) dot products with packed block h's 8 columns, dim dimensions,
// for both blocks h: one load of each block's column vector per dimension serving R rows, one broadcast of a row
// element serving both blocks.
GA_BW_AVX2 __attribute__((always_inline)) void two_block_dots_avx2(__m256 acc[2][4], const float *const *blocks,
                                                                   const float *rows, int dim, const int R) {
  for (int r = 0; r < R; r++) acc[0][r] = acc[1][r] = _mm256_setzero_ps();
  for (int c = 0; c < dim; c++) {
    const __m256 x0 = _mm256_load_ps(blocks[0] + c * GA_AVX2_BLOCK), x1 = _mm256_load_ps(blocks[1] + c * GA_AVX2_BLOCK);
    for (int r = 0; r < R; r++) {
      const __m256 a = _mm256_broadcast_ss(rows + c * 4 + r);
      acc[0][r] = _mm256_fmadd_ps(a, x0, acc[0][r]);
      acc[1][r] = _mm256_fmadd_ps(a, x1, acc[1][r]);
    }
  }
}

// Rows r0..r0+R-1 of the tile against two packed 8-column blocks (`count` <= 16 columns real; a missing second
// block repeats the first): S, then dP, of both blocks, p and ds into [row][16], then the gradient updates over
// all 16 columns, so each pass's accumulators are loaded and stored once per 16 columns rather than per 8.
#define GA_AVX2_GROUP(R)                                                                                    \
  GA_BW_AVX2 void group_avx2_##R(const ga_backward_tile *t, int r0, int64_t block, int count,               \
                                 const int64_t *cols, const float *const *Ah, const float *const *Bh,       \
                                 const float *lse, const float *delta, float *pw, float *dsw,               \
                                 const float *ra, const float *rb, const int32_t *colpos) {                \
    const int da = t->a_dim, db = t->b_dim;                                                                 \
    float *ga[R], *gb[R];                                                                                   \
    for (int r = 0; r < (R); r++) {                                                                         \
      ga[r] = t->grad_a[r0 + r];                                                                            \
      gb[r] = t->grad_b[r0 + r];                                                                            \
    }                                                                                                       \
    /* S, then dP, of both blocks: R x 2 accumulators each, one load of each block's column vector per  \
       dimension serving R rows and one broadcast serving both blocks (6 loads per 8 FMAs; S and dP       \
       together per block took 10). */                                                                    \
    __m256 s[2][4], dp[2][4];                                                                               \
    two_block_dots_avx2(s, Ah, ra, da, R);                                                                  \
    two_block_dots_avx2(dp, Bh, rb, db, R);                                                                 \
    for (int h = 0; h < 2 && h * GA_AVX2_BLOCK < count; h++) {                                              \
      const int n = count - h * GA_AVX2_BLOCK > GA_AVX2_BLOCK ? GA_AVX2_BLOCK : count - h * GA_AVX2_BLOCK;  \
      const __m256i valid = bw_lanes_avx2(n);                                                               \
      const __m256 scale = _mm256_set1_ps(t->scale);                                                        \
      const int off = h * GA_AVX2_BLOCK;                                                                    \
      for (int r = 0; r < (R); r++) {                                                                       \
        __m256 m = _mm256_castsi256_ps(valid);                                                              \
        if (t->mask) {                                                                                      \
          const uint8_t *row = t->mask + (int64_t)(r0 + r) * t->n + block + off;                           \
          uint64_t bytes = 0;                                                                               \
          if (n == GA_AVX2_BLOCK) memcpy(&bytes, row, 8); /* one 8-byte load */                             \
          else for (int j = 0; j < n; j++) bytes |= (uint64_t)row[j] << (8 * j);                            \
          const __m256i wide = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)bytes));                  \
          m = _mm256_and_ps(m, _mm256_castsi256_ps(_mm256_cmpgt_epi32(wide, _mm256_setzero_si256())));       \
        }                                                                                                   \
        const __m256 l = lse ? _mm256_load_ps(lse + off) : _mm256_set1_ps(t->row_lse[r0 + r]);               \
        const __m256 d = delta ? _mm256_load_ps(delta + off) : _mm256_set1_ps(t->row_delta[r0 + r]);         \
        float *pr = pw + r * GA_BW_BLOCK + off, *dr = dsw + r * GA_BW_BLOCK + off;                          \
        if (colpos) { /* score modifiers: softcap's derivative scales ds */                               \
          __m256 slope;                                                                                     \
          const __m256i diff = _mm256_sub_epi32(_mm256_set1_epi32(t->row_position[r0 + r]),                 \
                                                _mm256_load_si256((const __m256i *)(colpos + off)));        \
          const __m256 z = ga_modify_scores_avx2(&t->mods, _mm256_mul_ps(s[h][r], scale), diff, &slope);      \
          const __m256 p = _mm256_and_ps(m, ga_exp_avx2(_mm256_sub_ps(z, l)));                               \
          _mm256_store_ps(pr, p);                                                                           \
          _mm256_store_ps(dr, _mm256_and_ps(m, _mm256_mul_ps(_mm256_mul_ps(p, slope), _mm256_sub_ps(dp[h][r], d)))); \
          continue;                                                                                         \
        }                                                                                                   \
        const __m256 p = _mm256_and_ps(m, ga_exp_avx2(_mm256_fmsub_ps(s[h][r], scale, l)));                     \
        _mm256_store_ps(pr, p);                                                                             \
        _mm256_store_ps(dr, _mm256_and_ps(m, _mm256_mul_ps(p, _mm256_sub_ps(dp[h][r], d))));                    \
      }                                                                                                     \
    }                                                                                                       \
    GA_AVX2_UPDATE(R, ga, dsw, t->A, da);                                                                   \
    if (gb[0]) GA_AVX2_UPDATE(R, gb, pw, t->B, db);                                                         \
  }

// dst[c][0..8) = src[cols[j]][c] for j < count (zero beyond), c < dim: 8x8 in-register transposes.
GA_BW_AVX2 void pack_avx2(float *dst, const float *src, const int64_t *cols, int count, int dim) {
  for (int c0 = 0; c0 < dim; c0 += 8) {
    const int width = dim - c0 < 8 ? dim - c0 : 8;
    const __m256i m = bw_lanes_avx2(width);
    __m256 t[8];
    for (int j = 0; j < 8; j++) t[j] = j < count ? _mm256_maskload_ps(src + cols[j] * (int64_t)dim + c0, m) : _mm256_setzero_ps();
    ga_transpose8_avx2(t);
    float *out = dst + (int64_t)c0 * GA_AVX2_BLOCK;
    if (width == 8) {
      for (int i = 0; i < 8; i++) _mm256_store_ps(out + i * GA_AVX2_BLOCK, t[i]);
    } else {
      for (int i = 0; i < 8; i++)
        if (i < width) _mm256_store_ps(out + i * GA_AVX2_BLOCK, t[i]);
    }
  }
}

GA_AVX2_GROUP(1)
GA_AVX2_GROUP(2)
GA_AVX2_GROUP(3)
GA_AVX2_GROUP(4)

GA_BW_AVX2 void backward_avx2(const ga_backward_tile *t) {
  const int da = t->a_dim, db = t->b_dim;
  float *At = t->scratch, *Bt = At + GA_BW_BLOCK * da;
  float *lse = Bt + GA_BW_BLOCK * db, *delta = lse + GA_BW_BLOCK;
  float *pw = delta + GA_BW_BLOCK, *dsw = pw + 4 * GA_BW_BLOCK;  // dsw: every row's ds, [row][GA_BW_BLOCK]
  float *ra = dsw + GA_BW_MAX_ROWS * GA_BW_BLOCK, *rb = ra + GA_BW_MAX_ROWS * da;
  __attribute__((aligned(32))) int32_t positions[GA_BW_BLOCK];
  const int32_t *colpos = ga_has_score_mods(&t->mods) ? positions : NULL;
  const int shared = uses_panel(t, GA_AVX2_BLOCK);
  interleave_rows(t, ra, rb);
  // Steps of two 8-column blocks (GA_BW_BLOCK columns).
  for (int64_t block = 0; block < t->n; block += GA_BW_BLOCK) {
    const int count = t->n - block < GA_BW_BLOCK ? (int)(t->n - block) : GA_BW_BLOCK;
    const int64_t *cols = t->columns + block;
    if (colpos) for (int j = 0; j < GA_BW_BLOCK; j++) positions[j] = j < count ? (int32_t)cols[j] : 0;
    const float *Ah[2] = {At, At + GA_AVX2_BLOCK * da}, *Bh[2] = {Bt, Bt + GA_AVX2_BLOCK * db};
    for (int h = 0; h < 2 && h * GA_AVX2_BLOCK < count; h++) {
      const int n = count - h * GA_AVX2_BLOCK > GA_AVX2_BLOCK ? GA_AVX2_BLOCK : count - h * GA_AVX2_BLOCK;
      if (shared) {
        Ah[h] = panel_block(t, block + h * GA_AVX2_BLOCK, GA_AVX2_BLOCK, 0, pack_avx2);
        Bh[h] = panel_block(t, block + h * GA_AVX2_BLOCK, GA_AVX2_BLOCK, 1, pack_avx2);
      } else {
        pack_avx2((float *)Ah[h], t->A, cols + h * GA_AVX2_BLOCK, n, da);
        pack_avx2((float *)Bh[h], t->B, cols + h * GA_AVX2_BLOCK, n, db);
      }
    }
    if (count <= GA_AVX2_BLOCK) {
      Ah[1] = Ah[0];
      Bh[1] = Bh[0];
    }
    if (t->col_lse) {
      for (int j = 0; j < GA_BW_BLOCK; j++) {
        lse[j] = j < count ? t->col_lse[cols[j]] : 0;
        delta[j] = j < count ? t->col_delta[cols[j]] : 0;
      }
    }
    const float *l = t->col_lse ? lse : NULL, *d = t->col_lse ? delta : NULL;
    int r = 0;
    for (; r + 4 <= t->rows; r += 4)
      group_avx2_4(t, r, block, count, cols, Ah, Bh, l, d, pw, dsw + r * GA_BW_BLOCK, ra + r * da, rb + r * db, colpos);
    float *rest = dsw + r * GA_BW_BLOCK;
    switch (t->rows - r) {
      case 3: group_avx2_3(t, r, block, count, cols, Ah, Bh, l, d, pw, rest, ra + r * da, rb + r * db, colpos); break;
      case 2: group_avx2_2(t, r, block, count, cols, Ah, Bh, l, d, pw, rest, ra + r * da, rb + r * db, colpos); break;
      case 1: group_avx2_1(t, r, block, count, cols, Ah, Bh, l, d, pw, rest, ra + r * da, rb + r * db, colpos); break;
      default: break;
    }
    if (t->grad_A) column_update_avx2(t, count, cols, dsw);
  }
}
#endif

// MARK: - Dispatch

void ga_backward_tile_run(const ga_backward_tile *tile) {
#if GA_X86
  // The widest kernel when asked for none; a named one is never widened past what the CPU runs.
  const int widest = ga_widest_isa();
  const int isa = tile->isa == GA_ISA_AUTOMATIC || tile->isa > widest ? widest : tile->isa;
  if (isa >= GA_ISA_AVX512) { backward_avx512(tile); return; }
  if (isa >= GA_ISA_AVX2) { backward_avx2(tile); return; }
#endif
  backward_portable(tile);
}
