// The backward tile kernels: one shape serves both passes (see GraphAttentionBackward.h).
//
// Each 16-column block is packed transposed, [dim][16 columns], so that a row's 16 scores (and 16 dP
// values) accumulate in one vector by broadcasting the row's elements: no horizontal sums. The
// gradient updates then read the columns' rows as they lie (row-major) and broadcast one ds (or p) per
// column. Rows are register-blocked four at a time, so a packed block is read once per four rows.
#include "GraphAttentionBackward.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define GA_X86 1
#include <immintrin.h>
#endif

int64_t ga_backward_scratch_floats(int a_dim, int b_dim) {
  // Packed A and B blocks, plus lse, delta and a few 16-float vectors of per-block values.
  return (int64_t)GA_BW_BLOCK * (a_dim + b_dim) + 8 * GA_BW_BLOCK;
}

// MARK: - Portable kernel (plain C; the compiler may vectorise it for the baseline ISA)

static inline float lse_of(const ga_backward_tile *t, int r, int64_t col) {
  return t->col_lse ? t->col_lse[col] : t->row_lse[r];
}
static inline float delta_of(const ga_backward_tile *t, int r, int64_t col) {
  return t->col_delta ? t->col_delta[col] : t->row_delta[r];
}

static void backward_portable(const ga_backward_tile *t) {
  const int da = t->a_dim, db = t->b_dim;
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
      const float p = expf(s * t->scale - lse_of(t, r, col));
      const float ds = p * (dp - delta_of(t, r, col));
      for (int c = 0; c < da; c++) ga[c] += ds * A[c];
      if (gb)
        for (int c = 0; c < db; c++) gb[c] += p * B[c];
    }
  }
}

// MARK: - Dispatch

#if GA_X86
static int best_isa = -1;

int ga_backward_best_isa(void) {
  if (best_isa < 0) {
    __builtin_cpu_init();
    int isa = GA_ISA_PORTABLE;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = GA_ISA_AVX2;
    if (isa == GA_ISA_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
      isa = GA_ISA_AVX512;
    best_isa = isa;
  }
  return best_isa;
}
#else
int ga_backward_best_isa(void) { return GA_ISA_PORTABLE; }
#endif

void ga_backward_tile_run(const ga_backward_tile *tile) {
  backward_portable(tile);
}
