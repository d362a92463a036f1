// A second, independently written float -> e2m1 conversion, used only to check fp4.h's
// float_to_e2m1 over all 2^32 inputs: generic round-to-nearest-even of the float's own mantissa
// in the normal range, the FPU's rint in the subnormal range.
#pragma once

#include "fastattn/numerics.h"

namespace fastattn {

FA_HD uint8_t e2m1_by_rounding(float x) {
  const uint32_t u = float_as_bits(x);
  const uint8_t sign = uint8_t((u >> 28) & 0x8u);
  const uint32_t mag = u & 0x7fffffffu;
  if (mag > 0x7f800000u) return sign;  // NaN: signed zero
  if (mag >= 0x3f800000u) {            // >= 1: normal e2m1 (exponent field 1..3)
    int exponent = int(mag >> 23) - 127;
    uint32_t keep = (mag >> 22) & 1u;  // the one mantissa bit e2m1 has
    const uint32_t rest = mag & 0x3fffffu, half = 0x200000u;
    if (rest > half || (rest == half && keep)) ++keep;
    if (keep == 2) keep = 0, ++exponent;
    if (exponent > 2) return sign | 0x7u;  // past 6: saturate
    return sign | uint8_t(((exponent + 1) << 1) | keep);
  }
  // below 1: multiples of 0.5; 2 * |x| rounded to an integer is the code (2 -> 1.0, code 2)
  return sign | uint8_t(round_to_int_rne(bits_as_float(mag) * 2.0f));
}

}  // namespace fastattn
