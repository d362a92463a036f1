// One MXFP4 block, shared by the CPU and CUDA kernels: scale byte and element codes.
#pragma once

#include "fastattn/fp4.h"

namespace fastattn {

// Scale byte of a block whose NaN-free absolute maximum is amax; 0xff if the block holds NaN.
FA_HD uint8_t mx_scale_byte(float amax, bool has_nan) {
  return has_nan ? kMxNaNScale : uint8_t(mx_scale_exponent(amax) + 127);
}

// Multiplier that brings a (NaN-free) block into e2m1 range: 2^-e, exact. The elements of a NaN
// block are stored as zero codes: its scale alone marks it.
FA_HD float mx_quant_multiplier(uint8_t scale) { return exp2_neg(int(scale) - 127); }

}  // namespace fastattn
