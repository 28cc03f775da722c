// The one implementation of the scalar conversions between fp32 and the 16-bit storage types
// (IEEE binary16, bfloat16), private to this target: Convert.c builds the bulk conversions on them
// and the tile kernels widen keys and values with them; Swift reaches them only through the bulk functions
// of GraphAttentionConvert.h.
//
// One NaN rule, everywhere: a NaN stays a NaN with its sign and its top payload bits, never infinity or
// zero; the fp16 conversions and the fp32 -> bf16 rounding set the quiet bit, as the x86 F16C
// instructions (VCVTPH2PS, VCVTPS2PH) do; bf16 -> fp32 is the exact 16-bit shift.
// Finite values round to nearest, ties to even; fp32 -> fp16 overflows to infinity from 65520 up.
// StorageConversionTests checks all 65536 patterns of each 16-bit type and the rounding of fp32.
#ifndef GRAPH_ATTENTION_HALF_PRECISION_H
#define GRAPH_ATTENTION_HALF_PRECISION_H

#include <stdint.h>
#include <string.h>

static inline uint32_t ga_float_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static inline float ga_bits_float(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

static inline float ga_f16_to_f32_one(uint16_t h) {
  const uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
  const uint32_t magnitude = (uint32_t)h & 0x7FFFu;
  const uint32_t exponent = magnitude & 0x7C00u;
  // Normal numbers: rebias the exponent by 127 - 15.
  const uint32_t normal = (magnitude << 13) + 0x38000000u;
  // Infinity and NaN: exponent all ones, payload kept; NaNs come out quiet, as VCVTPH2PS makes them.
  const uint32_t special = (magnitude << 13) | 0x7F800000u | (magnitude > 0x7C00u ? 0x00400000u : 0);
  // Zero and subnormals: mantissa * 2^-24, exact in fp32.
  const uint32_t subnormal = ga_float_bits((float)(int32_t)magnitude * 0x1p-24f);
  const uint32_t bits = exponent == 0x7C00u ? special : (exponent == 0 ? subnormal : normal);
  return ga_bits_float(bits | sign);
}

static inline uint16_t ga_f32_to_f16_one(float x) {
  const uint32_t u = ga_float_bits(x);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7FFFFFFFu;
  // |x| >= 65536 (or inf, NaN): infinity, or a quiet NaN keeping the top payload bits.
  const uint32_t special = a > 0x7F800000u ? (0x7E00u | ((a >> 13) & 0x3FFu)) : 0x7C00u;
  // |x| < 2^-14 (a binary16 subnormal or zero): adding 0.5 puts the rounded mantissa, in units of
  // 2^-24, in the low bits of the fp32 result (the FPU does the round-to-nearest-even).
  const uint32_t subnormal = ga_float_bits(ga_bits_float(a) + 0.5f) - 0x3F000000u;
  // Normal: rebias the exponent, then round to nearest even on the 13 dropped bits; a carry out of
  // the mantissa correctly bumps the exponent, up to infinity for 65520 <= |x| < 65536.
  const uint32_t normal = (a + 0xC8000FFFu + ((a >> 13) & 1u)) >> 13;
  const uint32_t h = a >= 0x47800000u ? special : (a < 0x38800000u ? subnormal : normal);
  return (uint16_t)(h | sign);
}

static inline float ga_bf16_to_f32_one(uint16_t h) {
  return ga_bits_float((uint32_t)h << 16);
}

static inline uint16_t ga_f32_to_bf16_one(float x) {
  const uint32_t u = ga_float_bits(x);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x0040u;
  return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

#endif
