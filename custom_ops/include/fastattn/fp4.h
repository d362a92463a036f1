// e2m1 (fp4) and MXFP4 blocks, shared by the CPU and CUDA kernels. See DESIGN.md.
//
// e2m1 magnitudes by code: 0, 0.5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign. Conversion rounds to
// nearest even with saturation at 6 and keeps the sign of zero. NaN converts to a signed zero:
// e2m1 has no NaN, so MXFP4 marks a block holding NaN through its scale instead (0xff).
// An MXFP4 block is 32 elements sharing a ue8m0 scale 2^e, e = ceil(log2(max(amax, 6*2^-126)/6))
// clamped to [-127, 127], stored as e + 127.
#pragma once

#include <cmath>
#include <cstdint>

#include "fastattn/numerics.h"

namespace fastattn {

constexpr int kMxBlock = 32;
constexpr uint8_t kMxNaNScale = 0xff;

// Round to nearest even on the e2m1 grid of |x|'s binade: the step is 0.5 below 2, 1 in [2, 4),
// 2 in [4, 6]; adding step * 2^23 in one fused multiply-add leaves exactly the bits of a
// multiple of `step`, rounded to nearest even by the FPU. About a dozen instructions, no branches.
FA_HD uint8_t float_to_e2m1(float x) {
  const uint32_t bits = float_as_bits(x);
  const uint32_t sign = (bits >> 28) & 0x8u;
  const float clamped = fminf(fabsf(x), 6.0f);                            // fminf(NaN, 6) is 6:
  const float a = (bits & 0x7fffffffu) > 0x7f800000u ? 0.0f : clamped;   // NaN -> 0 instead
  const float step = fmaxf(bits_as_float(float_as_bits(a) & 0x7f800000u) * 0.5f, 0.5f);
  const float r = fmaf(step, 8388608.0f, a) - step * 8388608.0f;  // a rounded to a multiple of step
  // r in {0, 0.5}: code 0 or 1; r >= 1: exponent and the one mantissa bit, (bits >> 22) - 252
  const uint32_t code = r >= 1.0f ? (float_as_bits(r) >> 22) - 252u : uint32_t(r != 0.0f);
  return uint8_t(code | sign);
}

FA_HD float e2m1_to_float(uint8_t code) {
  const uint8_t mag = code & 0x7u;
  // 0, 0.5, 1, 1.5 are mag / 2; 2, 3, 4, 6 are (2 + (mag & 1)) * 2^((mag >> 1) - 2)
  const float v = mag < 4 ? float(mag) * 0.5f : float(2 + (mag & 1)) * float(1 << ((mag >> 1) - 2));
  return (code & 0x8u) ? -v : v;
}

// Scale exponent e of a block with absolute maximum amax (NaN-free): the smallest e with
// amax <= 6 * 2^e, read off amax's bits, so no inexact log2 or division is involved.
FA_HD int mx_scale_exponent(float amax) {
  const uint32_t bits = float_as_bits(fmaxf(amax, 6.0f * 0x1p-126f));
  if (bits >= 0x7f800000u) return 127;  // inf
  const int exponent = int(bits >> 23) - 127;                    // amax = 1.m * 2^exponent
  return exponent - 2 + ((bits & 0x7fffffu) > 0x400000u ? 1 : 0);  // 1.m <= 1.5: 2^(exp-2) * 6 fits
}

// 2^-e as a float, exact for e in [-126, 127] (2^-127 is subnormal).
FA_HD float exp2_neg(int e) {
  return e == 127 ? 0x1p-127f : bits_as_float(uint32_t(127 - e) << 23);
}

FA_HD float mx_scale_value(uint8_t scale) {
  if (scale == kMxNaNScale) return bits_as_float(0x7fc00000u);
  return scale == 0 ? 0x1p-127f : bits_as_float(uint32_t(scale) << 23);
}

// Two adjacent elements -> one byte (low nibble = the even element). Hardware conversion where
// the target has it (sm_100a/sm_120a families); the software path elsewhere, bit-identical.
FA_HD uint8_t pack_e2m1x2(float even, float odd) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1000 && \
    (defined(__CUDA_ARCH_FEAT_SM100_ALL) || defined(__CUDA_ARCH_FEAT_SM120_ALL) ||  \
     defined(__CUDA_ARCH_SPECIFIC__) || defined(__CUDA_ARCH_FAMILY_SPECIFIC__))
  // NaN is not specified for the instruction: map it to the signed zero the software path gives.
  even = is_nan(even) ? bits_as_float(float_as_bits(even) & 0x80000000u) : even;
  odd = is_nan(odd) ? bits_as_float(float_as_bits(odd) & 0x80000000u) : odd;
  uint16_t packed;
  asm("{\n .reg .b8 t;\n cvt.rn.satfinite.e2m1x2.f32 t, %1, %2;\n cvt.u16.u8 %0, t;\n}"
      : "=h"(packed) : "f"(odd), "f"(even));
  return uint8_t(packed);
#else
  return uint8_t(float_to_e2m1(even) | (float_to_e2m1(odd) << 4));
#endif
}

}  // namespace fastattn
