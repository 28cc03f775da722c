/* C ABI of libgraph_attention.so (the GraphAttention engine for other languages; Python binds it with ctypes).
 *
 * Every function returns a status: 0 on success, else 1 file, 2 shape, 3 dtype, 4 mask, 5 index, 6 option,
 * 7 value (NaN/inf input), 8 resource, 9 device, 10 a broken C contract (NULL pointer, unknown code),
 * 11 unclassified; ga_last_error() then gives "<kind>: <problem>. Fix: <fix>." for the calling thread.
 * No Swift error or trap crosses this boundary for any argument values (pointers must be valid for the
 * extents given). Tensors are C-contiguous; dtype codes: 0 fp32, 1 fp16, 2 bf16. Shapes hold `rank` (2..4)
 * extents: [L, d], [H, L, d] or [B, H, L, d], key/value heads dividing query heads. */
#ifndef GRAPH_ATTENTION_H
#define GRAPH_ATTENTION_H
#include <math.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef void *ga_graph;  /* owned by the caller from ga_graph_parse until ga_graph_free */

const char *ga_version(void);     /* static "MAJOR.MINOR.PATCH" */
const char *ga_last_error(void);  /* this thread's last error, NULL after a success; valid until its next call */

int32_t ga_graph_parse(const char *specification, ga_graph *out);
void ga_graph_free(ga_graph graph);
int32_t ga_graph_validate(ga_graph graph, int64_t query_count, int64_t key_count);
int32_t ga_graph_edge_count(ga_graph graph, int64_t query_count, int64_t key_count, int64_t *out);
int32_t ga_graph_degree(ga_graph graph, int64_t query_count, int64_t key_count, int64_t row, int64_t *out);
int32_t ga_graph_describe(ga_graph graph, char *buffer, int64_t capacity, int64_t *length);
int32_t ga_graph_dense_mask(ga_graph graph, int64_t query_count, int64_t key_count, uint8_t *out);
/* The files a specification names (explicit graphs, documents' offsets), one a line, unread; and the mask
 * grammar (every kind's form and meaning). Both write text as ga_graph_describe does. */
int32_t ga_mask_files(const char *specification, char *buffer, int64_t capacity, int64_t *length);
int32_t ga_mask_grammar(char *buffer, int64_t capacity, int64_t *length);

/* flags: bit 0 scans inputs for NaN/inf first. scale: NaN for 1/sqrt(d_k). threads: 0 for all processors.
 * empty_rows: 0 zeros, 1 NaN. log_sum_exp (nullable): fp32, query shape without its last extent.
 * work (nullable): two int64, edges visited and scores computed. */
int32_t ga_attention_forward(const void *query, const int64_t *query_shape, int32_t query_dtype,
                             const void *key, const int64_t *key_shape, int32_t key_dtype,
                             const void *value, const int64_t *value_shape, int32_t value_dtype,
                             int32_t rank, void *output, int32_t output_dtype, float *log_sum_exp,
                             ga_graph graph, float scale, int32_t empty_rows, int32_t threads, uint32_t flags,
                             int64_t *work);

/* fp32 gradients shaped like query, key and value, from the forward's output and LSE; flags bit 0 checks
 * query, key, value and grad_output (output and LSE hold NaN / -inf on empty rows legitimately). */
int32_t ga_attention_backward(const void *query, const int64_t *query_shape, int32_t query_dtype,
                              const void *key, const int64_t *key_shape, int32_t key_dtype,
                              const void *value, const int64_t *value_shape, int32_t value_dtype,
                              int32_t rank, const void *output, int32_t output_dtype, const float *log_sum_exp,
                              const void *grad_output, int32_t grad_output_dtype,
                              float *grad_query, float *grad_key, float *grad_value,
                              ga_graph graph, float scale, int32_t empty_rows, int32_t threads, uint32_t flags);

/* Options of ga_attention_forward_ex and ga_attention_backward_ex, in a struct that grows: `size` is the
 * version (sizeof as the caller was compiled), later versions append fields and read the ones an older caller's
 * smaller size lacks as their defaults. Start from ga_attention_options_default() and change what you need.
 * Layout of version 1 (56 bytes, no padding): offsets 0 size, 4 graph_count, 8 graphs, 16 alibi_slopes,
 * 24 sinks, 32 scale, 36 softcap, 40 empty_rows, 44 threads, 48 flags, 52 alibi. */
typedef struct ga_attention_options {
  uint32_t size;              /* sizeof(ga_attention_options): 56 in version 1 */
  int32_t graph_count;        /* 1: graphs[0] for every head; H_q: graphs[h] for query head h */
  const ga_graph *graphs;     /* graph_count handles from ga_graph_parse, borrowed for the call */
  const float *alibi_slopes;  /* with alibi 2: H_q slopes, one per query head; else ignored */
  const float *sinks;         /* NULL, or H_q sink logits (GPT-OSS), each joining its head's softmax denominators */
  float scale;                /* the factor on q . k; NaN for 1/sqrt(d_k) */
  float softcap;              /* NaN for none; C > 0 caps scores as C * tanh(s / C) (Gemma), before ALiBi */
  int32_t empty_rows;         /* 0 zeros, 1 NaN */
  int32_t threads;            /* worker threads, 0 for every processor */
  uint32_t flags;             /* bit 0 scans inputs for NaN/inf first */
  int32_t alibi;              /* 0 none, 1 the standard slopes 2^(-8(h+1)/H_q), 2 alibi_slopes; adds -slope * |i + L_k - L_q - j| */
} ga_attention_options;

/* The defaults: one graph (set graphs), scale 1/sqrt(d_k), zero empty rows, every processor, inputs checked,
 * no softcap, ALiBi or sinks. */
static inline ga_attention_options ga_attention_options_default(void) {
  ga_attention_options options = {0};
  options.size = sizeof(ga_attention_options);
  options.graph_count = 1;
  options.scale = NAN;
  options.flags = 1;
  return options;
}

/* ga_attention_forward with per-head graphs and score modifiers, as `options` says: s = scale * q.k, then the
 * softcap, then ALiBi's bias; sinks join each row's softmax denominator (a row without edges then gives zeros,
 * whatever empty_rows says, and its log-sum-exp includes the sink). A softcap that is not NaN (none) or a
 * positive finite number of normal size, slopes or sinks that are not finite: status 6 (option). */
int32_t ga_attention_forward_ex(const void *query, const int64_t *query_shape, int32_t query_dtype,
                                const void *key, const int64_t *key_shape, int32_t key_dtype,
                                const void *value, const int64_t *value_shape, int32_t value_dtype,
                                int32_t rank, void *output, int32_t output_dtype, float *log_sum_exp,
                                const ga_attention_options *options, int64_t *work);

/* ga_attention_backward with the forward's `options`; grad_sinks (H_q floats) receives dL/dsinks and is
 * required when options->sinks is set, else may be NULL. */
int32_t ga_attention_backward_ex(const void *query, const int64_t *query_shape, int32_t query_dtype,
                                 const void *key, const int64_t *key_shape, int32_t key_dtype,
                                 const void *value, const int64_t *value_shape, int32_t value_dtype,
                                 int32_t rank, const void *output, int32_t output_dtype, const float *log_sum_exp,
                                 const void *grad_output, int32_t grad_output_dtype,
                                 float *grad_query, float *grad_key, float *grad_value, float *grad_sinks,
                                 const ga_attention_options *options);

/* Views and exchange plans: sequence-parallel attention over any transport (docs/distributed.md).
 * Runs are (start, count, stride) int64 triples of global indices, sorted by start with disjoint spans. */

/* A view of `graph` over `query_count` x `key_count` tokens: the global query rows of `row_runs` against the
 * global keys of `key_runs`, renumbered compactly (view row i is the i-th listed row), with the edges of
 * `excluded_rows` dropped. Use it with the listed rows as the query and the listed keys as key and value;
 * ALiBi needs one contiguous row run and one contiguous key run. New handle at *out (ga_graph_free). */
int32_t ga_graph_view(ga_graph graph, int64_t query_count, int64_t key_count,
                      const int64_t *row_runs, int64_t row_run_count, const int64_t *key_runs, int64_t key_run_count,
                      const int64_t *excluded_rows, int64_t excluded_count, ga_graph *out);

typedef void *ga_exchange_plan;

/* The keys each rank needs from each other rank for `graph_count` graphs (1, or one per query head) over
 * `tokens` tokens split into `world_size` shards of `shard_sizes` (NULL: torch.tensor_split's sizes, the first
 * tokens % world_size one longer). Global tokens as queries are listed apart (ga_exchange_plan_global_rows):
 * every rank computes them against its own keys and the owner merges the partial states. */
int32_t ga_exchange_plan_create(const ga_graph *graphs, int64_t graph_count, int64_t tokens,
                                const int64_t *shard_sizes, int64_t world_size, ga_exchange_plan *out);
void ga_exchange_plan_free(ga_exchange_plan plan);
/* Keys `receiver` fetches from `sender`: *run_count runs, *key_count keys; triples into `runs` when
 * `capacity` (runs) suffices (NULL, 0 to size). */
int32_t ga_exchange_plan_needs(ga_exchange_plan plan, int64_t receiver, int64_t sender, int64_t *runs,
                               int64_t capacity, int64_t *run_count, int64_t *key_count);
int32_t ga_exchange_plan_global_rows(ga_exchange_plan plan, int64_t *rows, int64_t capacity, int64_t *count);
/* Bytes `rank` sends per forward (backward 0) or backward pass; row_bytes: one token's K+V, Q, partial state
 * (O and LSE), dK+dV, global row state (O, LSE, dO), dQ. */
int32_t ga_exchange_plan_bytes_sent(ga_exchange_plan plan, int64_t rank, const int64_t row_bytes[6],
                                    int32_t backward, int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
