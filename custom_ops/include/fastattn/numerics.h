// Scalar number formats of the KV cache and their conversions, shared bit for bit by the CPU
// kernels, the CUDA kernels and (as a spec) fastattn/reference.py. See DESIGN.md "Numerics rules".
//
// Every quantizing conversion here is pinned: fp32 arithmetic, IEEE round-to-nearest-even, no
// fast-math. Device code may use a hardware instruction only where it is bit-identical to the
// software path (the GPU tests compare against the float64 reference to prove it).
#pragma once

#include <cmath>
#include <cstdint>

#include "fastattn/platform.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#endif

namespace fastattn {

constexpr float kFp8E4m3Max = 448.0f;
constexpr float kInt8Max = 127.0f;
// Floor of a dynamic (block_wise_fp8) scale: keeps an all-zero row finite.
constexpr float kMinDynamicScale = 0x1p-64f;
// The only NaN encodings we produce: e4m3fn NaN and the canonical bf16/fp16 quiet NaN.
constexpr uint8_t kFp8NaN = 0x7f;
constexpr uint16_t kHalfNaN = 0x7fff;

FA_HD float round_to_int_rne(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return std::nearbyint(x);  // default rounding mode: to nearest even
#endif
}

FA_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);  // IEEE division even if fast-math is ever switched on
#else
  return a / b;
#endif
}

FA_HD float clamp_abs(float x, float bound) { return fminf(fmaxf(x, -bound), bound); }

// ---------------------------------------------------------------------------------------------
// 16-bit float storage. Tensors hold raw uint16 bits; a format type says how to read them.
// Writing rounds to nearest even; NaN becomes the canonical 0x7fff on every path.

struct Bf16Format {
  using Storage = uint16_t;
  static FA_HD float to_float(uint16_t bits) { return bits_as_float(uint32_t(bits) << 16); }
  static FA_HD uint16_t from_float(float x) {
    if (is_nan(x)) return kHalfNaN;
#if defined(__CUDA_ARCH__)
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
#else
    uint32_t u = float_as_bits(x);
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
#endif
  }
#if defined(__CUDACC__)
  // from_float of two elements (lo in the low half) in one instruction; the hardware's rounding
  // and NaN (0x7fff) agree with from_float on every float32 input (check_packed_conversions).
  static FA_DEVICE uint32_t pack2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
#endif
};

struct Fp16Format {
  using Storage = uint16_t;
  static FA_HD float to_float(uint16_t bits) {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(bits));
#else
    const uint32_t sign = uint32_t(bits & 0x8000u) << 16;
    const uint32_t exp = (bits >> 10) & 0x1fu;
    const uint32_t mant = bits & 0x3ffu;
    if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in fp32
      const float mag = float(mant) * 0x1p-24f;
      return bits_as_float(float_as_bits(mag) | sign);
    }
    if (exp == 0x1f) return bits_as_float(sign | 0x7f800000u | (mant << 13));
    return bits_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
  }
  static FA_HD uint16_t from_float(float x) {
    if (is_nan(x)) return kHalfNaN;
#if defined(__CUDA_ARCH__)
    return __half_as_ushort(__float2half_rn(x));
#else
    const uint32_t u = float_as_bits(x);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    uint32_t mag = u & 0x7fffffffu;
    if (mag >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf
    if (mag >= 0x38800000u) {                        // normal: rebias and round the low 13 bits
      mag += 0xc8000fffu + ((mag >> 13) & 1u);
      return sign | uint16_t(mag >> 13);
    }
    // subnormal: a multiple of 2^-24; scaling by 2^24 is exact, the rounding happens once
    return sign | uint16_t(round_to_int_rne(bits_as_float(mag) * 0x1p24f));
#endif
  }
#if defined(__CUDACC__)
  // from_float of two elements in one instruction, identical on every float32 input
  // (check_packed_conversions).
  static FA_DEVICE uint32_t pack2(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
#endif
};

struct Fp32Format {
  using Storage = float;
  static FA_HD float to_float(float x) { return x; }
  static FA_HD float from_float(float x) { return x; }
};

// ---------------------------------------------------------------------------------------------
// e4m3fn: bias 7, 3 mantissa bits, max 448, no inf, 0x7f/0xff NaN.

// Clamp to +-448, then round to nearest even. NaN -> 0x7f.
FA_HD uint8_t float_to_e4m3(float y) {
  if (is_nan(y)) return kFp8NaN;
  y = clamp_abs(y, kFp8E4m3Max);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  return uint8_t(__nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3));
#else
  const uint32_t u = float_as_bits(y);
  const uint8_t sign = uint8_t((u >> 24) & 0x80u);
  uint32_t mag = u & 0x7fffffffu;
  if (mag >= 0x3c800000u) {  // >= 2^-6, normal: rebias 127 -> 7, round the low 20 bits
    mag += 0xc407ffffu + ((mag >> 20) & 1u);
    return sign | uint8_t(mag >> 20);
  }
  // subnormal: a multiple of 2^-9; q == 8 lands exactly on the smallest normal (0x08)
  return sign | uint8_t(round_to_int_rne(bits_as_float(mag) * 0x1p9f));
#endif
}

FA_HD float e4m3_to_float(uint8_t b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  // Every e4m3 value is exact in fp16: two conversion instructions instead of bit surgery.
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)));
#endif
  const uint32_t sign = uint32_t(b & 0x80u) << 24;
  const uint32_t exp = (b >> 3) & 0xfu;
  const uint32_t mant = b & 0x7u;
  if ((b & 0x7fu) == 0x7fu) return bits_as_float(0x7fc00000u | sign);
  if (exp == 0) return bits_as_float(float_as_bits(float(mant) * 0x1p-9f) | sign);
  return bits_as_float(sign | ((exp + 120u) << 23) | (mant << 20));
}

// e4m3fn as an element format (writing only): the caller has already applied the quant multiplier.
struct E4m3Format {
  using Storage = uint8_t;
  static FA_HD uint8_t from_float(float x) { return float_to_e4m3(x); }
  static FA_HD float to_float(uint8_t b) { return e4m3_to_float(b); }
#if defined(__CUDACC__)
  // float_to_e4m3 of two elements (lo in the low byte): on sm_89 and newer one saturating
  // conversion, identical on every float32 input (NaN gives 0x7f there too;
  // check_packed_conversions).
  static FA_DEVICE uint16_t pack2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    return uint16_t(__nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3));
#else
    return uint16_t(float_to_e4m3(lo) | (float_to_e4m3(hi) << 8));
#endif
  }
#endif
};

// ---------------------------------------------------------------------------------------------
// int8: round to nearest even, clamp to +-127. int8 has no NaN: NaN is stored as 0.

FA_HD int8_t float_to_int8(float y) {
  if (is_nan(y)) return 0;
  return int8_t(round_to_int_rne(clamp_abs(y, kInt8Max)));
}

// ---------------------------------------------------------------------------------------------
// Dynamic per-token scale (block_wise_fp8): one IEEE division for the scale, one for its inverse.

struct DynamicScale {
  float scale;    // dequant multiplier, stored in the scale table
  float inverse;  // quant multiplier, applied to every element of the row
};

FA_HD DynamicScale dynamic_fp8_scale(float amax) {
  const float scale = fmaxf(div_rn(amax, kFp8E4m3Max), kMinDynamicScale);
  return {scale, div_rn(1.0f, scale)};
}

}  // namespace fastattn
