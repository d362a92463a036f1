// merge_attn_states: arguments shared by the registration, the CPU kernel and the CUDA kernel.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <type_traits>

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

// Calls f(In{}, Out{}) for the run-time element types; fp8 inputs are rejected.
template <typename F>
void dispatch_merge_types(ElementType in_type, ElementType out_type, F&& f) {
  if (in_type == ElementType::kFp8) throw std::invalid_argument("merge_attn_states: fp8 inputs are not supported");
  dispatch_float_format(in_type, [&](auto in_fmt) {
    if constexpr (!std::is_same_v<decltype(in_fmt), E4m3Format>) {
      dispatch_float_format(out_type, [&](auto out_fmt) { f(in_fmt, out_fmt); });
    }
  });
}

void merge_attn_states_cpu(const MergeAttnParams& p);
#if defined(FASTATTN_WITH_CUDA)
void merge_attn_states_cuda(const MergeAttnParams& p);
#endif

}  // namespace fastattn
