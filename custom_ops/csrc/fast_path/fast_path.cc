// Dygraph fast path: the per-layer ops' C++ entry points bound straight to Python with pybind11
// and the tensor caster Paddle ships (paddle/utils/pybind.h), as module `fastattn_fast` inside
// this same library (fastattn/_ext.py loads it by path). A call skips Paddle's custom-op
// dispatcher, which costs 20-50 us of host time per call, more than a decode kernel takes.
// The ops stay registered (PD_BUILD_OP) for static graphs; both paths run the same functions.
//
// The build defines PADDLE_NO_PYTHON for every other file (their Paddle headers must not pull in
// Python) and PADDLE_WITH_CUDA where CUDA sources are built; this file needs Python, and none of
// Paddle's CUDA declarations (some of which need cuBLAS headers a CUDA toolkit may lack).
#undef PADDLE_NO_PYTHON
#undef PADDLE_WITH_CUDA

#include "paddle/extension.h"
#include "paddle/utils/pybind.h"

#include "../common/op_entry_points.h"

namespace fastattn {
namespace {

namespace py = pybind11;

// Optional tensors arrive as Python objects (None or a Tensor): Paddle 2.6's optional has no
// emplace(), which pybind11's optional caster needs. `position` names the argument in errors.
paddle::optional<paddle::Tensor> optional_tensor(py::handle obj, int position) {
  if (obj.is_none()) return paddle::none;
  return paddle::pybind::CastPyArg2Tensor(obj.ptr(), position);
}

}  // namespace
}  // namespace fastattn

PYBIND11_MODULE(fastattn_fast, m) {
  using fastattn::optional_tensor;
  using Tensor = paddle::Tensor;
  m.doc() = "fastattn's per-layer ops without Paddle's op dispatcher (dygraph only); arguments as the registered ops";
  m.def("write_cache_kv", [](const Tensor& k, const Tensor& v, Tensor& key_cache, Tensor& value_cache,
                             const Tensor& block_tables, const Tensor& cu_seqlens_q, const Tensor& seq_lens_decoder,
                             py::handle k_quant_scale, py::handle v_quant_scale, const std::string& cache_quant_type) {
    fastattn::WriteCacheKV(k, v, key_cache, value_cache, block_tables, cu_seqlens_q, seq_lens_decoder,
                           optional_tensor(k_quant_scale, 7), optional_tensor(v_quant_scale, 8), cache_quant_type);
  });
  m.def("write_cache_kv_dynamic", &fastattn::WriteCacheKVDynamic);
  m.def("append_cache_kv_c8", [](const Tensor& key_cache, const Tensor& value_cache, Tensor& k_out, Tensor& v_out,
                                 const Tensor& block_tables, const Tensor& seq_lens_this_time,
                                 const Tensor& seq_lens_decoder, const Tensor& cu_seqlens_k, py::handle k_scale,
                                 py::handle v_scale, const std::string& cache_quant_type) {
    fastattn::AppendCacheKVC8(key_cache, value_cache, k_out, v_out, block_tables, seq_lens_this_time,
                              seq_lens_decoder, cu_seqlens_k, optional_tensor(k_scale, 8),
                              optional_tensor(v_scale, 9), cache_quant_type);
  });
  m.def("flash_attn_varlen", [](const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens_q,
                                const Tensor& cu_seqlens_k, py::handle q_descale, py::handle k_descale,
                                py::handle v_descale, float softmax_scale, bool causal, const std::string& out_dtype,
                                int max_seqlen_k, int num_splits) {
    return fastattn::FlashAttnVarlen(q, k, v, cu_seqlens_q, cu_seqlens_k, optional_tensor(q_descale, 5),
                                     optional_tensor(k_descale, 6), optional_tensor(v_descale, 7), softmax_scale,
                                     causal, out_dtype, max_seqlen_k, num_splits);
  });
  m.def("paged_attention", [](const Tensor& q, const Tensor& key_cache, const Tensor& value_cache,
                              const Tensor& block_tables, const Tensor& seq_lens_kv, const Tensor& cu_seqlens_q,
                              py::handle k_scale, py::handle v_scale, py::handle q_descale, py::handle kv_end,
                              const std::string& cache_quant_type, float softmax_scale, bool causal,
                              const std::string& out_dtype, int num_splits) {
    return fastattn::PagedAttention(q, key_cache, value_cache, block_tables, seq_lens_kv, cu_seqlens_q,
                                    optional_tensor(k_scale, 6), optional_tensor(v_scale, 7),
                                    optional_tensor(q_descale, 8), optional_tensor(kv_end, 9), cache_quant_type,
                                    softmax_scale, causal, out_dtype, num_splits);
  });
  m.def("merge_attn_states", [](const Tensor& prefix_output, const Tensor& prefix_lse, const Tensor& suffix_output,
                                const Tensor& suffix_lse, py::handle output_scale, const std::string& out_dtype) {
    return fastattn::MergeAttnStates(prefix_output, prefix_lse, suffix_output, suffix_lse,
                                     optional_tensor(output_scale, 4), out_dtype);
  });
}
