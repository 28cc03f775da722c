#ifndef GRAPH_ATTENTION_CONVERT_H
#define GRAPH_ATTENTION_CONVERT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bulk conversions between fp32 and the 16-bit storage types, and non-finite scans.
//
// Every function has an F16C/AVX2 version (chosen at run time from CPUID) and a portable version
// (plain C, bit-exact with the first). 16-bit values are little-endian bit patterns; pointers need
// no particular alignment. `n` is an element count and may exceed 2^32.

/// IEEE binary16 -> fp32, exact (subnormals and infinities; NaNs keep sign and payload, quiet bit set).
void ga_f16_to_f32(const uint16_t *src, float *dst, int64_t n);
/// fp32 -> binary16, round to nearest even; overflow gives infinity; NaN stays NaN with its sign,
/// quiet bit set and the top 9 bits of its payload (what F16C's VCVTPS2PH does).
void ga_f32_to_f16(const float *src, uint16_t *dst, int64_t n);
/// bfloat16 -> fp32, exact (a 16-bit shift).
void ga_bf16_to_f32(const uint16_t *src, float *dst, int64_t n);
/// fp32 -> bfloat16, round to nearest even; NaN stays NaN (sign and top payload bits kept, quiet bit set).
void ga_f32_to_bf16(const float *src, uint16_t *dst, int64_t n);

/// The portable versions, for tests that compare them with the dispatched ones.
void ga_f16_to_f32_portable(const uint16_t *src, float *dst, int64_t n);
void ga_f32_to_f16_portable(const float *src, uint16_t *dst, int64_t n);
void ga_bf16_to_f32_portable(const uint16_t *src, float *dst, int64_t n);
void ga_f32_to_bf16_portable(const float *src, uint16_t *dst, int64_t n);

/// 1 if the F16C/AVX2 conversions are used on this CPU, else 0.
int ga_convert_uses_f16c(void);

/// Index of the first NaN or infinity among `n` elements, or -1 if all are finite.
int64_t ga_first_nonfinite_f32(const float *src, int64_t n);
int64_t ga_first_nonfinite_f16(const uint16_t *src, int64_t n);
int64_t ga_first_nonfinite_bf16(const uint16_t *src, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
