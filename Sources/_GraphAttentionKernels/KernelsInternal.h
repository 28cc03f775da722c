// Declarations shared by the kernel files of this target (not part of its public header).
#ifndef GRAPH_ATTENTION_KERNELS_INTERNAL_H
#define GRAPH_ATTENTION_KERNELS_INTERNAL_H

#include "GraphAttentionKernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#define GA_X86 1
#endif

#include <stdint.h>

/// The key positions a rows-in-lanes tile walks, [first, end) (its groups' spans together, within the key
/// list), and those every row attends: [0, shared) (the tile's shared keys) and [all_begin, all_end) (the rows'
/// spans intersected); both empty when the tile has a mask or no spans. Keys there skip the per-key lane test.
typedef struct {
  int64_t first, end, all_begin, all_end, shared;
} ga_tile_extent;

static inline ga_tile_extent ga_tile_extent_of(const ga_tile *t) {
  ga_tile_extent e = {INT64_MAX, 0, 0, 0, 0};
  for (int g = 0; g < t->rows / 4; g++) {
    if (t->group_begin[g] < e.first) e.first = t->group_begin[g];
    if (t->group_end[g] > e.end) e.end = t->group_end[g];
  }
  if (e.end > t->n) e.end = t->n;
  if (!t->mask && t->has_row_spans) {
    e.all_begin = INT64_MIN;
    e.all_end = INT64_MAX;
    e.shared = t->shared_keys;
    for (int r = 0; r < t->rows; r++) {
      if (t->row_begin[r] > e.all_begin) e.all_begin = t->row_begin[r];
      if (t->row_end[r] < e.all_end) e.all_end = t->row_end[r];
    }
  }
  return e;
}

/// The AVX-512 GEMM-shaped tile kernel, for tiles of 4, 8, 12 or 16 rows with a pack buffer of at least
/// `ga_pack_floats` floats. Only call it when `ga_isa_supported(GA_ISA_AVX512)`.
// The position of the tile's key entry `p` (for ALiBi).
static inline int64_t ga_key_position(const ga_tile *t, int64_t p) { return t->key_positions ? t->key_positions[p] : t->keys[p]; }

// The kernels of one tile, by instruction set; `ga_tile_attend` (Dispatch.c) picks one.
void ga_tile_attend_portable(const ga_tile *tile);
void ga_tile_attend_avx2_rows(const ga_tile *tile);   // 1 row or groups of 4, dot products over d
void ga_tile_attend_avx2_lanes(const ga_tile *tile);  // groups of 4-16 rows in the lanes, a pack buffer given
void ga_tile_attend_avx512(const ga_tile *tile);

/// One query row against `n` gathered key columns (sorted or not), folded into its state (m, l, acc), with the
/// head's keys, values, types, dimensions, scale and score modifiers from `t`; `prefetch` nonzero fetches each next
/// 16 keys' rows ahead (for rows not already in cache). AVX-512 only.
void ga_gather_row_avx512(const ga_tile *t, const float *query, int32_t position, const uint32_t *columns, int64_t n,
                          float *m, float *l, float *acc, int prefetch);

/// The AVX-512 FMA peak loop: ten independent 16-lane chains.
double ga_fma_loop_avx512(int64_t iterations);

#endif
