// The portable tile kernel: plain C for the baseline instruction set (SSE2 on x86-64, NEON on arm64, as the
// compiler vectorises it), for CPUs without AVX2 and as the reference path the faster kernels are tested against.
#include "KernelsInternal.h"
#include "HalfPrecision.h"
#include "VectorMath.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

// MARK: - Portable kernel (baseline ISA; the compiler may vectorise it)

// Element `i` of a key or value row, widened to fp32.
static inline float kv_element(const void *base, int type, int64_t i) {
  switch (type) {
    case GA_FLOAT16: return ga_f16_to_f32_one(((const uint16_t *)base)[i]);
    case GA_BFLOAT16: return ga_bf16_to_f32_one(((const uint16_t *)base)[i]);
    default: return ((const float *)base)[i];
  }
}


static void attend_portable(const ga_tile *t) {
  const int modified = ga_has_score_mods(&t->mods);
  float *scores = t->scratch;
  for (int64_t block = 0; block < t->n; block += GA_KEY_BLOCK) {
    const int64_t count = t->n - block < GA_KEY_BLOCK ? t->n - block : GA_KEY_BLOCK;
    for (int r = 0; r < t->rows; r++) {
      float *s = scores;  // rows are independent: one row of scratch serves all
      float block_max = -INFINITY;
      for (int64_t j = 0; j < count; j++) {
        if (t->mask && !t->mask[(int64_t)(r / 4) * t->n * 4 + (block + j) * 4 + r % 4]) { s[j] = -INFINITY; continue; }
        const int64_t k = t->keys[block + j] * t->key_dim;
        float dot = 0;
        for (int c = 0; c < t->key_dim; c++) dot += t->query[r][c] * kv_element(t->key, t->kv_type, k + c);
        s[j] = dot * t->scale;
        if (modified) s[j] = ga_modify_score_scalar(&t->mods, s[j], t->row_position[r] - ga_key_position(t, block + j), NULL);
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
        const int64_t v = t->keys[block + j] * t->value_dim;
        for (int c = 0; c < t->value_dim; c++) acc[c] += p * kv_element(t->value, t->kv_type, v + c);
      }
      *t->l[r] += sum;
    }
  }
}

void ga_tile_attend_portable(const ga_tile *tile) { attend_portable(tile); }
