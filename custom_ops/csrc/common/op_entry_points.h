// The C++ entry points of the ops a server calls per layer. Each is registered as a Paddle op
// (PD_BUILD_OP in its family's *_op.cc: static graphs and the generic dygraph path) and bound
// directly to Python by the dygraph fast path (fast_path/fast_path.cc). Arguments: the op's
// inputs, then its attributes, in registration order. In-place ops mutate their non-const inputs.
#pragma once

#include <string>
#include <vector>

#include "paddle/extension.h"

namespace fastattn {

void WriteCacheKV(const paddle::Tensor& k, const paddle::Tensor& v, paddle::Tensor& key_cache,
                  paddle::Tensor& value_cache, const paddle::Tensor& block_tables,
                  const paddle::Tensor& cu_seqlens_q, const paddle::Tensor& seq_lens_decoder,
                  const paddle::optional<paddle::Tensor>& k_quant_scale,
                  const paddle::optional<paddle::Tensor>& v_quant_scale, const std::string& cache_quant_type);

void WriteCacheKVDynamic(const paddle::Tensor& k, const paddle::Tensor& v, paddle::Tensor& key_cache,
                         paddle::Tensor& value_cache, paddle::Tensor& k_scale_cache,
                         paddle::Tensor& v_scale_cache, const paddle::Tensor& block_tables,
                         const paddle::Tensor& cu_seqlens_q, const paddle::Tensor& seq_lens_decoder);

void AppendCacheKVC8(const paddle::Tensor& key_cache, const paddle::Tensor& value_cache, paddle::Tensor& k_out,
                     paddle::Tensor& v_out, const paddle::Tensor& block_tables,
                     const paddle::Tensor& seq_lens_this_time, const paddle::Tensor& seq_lens_decoder,
                     const paddle::Tensor& cu_seqlens_k, const paddle::optional<paddle::Tensor>& k_scale,
                     const paddle::optional<paddle::Tensor>& v_scale, const std::string& cache_quant_type);

std::vector<paddle::Tensor> FlashAttnVarlen(const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
                                            const paddle::Tensor& cu_seqlens_q, const paddle::Tensor& cu_seqlens_k,
                                            const paddle::optional<paddle::Tensor>& q_descale,
                                            const paddle::optional<paddle::Tensor>& k_descale,
                                            const paddle::optional<paddle::Tensor>& v_descale, float softmax_scale,
                                            bool causal, const std::string& out_dtype, int max_seqlen_k,
                                            int num_splits, bool fp8_pv);

std::vector<paddle::Tensor> PagedAttention(const paddle::Tensor& q, const paddle::Tensor& key_cache,
                                           const paddle::Tensor& value_cache, const paddle::Tensor& block_tables,
                                           const paddle::Tensor& seq_lens_kv, const paddle::Tensor& cu_seqlens_q,
                                           const paddle::optional<paddle::Tensor>& k_scale,
                                           const paddle::optional<paddle::Tensor>& v_scale,
                                           const paddle::optional<paddle::Tensor>& q_descale,
                                           const paddle::optional<paddle::Tensor>& kv_end,
                                           const std::string& cache_quant_type, float softmax_scale, bool causal,
                                           const std::string& out_dtype, int num_splits, bool fp8_pv,
                                           int max_seqlen_kv, int max_multi_token_seqs);

std::vector<paddle::Tensor> MergeAttnStates(const paddle::Tensor& prefix_output, const paddle::Tensor& prefix_lse,
                                            const paddle::Tensor& suffix_output, const paddle::Tensor& suffix_lse,
                                            const paddle::optional<paddle::Tensor>& output_scale,
                                            const std::string& out_dtype);

}  // namespace fastattn
