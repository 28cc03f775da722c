#ifndef GRAPH_ATTENTION_KERNELS_H
#define GRAPH_ATTENTION_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Keys per block of the online softmax: scores of one block are computed, then folded into the state.
#define GA_KEY_BLOCK 32
/// Query rows a tile may hold: up to 4 groups of 4 rows.
#define GA_MAX_ROWS 16
/// Rows of a group, the register block of the kernel.
#define GA_GROUP_ROWS 4

/// Storage types of keys and values; arithmetic is fp32.
enum { GA_FLOAT32 = 0, GA_FLOAT16 = 1, GA_BFLOAT16 = 2 };

/// Score modifiers of one head, applied to each scaled score `s = scale * q.k` in this order (a field
/// at 0 is off): softcap `s <- softcap * tanh(s / softcap)` (Gemma), then the ALiBi bias
/// `s <- s - alibi_slope * |row - column + alibi_offset|` of the pair's positions. For query rows
/// against key columns, alibi_offset is L_k - L_q (bottom-right alignment: |i + L_k - L_q - j|); for key
/// rows against query columns (the backward's second pass) it is L_q - L_k. Positions fit in int32.
typedef struct {
  float softcap;
  float alibi_slope;
  int32_t alibi_offset;
} ga_score_mods;

/// One tile: 1 query row, or 4, 8, 12 or 16 rows in groups of 4, against a shared sorted list of keys.
///
/// Each row's state (m, l, acc) is read and updated in place: m is the running maximum of scaled
/// scores (-inf before any key), l the sum of exp(s - m), acc the unnormalised weighted sum of values.
/// Keys the row does not attend to are masked out (mask byte 0); masked scores are still computed,
/// so the caller forms tiles whose rows share most keys. Group g only visits key positions
/// [group_begin[g], group_end[g]); all groups walk the keys in the same blocks of GA_KEY_BLOCK keys, so
/// a block of K and V is loaded into L1 once for up to GA_MAX_ROWS rows.
typedef struct {
  const float *query[GA_MAX_ROWS];  ///< rows of d_k floats
  int rows;                         ///< 1, 4, 8, 12 or 16
  int64_t group_begin[GA_MAX_ROWS / GA_GROUP_ROWS];  ///< first key position of each group of 4 rows
  int64_t group_end[GA_MAX_ROWS / GA_GROUP_ROWS];    ///< one past its last key position
  const void *key;                  ///< key base: key j at element j * key_dim, of type kv_type
  const void *value;                ///< value base: value j at element j * value_dim, of type kv_type
  int kv_type;                      ///< GA_FLOAT32, GA_FLOAT16 or GA_BFLOAT16 (queries and states are fp32)
  int key_dim;
  int value_dim;
  float scale;
  const int64_t *keys;              ///< n sorted key indices shared by the rows
  int64_t n;
  /// Per (row, key) bytes, 1 = attend, laid out [group][key][row of group] so that the 8 bytes of two keys
  /// of a group line up with the 8 lanes of their scores; NULL = every row attends to every key.
  const uint8_t *mask;
  float *m[GA_MAX_ROWS];
  float *l[GA_MAX_ROWS];
  float *acc[GA_MAX_ROWS];          ///< value_dim floats each
  float *scratch;                   ///< at least GA_GROUP_ROWS * GA_KEY_BLOCK floats, 32-byte aligned
  int force_portable;               ///< nonzero: use the portable kernel (tests compare the two)
  /// The kernel: GA_ISA_AUTOMATIC (0: the widest this CPU runs), or one of GA_ISA_PORTABLE, GA_ISA_AVX2,
  /// GA_ISA_AVX512 (the caller checks `ga_isa_supported` first; an unsupported choice runs the widest).
  int isa;
  /// At least `ga_pack_floats(key_dim, value_dim)` floats, 64-byte aligned: packed Q^T, scores and widened
  /// K/V rows for the kernels with rows in the lanes (AVX-512, AVX2), which then run every tile of 4-16 rows;
  /// NULL runs them on the AVX2 dot-product kernel (or the portable one).
  float *pack;
  /// Nonzero: with `mask` NULL, row r attends to exactly the key positions [row_begin[r], row_end[r]).
  /// Only the kernels with rows in the lanes read spans: pass them only with a pack buffer and a SIMD isa.
  int has_row_spans;
  int32_t row_begin[GA_MAX_ROWS];
  int32_t row_end[GA_MAX_ROWS];
  /// With row spans: key positions [0, shared_keys) are attended by every row as well as its span (global
  /// columns below a window: one tile instead of two); the groups' ranges then start at 0. Read only with spans.
  int64_t shared_keys;
  /// The head's score modifiers (all 0: none).
  ga_score_mods mods;
  /// Each row's query position (read only with an ALiBi slope).
  int32_t row_position[GA_MAX_ROWS];
  /// The key position of each entry of `keys` when `keys` index a buffer of gathered rows (ALiBi reads
  /// positions); NULL: `keys` are the positions.
  const int64_t *key_positions;
} ga_tile;

/// Kernel instruction sets, from the narrowest.
enum { GA_ISA_AUTOMATIC = 0, GA_ISA_PORTABLE = 1, GA_ISA_AVX2 = 2, GA_ISA_AVX512 = 3 };

/// 1 if this CPU and its OS run kernels of `isa` (CPUID features, and for AVX-512 the ZMM and mask
/// state enabled in XCR0), else 0. GA_ISA_AUTOMATIC and GA_ISA_PORTABLE are always supported.
int ga_isa_supported(int isa);

/// The widest instruction set the engine uses: the widest this CPU and OS run, lowered to the cap
/// `GRAPH_ATTENTION_MAX_KERNEL` names (`portable`, `avx2`, `avx512`; read once per process), so that a
/// capped process treats every wider kernel as absent. GA_ISA_AVX512, GA_ISA_AVX2 or GA_ISA_PORTABLE.
int ga_widest_isa(void);

/// The widest instruction set this CPU and OS run, whatever the cap says.
int ga_detected_isa(void);

/// The cap `GRAPH_ATTENTION_MAX_KERNEL` sets: a GA_ISA_* value, GA_ISA_AUTOMATIC when it is unset or names
/// no kernel (the Swift layer reports an unknown name as an option error).
int ga_isa_cap(void);

/// Floats the rows-in-lanes kernels' pack buffer needs for these dimensions: O((d_k + d_v) * 128).
int64_t ga_pack_floats(int key_dim, int value_dim);

/// Runs `iterations` of ten independent FMA chains as wide as `isa` (8 lanes for AVX2, 16 for AVX-512,
/// 8 scalar lanes for portable); returns a value that depends on every chain.
double ga_fma_loop_isa(int isa, int64_t iterations);

/// Floating-point operations per iteration of `ga_fma_loop_isa(isa, _)` (an FMA counts as 2).
int64_t ga_fma_loop_isa_flops_per_iteration(int isa);

/// Folds the tile's keys into its rows' states with the fastest kernel this CPU supports.
void ga_tile_attend(const ga_tile *tile);

/// The portable kernel, for tests that compare it with the dispatched one.
void ga_tile_attend_portable(const ga_tile *tile);

/// 1 if the AVX2+FMA kernel is used on this CPU, else 0.
int ga_uses_avx2(void);

/// Rows of a stored sparse pattern (CSR: sorted, unique uint32 columns per row) gathered against K and V.
///
/// Propagation blocking: the keys are visited in blocks of `key_block`, and for each block every row of the
/// chunk folds in its columns that fall there, so one block of K and V (key_block * (d_k + d_v) elements) is
/// brought into L2 once for all the chunk's rows instead of once per edge; each row's state (m, l, acc) simply
/// carries on from block to block (the online softmax needs no merge). The next block is prefetched while the
/// current one is used.
typedef struct {
  int64_t rows;                  ///< rows of the chunk
  int32_t first_position;        ///< query position of the first row (ALiBi); row r is at first_position + r
  const float *query;            ///< rows x key_dim fp32 query rows
  const int64_t *row_offsets;    ///< rows + 1 offsets into `columns`: row r's columns are [row_offsets[r], row_offsets[r+1])
  const uint32_t *columns;       ///< sorted, unique key columns of each row, each below key_count
  int64_t key_count;             ///< keys of the head
  int64_t key_block;             ///< keys per block (> 0)
  float *m;                      ///< rows running maxima, updated in place
  float *l;                      ///< rows running sums
  float *acc;                    ///< rows x value_dim unnormalised outputs
  int64_t *cursor;               ///< scratch: `rows` entries
  int64_t *keys;                 ///< scratch: `keys_capacity` entries (the narrower kernels take 64-bit key lists)
  int64_t keys_capacity;         ///< > 0; longer runs of a row go to the narrower kernels in pieces of this many keys
} ga_gather;

/// Folds each chunk row's columns into its state, key block by key block, with `head`'s keys, values, types,
/// dimensions, scale, score modifiers and kernel choice (its row fields, keys, mask and spans are ignored;
/// `head->scratch` is used). The AVX-512 kernel runs each row's run of columns as 16-key blocks of dot products
/// (one transposing sum per 16 keys, no per-key horizontal sum); other kernels run it as a single-row tile.
/// - Complexity: O(edges * (d_k + d_v) + rows * key_count / key_block).
void ga_gather_rows(const ga_tile *head, const ga_gather *gather);


/// Runs `iterations` of ten independent FMA chains of the widest instruction set (the machine's FMA peak
/// loop); returns a value that depends on every chain, so it cannot be optimised away.
double ga_fma_loop(int64_t iterations);

/// Floating-point operations per iteration of `ga_fma_loop` (an FMA counts as 2): 320 with AVX-512, else 160.
int64_t ga_fma_loop_flops_per_iteration(void);

/// Sums `count` floats (a streaming read, for measuring memory bandwidth).
double ga_read_sum(const float *data, int64_t count);

#ifdef __cplusplus
}
#endif

#endif
