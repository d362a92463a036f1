// Registration of fastattn_flash_attn_varlen and fastattn_paged_attention (Python wrappers:
// fastattn.ops.flash_attn_varlen, fastattn.ops.paged_attention).
#include <algorithm>

#include "../common/op_entry_points.h"
#include "../common/tensor_utils.h"
#include "attention.h"

namespace fastattn {
namespace {

ElementType input_type(const paddle::Tensor& t, const char* name) {
  if (is_fp8_dtype(t.dtype())) return ElementType::kFp8;
  const ElementType type = float_element_type(t.dtype(), name);
  PD_CHECK(type != ElementType::kFp32, name, ": expected bfloat16, float16 or fp8 (uint8/float8_e4m3fn)");
  return type;
}

Descale descale_of(const paddle::optional<paddle::Tensor>& t, const paddle::Tensor& q, int64_t batch, int64_t kv_heads,
                   const char* name) {
  if (!t) return {nullptr, true};
  PD_CHECK(t->dtype() == paddle::DataType::FLOAT32, name, ": expected float32");
  check_same_place(q, *t, name);
  const std::vector<int64_t> per_head = {batch, kv_heads};
  PD_CHECK(t->numel() == 1 || t->shape() == per_head, name, ": expected [", batch, ", ", kv_heads, "] or [1], got ",
           shape_str(t->shape()));
  return {t->data<float>(), t->numel() == 1};
}

// Offsets [batch + 1] into packed rows: non-decreasing within [0, total], cu_seqlens_q's from 0.
// Checked where they sit in host memory; the GPU kernels trust them (the Python wrappers'
// `validate` checks them there, at the cost of a copy to the host).
void check_offsets(const paddle::Tensor& cu, int64_t total, bool from_zero, const char* name) {
  if (cu.is_gpu()) return;
  const int32_t* x = cu.data<int32_t>();
  bool valid = (from_zero ? x[0] == 0 : x[0] >= 0) && x[cu.numel() - 1] <= total;
  for (int64_t i = 1; valid && i < cu.numel(); ++i) valid = x[i] >= x[i - 1];
  PD_CHECK(valid, name, ": expected non-decreasing offsets", from_zero ? " starting at 0" : "", " in [0, ", total,
           "]");
}

// Runs the CPU kernel, or plans and launches the CUDA one (with its split workspace, and K / V
// widened to fp16 where that applies). num_splits <= 0 lets the plan choose.
void run(AttentionParams& p, const paddle::Tensor& q, const HostBounds& bounds, int num_splits, const char* op) {
  if (!q.is_gpu()) {
    PD_CHECK(q.is_cpu(), op, ": tensors must be on the CPU or a CUDA GPU");
    attention_cpu(p);
    return;
  }
#if defined(FASTATTN_WITH_CUDA)
  PD_CHECK(p.kv_type == ElementType::kFp8 || p.q_type == p.kv_type, op,
           ": on the GPU a bf16/fp16 q needs k/v (or a cache) of the same dtype, or FP8/INT8");
  p.stream = stream_of(q);
  const AttentionPlan plan = plan_attention(p, bounds, num_splits);
  // A batch mixing long and short sequences: the short ones in a second launch (SeqSelect).
  AttentionParams short_part = short_launch(p, plan.short_rows, plan.short_splits);
  if (plan.short_rows > 0) {
    p.select = SeqSelect::kLong;
    p.short_rows = plan.short_rows;
  }
  p.warps_m = plan.warps_m;
  p.num_splits = plan.num_splits;
  p.wgmma = plan.wgmma;
  paddle::Tensor partial_out, partial_lse, item_counter, values_fp16, keys_fp16;  // freed after the launch: Paddle's allocator is stream-ordered
  paddle::Tensor short_partial_out, short_partial_lse;
  if (p.num_splits > 1) {
    partial_out = paddle::empty({p.num_splits, p.tokens_q, p.heads_q, p.head_dim}, paddle::DataType::FLOAT32, q.place());
    partial_lse = paddle::empty({p.num_splits, p.heads_q, p.tokens_q}, paddle::DataType::FLOAT32, q.place());
    p.partial_out = partial_out.data<float>();
    p.partial_lse = partial_lse.data<float>();
  }
  if (p.wgmma) {
    item_counter = paddle::empty({1}, paddle::DataType::INT32, q.place());
    p.item_counter = item_counter.data<int32_t>();
  }
  if (plan.widened) {
    p.widened_keys = plan.widened_keys;
    p.widened_seqs = plan.widened_seqs;
    values_fp16 = paddle::empty({widened_rows(p), p.heads_kv, p.head_dim}, paddle::DataType::FLOAT16, q.place());
    p.values_fp16 = values_fp16.data();
    if (p.q_type != ElementType::kFp8) {  // (a 16-bit q's K too)
      keys_fp16 = paddle::empty({widened_rows(p), p.heads_kv, p.head_dim}, paddle::DataType::FLOAT16, q.place());
      p.keys_fp16 = keys_fp16.data();
    }
  }
  attention_cuda(p);
  if (plan.short_rows > 0) {
    if (short_part.num_splits > 1) {
      const int64_t rows = short_partial_rows(short_part);
      short_partial_out = paddle::empty({short_part.num_splits, rows, p.head_dim}, paddle::DataType::FLOAT32, q.place());
      short_partial_lse = paddle::empty({short_part.num_splits, rows}, paddle::DataType::FLOAT32, q.place());
      short_part.partial_out = short_partial_out.data<float>();
      short_part.partial_lse = short_partial_lse.data<float>();
    }
    attention_cuda(short_part);
  }
#else
  PD_THROW(op, ": this build of fastattn has no CUDA kernels (nvcc was not found at build time)");
#endif
}

void check_query(const paddle::Tensor& q) {
  PD_CHECK(q.shape().size() == 3, "q: expected [tokens, heads, head_dim], got ", shape_str(q.shape()));
  const int64_t head_dim = q.shape()[2];
  PD_CHECK(head_dim == 64 || head_dim == 128 || head_dim == 256, "q: head_dim must be 64, 128 or 256, got ", head_dim);
  check_gpu_rows_aligned(q, "q");
}

// Shared output allocation and the query-side fields (q checked).
std::vector<paddle::Tensor> prepare(AttentionParams& p, const paddle::Tensor& q, const paddle::Tensor& cu_seqlens_q,
                                    int64_t kv_heads, float softmax_scale, bool causal,
                                    const paddle::optional<paddle::Tensor>& q_descale, const std::string& out_dtype) {
  const auto& s = q.shape();
  PD_CHECK(kv_heads > 0 && s[1] > 0 && s[1] % kv_heads == 0, "q: heads (", s[1],
           ") must be a positive multiple of the kv heads (", kv_heads, ")");
  check_int32(cu_seqlens_q, "cu_seqlens_q");
  PD_CHECK(cu_seqlens_q.shape().size() == 1 && cu_seqlens_q.numel() >= 1, "cu_seqlens_q: expected [batch + 1], got ",
           shape_str(cu_seqlens_q.shape()));
  check_same_place(q, cu_seqlens_q, "cu_seqlens_q");
  check_offsets(cu_seqlens_q, s[0], true, "cu_seqlens_q");
  p.q = q.data();
  p.q_type = input_type(q, "q");
  p.cu_seqlens_q = cu_seqlens_q.data<int32_t>();
  p.batch = int(cu_seqlens_q.numel() - 1);
  p.tokens_q = int(s[0]);
  p.heads_q = int(s[1]);
  p.heads_kv = int(kv_heads);
  p.head_dim = int(s[2]);
  p.softmax_scale = softmax_scale;
  p.causal = causal;
  p.q_descale = descale_of(q_descale, q, p.batch, kv_heads, "q_descale");
  const paddle::DataType out_type = parse_dtype(out_dtype, "out_dtype");
  p.out_type = float_element_type(out_type, "out_dtype");
  paddle::Tensor out = paddle::empty(s, out_type, q.place());
  paddle::Tensor lse = paddle::empty({s[1], s[0]}, paddle::DataType::FLOAT32, q.place());
  p.out = out.data();
  p.lse = lse.data<float>();
  return {out, lse};
}

}  // namespace

std::vector<paddle::Tensor> FlashAttnVarlen(const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
                                            const paddle::Tensor& cu_seqlens_q, const paddle::Tensor& cu_seqlens_k,
                                            const paddle::optional<paddle::Tensor>& q_descale,
                                            const paddle::optional<paddle::Tensor>& k_descale,
                                            const paddle::optional<paddle::Tensor>& v_descale, float softmax_scale,
                                            bool causal, const std::string& out_dtype, int max_seqlen_k,
                                            int num_splits, bool fp8_pv) {
  check_query(q);
  PD_CHECK(k.shape().size() == 3 && k.shape()[2] == q.shape()[2], "k: expected [tokens_k, kv_heads, head_dim]");
  check_shape(v, k.shape(), "v");
  check_int32(cu_seqlens_k, "cu_seqlens_k");
  PD_CHECK(cu_seqlens_k.shape().size() == 1 && cu_seqlens_k.numel() == cu_seqlens_q.numel(),
           "cu_seqlens_k: expected as many entries as cu_seqlens_q");
  check_same_place(q, k, "k");
  check_same_place(q, v, "v");
  check_same_place(q, cu_seqlens_k, "cu_seqlens_k");
  check_gpu_rows_aligned(k, "k");
  check_gpu_rows_aligned(v, "v");
  AttentionParams p{};
  auto outs = prepare(p, q, cu_seqlens_q, k.shape()[1], softmax_scale, causal, q_descale, out_dtype);
  check_offsets(cu_seqlens_k, k.shape()[0], false, "cu_seqlens_k");
  p.k = k.data();
  p.v = v.data();
  p.kv_type = input_type(k, "k");
  PD_CHECK(input_type(v, "v") == p.kv_type, "v: dtype differs from k");
  p.cu_seqlens_k = cu_seqlens_k.data<int32_t>();
  p.tokens_k = int(k.shape()[0]);
  p.k_descale = descale_of(k_descale, q, p.batch, p.heads_kv, "k_descale");
  p.v_descale = descale_of(v_descale, q, p.batch, p.heads_kv, "v_descale");
  p.fp8_pv = fp8_pv;
  run(p, q, HostBounds{std::max(max_seqlen_k, 0)}, num_splits, "flash_attn_varlen");
  return outs;
}

std::vector<paddle::Tensor> PagedAttention(const paddle::Tensor& q, const paddle::Tensor& key_cache,
                                           const paddle::Tensor& value_cache, const paddle::Tensor& block_tables,
                                           const paddle::Tensor& seq_lens_kv, const paddle::Tensor& cu_seqlens_q,
                                           const paddle::optional<paddle::Tensor>& k_scale,
                                           const paddle::optional<paddle::Tensor>& v_scale,
                                           const paddle::optional<paddle::Tensor>& q_descale,
                                           const paddle::optional<paddle::Tensor>& kv_end,
                                           const std::string& cache_quant_type, float softmax_scale, bool causal,
                                           const std::string& out_dtype, int num_splits, bool fp8_pv,
                                           int max_seqlen_kv, int max_multi_token_seqs) {
  check_query(q);
  PD_CHECK(key_cache.shape().size() == 4, "key_cache: expected [num_blocks, kv_heads, block_size, head_dim]");
  check_shape(value_cache, key_cache.shape(), "value_cache");
  PD_CHECK(value_cache.dtype() == key_cache.dtype(), "value_cache: dtype differs from key_cache");
  check_int32(block_tables, "block_tables");
  check_int32(seq_lens_kv, "seq_lens_kv");
  check_same_place(q, key_cache, "key_cache");
  check_same_place(q, value_cache, "value_cache");
  check_gpu_rows_aligned(key_cache, "key_cache");
  check_gpu_rows_aligned(value_cache, "value_cache");
  check_same_place(q, block_tables, "block_tables");
  check_same_place(q, seq_lens_kv, "seq_lens_kv");
  const auto& s = key_cache.shape();
  PD_CHECK(s[3] == q.shape()[2], "key_cache: head_dim differs from q's");
  check_block_size(s[2], "key_cache");
  AttentionParams p{};
  auto outs = prepare(p, q, cu_seqlens_q, s[1], softmax_scale, causal, q_descale, out_dtype);
  PD_CHECK(block_tables.shape().size() == 2 && block_tables.shape()[0] == p.batch, "block_tables: expected [batch, *]");
  check_shape(seq_lens_kv, {p.batch}, "seq_lens_kv");
  p.paged = true;
  p.quant = parse_cache_quant(cache_quant_type);
  p.key_cache = key_cache.data();
  p.value_cache = value_cache.data();
  if (p.quant == CacheQuant::kNone) {
    PD_CHECK(is_half_dtype(key_cache), "key_cache: cache_quant_type 'none' holds bfloat16 or float16");
  } else {
    PD_CHECK(is_byte_dtype(key_cache), "key_cache: ", cache_quant_type, " holds uint8 (or float8_e4m3fn)");
  }
  p.kv_type = p.quant == CacheQuant::kNone ? input_type(key_cache, "key_cache") : ElementType::kFp8;
  p.layout = {block_tables.data<int32_t>(), int(s[0]), int(s[1]), int(s[2]), int(s[3]),
              int(block_tables.shape()[1]), PagedCacheLayout::log2_of(int(s[2]))};
  if (p.quant != CacheQuant::kNone) {
    PD_CHECK(k_scale && v_scale, cache_quant_type, " needs k and v scales");
    const int64_t numel = p.quant == CacheQuant::kBlockWiseFp8 ? s[0] * s[1] * s[2] : s[1];
    p.k_scale = scale_tensor(*k_scale, numel, "k_scale");
    p.v_scale = scale_tensor(*v_scale, numel, "v_scale");
    check_same_place(q, *k_scale, "k_scale");
    check_same_place(q, *v_scale, "v_scale");
    if (p.quant == CacheQuant::kBlockWiseFp8) {
      // The GPU kernels copy two keys' scales at a time (a pair never straddles a cache block).
      check_gpu_alignment(*k_scale, p.k_scale.is_bf16 ? 4 : 8, "scales in pairs", "k_scale");
      check_gpu_alignment(*v_scale, p.v_scale.is_bf16 ? 4 : 8, "scales in pairs", "v_scale");
    }
  }
  p.seq_lens_kv = seq_lens_kv.data<int32_t>();
  if (kv_end) {
    check_int32(*kv_end, "kv_end");
    check_shape(*kv_end, {p.tokens_q}, "kv_end");
    check_same_place(q, *kv_end, "kv_end");
    p.kv_end = kv_end->data<int32_t>();
  }
  p.fp8_pv = fp8_pv;
  const HostBounds bounds{int64_t(p.layout.max_blocks_per_seq) * p.layout.block_size, max_seqlen_kv,
                          max_multi_token_seqs};
  run(p, q, bounds, num_splits, "paged_attention");
  return outs;
}


// Shape and dtype inference of the registrations below.
namespace {

using Shape = std::vector<int64_t>;
using OptShape = paddle::optional<std::vector<int64_t>>;
using OptDtype = paddle::optional<paddle::DataType>;

std::vector<Shape> FlashAttnVarlenShape(const Shape& q, const Shape&, const Shape&, const Shape&, const Shape&,
                                        const OptShape&, const OptShape&, const OptShape&, float, bool,
                                        const std::string&, int, int, bool) {
  return {q, {q[1], q[0]}};
}

std::vector<paddle::DataType> FlashAttnVarlenDtype(const paddle::DataType&, const paddle::DataType&,
                                                   const paddle::DataType&, const paddle::DataType&,
                                                   const paddle::DataType&, const OptDtype&, const OptDtype&,
                                                   const OptDtype&, float, bool, const std::string& out_dtype, int,
                                                   int, bool) {
  return {parse_dtype(out_dtype, "out_dtype"), paddle::DataType::FLOAT32};
}

std::vector<Shape> PagedAttentionShape(const Shape& q, const Shape&, const Shape&, const Shape&, const Shape&,
                                       const Shape&, const OptShape&, const OptShape&, const OptShape&,
                                       const OptShape&, const std::string&, float, bool, const std::string&, int,
                                       bool, int, int) {
  return {q, {q[1], q[0]}};
}

std::vector<paddle::DataType> PagedAttentionDtype(const paddle::DataType&, const paddle::DataType&,
                                                  const paddle::DataType&, const paddle::DataType&,
                                                  const paddle::DataType&, const paddle::DataType&, const OptDtype&,
                                                  const OptDtype&, const OptDtype&, const OptDtype&,
                                                  const std::string&, float, bool, const std::string& out_dtype,
                                                  int, bool, int, int) {
  return {parse_dtype(out_dtype, "out_dtype"), paddle::DataType::FLOAT32};
}

}  // namespace
}  // namespace fastattn

PD_BUILD_OP(fastattn_flash_attn_varlen)
    .Inputs({"q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", paddle::Optional("q_descale"),
             paddle::Optional("k_descale"), paddle::Optional("v_descale")})
    .Outputs({"out", "lse"})
    .Attrs({"softmax_scale: float", "causal: bool", "out_dtype: std::string", "max_seqlen_k: int", "num_splits: int",
            "fp8_pv: bool"})
    .SetKernelFn(PD_KERNEL(fastattn::FlashAttnVarlen))
    .SetInferShapeFn(PD_INFER_SHAPE(fastattn::FlashAttnVarlenShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastattn::FlashAttnVarlenDtype));

PD_BUILD_OP(fastattn_paged_attention)
    .Inputs({"q", "key_cache", "value_cache", "block_tables", "seq_lens_kv", "cu_seqlens_q", paddle::Optional("k_scale"),
             paddle::Optional("v_scale"), paddle::Optional("q_descale"), paddle::Optional("kv_end")})
    .Outputs({"out", "lse"})
    .Attrs({"cache_quant_type: std::string", "softmax_scale: float", "causal: bool", "out_dtype: std::string",
            "num_splits: int", "fp8_pv: bool", "max_seqlen_kv: int",
            "max_multi_token_seqs: int"})
    .SetKernelFn(PD_KERNEL(fastattn::PagedAttention))
    .SetInferShapeFn(PD_INFER_SHAPE(fastattn::PagedAttentionShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastattn::PagedAttentionDtype));
