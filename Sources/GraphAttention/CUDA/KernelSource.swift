/// The CUDA C source of every GPU kernel, compiled at first use by NVRTC (see `CUDAKernelBuilder`).
///
/// Kept as a Swift string so the package carries its kernels without a CUDA SDK at build time; it
/// includes no header, so it compiles with libnvrtc alone. `graph-attention cuda-compile` compiles it
/// for given architectures (CI does sm_80 and sm_90), and `--emit-source` writes it out for reading.
enum KernelSource {
  /// The kernels every build of the source must export: the row kernel per storage type, and the
  /// tensor-core tile kernel per half-precision type and head dimension.
  static let kernelNames = ["ga_rows_f32", "ga_rows_f16", "ga_rows_bf16"]
    + ["f16", "bf16"].flatMap { type in tileDimensions.map { "ga_tile_\(type)_d\($0)" } }

  /// Head dimensions (`d_k == d_v`) with a tensor-core kernel.
  static let tileDimensions = [32, 64, 128]
  /// Query rows per warp of the tile kernel (the mma tile's M).
  static let tileRows = 16

  /// The tensor-core kernel for fp16/bf16 storage and `d_k == d_v` in `tileDimensions`, else nil.
  static func tileKernel(for storage: StorageType, keyDim: Int, valueDim: Int) -> String? {
    guard keyDim == valueDim, tileDimensions.contains(keyDim) else { return nil }
    switch storage {
    case .float32: return nil
    case .float16: return "ga_tile_f16_d\(keyDim)"
    case .bfloat16: return "ga_tile_bf16_d\(keyDim)"
    }
  }

  /// The kernel for a storage type.
  static func rowsKernel(for storage: StorageType) -> String {
    switch storage {
    case .float32: return "ga_rows_f32"
    case .float16: return "ga_rows_f16"
    case .bfloat16: return "ga_rows_bf16"
    }
  }

  /// The source text. Raw string: the CUDA macros use backslash line continuations.
  static let text = #"""
// GraphAttention CUDA kernels: exact sparse attention over mask graphs.
//
// Compiled at run time by NVRTC for the GPU's own architecture; no CUDA header is included, so the
// source compiles with nothing but libnvrtc. With GA_HOST_EMULATION defined it also compiles as host
// C++ under the tests' warp emulator (Tests/GraphAttentionTests/CUDA/KernelEmulator.swift), which
// runs these kernels lane by lane on the CPU. Every index is 64-bit (160M tokens x 64 dims overflows
// 32 bits). Semantics match the CPU engine exactly: see Graph+Rows.swift (neighbourhoods),
// Graph+Counting.swift (membership) and RandomGraph.swift (the generator, reproduced bit for bit).

typedef unsigned long long ga_u64;
typedef long long ga_i64;
typedef unsigned int ga_u32;
typedef unsigned short ga_u16;

// Storage types. Half and bfloat16 are carried as raw bits and widened to fp32 on load, so the
// kernels need neither cuda_fp16.h nor cuda_bf16.h; all arithmetic is fp32.
struct ga_f16 { ga_u16 bits; };
struct ga_bf16 { ga_u16 bits; };

__device__ __forceinline__ float ga_to_float(float x) { return x; }
__device__ __forceinline__ float ga_to_float(ga_f16 x) {
#ifdef GA_HOST_EMULATION
  return ga_emulated_half_to_float(x.bits);
#else
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
  return f;
#endif
}
__device__ __forceinline__ float ga_to_float(ga_bf16 x) { return __uint_as_float(((ga_u32)x.bits) << 16); }

#define GA_INFINITY __int_as_float(0x7f800000)
#define GA_NAN __int_as_float(0x7fffffff)
#define GA_ALL_LANES 0xffffffffu

// Component kinds; the host encodes each component of a union as 8 64-bit words (CUDAGraphEncoding.swift):
// w0 = kind | causal << 8, w1 = a, w2 = b, w3 = int64 array (global tokens / CSR row offsets),
// w4 = uint32 array (CSR columns), w5 = seed, w6 = probability bits, w7 = log(1 - p) bits.
#define GA_KIND_FULL 0
#define GA_KIND_CAUSAL 1
#define GA_KIND_WINDOW 2
#define GA_KIND_DILATED 3
#define GA_KIND_BLOCKED 4
#define GA_KIND_GLOBAL 5
#define GA_KIND_RANDOM 6
#define GA_KIND_EXPLICIT 7

// Mode bits. Without GA_MODE_STATE_IN a row starts empty (m = -inf, l = 0, acc = 0), else from the
// (M, Lsum, out) buffers; with GA_MODE_STATE_OUT the state is written back unnormalised, else the
// normalised output (empty rows 0, or NaN with GA_MODE_NAN). The tensor-core kernel hands its state to
// the row kernel this way when a union has both contiguous and other components.
#define GA_MODE_NAN 1
#define GA_MODE_STATE_IN 2
#define GA_MODE_STATE_OUT 4

struct ga_component {
  int kind;
  int causal;
  ga_i64 a;                 // window/dilated radius, blocked block, global token count, explicit row count
  ga_i64 b;                 // dilation
  const ga_i64* offsets;    // global: sorted tokens; explicit: rowCount + 1 offsets
  const ga_u32* columns;    // explicit: sorted, unique columns per row
  ga_u64 seed;
  double probability;
  double logOneMinusP;
};

// The key/value head of batch-and-query-head index `bh` (bh = batch * qHeads + query head): query heads
// share key/value heads in consecutive groups of qHeads / kvHeads (grouped-query attention), the rule of
// AttentionShape.keyValueHead(ofQueryHead:) on the CPU.
__device__ __forceinline__ ga_i64 ga_key_value_head(ga_i64 bh, ga_i64 qHeads, ga_i64 kvHeads) {
  return (bh / qHeads) * kvHeads + (bh % qHeads) / (qHeads / kvHeads);
}

__device__ __forceinline__ ga_component ga_load_component(const ga_u64* __restrict__ w) {
  ga_component c;
  c.kind = (int)(w[0] & 0xff);
  c.causal = (int)((w[0] >> 8) & 1);
  c.a = (ga_i64)w[1];
  c.b = (ga_i64)w[2];
  c.offsets = (const ga_i64*)w[3];
  c.columns = (const ga_u32*)w[4];
  c.seed = w[5];
  c.probability = __longlong_as_double((ga_i64)w[6]);
  c.logOneMinusP = __longlong_as_double((ga_i64)w[7]);
  return c;
}

// ---------------------------------------------------------------------------------------------------
// The random graph, bit for bit as RandomGraph.swift. Only correctly rounded IEEE operations, through
// intrinsics that are never contracted into FMAs, so the edges equal the host's on every GPU.

__device__ __forceinline__ ga_u64 ga_mix64(ga_u64 z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__device__ double ga_stable_log(double x) {
  ga_u64 bits = (ga_u64)__double_as_longlong(x);
  ga_i64 exponent = (ga_i64)((bits >> 52) & 0x7FF) - 1023;
  double m = __longlong_as_double((ga_i64)((bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull));
  if (m > 1.4142135623730951) {
    m = __dmul_rn(m, 0.5);
    exponent += 1;
  }
  double s = __ddiv_rn(__dadd_rn(m, -1.0), __dadd_rn(m, 1.0));
  double s2 = __dmul_rn(s, s);
  double series = __ddiv_rn(1.0, 23.0);
  series = __dadd_rn(__dmul_rn(series, s2), __ddiv_rn(1.0, 21.0));
  series = __dadd_rn(__dmul_rn(series, s2), __ddiv_rn(1.0, 19.0));
  series = __dadd_rn(__dmul_rn(series, s2), __ddiv_rn(1.0, 17.0));
  series = __dadd_rn(__dmul_rn(series, s2), __ddiv_rn(1.0, 15.0));
  series = __dadd_rn(__dmul_rn(series, s2), __ddiv_rn(1.0, 13.0));
  series = __dadd_rn(__dmul_rn(series, s2), __ddiv_rn(1.0, 11.0));
  series = __dadd_rn(__dmul_rn(series, s2), __ddiv_rn(1.0, 9.0));
  series = __dadd_rn(__dmul_rn(series, s2), __ddiv_rn(1.0, 7.0));
  series = __dadd_rn(__dmul_rn(series, s2), __ddiv_rn(1.0, 5.0));
  series = __dadd_rn(__dmul_rn(series, s2), __ddiv_rn(1.0, 3.0));
  series = __dadd_rn(__dmul_rn(series, s2), 1.0);
  return __dadd_rn(__dmul_rn((double)exponent, 0.6931471805599453), __dmul_rn(__dmul_rn(2.0, s), series));
}

// One row's stream of random keys, in increasing order (RandomGraph.forEachKey with probability < 1).
struct ga_random_stream {
  ga_u64 state;
  ga_i64 key;
  bool done;
};

__device__ __forceinline__ void ga_random_begin(ga_random_stream& r, const ga_component& c, ga_i64 row, ga_i64 n) {
  const ga_u64 golden = 0x9E3779B97F4A7C15ull;
  r.state = ga_mix64(c.seed ^ ga_mix64((ga_u64)row + golden));
  r.key = -1;
  r.done = !(c.logOneMinusP < 0.0) || n <= 0;
}

// Advances to the next key; sets `done` instead when the row has no more.
__device__ __forceinline__ void ga_random_next(ga_random_stream& r, const ga_component& c, ga_i64 n) {
  const ga_u64 golden = 0x9E3779B97F4A7C15ull;
  r.state += golden;
  ga_u64 draw = ga_mix64(r.state);
  double u = __dmul_rn((double)((draw >> 11) + 1), 0x1p-53);
  double skip = __ddiv_rn(ga_stable_log(u), c.logOneMinusP);
  // Compare in floating point first: a huge skip must not overflow the integer conversion.
  if (!(skip < (double)(n - 1 - r.key))) { r.done = true; return; }
  r.key += 1 + (ga_i64)skip;
  if (r.key >= n) r.done = true;
}

// ---------------------------------------------------------------------------------------------------
// Membership, as Graph.Component.contains: O(1) for implicit kinds, binary search for global tokens and
// CSR rows, a walk of the row's stream for random graphs.

__device__ __forceinline__ bool ga_search64(const ga_i64* __restrict__ a, ga_i64 count, ga_i64 value) {
  ga_i64 lo = 0, hi = count;
  while (lo < hi) {
    ga_i64 mid = (lo + hi) >> 1;
    if (a[mid] < value) lo = mid + 1; else hi = mid;
  }
  return lo < count && a[lo] == value;
}

__device__ __forceinline__ bool ga_search32(const ga_u32* __restrict__ a, ga_i64 count, ga_i64 value) {
  ga_i64 lo = 0, hi = count;
  while (lo < hi) {
    ga_i64 mid = (lo + hi) >> 1;
    if ((ga_i64)a[mid] < value) lo = mid + 1; else hi = mid;
  }
  return lo < count && (ga_i64)a[lo] == value;
}

__device__ bool ga_contains(const ga_component& c, ga_i64 i, ga_i64 j, ga_i64 n) {
  switch (c.kind) {
  case GA_KIND_FULL:
    return true;
  case GA_KIND_CAUSAL:
    return j <= i;
  case GA_KIND_WINDOW:
    if (c.causal) return j <= i && i - j <= c.a;
    return (i >= j ? i - j : j - i) <= c.a;
  case GA_KIND_DILATED: {
    ga_i64 s = c.b + 1;
    ga_i64 distance = i >= j ? i - j : j - i;
    return distance % s == 0 && distance / s <= c.a;
  }
  case GA_KIND_BLOCKED: {
    ga_i64 s = c.b + 1;
    ga_i64 base = (i / c.a) * c.a;
    return (i - base) % s == 0 && j >= base && j - base < c.a && (j - base) % s == 0;
  }
  case GA_KIND_GLOBAL:
    return ga_search64(c.offsets, c.a, i) || ga_search64(c.offsets, c.a, j);
  case GA_KIND_RANDOM: {
    if (c.probability >= 1.0) return true;
    ga_random_stream r;
    ga_random_begin(r, c, i, n);
    while (!r.done) {
      ga_random_next(r, c, n);
      if (r.done || r.key > j) return false;
      if (r.key == j) return true;
    }
    return false;
  }
  case GA_KIND_EXPLICIT: {
    if (i >= c.a) return false;
    ga_i64 lo = c.offsets[i];
    return ga_search32(c.columns + lo, c.offsets[i + 1] - lo, j);
  }
  }
  return false;
}

// Whether an earlier component of the list (graphs accumulated before, or earlier operands of the
// union) already has the edge: a key is visited only by the first component that contains it.
__device__ __forceinline__ bool ga_in_earlier(const ga_u64* __restrict__ graph, int component, ga_i64 i, ga_i64 j, ga_i64 n) {
  for (int e = 0; e < component; ++e) {
    ga_component c = ga_load_component(graph + 8 * e);
    if (ga_contains(c, i, j, n)) return true;
  }
  return false;
}

// A component's keys for row i, for every kind but a random graph with p < 1: `count` keys, the k-th
// being start + k*stride (source 0), tokens[k] (source 1) or columns[start + k] (source 2). As
// Graph.Component.appendRuns, including its overflow-free window bounds.
struct ga_row_keys {
  ga_i64 start, count, stride;
  int source;
};

__device__ __forceinline__ ga_row_keys ga_component_row(const ga_component& c, ga_i64 i, ga_i64 n) {
  ga_row_keys r;
  r.start = 0; r.count = 0; r.stride = 1; r.source = 0;
  switch (c.kind) {
  case GA_KIND_FULL:
    r.count = n;
    break;
  case GA_KIND_CAUSAL:
    r.count = i + 1;
    break;
  case GA_KIND_WINDOW: {
    ga_i64 lo = i >= c.a ? i - c.a : 0;
    ga_i64 hi = c.causal ? i : (c.a >= n - 1 - i ? n - 1 : i + c.a);
    r.start = lo;
    r.count = hi - lo + 1;
    break;
  }
  case GA_KIND_DILATED: {
    ga_i64 s = c.b + 1;
    ga_i64 left = i / s < c.a ? i / s : c.a;
    ga_i64 right = (n - 1 - i) / s < c.a ? (n - 1 - i) / s : c.a;
    r.start = i - left * s;
    r.count = left + right + 1;
    r.stride = s;
    break;
  }
  case GA_KIND_BLOCKED: {
    ga_i64 s = c.b + 1;
    ga_i64 base = (i / c.a) * c.a;
    if ((i - base) % s != 0) break;
    ga_i64 span = c.a < n - base ? c.a : n - base;
    r.start = base;
    r.count = (span - 1) / s + 1;
    r.stride = s;
    break;
  }
  case GA_KIND_GLOBAL:
    if (ga_search64(c.offsets, c.a, i)) {
      r.count = n;
    } else {
      r.count = c.a;
      r.source = 1;
    }
    break;
  case GA_KIND_RANDOM:  // only p >= 1 reaches here: every key
    r.count = n;
    break;
  case GA_KIND_EXPLICIT:
    if (i < c.a) {
      r.start = c.offsets[i];
      r.count = c.offsets[i + 1] - r.start;
      r.source = 2;
    }
    break;
  }
  return r;
}

// ---------------------------------------------------------------------------------------------------
// The online softmax of one query row, one warp per row: lanes score up to 32 keys at once, the warp
// raises the running maximum once per chunk, and each lane owns the accumulator columns c = lane mod 32.

__device__ __forceinline__ float ga_warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(GA_ALL_LANES, x, o));
  return x;
}

// A butterfly sum: every lane computes the same additions in the same order (a + b == b + a), so the
// result is identical in all lanes and the per-lane copies of (m, l) never diverge.
__device__ __forceinline__ float ga_warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(GA_ALL_LANES, x, o);
  return x;
}

__device__ __forceinline__ float ga_dot(const float* __restrict__ q, const float* __restrict__ k, ga_i64 n) {
  float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
  ga_i64 c = 0;
  if ((n & 3) == 0) {
    // Rows of a multiple of 4 floats are 16-byte aligned (allocations are 256-byte aligned).
    const float4* k4 = (const float4*)k;
    for (; c < n; c += 4) {
      float4 x = k4[c >> 2];
      a0 += q[c] * x.x;
      a1 += q[c + 1] * x.y;
      a2 += q[c + 2] * x.z;
      a3 += q[c + 3] * x.w;
    }
  }
  for (; c < n; ++c) a0 += q[c] * k[c];
  return (a0 + a1) + (a2 + a3);
}

template <typename T>
__device__ __forceinline__ float ga_dot(const float* __restrict__ q, const T* __restrict__ k, ga_i64 n) {
  float a0 = 0.f, a1 = 0.f;
  ga_i64 c = 0;
  for (; c + 1 < n; c += 2) {
    a0 += q[c] * ga_to_float(k[c]);
    a1 += q[c + 1] * ga_to_float(k[c + 1]);
  }
  if (c < n) a0 += q[c] * ga_to_float(k[c]);
  return a0 + a1;
}

struct ga_row_state {
  float m;   // running maximum of the scaled scores, -inf before any edge
  float l;   // sum of e^(s - m)
};

// Folds one chunk (each lane's key, if `valid`) into the row state. Called by all 32 lanes together.
template <typename T>
__device__ __forceinline__ void ga_chunk(bool valid, ga_i64 key, const float* __restrict__ qs, float* __restrict__ acc,
                                         const T* __restrict__ keys, const T* __restrict__ values,
                                         ga_i64 dk, ga_i64 dv, float scale, ga_row_state& st, int lane) {
  float s = -GA_INFINITY;
  if (valid) s = ga_dot(qs, keys + key * dk, dk) * scale;
  float chunkMax = ga_warp_max(s);
  if (chunkMax == -GA_INFINITY) return;  // no edge in this chunk (uniform across the warp)
  if (chunkMax > st.m) {
    if (st.m != -GA_INFINITY) {
      float factor = expf(st.m - chunkMax);
      st.l *= factor;
      for (ga_i64 c = lane; c < dv; c += 32) acc[c] *= factor;
    }
    st.m = chunkMax;
  }
  float p = valid ? expf(s - st.m) : 0.f;
  st.l += ga_warp_sum(p);
  for (int t = 0; t < 32; ++t) {
    float pt = __shfl_sync(GA_ALL_LANES, p, t);
    ga_i64 kt = __shfl_sync(GA_ALL_LANES, key, t);
    if (pt == 0.f) continue;  // uniform: an empty lane (or a weight that underflowed) adds nothing
    const T* v = values + kt * dv;
    for (ga_i64 c = lane; c < dv; c += 32) acc[c] += pt * ga_to_float(v[c]);
  }
}

// One warp per query row, `blockDim.x / 32` consecutive rows per block (the row tile) on grid x, and
// (batch, head) pairs on grid y in a loop (grid y stops at 65,535). Dynamic shared memory holds each
// warp's query row and accumulator in fp32: (d_k + d_v) floats per warp.
//
// Components `0 ..< firstNew` were accumulated by earlier calls (AttentionState) and are only used
// to exclude their edges; components `firstNew ..< componentCount` are enumerated, each key being
// visited only by the first component that contains it.
template <typename T>
__device__ __forceinline__ void ga_rows(const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V,
                                        float* __restrict__ out, float* __restrict__ M, float* __restrict__ Lsum,
                                        const ga_u64* __restrict__ graph, int componentCount, int firstNew,
                                        ga_i64 batchHeads, ga_i64 qHeads, ga_i64 kvHeads, ga_i64 Lq, ga_i64 Lk,
                                        ga_i64 dk, ga_i64 dv, float scale, int mode) {
#ifdef GA_HOST_EMULATION
  float* ga_shared = ga_emulated_shared();
#else
  extern __shared__ float ga_shared[];
#endif
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  const ga_i64 row = (ga_i64)blockIdx.x * warps + warp;
  if (row >= Lq) return;  // the whole warp leaves; the kernel has no block-wide barrier
  float* qs = ga_shared + (ga_i64)warp * (dk + dv);
  float* acc = qs + dk;
  const ga_i64 n = Lk;

  for (ga_i64 bh = blockIdx.y; bh < batchHeads; bh += gridDim.y) {
    const ga_i64 kvHead = ga_key_value_head(bh, qHeads, kvHeads);
    const T* keys = K + kvHead * Lk * dk;
    const T* values = V + kvHead * Lk * dv;
    const ga_i64 rowIndex = bh * Lq + row;
    for (ga_i64 c = lane; c < dk; c += 32) qs[c] = ga_to_float(Q[rowIndex * dk + c]);
    ga_row_state st;
    if (mode & GA_MODE_STATE_IN) {
      st.m = M[rowIndex];
      st.l = Lsum[rowIndex];
      for (ga_i64 c = lane; c < dv; c += 32) acc[c] = out[rowIndex * dv + c];
    } else {
      st.m = -GA_INFINITY;
      st.l = 0.f;
      for (ga_i64 c = lane; c < dv; c += 32) acc[c] = 0.f;
    }
    __syncwarp();

    for (int ci = firstNew; ci < componentCount; ++ci) {
      const ga_component comp = ga_load_component(graph + 8 * ci);
      if (comp.kind == GA_KIND_RANDOM && comp.probability < 1.0) {
        // Geometric skipping is sequential: every lane runs the same stream in lockstep and keeps
        // the key whose position in the chunk is its lane.
        ga_random_stream r;
        ga_random_begin(r, comp, row, n);
        while (!r.done) {
          ga_i64 mine = 0;
          bool have = false;
          for (int t = 0; t < 32; ++t) {
            ga_random_next(r, comp, n);
            if (r.done) break;
            if (t == lane) { mine = r.key; have = true; }
          }
          bool valid = have && !ga_in_earlier(graph, ci, row, mine, n);
          ga_chunk<T>(valid, mine, qs, acc, keys, values, dk, dv, scale, st, lane);
        }
      } else {
        const ga_row_keys rk = ga_component_row(comp, row, n);
        for (ga_i64 base = 0; base < rk.count; base += 32) {
          const ga_i64 k = base + lane;
          bool valid = k < rk.count;
          ga_i64 key = 0;
          if (valid) {
            key = rk.source == 0 ? rk.start + k * rk.stride
                : rk.source == 1 ? comp.offsets[k]
                : (ga_i64)comp.columns[rk.start + k];
            valid = !ga_in_earlier(graph, ci, row, key, n);
          }
          ga_chunk<T>(valid, key, qs, acc, keys, values, dk, dv, scale, st, lane);
        }
      }
    }

    if (mode & GA_MODE_STATE_OUT) {
      if (lane == 0) {
        M[rowIndex] = st.m;
        Lsum[rowIndex] = st.l;
      }
      for (ga_i64 c = lane; c < dv; c += 32) out[rowIndex * dv + c] = acc[c];
    } else if (st.l > 0.f) {
      const float inverse = 1.f / st.l;
      for (ga_i64 c = lane; c < dv; c += 32) out[rowIndex * dv + c] = acc[c] * inverse;
    } else {
      const float fill = (mode & GA_MODE_NAN) ? GA_NAN : 0.f;
      for (ga_i64 c = lane; c < dv; c += 32) out[rowIndex * dv + c] = fill;
    }
    __syncwarp();  // the next (batch, head) overwrites this warp's shared rows
  }
}

#define GA_ROWS_KERNEL(NAME, T)                                                                              \
  extern "C" __global__ void __launch_bounds__(256) NAME(                                                   \
      const T* Q, const T* K, const T* V, float* out, float* M, float* Lsum, const ga_u64* graph,           \
      int componentCount, int firstNew, ga_i64 batchHeads, ga_i64 qHeads, ga_i64 kvHeads, ga_i64 Lq,        \
      ga_i64 Lk, ga_i64 dk, ga_i64 dv, float scale, int mode) {                                             \
    ga_rows<T>(Q, K, V, out, M, Lsum, graph, componentCount, firstNew, batchHeads, qHeads, kvHeads, Lq, Lk,  \
               dk, dv, scale, mode);                                                                        \
  }

GA_ROWS_KERNEL(ga_rows_f32, float)
GA_ROWS_KERNEL(ga_rows_f16, ga_f16)
GA_ROWS_KERNEL(ga_rows_bf16, ga_bf16)

// ---------------------------------------------------------------------------------------------------
// Tensor cores for contiguous runs (window, causal, full, blocked and dilated without dilation): a warp
// takes 16 query rows and walks the 16-key tiles spanning their keys, S = Q K^T and O += P V with
// mma.sync m16n8k16 (fp16 or bf16 inputs, fp32 accumulation), masking each element by membership in
// the components `firstNew ..< componentCount` (all of a contiguous kind) and not in `0 ..< firstNew`.
// The online softmax runs on the accumulator fragments; P is rounded to the input type for the second
// product, and l sums the rounded weights so the output stays a convex combination of values.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with .f16/.bf16 and .f32 accumulators), g = lane / 4,
// t = lane % 4: A regs {A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]}; B regs
// {B[2t..][g], B[2t+8..][g]}; C {C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]}; a register holds
// two consecutive k (or columns), the lower index in the lower half.

__device__ __forceinline__ ga_u16 ga_round_bits(ga_f16, float x) {
#ifdef GA_HOST_EMULATION
  return ga_emulated_float_to_half(x);
#else
  ga_u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
  return h;
#endif
}
__device__ __forceinline__ ga_u16 ga_round_bits(ga_bf16, float x) {
#ifdef GA_HOST_EMULATION
  return ga_emulated_float_to_bfloat16(x);
#else
  ga_u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
  return h;
#endif
}
__device__ __forceinline__ float ga_bits_to_float(ga_f16, ga_u16 bits) { ga_f16 x; x.bits = bits; return ga_to_float(x); }
__device__ __forceinline__ float ga_bits_to_float(ga_bf16, ga_u16 bits) { ga_bf16 x; x.bits = bits; return ga_to_float(x); }

// c += A B for one m16n8k16 tile.
__device__ __forceinline__ void ga_mma(ga_f16, float* c, const ga_u32* a, ga_u32 b0, ga_u32 b1) {
#ifdef GA_HOST_EMULATION
  ga_emulated_mma(0, c, a, b0, b1);
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
__device__ __forceinline__ void ga_mma(ga_bf16, float* c, const ga_u32* a, ga_u32 b0, ga_u32 b1) {
#ifdef GA_HOST_EMULATION
  ga_emulated_mma(1, c, a, b0, b1);
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ ga_u32 ga_pack(ga_u16 lo, ga_u16 hi) { return (ga_u32)lo | ((ga_u32)hi << 16); }

// Membership for the contiguous kinds only (the host sends no other kind to the tile kernel), inlined
// so the per-element test stays in registers.
__device__ __forceinline__ bool ga_contains_contiguous(const ga_u64* __restrict__ w, ga_i64 i, ga_i64 j) {
  const int kind = (int)(w[0] & 0xff);
  const ga_i64 a = (ga_i64)w[1];
  switch (kind) {
  case GA_KIND_FULL:
    return true;
  case GA_KIND_CAUSAL:
    return j <= i;
  case GA_KIND_WINDOW:
    if ((w[0] >> 8) & 1) return j <= i && i - j <= a;
    return (i >= j ? i - j : j - i) <= a;
  case GA_KIND_DILATED:  // dilation 0: a window
    return (i >= j ? i - j : j - i) <= a;
  case GA_KIND_BLOCKED: {  // dilation 0: the diagonal block
    const ga_i64 base = (i / a) * a;
    return j >= base && j - base < a;
  }
  }
  return false;
}

// Whether (i, j) is an edge of the components [first, end) and of none of [0, first).
__device__ __forceinline__ bool ga_tile_edge(const ga_u64* __restrict__ graph, int first, int end, ga_i64 i, ga_i64 j, ga_i64 n) {
  bool inside = false;
  for (int c = first; c < end && !inside; ++c) inside = ga_contains_contiguous(graph + 8 * c, i, j);
  return inside && (first == 0 || !ga_in_earlier(graph, first, i, j, n));
}

template <typename T, int D>
__device__ __forceinline__ void ga_tile(const T* __restrict__ Q, const T* __restrict__ K, const T* __restrict__ V,
                                        float* __restrict__ out, float* __restrict__ M, float* __restrict__ Lsum,
                                        const ga_u64* __restrict__ graph, int componentCount, int firstNew,
                                        ga_i64 batchHeads, ga_i64 qHeads, ga_i64 kvHeads, ga_i64 Lq, ga_i64 Lk,
                                        float scale, int mode) {
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const ga_i64 r0 = ((ga_i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * 16;
  if (r0 >= Lq) return;  // the whole warp leaves; no block-wide barrier follows
  const ga_i64 n = Lk;
  const ga_i64 rows[2] = {r0 + g, r0 + g + 8};
  const T tag = T();

  for (ga_i64 bh = blockIdx.y; bh < batchHeads; bh += gridDim.y) {
    const ga_i64 kvHead = ga_key_value_head(bh, qHeads, kvHeads);
    const ga_u16* q = (const ga_u16*)(Q + bh * Lq * D);
    const ga_u16* k = (const ga_u16*)(K + kvHead * Lk * D);
    const ga_u16* v = (const ga_u16*)(V + kvHead * Lk * D);

    // Q fragments for the 16 rows (zero beyond L_q).
    ga_u32 qa[D / 16][4];
    #pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      #pragma unroll
      for (int r = 0; r < 2; ++r) {
        const bool live = rows[r] < Lq;
        qa[ks][r] = live ? *(const ga_u32*)(q + rows[r] * D + ks * 16 + 2 * t) : 0u;
        qa[ks][2 + r] = live ? *(const ga_u32*)(q + rows[r] * D + ks * 16 + 2 * t + 8) : 0u;
      }
    }

    float m[2], l[2], acc[D / 8][4];
    #pragma unroll
    for (int r = 0; r < 2; ++r) {
      const bool in = (mode & GA_MODE_STATE_IN) && rows[r] < Lq;
      m[r] = in ? M[bh * Lq + rows[r]] : -GA_INFINITY;
      l[r] = in ? Lsum[bh * Lq + rows[r]] : 0.f;
      #pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) {
        #pragma unroll
        for (int e = 0; e < 2; ++e) {
          acc[nt][2 * r + e] = in ? out[(bh * Lq + rows[r]) * D + nt * 8 + 2 * t + e] : 0.f;
        }
      }
    }

    // The keys the 16 rows can reach: the union of their components' spans. Lane x computes row r0 + x % 16.
    ga_i64 lo = n, hi = -1;
    const ga_i64 mine = r0 + (lane & 15);
    if (mine < Lq) {
      for (int c = firstNew; c < componentCount; ++c) {
        const ga_row_keys rk = ga_component_row(ga_load_component(graph + 8 * c), mine, n);
        if (rk.count > 0) {
          lo = rk.start < lo ? rk.start : lo;
          const ga_i64 last = rk.start + (rk.count - 1) * rk.stride;
          hi = last > hi ? last : hi;
        }
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const ga_i64 otherLo = __shfl_xor_sync(GA_ALL_LANES, lo, o);
      const ga_i64 otherHi = __shfl_xor_sync(GA_ALL_LANES, hi, o);
      lo = otherLo < lo ? otherLo : lo;
      hi = otherHi > hi ? otherHi : hi;
    }

    for (ga_i64 kb = lo & ~(ga_i64)15; kb <= hi; kb += 16) {
      // Scores of the 16 x 16 tile, as two 16 x 8 accumulators.
      float s[2][4];
      #pragma unroll
      for (int sub = 0; sub < 2; ++sub) {
        s[sub][0] = s[sub][1] = s[sub][2] = s[sub][3] = 0.f;
        const ga_i64 key = kb + sub * 8 + g;
        #pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) {
          const bool live = key < n;
          const ga_u32 b0 = live ? *(const ga_u32*)(k + key * D + ks * 16 + 2 * t) : 0u;
          const ga_u32 b1 = live ? *(const ga_u32*)(k + key * D + ks * 16 + 2 * t + 8) : 0u;
          ga_mma(tag, s[sub], qa[ks], b0, b1);
        }
      }

      // Mask, scale, and the online softmax of the two rows this lane holds (a row lives in 4 lanes).
      float p[2][4];
      #pragma unroll
      for (int r = 0; r < 2; ++r) {
        float rowMax = -GA_INFINITY;
        #pragma unroll
        for (int sub = 0; sub < 2; ++sub) {
          #pragma unroll
          for (int e = 0; e < 2; ++e) {
            const ga_i64 j = kb + sub * 8 + 2 * t + e;
            const bool edge = rows[r] < Lq && j < n && ga_tile_edge(graph, firstNew, componentCount, rows[r], j, n);
            const float x = edge ? s[sub][2 * r + e] * scale : -GA_INFINITY;
            s[sub][2 * r + e] = x;
            rowMax = fmaxf(rowMax, x);
          }
        }
        rowMax = fmaxf(rowMax, __shfl_xor_sync(GA_ALL_LANES, rowMax, 1));
        rowMax = fmaxf(rowMax, __shfl_xor_sync(GA_ALL_LANES, rowMax, 2));
        const float newMax = fmaxf(m[r], rowMax);
        float rowSum = 0.f;
        #pragma unroll
        for (int sub = 0; sub < 2; ++sub) {
          #pragma unroll
          for (int e = 0; e < 2; ++e) {
            float w = newMax == -GA_INFINITY ? 0.f : expf(s[sub][2 * r + e] - newMax);
            w = ga_bits_to_float(tag, ga_round_bits(tag, w));  // the weight the second product uses
            p[sub][2 * r + e] = w;
            rowSum += w;
          }
        }
        rowSum += __shfl_xor_sync(GA_ALL_LANES, rowSum, 1);
        rowSum += __shfl_xor_sync(GA_ALL_LANES, rowSum, 2);
        if (newMax != -GA_INFINITY) {
          const float factor = expf(m[r] - newMax);  // 0 when m was -inf
          l[r] = l[r] * factor + rowSum;
          #pragma unroll
          for (int nt = 0; nt < D / 8; ++nt) {
            acc[nt][2 * r] *= factor;
            acc[nt][2 * r + 1] *= factor;
          }
          m[r] = newMax;
        }
      }

      // O += P V: P's accumulator fragments are exactly the A fragment of a 16 x 16 (keys) operand.
      ga_u32 pa[4];
      pa[0] = ga_pack(ga_round_bits(tag, p[0][0]), ga_round_bits(tag, p[0][1]));
      pa[1] = ga_pack(ga_round_bits(tag, p[0][2]), ga_round_bits(tag, p[0][3]));
      pa[2] = ga_pack(ga_round_bits(tag, p[1][0]), ga_round_bits(tag, p[1][1]));
      pa[3] = ga_pack(ga_round_bits(tag, p[1][2]), ga_round_bits(tag, p[1][3]));
      const ga_i64 k0 = kb + 2 * t, k8 = kb + 2 * t + 8;
      #pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) {
        const ga_i64 col = nt * 8 + g;
        const ga_u32 b0 = ga_pack(k0 < n ? v[k0 * D + col] : (ga_u16)0, k0 + 1 < n ? v[(k0 + 1) * D + col] : (ga_u16)0);
        const ga_u32 b1 = ga_pack(k8 < n ? v[k8 * D + col] : (ga_u16)0, k8 + 1 < n ? v[(k8 + 1) * D + col] : (ga_u16)0);
        ga_mma(tag, acc[nt], pa, b0, b1);
      }
    }

    #pragma unroll

    for (int r = 0; r < 2; ++r) {
      if (rows[r] >= Lq) continue;
      const ga_i64 rowIndex = bh * Lq + rows[r];
      if (mode & GA_MODE_STATE_OUT) {
        if (t == 0) {
          M[rowIndex] = m[r];
          Lsum[rowIndex] = l[r];
        }
        #pragma unroll
        for (int nt = 0; nt < D / 8; ++nt) {
          out[rowIndex * D + nt * 8 + 2 * t] = acc[nt][2 * r];
          out[rowIndex * D + nt * 8 + 2 * t + 1] = acc[nt][2 * r + 1];
        }
      } else {
        const bool empty = !(l[r] > 0.f);
        const float inverse = empty ? 0.f : 1.f / l[r];
        const float fill = (mode & GA_MODE_NAN) ? GA_NAN : 0.f;
        #pragma unroll
        for (int nt = 0; nt < D / 8; ++nt) {
          out[rowIndex * D + nt * 8 + 2 * t] = empty ? fill : acc[nt][2 * r] * inverse;
          out[rowIndex * D + nt * 8 + 2 * t + 1] = empty ? fill : acc[nt][2 * r + 1] * inverse;
        }
      }
    }
  }
}

#define GA_TILE_KERNEL(NAME, T, D)                                                                          \
  extern "C" __global__ void __launch_bounds__(128) NAME(                                                   \
      const T* Q, const T* K, const T* V, float* out, float* M, float* Lsum, const ga_u64* graph,           \
      int componentCount, int firstNew, ga_i64 batchHeads, ga_i64 qHeads, ga_i64 kvHeads, ga_i64 Lq,        \
      ga_i64 Lk, ga_i64 dk, ga_i64 dv, float scale, int mode) {                                             \
    ga_tile<T, D>(Q, K, V, out, M, Lsum, graph, componentCount, firstNew, batchHeads, qHeads, kvHeads, Lq, \
                  Lk, scale, mode);                                                                         \
  }

GA_TILE_KERNEL(ga_tile_f16_d32, ga_f16, 32)
GA_TILE_KERNEL(ga_tile_f16_d64, ga_f16, 64)
GA_TILE_KERNEL(ga_tile_f16_d128, ga_f16, 128)
GA_TILE_KERNEL(ga_tile_bf16_d32, ga_bf16, 32)
GA_TILE_KERNEL(ga_tile_bf16_d64, ga_bf16, 64)
GA_TILE_KERNEL(ga_tile_bf16_d128, ga_bf16, 128)
"""#
}
