// Registration of the paged KV-cache ops: fastattn_write_cache_kv (none / static-scale types),
// fastattn_write_cache_kv_dynamic (block_wise_fp8, also writes the scale tables) and
// fastattn_append_cache_kv_c8 (cached prefix -> bf16/fp16 rows). Every mutated tensor is declared
// in-place. Python wrappers: fastattn/ops.py.
#include "cache_kv.h"

#include "../common/op_entry_points.h"
#include "../common/tensor_utils.h"
#include "fastattn/dispatch.h"

namespace fastattn {
namespace {

// Checks one layer's cache pair and the batch description; returns its layout.
PagedCacheLayout check_cache(const paddle::Tensor& key_cache, const paddle::Tensor& value_cache,
                             const paddle::Tensor& block_tables, CacheQuant quant,
                             const paddle::Tensor& rows, const char* rows_name) {
  PD_CHECK(key_cache.shape().size() == 4, "key_cache: expected [num_blocks, kv_num_heads, block_size, head_dim], got ",
           shape_str(key_cache.shape()));
  check_shape(value_cache, key_cache.shape(), "value_cache");
  PD_CHECK(key_cache.dtype() == value_cache.dtype(), "value_cache: dtype differs from key_cache");
  if (quant == CacheQuant::kNone) {
    PD_CHECK(key_cache.dtype() == rows.dtype(), "key_cache: cache_quant_type 'none' needs the dtype of ",
             rows_name);
  } else {
    PD_CHECK(is_byte_dtype(key_cache), "key_cache: a quantized cache holds uint8 (or float8_e4m3fn)");
  }
  PD_CHECK(is_half_dtype(rows), rows_name, ": expected bfloat16 or float16");
  check_int32(block_tables, "block_tables");
  PD_CHECK(block_tables.shape().size() == 2, "block_tables: expected [batch, max_blocks_per_seq]");
  const auto& s = key_cache.shape();
  PD_CHECK(rows.shape().size() == 3 && rows.shape()[1] == s[1] && rows.shape()[2] == s[3], rows_name,
           ": expected [tokens, ", s[1], ", ", s[3], "], got ", shape_str(rows.shape()));
  PD_CHECK(s[3] == 64 || s[3] == 128 || s[3] == 256, "head_dim must be 64, 128 or 256, got ", s[3]);
  check_block_size(s[2], "key_cache");
  for (const paddle::Tensor* t : {&value_cache, &block_tables, &rows}) {
    check_same_place(key_cache, *t, "inputs");
  }
  check_gpu_rows_aligned(key_cache, "key_cache");
  check_gpu_rows_aligned(value_cache, "value_cache");
  check_gpu_rows_aligned(rows, rows_name);
  return {block_tables.data<int32_t>(), int(s[0]), int(s[1]), int(s[2]), int(s[3]),
          int(block_tables.shape()[1]), PagedCacheLayout::log2_of(int(s[2]))};
}

void check_batch_vector(const paddle::Tensor& t, int64_t n, const paddle::Tensor& like, const char* name) {
  check_int32(t, name);
  check_shape(t, {n}, name);
  check_same_place(like, t, name);
}

WriteCacheKVParams write_params(const paddle::Tensor& k, const paddle::Tensor& v,
                                paddle::Tensor& key_cache, paddle::Tensor& value_cache,
                                const paddle::Tensor& block_tables, const paddle::Tensor& cu_seqlens_q,
                                const paddle::Tensor& seq_lens_decoder, CacheQuant quant) {
  WriteCacheKVParams p{};
  p.layout = check_cache(key_cache, value_cache, block_tables, quant, k, "k");
  check_shape(v, k.shape(), "v");
  PD_CHECK(v.dtype() == k.dtype(), "v: dtype differs from k");
  check_same_place(k, v, "v");
  check_gpu_rows_aligned(v, "v");
  const int64_t batch = block_tables.shape()[0];
  check_batch_vector(cu_seqlens_q, batch + 1, k, "cu_seqlens_q");
  check_batch_vector(seq_lens_decoder, batch, k, "seq_lens_decoder");
  p.k = k.data();
  p.v = v.data();
  p.key_cache = key_cache.data();
  p.value_cache = value_cache.data();
  p.cu_seqlens_q = cu_seqlens_q.data<int32_t>();
  p.seq_lens_decoder = seq_lens_decoder.data<int32_t>();
  p.num_tokens = int(k.shape()[0]);
  p.batch = int(batch);
  p.quant = quant;
  p.is_bf16 = k.dtype() == paddle::DataType::BFLOAT16;
  p.stream = stream_of(k);
  return p;
}

}  // namespace

void WriteCacheKV(const paddle::Tensor& k, const paddle::Tensor& v, paddle::Tensor& key_cache,
                  paddle::Tensor& value_cache, const paddle::Tensor& block_tables,
                  const paddle::Tensor& cu_seqlens_q, const paddle::Tensor& seq_lens_decoder,
                  const paddle::optional<paddle::Tensor>& k_quant_scale,
                  const paddle::optional<paddle::Tensor>& v_quant_scale,
                  const std::string& cache_quant_type) {
  const CacheQuant quant = parse_cache_quant(cache_quant_type);
  PD_CHECK(quant != CacheQuant::kBlockWiseFp8,
           "block_wise_fp8 writes its scale tables: use fastattn_write_cache_kv_dynamic");
  WriteCacheKVParams p =
      write_params(k, v, key_cache, value_cache, block_tables, cu_seqlens_q, seq_lens_decoder, quant);
  if (quant != CacheQuant::kNone) {
    PD_CHECK(k_quant_scale && v_quant_scale, cache_quant_type, " needs k_quant_scale and v_quant_scale");
    check_same_place(k, *k_quant_scale, "k_quant_scale");
    check_same_place(k, *v_quant_scale, "v_quant_scale");
    p.k_scale = scale_tensor(*k_quant_scale, p.layout.num_heads, "k_quant_scale");
    p.v_scale = scale_tensor(*v_quant_scale, p.layout.num_heads, "v_quant_scale");
  }
  run_on_place(k, p, write_cache_kv_cpu, FASTATTN_CUDA_ENTRY(write_cache_kv_cuda), "write_cache_kv");
}

void WriteCacheKVDynamic(const paddle::Tensor& k, const paddle::Tensor& v, paddle::Tensor& key_cache,
                         paddle::Tensor& value_cache, paddle::Tensor& k_scale_cache,
                         paddle::Tensor& v_scale_cache, const paddle::Tensor& block_tables,
                         const paddle::Tensor& cu_seqlens_q, const paddle::Tensor& seq_lens_decoder) {
  WriteCacheKVParams p = write_params(k, v, key_cache, value_cache, block_tables, cu_seqlens_q,
                                      seq_lens_decoder, CacheQuant::kBlockWiseFp8);
  const auto& s = key_cache.shape();
  check_shape(k_scale_cache, {s[0], s[1], s[2]}, "k_scale_cache");
  check_shape(v_scale_cache, {s[0], s[1], s[2]}, "v_scale_cache");
  check_same_place(k, k_scale_cache, "k_scale_cache");
  check_same_place(k, v_scale_cache, "v_scale_cache");
  p.k_scale = scale_tensor(k_scale_cache, k_scale_cache.numel(), "k_scale_cache");
  p.v_scale = scale_tensor(v_scale_cache, v_scale_cache.numel(), "v_scale_cache");
  run_on_place(k, p, write_cache_kv_cpu, FASTATTN_CUDA_ENTRY(write_cache_kv_cuda), "write_cache_kv");
}

void AppendCacheKVC8(const paddle::Tensor& key_cache, const paddle::Tensor& value_cache,
                     paddle::Tensor& k_out, paddle::Tensor& v_out, const paddle::Tensor& block_tables,
                     const paddle::Tensor& seq_lens_this_time, const paddle::Tensor& seq_lens_decoder,
                     const paddle::Tensor& cu_seqlens_k, const paddle::optional<paddle::Tensor>& k_scale,
                     const paddle::optional<paddle::Tensor>& v_scale,
                     const std::string& cache_quant_type) {
  const CacheQuant quant = parse_cache_quant(cache_quant_type);
  GatherCacheKVParams p{};
  p.layout = check_cache(key_cache, value_cache, block_tables, quant, k_out, "k_out");
  check_shape(v_out, k_out.shape(), "v_out");
  PD_CHECK(v_out.dtype() == k_out.dtype(), "v_out: dtype differs from k_out");
  check_same_place(key_cache, v_out, "v_out");
  check_gpu_rows_aligned(v_out, "v_out");
  const int64_t batch = block_tables.shape()[0];
  check_batch_vector(seq_lens_this_time, batch, key_cache, "seq_lens_this_time");
  check_batch_vector(seq_lens_decoder, batch, key_cache, "seq_lens_decoder");
  check_batch_vector(cu_seqlens_k, batch + 1, key_cache, "cu_seqlens_k");
  if (quant != CacheQuant::kNone) {
    PD_CHECK(k_scale && v_scale, cache_quant_type, " needs k and v dequant scales");
    check_same_place(key_cache, *k_scale, "k_scale");
    check_same_place(key_cache, *v_scale, "v_scale");
    const auto& s = key_cache.shape();
    const int64_t numel = quant == CacheQuant::kBlockWiseFp8 ? s[0] * s[1] * s[2] : s[1];
    p.k_scale = scale_tensor(*k_scale, numel, "k_scale");
    p.v_scale = scale_tensor(*v_scale, numel, "v_scale");
  }
  p.key_cache = key_cache.data();
  p.value_cache = value_cache.data();
  p.k_out = k_out.data();
  p.v_out = v_out.data();
  p.cu_seqlens_k = cu_seqlens_k.data<int32_t>();
  p.seq_lens_this_time = seq_lens_this_time.data<int32_t>();
  p.seq_lens_decoder = seq_lens_decoder.data<int32_t>();
  p.total_k_tokens = int(k_out.shape()[0]);
  p.batch = int(batch);
  p.quant = quant;
  p.is_bf16 = k_out.dtype() == paddle::DataType::BFLOAT16;
  p.stream = stream_of(key_cache);
  run_on_place(key_cache, p, gather_cache_kv_cpu, FASTATTN_CUDA_ENTRY(gather_cache_kv_cuda),
               "append_cache_kv_c8");
}

}  // namespace fastattn

PD_BUILD_OP(fastattn_write_cache_kv)
    .Inputs({"k", "v", "key_cache", "value_cache", "block_tables", "cu_seqlens_q", "seq_lens_decoder",
             paddle::Optional("k_quant_scale"), paddle::Optional("v_quant_scale")})
    .Outputs({"key_cache_out", "value_cache_out"})
    .Attrs({"cache_quant_type: std::string"})
    .SetInplaceMap({{"key_cache", "key_cache_out"}, {"value_cache", "value_cache_out"}})
    .SetKernelFn(PD_KERNEL(fastattn::WriteCacheKV));

PD_BUILD_OP(fastattn_write_cache_kv_dynamic)
    .Inputs({"k", "v", "key_cache", "value_cache", "k_scale_cache", "v_scale_cache", "block_tables",
             "cu_seqlens_q", "seq_lens_decoder"})
    .Outputs({"key_cache_out", "value_cache_out", "k_scale_cache_out", "v_scale_cache_out"})
    .SetInplaceMap({{"key_cache", "key_cache_out"},
                    {"value_cache", "value_cache_out"},
                    {"k_scale_cache", "k_scale_cache_out"},
                    {"v_scale_cache", "v_scale_cache_out"}})
    .SetKernelFn(PD_KERNEL(fastattn::WriteCacheKVDynamic));

PD_BUILD_OP(fastattn_append_cache_kv_c8)
    .Inputs({"key_cache", "value_cache", "k_out", "v_out", "block_tables", "seq_lens_this_time",
             "seq_lens_decoder", "cu_seqlens_k", paddle::Optional("k_scale"), paddle::Optional("v_scale")})
    .Outputs({"k_out_out", "v_out_out"})
    .Attrs({"cache_quant_type: std::string"})
    .SetInplaceMap({{"k_out", "k_out_out"}, {"v_out", "v_out_out"}})
    .SetKernelFn(PD_KERNEL(fastattn::AppendCacheKVC8));
