// One element of a merged row, shared by the CPU and CUDA kernels of merge_attn_states.
#pragma once

#include "fastattn/softmax_state.h"

namespace fastattn {

// w_a * a + w_b * b, where a zero weight drops its term entirely: a side whose lse is -inf may
// hold anything (NaN included) and must not leak into the result, and with one side empty the
// other comes through bit for bit (a + 0 would turn -0 into +0).
FA_HD float merge_element(const MergeWeights& w, float a, float b) {
  if (w.w_b == 0.0f) return w.w_a == 0.0f ? 0.0f : w.w_a * a;
  if (w.w_a == 0.0f) return w.w_b * b;
  return w.w_a * a + w.w_b * b;
}

}  // namespace fastattn
