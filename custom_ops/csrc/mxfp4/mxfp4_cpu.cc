// CPU kernels of quant_mxfp4, dequant_mxfp4 and the e2m1 self-check.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "e2m1_by_rounding.h"
#include "mxfp4.h"
#include "mxfp4_block.h"

namespace fastattn {

void quant_mxfp4_cpu(const QuantMxfp4Params& p) {
  dispatch_float_format(p.in_type, [&](auto fmt) {
    using Fmt = decltype(fmt);
    const auto* x = static_cast<const typename Fmt::Storage*>(p.x);
    for (int64_t block = 0; block < p.num_blocks; ++block) {
      float v[kMxBlock];
      uint32_t max_abs = 0;
      for (int i = 0; i < kMxBlock; ++i) {
        v[i] = Fmt::to_float(x[block * kMxBlock + i]);
        max_abs = std::max(max_abs, abs_bits(v[i]));
      }
      const uint8_t scale = mx_scale_byte(max_abs);
      const float mult = mx_quant_multiplier(scale);
      p.scales[block] = scale;
      for (int i = 0; i < kMxBlock; i += 2) {
        p.packed[block * (kMxBlock / 2) + i / 2] =
            scale == kMxNaNScale ? 0 : pack_e2m1x2(v[i] * mult, v[i + 1] * mult);
      }
    }
  });
}

void dequant_mxfp4_cpu(const DequantMxfp4Params& p) {
  dispatch_float_format(p.out_type, [&](auto fmt) {
    using Fmt = decltype(fmt);
    auto* out = static_cast<typename Fmt::Storage*>(p.out);
    for (int64_t block = 0; block < p.num_blocks; ++block) {
      const float scale = mx_scale_value(p.scales[block]);
      for (int i = 0; i < kMxBlock; ++i) {
        const uint8_t byte = p.packed[block * (kMxBlock / 2) + i / 2];
        out[block * kMxBlock + i] = Fmt::from_float(e2m1_to_float(i % 2 ? byte >> 4 : byte & 0xf) * scale);
      }
    }
  });
}

void check_e2m1_cpu(const E2m1CheckParams& p) {
  if (p.input != ElementType::kFp32) {
    throw std::invalid_argument("check_e2m1_conversion: the 16-bit path is the GPU kernel's; check it on a GPU");
  }
  int64_t mismatches = 0, first = INT64_MAX;
  for (int64_t pattern = 0; pattern < (int64_t(1) << 32); pattern += p.stride) {
    const float x = bits_as_float(uint32_t(pattern));
    if (float_to_e2m1(x) != e2m1_by_rounding(x)) {
      ++mismatches;
      if (pattern < first) first = pattern;
    }
  }
  p.result[0] = mismatches;
  p.result[1] = first;
}

}  // namespace fastattn
