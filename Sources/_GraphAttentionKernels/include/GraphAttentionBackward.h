#ifndef GRAPH_ATTENTION_BACKWARD_H
#define GRAPH_ATTENTION_BACKWARD_H

#include <stdint.h>

#include "GraphAttentionKernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Rows a backward tile may hold.
#define GA_BW_MAX_ROWS 16
/// Columns per packed block (the lanes of one AVX-512 vector; the AVX2 kernel uses two halves).
#define GA_BW_BLOCK 16

/// Columns packed once and shared by many tiles: the columns `first + k * stride`, k < capacity, of A and B,
/// in blocks of the kernel's width (16 for AVX-512, 8 for AVX2) packed transposed on first use. Tiles whose
/// columns step by `stride` from a whole number of blocks after `first` and end inside the panel read their
/// blocks here instead of packing them again: tiles of neighbouring rows of a window, blocked or dilated graph
/// share most columns, so each column is packed about once per work item instead of once per tile. The
/// kernel places the panel (`first`, `stride`, flags) itself at the first tile that steps evenly and does not
/// fit; its owner sets `stride` to 0 (no place yet) whenever the sources A and B change.
typedef struct {
  float *A;                 ///< capacity * a_dim floats, 64-byte aligned
  float *B;                 ///< capacity * b_dim floats, 64-byte aligned
  uint8_t *packed;          ///< capacity / 8 flags
  int64_t first;            ///< the first column
  int64_t stride;           ///< the step between the panel's columns; 0 before the kernel places it
  int64_t capacity;         ///< columns, a multiple of 16
  int64_t limit;            ///< columns that exist in A and B (a block is never read past it)
} ga_backward_panel;

/// One backward tile: up to 16 "rows" against a shared sorted list of "columns". Both passes of the
/// backward are this one shape (FlashAttention-2's formulation, with S and dP recomputed in each pass):
///
///   s = a_r . A_c,  dp = b_r . B_c,  p = exp(mod(scale * s) - lse),  ds = p * (dp - delta) * mod'
///   grad_a[r] += ds * A_c           (unscaled: the caller multiplies by `scale` once at the end)
///   grad_b[r] += p * B_c            (when grad_b is set)
///
/// Pass 1 (dQ, over query rows): a = q_i, b = dO_i, A = keys, B = values, lse/delta per row,
/// grad_a = dQ_i, no grad_b. Pass 2 (dK, dV, over key columns through the transposed graph): a = k_j,
/// b = v_j, A = queries, B = dO, lse/delta per column (query), grad_a = dK_j, grad_b = dV_j.
/// Entries whose mask byte is 0 contribute nothing (p = ds = 0, whatever their scores). `mod` is the
/// head's score modifiers (`ga_score_mods`: softcap, ALiBi; the identity when off) and `mod'` its
/// derivative (1 - tanh^2 of the softcap; the bias is constant).
typedef struct {
  int rows;                               ///< 1...16
  const float *a[GA_BW_MAX_ROWS];         ///< a_dim floats per row
  const float *b[GA_BW_MAX_ROWS];         ///< b_dim floats per row
  float *grad_a[GA_BW_MAX_ROWS];          ///< a_dim fp32 accumulators per row
  float *grad_b[GA_BW_MAX_ROWS];          ///< b_dim fp32 accumulators per row; all NULL in pass 1
  float row_lse[GA_BW_MAX_ROWS];          ///< per row, used when col_lse is NULL
  float row_delta[GA_BW_MAX_ROWS];        ///< per row, used when col_delta is NULL
  const float *A;                         ///< column c's vector at A + c * a_dim
  const float *B;                         ///< column c's vector at B + c * b_dim
  const float *col_lse;                   ///< per column (indexed by column), or NULL
  const float *col_delta;                 ///< per column, or NULL
  const int64_t *columns;                 ///< n sorted column indices shared by the rows
  int64_t n;
  const uint8_t *mask;                    ///< [row][n] bytes, 1 = edge; NULL = every row has every column
  int a_dim;
  int b_dim;
  float scale;
  float *scratch;                         ///< ga_backward_scratch_floats(a_dim, b_dim) floats, 64-byte aligned
  int isa;                                ///< GA_ISA_* (GraphAttentionKernels.h); AUTOMATIC: the widest
  ga_score_mods mods;                     ///< the head's score modifiers (all 0: none)
  int32_t row_position[GA_BW_MAX_ROWS];   ///< each row's position (read only with an ALiBi slope); columns are positions
  ga_backward_panel *panel;               ///< shared packed columns of A and B, or NULL (each tile packs its own)
  /// The columns' gradients of A, or NULL: when set, also grad_A[(c - grad_A_first) * a_dim ...] += ds * a_r
  /// for every row r and column c (unscaled). A single-pass backward runs pass 2 alone with dQ here (its key
  /// tiles' ds against their query columns); the caller gives each work item its own rows of grad_A, so
  /// the sums stay in one fixed order.
  float *grad_A;
  int64_t grad_A_first;                   ///< the column whose gradient is grad_A's first row
} ga_backward_tile;

/// Runs one tile with the kernel `tile->isa` names (GA_ISA_AUTOMATIC: the widest this CPU runs; the caller
/// checks `ga_isa_supported` for the others).
void ga_backward_tile_run(const ga_backward_tile *tile);

/// Floats of scratch a tile needs for these dimensions.
int64_t ga_backward_scratch_floats(int a_dim, int b_dim);

#ifdef __cplusplus
}
#endif

#endif
