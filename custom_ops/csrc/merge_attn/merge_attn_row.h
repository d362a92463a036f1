// Elements of a merged row, shared by the CPU and CUDA kernels of merge_attn_states.
#pragma once

#include "fastattn/softmax_state.h"

namespace fastattn {

// out[i] = w_a * a[i] + w_b * b[i] for i < n, where a zero weight drops its term entirely: a side
// whose lse is -inf may hold anything (NaN included) and must not leak into the result, and with
// one side empty the other comes through bit for bit (a + 0 would turn -0 into +0). The case is
// picked once for the row's elements, not per element.
FA_HD void merge_elements(const MergeWeights& w, const float* a, const float* b, float* out, int n) {
  if (w.w_b == 0.0f) {
    for (int i = 0; i < n; ++i) out[i] = w.w_a == 0.0f ? 0.0f : w.w_a * a[i];
  } else if (w.w_a == 0.0f) {
    for (int i = 0; i < n; ++i) out[i] = w.w_b * b[i];
  } else {
    for (int i = 0; i < n; ++i) out[i] = w.w_a * a[i] + w.w_b * b[i];
  }
}

}  // namespace fastattn
