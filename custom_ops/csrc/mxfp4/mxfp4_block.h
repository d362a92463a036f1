// One MXFP4 block, shared by the CPU and CUDA kernels: scale byte and element codes.
#pragma once

#include "fastattn/fp4.h"

namespace fastattn {

// |x| as bits: for non-negative floats the integer order is the float order, and every NaN
// lies above +inf, so one integer max over a block yields both its amax and whether it holds NaN.
FA_HD uint32_t abs_bits(float x) { return float_as_bits(x) & 0x7fffffffu; }

// Scale byte of a block from the integer max of abs_bits over it; 0xff if the block holds NaN.
FA_HD uint8_t mx_scale_byte(uint32_t max_abs_bits) {
  return max_abs_bits > 0x7f800000u ? kMxNaNScale : uint8_t(mx_scale_exponent(bits_as_float(max_abs_bits)) + 127);
}

// Multiplier that brings a (NaN-free) block into e2m1 range: 2^-e, exact. The elements of a NaN
// block are stored as zero codes: its scale alone marks it.
FA_HD float mx_quant_multiplier(uint8_t scale) { return exp2_neg(int(scale) - 127); }

}  // namespace fastattn
