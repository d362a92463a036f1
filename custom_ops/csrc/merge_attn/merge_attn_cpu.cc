// CPU kernel of merge_attn_states: the same state/merge code as the CUDA kernel, one row at a time.
#include "merge_attn.h"
#include "merge_attn_row.h"

namespace fastattn {

void merge_attn_states_cpu(const MergeAttnParams& p) {
  dispatch_merge_types(p.in_type, p.out_type, [&](auto in_fmt, auto out_fmt) {
    using In = decltype(in_fmt);
    using Out = decltype(out_fmt);
    constexpr bool kFp8Out = std::is_same_v<Out, E4m3Format>;
    const float quant_mult = kFp8Out ? 1.0f / *p.output_scale : 1.0f;
    const auto* a = static_cast<const typename In::Storage*>(p.prefix_out);
    const auto* b = static_cast<const typename In::Storage*>(p.suffix_out);
    auto* out = static_cast<typename Out::Storage*>(p.out);
    for (int h = 0; h < p.heads; ++h) {
      for (int t = 0; t < p.tokens; ++t) {
        const int64_t lse_index = int64_t(h) * p.tokens + t;
        const MergeWeights w = merge_weights(SoftmaxState::from_lse(p.prefix_lse[lse_index]),
                                             SoftmaxState::from_lse(p.suffix_lse[lse_index]));
        p.out_lse[lse_index] = w.merged.lse();
        const int64_t row = (int64_t(t) * p.heads + h) * p.head_dim;
        for (int d = 0; d < p.head_dim; ++d) {
          const float xa = In::to_float(a[row + d]), xb = In::to_float(b[row + d]);
          float x;
          merge_elements(w, &xa, &xb, &x, 1);
          if (kFp8Out) x *= quant_mult;
          out[row + d] = Out::from_float(x);
        }
      }
    }
  });
}

}  // namespace fastattn
