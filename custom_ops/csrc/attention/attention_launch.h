// The CUDA side of flash_attn_varlen and paged_attention, per head_dim. Each head_dim's kernels
// live in a translation unit of their own (attention_hd64.cu, attention_hd128.cu,
// attention_hd256.cu), so that they compile in parallel; attention.cu plans a call and goes to
// the head_dim's entry points below (defined in attention_launch.cuh).
#pragma once

#include "attention.h"

namespace fastattn {

// This build holds sm_90a code for the head_dim's wgmma prefill kernels.
template <int D>
bool wgmma_kernels_built();

// CTAs of the decode kernel that would run p (head_dim D, warps_m 1) that one multiprocessor
// holds at once.
template <int D>
int decode_ctas_per_sm(const AttentionParams& p);

// Launches p's kernel as planned (head_dim D), then the combine of its key splits.
template <int D>
void run_attention(const AttentionParams& p);

}  // namespace fastattn
