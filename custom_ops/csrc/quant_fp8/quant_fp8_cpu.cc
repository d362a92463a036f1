// CPU kernel of quantize_fp8.
#include "quant_fp8.h"

namespace fastattn {

void quantize_fp8_cpu(const QuantFp8Params& p) {
  const float mult = 1.0f / *p.scale;
  dispatch_float_format(p.in_type, [&](auto fmt) {
    using Fmt = decltype(fmt);
    const auto* x = static_cast<const typename Fmt::Storage*>(p.x);
    for (int64_t i = 0; i < p.numel; ++i) p.out[i] = float_to_e4m3(Fmt::to_float(x[i]) * mult);
  });
}

}  // namespace fastattn
