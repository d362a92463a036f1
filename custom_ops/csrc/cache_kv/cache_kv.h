// write_cache_kv / append_cache_kv_c8: arguments shared by the registration (cache_kv_op.cc),
// the CPU kernels (cache_kv_cpu.cc) and the CUDA kernels (cache_kv.cu). Plain pointers only, so
// the kernels compile without Paddle's headers.
#pragma once

#include <cstdint>

#include "fastattn/kv_cache.h"

namespace fastattn {

// bf16/fp16 K/V of this step -> cache. Token i of sequence b goes to position
// seq_lens_decoder[b] + i - cu_seqlens_q[b].
struct WriteCacheKVParams {
  const void* k;  // [num_tokens, num_heads, head_dim], 16-bit
  const void* v;
  void* key_cache;  // [num_blocks, num_heads, block_size, head_dim]
  void* value_cache;
  // Static types: per-head quant multipliers [num_heads]. block_wise_fp8: the scale tables
  // [num_blocks, num_heads, block_size], written with each row's dequant multiplier.
  ScaleTensor k_scale;
  ScaleTensor v_scale;
  PagedCacheLayout layout;
  const int32_t* cu_seqlens_q;      // [batch + 1]
  const int32_t* seq_lens_decoder;  // [batch]
  int num_tokens;
  int batch;
  CacheQuant quant;
  bool is_bf16;
  void* stream;  // cudaStream_t on the GPU
};

// Cached prefix -> bf16/fp16 rows. For every sequence b with seq_lens_this_time[b] > 0, cached
// position t < seq_lens_decoder[b] goes to row cu_seqlens_k[b] + t of k_out/v_out.
struct GatherCacheKVParams {
  const void* key_cache;  // [num_blocks, num_heads, block_size, head_dim]
  const void* value_cache;
  void* k_out;  // [total_k_tokens, num_heads, head_dim], 16-bit; other rows are left alone
  void* v_out;
  // Static types: per-head dequant multipliers [num_heads]; block_wise_fp8: the scale tables.
  ScaleTensor k_scale;
  ScaleTensor v_scale;
  PagedCacheLayout layout;
  const int32_t* cu_seqlens_k;        // [batch + 1]
  const int32_t* seq_lens_this_time;  // [batch]
  const int32_t* seq_lens_decoder;    // [batch]
  int total_k_tokens;
  int batch;
  CacheQuant quant;
  bool is_bf16;
  void* stream;
};

void write_cache_kv_cpu(const WriteCacheKVParams& p);
void gather_cache_kv_cpu(const GatherCacheKVParams& p);
#if defined(FASTATTN_WITH_CUDA)
void write_cache_kv_cuda(const WriteCacheKVParams& p);
void gather_cache_kv_cuda(const GatherCacheKVParams& p);
#endif

}  // namespace fastattn
