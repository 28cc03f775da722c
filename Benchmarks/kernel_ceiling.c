// The tile kernel's ceiling on one core, outside the engine: how much of one core's FMA peak the rows-in-lanes
// kernel reaches (1) on one 16-row tile repeated, its K and V in L2 and its rows in L1, and (2) on consecutive
// tiles along a sequence, Q, K, V and O streaming through the caches as in a real call. The gap between (1),
// (2) and `bench` (two threads, the tiler and the executor around the kernel) is where a window's time goes.
//
// Rows attend the `keys` keys centred on them (window:keys/2 in the CLI's grammar has keys + 1), fp32, scale
// 1/8. Useful work counts 4 * keys * d per row, as `bench` does. Built and run by
// Benchmarks/run_kernel_ceiling.sh:  kernel_ceiling ISA D KEYS TOKENS  (ISA: 2 AVX2, 3 AVX-512; the portable kernel takes no row spans).
#include "GraphAttentionKernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Uniform in [-0.5, 0.5) from a 64-bit LCG; each array its own stream.
static void fill(float *x, long count, uint64_t seed) {
  for (long i = 0; i < count; i++) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = (float)(seed >> 40) / (float)(1ull << 24) - 0.5f;
  }
}

// Points the tile's 16 rows at rows first..first+15, each attending [row - keys/2, row + keys/2).
static void place(ga_tile *t, long first, int keys, const float *q, float *o, float *m, float *l) {
  const int d = t->key_dim;
  for (int r = 0; r < 16; r++) {
    const long row = first + r;
    t->query[r] = q + row * d;
    t->m[r] = m + row;
    t->l[r] = l + row;
    t->acc[r] = o + row * d;
    t->row_begin[r] = (int32_t)(row - keys / 2);
    t->row_end[r] = (int32_t)(row + keys / 2);
    t->row_position[r] = (int32_t)row;
  }
  for (int g = 0; g < 4; g++) {
    t->group_begin[g] = first + 4 * g - keys / 2;
    t->group_end[g] = first + 4 * g + 3 + keys / 2;
  }
}

static void reset(float *m, float *l, float *o, long rows, int d) {
  for (long i = 0; i < rows; i++) { m[i] = -INFINITY; l[i] = 0.0f; }
  for (long i = 0; i < rows * d; i++) o[i] = 0.0f;
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: kernel_ceiling ISA D KEYS TOKENS\n"); return 2; }
  const int isa = atoi(argv[1]), d = atoi(argv[2]), keys = atoi(argv[3]);
  const long tokens = atol(argv[4]);
  if (isa < GA_ISA_AVX2 || !ga_isa_supported(isa) || d < 1 || keys < 16 || tokens < 2 * keys + 64) {
    fprintf(stderr, "error: unsupported ISA or shape (need TOKENS >= 2 KEYS + 64)\n");
    return 2;
  }
  float *q = malloc(sizeof(float) * tokens * d), *k = malloc(sizeof(float) * tokens * d);
  float *v = malloc(sizeof(float) * tokens * d), *o = malloc(sizeof(float) * tokens * d);
  float *m = malloc(sizeof(float) * tokens), *l = malloc(sizeof(float) * tokens);
  int64_t *positions = malloc(sizeof(int64_t) * tokens);
  float *pack = aligned_alloc(64, (size_t)((ga_pack_floats(d, d) * 4 + 63) / 64 * 64));
  if (!q || !k || !v || !o || !m || !l || !positions || !pack) { fprintf(stderr, "error: out of memory\n"); return 1; }
  fill(q, tokens * d, 1);
  fill(k, tokens * d, 2);
  fill(v, tokens * d, 3);
  for (long i = 0; i < tokens; i++) positions[i] = i;
  ga_tile t = {0};
  t.rows = 16;
  t.key = k;
  t.value = v;
  t.kv_type = GA_FLOAT32;
  t.key_dim = t.value_dim = d;
  t.scale = 0.125f;
  t.keys = positions;
  t.n = tokens;
  t.isa = isa;
  t.pack = pack;
  t.has_row_spans = 1;

  // One core's FMA peak of this ISA, best of 5.
  const int64_t iterations = 50000000;
  double peak = 0;
  for (int run = 0; run < 5; run++) {
    const double start = seconds();
    volatile double sink = ga_fma_loop_isa(isa, iterations);
    (void)sink;
    const double rate = (double)iterations * (double)ga_fma_loop_isa_flops_per_iteration(isa) / (seconds() - start);
    if (rate > peak) peak = rate;
  }

  // (1) One tile repeated: best of 5 runs of enough calls for ~0.2 s.
  const long first = tokens / 2;
  const double tile_flops = 4.0 * keys * 16 * d;
  long calls = (long)(0.2 * peak / tile_flops) + 1;
  double repeated = 0;
  for (int run = 0; run < 5; run++) {
    reset(m + first, l + first, o + first * d, 16, d);
    place(&t, first, keys, q, o, m, l);
    const double start = seconds();
    for (long c = 0; c < calls; c++) ga_tile_attend(&t);
    const double rate = tile_flops * (double)calls / (seconds() - start);
    if (rate > repeated) repeated = rate;
  }

  // (2) Consecutive tiles over the rows whose keys lie inside the sequence: best of 5 sweeps.
  double streaming = 0;
  for (int run = 0; run < 5; run++) {
    reset(m, l, o, tokens, d);
    long tiles = 0;
    const double start = seconds();
    for (long row = keys / 2; row + 16 + keys / 2 <= tokens; row += 16, tiles++) {
      place(&t, row, keys, q, o, m, l);
      ga_tile_attend(&t);
    }
    const double rate = tile_flops * (double)tiles / (seconds() - start);
    if (rate > streaming) streaming = rate;
  }
  // A row's state must have moved, so the compiler and a broken kernel cannot skip the work.
  if (!(l[tokens / 2] > 0.0f)) { fprintf(stderr, "error: the kernel left a row unwritten\n"); return 1; }
  const char *name = isa == GA_ISA_AVX512 ? "avx512" : isa == GA_ISA_AVX2 ? "avx2" : "portable";
  printf("%-8s d=%-3d keys/row=%-5d tokens=%-8ld one-core peak %6.1f GFLOP/s | one tile repeated %6.1f (%4.1f%%) | "
         "consecutive tiles %6.1f (%4.1f%%)\n",
         name, d, keys, tokens, peak * 1e-9, repeated * 1e-9, 100 * repeated / peak, streaming * 1e-9, 100 * streaming / peak);
  return 0;
}
