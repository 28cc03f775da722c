// Declarations shared by the kernel files of this target (not part of its public header).
#ifndef GRAPH_ATTENTION_KERNELS_INTERNAL_H
#define GRAPH_ATTENTION_KERNELS_INTERNAL_H

#include "GraphAttentionKernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#define GA_X86 1
#endif

/// The AVX-512 GEMM-shaped tile kernel, for tiles of 4, 8, 12 or 16 rows with a pack buffer of at least
/// `ga_pack_floats` floats. Only call it when `ga_isa_supported(GA_ISA_AVX512)`.
void ga_tile_attend_avx512(const ga_tile *tile);

/// The AVX-512 FMA peak loop: ten independent 16-lane chains.
double ga_fma_loop_avx512(int64_t iterations);

#endif
