// Rows of a stored sparse pattern against K and V, by key blocks (GraphAttentionKernels.h, `ga_gather_rows`).
//
// A random pattern at density 1e-2 over 64K keys gives each row ~650 keys anywhere in K and V (32 MiB in fp32
// at d = 64): row by row, nearly every key row comes from L3 or DRAM, once per edge. Blocked, a chunk of ~1K rows
// visits one block of ~1K keys (512 KiB of K and V) at a time, so each key row is fetched once per chunk and
// reused by the ~10 rows of the chunk that have it (rows x density), from L2.
#include "KernelsInternal.h"

#include <stddef.h>

// Brings bytes [begin, begin + length) toward L2 (a prefetch never faults).
static inline void prefetch_range(const char *begin, int64_t length) {
  for (int64_t o = 0; o < length; o += 64) __builtin_prefetch(begin + o, 0, 2);
}

void ga_gather_rows(const ga_tile *head, const ga_gather *g) {
  const int d = head->key_dim, dv = head->value_dim;
  const int64_t element = head->kv_type == GA_FLOAT32 ? 4 : 2;
  int isa = head->force_portable ? GA_ISA_PORTABLE : head->isa;
  if (isa == GA_ISA_AUTOMATIC || !ga_isa_supported(isa)) isa = ga_widest_isa();
  // The narrower kernels take one row as a tile over a 64-bit key list.
  ga_tile tile = *head;
  tile.rows = 1;
  tile.mask = NULL;
  tile.has_row_spans = 0;
  tile.shared_keys = 0;
  tile.key_positions = NULL;
  tile.keys = g->keys;
  for (int64_t r = 0; r < g->rows; r++) g->cursor[r] = g->row_offsets[r];
  for (int64_t first = 0; first < g->key_count; first += g->key_block) {
    const int64_t end = g->key_count - first < g->key_block ? g->key_count : first + g->key_block;
    // The next block's K and V, spread over this block's rows so the prefetches overlap the work.
    const int64_t next = end, next_count = g->key_count - next < g->key_block ? g->key_count - next : g->key_block;
    const int64_t key_bytes = next_count * d * element, value_bytes = next_count * dv * element;
    const int64_t rows_left = g->rows > 0 ? g->rows : 1;
    const int64_t key_share = (key_bytes + rows_left - 1) / rows_left, value_share = (value_bytes + rows_left - 1) / rows_left;
    for (int64_t r = 0; r < g->rows; r++) {
      if (next_count > 0) {
        const int64_t o = r * key_share, w = r * value_share;
        if (o < key_bytes) prefetch_range((const char *)head->key + next * d * element + o, key_share < key_bytes - o ? key_share : key_bytes - o);
        if (w < value_bytes) prefetch_range((const char *)head->value + next * dv * element + w, value_share < value_bytes - w ? value_share : value_bytes - w);
      }
      // Each row resumes its columns where the last block left them: 1K rows' cursors are 1K places in a few MiB
      // of columns, which no hardware prefetcher follows, so fetch the columns of a row a few rows ahead.
      if (r + 4 < g->rows) __builtin_prefetch(g->columns + g->cursor[r + 4], 0, 3);
      const int64_t begin = g->cursor[r], stop = g->row_offsets[r + 1];
      int64_t e = begin;
      while (e < stop && g->columns[e] < end) e++;
      if (e == begin) continue;
      g->cursor[r] = e;
      const float *query = g->query + r * d;
      const int32_t position = g->first_position + (int32_t)r;
#if GA_X86
      if (isa == GA_ISA_AVX512) {
        ga_gather_row_avx512(head, query, position, g->columns + begin, e - begin, g->m + r, g->l + r, g->acc + r * dv,
                             g->key_block >= g->key_count);
        continue;
      }
#endif
      tile.query[0] = query;
      tile.m[0] = g->m + r;
      tile.l[0] = g->l + r;
      tile.acc[0] = g->acc + r * dv;
      tile.row_position[0] = position;
      // In pieces: the state carries from one to the next, so the scratch stays small whatever the degree.
      for (int64_t piece = begin; piece < e; piece += g->keys_capacity) {
        const int64_t n = e - piece < g->keys_capacity ? e - piece : g->keys_capacity;
        for (int64_t i = 0; i < n; i++) g->keys[i] = g->columns[piece + i];
        tile.n = n;
        tile.group_begin[0] = 0;
        tile.group_end[0] = n;
        ga_tile_attend(&tile);
      }
    }
  }
}
