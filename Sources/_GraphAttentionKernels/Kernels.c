// The CPU tile kernel: up to GA_MAX_ROWS query rows against a shared key list, online softmax in blocks of
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
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if GA_X86
#include <cpuid.h>
#include <immintrin.h>
#endif

// MARK: - Portable kernel (baseline ISA; the compiler may vectorise it)

// Element `i` of a key or value row, widened to fp32.
static inline float kv_element(const void *base, int type, int64_t i) {
  switch (type) {
    case GA_FLOAT16: return ga_f16_to_f32_one(((const uint16_t *)base)[i]);
    case GA_BFLOAT16: return ga_bf16_to_f32_one(((const uint16_t *)base)[i]);
    default: return ((const float *)base)[i];
  }
}

// The position of the tile's key entry `p` (for ALiBi).
static inline int64_t key_position(const ga_tile *t, int64_t p) { return t->key_positions ? t->key_positions[p] : t->keys[p]; }

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
        if (modified) s[j] = ga_modify_score_scalar(&t->mods, s[j], t->row_position[r] - key_position(t, block + j), NULL);
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

#if GA_X86
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
#include "TileKernelAVX2.h"
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
#include "TileKernelAVX2.h"
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
#include "TileKernelAVX2.h"
#undef GA_KV
#undef GA_FN
#undef GA_LOAD8
#undef GA_LOAD_TAIL

// MARK: - The AVX2 kernel with rows in lanes, for tiles of several rows (a pack buffer given)

#include "TileKernelAVX2Lanes.h"

static int widest_isa = -1;

// AVX-512 needs the CPU's features (CPUID leaf 7: F, BW, VL, DQ; BMI2 for pext) and the OS's consent:
// OSXSAVE set and XCR0 enabling SSE, AVX, opmask, ZMM_Hi256 and Hi16_ZMM state (bits 1, 2, 5, 6, 7).
static int detect_widest_isa(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return GA_ISA_PORTABLE;
  const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1, avx = (c >> 28) & 1;
  if (!osxsave || !avx) return GA_ISA_PORTABLE;
  unsigned xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6) != 0x6) return GA_ISA_PORTABLE;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return GA_ISA_PORTABLE;
  const int avx2 = (b >> 5) & 1, bmi2 = (b >> 8) & 1;
  const int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
  if (!(avx2 && fma && f16c)) return GA_ISA_PORTABLE;
  if (avx512f && avx512dq && avx512bw && avx512vl && bmi2 && (xcr0_lo & 0xE0) == 0xE0) return GA_ISA_AVX512;
  return GA_ISA_AVX2;
}

int ga_detected_isa(void) {
  if (widest_isa < 0) widest_isa = detect_widest_isa();  // idempotent: a race writes the same value
  return widest_isa;
}

int ga_widest_isa(void) {
  const int detected = ga_detected_isa(), cap = ga_isa_cap();
  return cap != GA_ISA_AUTOMATIC && cap < detected ? cap : detected;
}

int ga_uses_avx2(void) { return ga_widest_isa() >= GA_ISA_AVX2; }
#else
int ga_detected_isa(void) { return GA_ISA_PORTABLE; }
int ga_widest_isa(void) { return GA_ISA_PORTABLE; }
int ga_uses_avx2(void) { return 0; }
#endif

int ga_isa_supported(int isa) { return isa <= ga_widest_isa(); }

static int isa_cap = -1;

// Read once: tests and CI set the cap before the first call, so every later query sees the same value.
int ga_isa_cap(void) {
  if (isa_cap < 0) {
    const char *raw = getenv("GRAPH_ATTENTION_MAX_KERNEL");
    int cap = GA_ISA_AUTOMATIC;
    if (raw && strcasecmp(raw, "portable") == 0) cap = GA_ISA_PORTABLE;
    else if (raw && strcasecmp(raw, "avx2") == 0) cap = GA_ISA_AVX2;
    else if (raw && strcasecmp(raw, "avx512") == 0) cap = GA_ISA_AVX512;
    isa_cap = cap;  // idempotent, as above
  }
  return isa_cap;
}

int64_t ga_pack_floats(int key_dim, int value_dim) {
  // Q^T (16 x d), a block's scores (128 x 16: the AVX-512 kernel's block; the AVX2 one uses 64), and fp32 copies
  // of a block's fp16/bf16 K and V rows.
  return 16 * (int64_t)key_dim + 128 * 16 + 128 * (int64_t)key_dim + 128 * (int64_t)((value_dim + 15) & ~15);
}

void ga_tile_attend(const ga_tile *tile) {
  int isa = tile->force_portable ? GA_ISA_PORTABLE : tile->isa;
  if (isa == GA_ISA_AUTOMATIC || !ga_isa_supported(isa)) isa = ga_widest_isa();
#if GA_X86
  // Tiles of groups of 4 rows run with the rows in the lanes (AVX-512, else AVX2) given a pack buffer;
  // single rows (scattered keys, nothing to share a pack with) take the AVX2 dot-product kernel.
  if (isa == GA_ISA_AVX512 && tile->pack && tile->rows % 4 == 0) {
    ga_tile_attend_avx512(tile);
    return;
  }
  if (isa >= GA_ISA_AVX2 && tile->pack && tile->rows % 4 == 0) {
    attend_avx2_lanes(tile);
    return;
  }
  // The AVX2 kernel with dot products handles 1 row or groups of 4; other row counts take the portable path.
  if (isa >= GA_ISA_AVX2 && (tile->rows == 1 || tile->rows % 4 == 0)) {
    switch (tile->kv_type) {
      case GA_FLOAT16: attend_avx2_f16(tile); return;
      case GA_BFLOAT16: attend_avx2_bf16(tile); return;
      default: attend_avx2_f32(tile); return;
    }
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

double ga_fma_loop_isa(int isa, int64_t iterations) {
#if GA_X86
  if (isa == GA_ISA_AVX512 && ga_isa_supported(GA_ISA_AVX512)) return ga_fma_loop_avx512(iterations);
  if (isa >= GA_ISA_AVX2 && ga_isa_supported(GA_ISA_AVX2)) return fma_loop_avx2(iterations);
#endif
  float a[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  for (int64_t i = 0; i < iterations * 10; i++)
    for (int h = 0; h < 8; h++) a[h] = a[h] * 0.999999f + 1e-7f;
  return a[0];
}

int64_t ga_fma_loop_isa_flops_per_iteration(int isa) {
  return isa == GA_ISA_AVX512 && ga_isa_supported(GA_ISA_AVX512) ? 10 * 16 * 2 : 10 * 8 * 2;
}

double ga_fma_loop(int64_t iterations) { return ga_fma_loop_isa(ga_widest_isa(), iterations); }

int64_t ga_fma_loop_flops_per_iteration(void) { return ga_fma_loop_isa_flops_per_iteration(ga_widest_isa()); }

double ga_read_sum(const float *data, int64_t count) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) { s0 += data[i]; s1 += data[i + 1]; s2 += data[i + 2]; s3 += data[i + 3]; }
  for (; i < count; i++) s0 += data[i];
  return (double)s0 + s1 + s2 + s3;
}
