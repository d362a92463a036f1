// merge_attn_states: arguments shared by the registration, the CPU kernel and the CUDA kernel.
#pragma once

#include <cstdint>

#include "fastattn/dispatch.h"

namespace fastattn {

// Merges two normalized partial attention outputs by their log-sum-exps:
//   out[t, h] = w_p * prefix[t, h] + w_s * suffix[t, h], lse[h, t] = log(exp(lse_p) + exp(lse_s)).
struct MergeAttnParams {
  const void* prefix_out;  // [tokens, heads, head_dim], in_type
  const float* prefix_lse;  // [heads, tokens]
  const void* suffix_out;
  const float* suffix_lse;
  void* out;       // [tokens, heads, head_dim], out_type
  float* out_lse;  // [heads, tokens]
  // kFp8 output: e4m3(x * (1 / *output_scale)); one division per thread, none per element.
  const float* output_scale;
  int tokens, heads, head_dim;
  ElementType in_type, out_type;
  bool aligned_16;  // every data pointer 16-byte aligned: vector accesses allowed
  void* stream;
};

void merge_attn_states_cpu(const MergeAttnParams& p);
#if defined(FASTATTN_WITH_CUDA)
void merge_attn_states_cuda(const MergeAttnParams& p);
#endif

}  // namespace fastattn
