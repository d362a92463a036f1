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

// e2m1 code of a magnitude a in [0, 6] (never NaN). The e2m1 step is 0.5 below 2, 1 in [2, 4) and
// 2 in [4, 6]; adding magic = step * 2^23 rounds a to a multiple of the step (the FPU's round to
// nearest even, one addition), and the low bits of the sum then count steps above magic: the code
// is that count plus 0, 2 or 4 for the three steps. Eight instructions, no branch.
FA_HD uint8_t e2m1_magnitude_code(float a) {
  const uint32_t exponent = float_as_bits(a) & 0x7f800000u;
  const uint32_t magic = exponent + 0x0b000000u > 0x4a800000u ? exponent + 0x0b000000u : 0x4a800000u;
  const uint32_t sum = float_as_bits(a + bits_as_float(magic));
  return uint8_t(sum - magic + ((magic - 0x4a800000u) >> 22));
}

// Round to nearest even with saturation at 6; the sign survives (also on zero). NaN -> a signed
// zero (e2m1 has no NaN; MXFP4 marks a NaN block through its scale instead).
FA_HD uint8_t float_to_e2m1(float x) {
  const uint32_t bits = float_as_bits(x);
  const uint8_t sign = uint8_t((bits >> 28) & 0x8u);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return sign;
  return sign | e2m1_magnitude_code(fminf(fabsf(x), 6.0f));
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

// Targets with a float -> e2m1 instruction (sm_100a/sm_120a families).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1000 && \
    (defined(__CUDA_ARCH_FEAT_SM100_ALL) || defined(__CUDA_ARCH_FEAT_SM120_ALL) ||  \
     defined(__CUDA_ARCH_SPECIFIC__) || defined(__CUDA_ARCH_FAMILY_SPECIFIC__))
#define FASTATTN_HARDWARE_E2M1 1
#else
#define FASTATTN_HARDWARE_E2M1 0
#endif

// Two adjacent NaN-free elements -> one byte (low nibble = the even element); MXFP4 never converts
// the elements of a block holding NaN. Hardware conversion where the target has it; the software
// path elsewhere, bit-identical.
FA_HD uint8_t pack_e2m1x2(float even, float odd) {
#if FASTATTN_HARDWARE_E2M1
  uint16_t packed;
  asm("{\n .reg .b8 t;\n cvt.rn.satfinite.e2m1x2.f32 t, %1, %2;\n cvt.u16.u8 %0, t;\n}"
      : "=h"(packed) : "f"(odd), "f"(even));
  return uint8_t(packed);
#else
  const auto code = [](float x) {
    return uint8_t(((float_as_bits(x) >> 28) & 0x8u) | e2m1_magnitude_code(fminf(fabsf(x), 6.0f)));
  };
  return uint8_t(code(even) | (code(odd) << 4));
#endif
}

#if defined(__CUDACC__)
// Eight elements' codes, element 2k in the high byte of the low half of words[k] and element
// 2k + 1 in the high byte of its high half: the even elements' bytes in order into `even`, the odd
// ones' into `odd`.
FA_DEVICE void gather_high_bytes(const uint32_t (&words)[4], uint32_t& even, uint32_t& odd) {
  const uint32_t pairs01 = __byte_perm(words[0], words[1], 0x7351);  // elements 0 2 1 3
  const uint32_t pairs23 = __byte_perm(words[2], words[3], 0x7351);  // elements 4 6 5 7
  even = __byte_perm(pairs01, pairs23, 0x5410);
  odd = __byte_perm(pairs01, pairs23, 0x7632);
}

// e2m1 codes of eight NaN-free values given as four fp16 pairs (element 0 in the low half of
// pairs[0]), as one MXFP4 word (element 0 in the low nibble), in packed fp16 arithmetic: about
// five instructions per element where the scalar path takes twelve. The magnitude, clamped to 6,
// is rounded to a multiple of its e2m1 step by adding step * 2^10 (e2m1_magnitude_code's rounding,
// in fp16: the step is half the magnitude's power of two, at least 0.5). The rounded value times
// 2^-14 then holds its code in bits 9..11 of its fp16 encoding: e2m1's exponent is fp16's minus 14,
// and 0.5 lands on the subnormal 2^-15, code 1. The sign goes to bit 12, above the code.
// Exact for every fp16 input; callers convert to fp16 only where that keeps the code (see
// check_e2m1_16bit_kernel in mxfp4.cu).
FA_DEVICE uint32_t e2m1x8_of_half2(const uint32_t (&pairs)[4]) {
  const __half2 six = __float2half2_rn(6.0f), one = __float2half2_rn(1.0f);
  const __half2 magic_unit = __float2half2_rn(512.0f), code_unit = __float2half2_rn(0x1p-14f);
  uint32_t nibbles[4];  // code | sign << 3 at bits 9..12 and 25..28
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2 y;
    memcpy(&y, &pairs[i], 4);
    const __half2 a = __hmin2(__habs2(y), six);
    uint32_t a_bits;
    memcpy(&a_bits, &a, 4);
    const uint32_t power_bits = a_bits & 0x7c007c00u;  // 2^floor(log2 a), 0 below fp16's normals
    __half2 power;
    memcpy(&power, &power_bits, 4);
    const __half2 magic = __hmax2(power, one);  // 2 * step
    const __half2 rounded = __hfma2(magic, -magic_unit, __hfma2(magic, magic_unit, a));
    const __half2 code = __hmul2(rounded, code_unit);
    uint32_t code_bits;
    memcpy(&code_bits, &code, 4);
    nibbles[i] = code_bits | ((pairs[i] >> 3) & 0x10001000u);
  }
  // The nibbles sit at bits 1..4 of their bytes: shift each into its half of the output byte.
  uint32_t even, odd;
  gather_high_bytes(nibbles, even, odd);
  return (even >> 1) | (odd << 3);
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
// d = a * b + c on packed bf16 pairs, rounded to nearest even (subnormals kept).
FA_DEVICE uint32_t fma_bf16x2(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// e2m1 codes of eight bf16 elements (four pairs, element 0 in the low half of words[0]) times
// mult = 2^-e, for |x| * 2^-e <= 6 (every element of a block without inf or NaN), as one MXFP4
// word, all in packed bf16 arithmetic: the same rounding as e2m1x8_of_half2 without the trip
// through fp32 and fp16, so that most of the work runs on the FMA pipe, not the integer one.
// a = |x| 2^-e is exact. Adding M = 48 p + 64 (p: a's power of two, 0 below bf16's normals)
// rounds a to a multiple of its e2m1 step: M lies in the binade whose bf16 step is the e2m1 step
// (0.5 for p <= 1, 1 for p = 2, 2 for p = 4) and is an even multiple of it wherever a tie can occur
// (a >= 0.25), so ties go to the even code. (a + M - M) * 2^-126 then holds the code in bits 6..8
// of its encoding (0.5 lands on the subnormal 2^-127, code 1); the subtraction and the scaling
// are one exact fma with -M * 2^-126 computed from p the same way. Shifted left by 6, each code
// sits under its element's sign bit.
FA_DEVICE uint32_t e2m1x8_of_bf16x2(const uint32_t (&words)[4], float mult) {
  const uint32_t mult2 = __byte_perm(float_as_bits(mult), 0, 0x3232);  // bf16 2^-e twice (exact)
  constexpr uint32_t kOne = 0x3f803f80u, kMinusZero = 0x80008000u;
  constexpr uint32_t k48 = 0x42404240u, k64 = 0x42804280u;                            // 48, 64
  constexpr uint32_t kCodeUnit = 0x00800080u;                                         // 2^-126
  constexpr uint32_t kMinus48CodeUnit = 0x83408340u, kMinus64CodeUnit = 0x83808380u;  // -48, -64 times 2^-126
  uint32_t nibbles[4];  // code | sign << 3 at bits 12..15 and 28..31
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t a = fma_bf16x2(words[i] & 0x7fff7fffu, mult2, kMinusZero);
    const uint32_t power = a & 0x7f807f80u;
    const uint32_t sum = fma_bf16x2(a, kOne, fma_bf16x2(power, k48, k64));
    const uint32_t code = fma_bf16x2(sum, kCodeUnit, fma_bf16x2(power, kMinus48CodeUnit, kMinus64CodeUnit));
    nibbles[i] = (code << 6) | (words[i] & 0x80008000u);
  }
  // The nibbles sit in the high halves of their bytes: take the even elements' down.
  uint32_t even, odd;
  gather_high_bytes(nibbles, even, odd);
  return ((even >> 4) & 0x0f0f0f0fu) | (odd & 0xf0f0f0f0u);
}
#endif
#endif

}  // namespace fastattn
