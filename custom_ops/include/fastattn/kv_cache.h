// Paged KV-cache formats and addressing, shared by every op that reads or writes the cache.
//
// A layer's cache is [num_blocks, kv_num_heads, block_size, head_dim] (token-major inside a block).
// Token `pos` of sequence `seq` lives in physical block block_tables[seq, pos / block_size], slot
// pos % block_size. block_wise_fp8 adds scale tables [num_blocks, kv_num_heads, block_size]: one
// dequant multiplier per cached row, addressed by the same row index.
#pragma once

#include <cstdint>

#include "fastattn/numerics.h"
#include "fastattn/vec.h"

namespace fastattn {

enum class CacheQuant : int {
  kNone = 0,          // bf16/fp16, same dtype as the model
  kInt8 = 1,          // static per-head scale, int8 two's complement
  kFp8 = 2,           // static per-head scale, e4m3fn
  kBlockWiseFp8 = 3,  // dynamic per-token-per-head scale, e4m3fn
};

// One cache element <-> float, given the multiplier of its row. Quantized caches store bytes; an
// unquantized cache stores the model's own 16-bit values and is copied, never converted.
template <CacheQuant Q>
struct CacheCodec;

template <>
struct CacheCodec<CacheQuant::kNone> {
  static constexpr bool kQuantized = false;
};

template <>
struct CacheCodec<CacheQuant::kInt8> {
  static constexpr bool kQuantized = true;
  static FA_HD uint8_t encode(float x, float quant_mult) {
    return uint8_t(float_to_int8(x * quant_mult));
  }
  static FA_HD float decode(uint8_t b, float dequant_mult) { return float(int8_t(b)) * dequant_mult; }
#if defined(__CUDACC__)
  // encode() of eight elements as one 8-byte word (element 0 in the low byte).
  static FA_DEVICE uint2 encode8(const float* x, float quant_mult) {
    uint8_t b[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) b[e] = encode(x[e], quant_mult);
    return pack_byte8(b);
  }
#endif
};

template <>
struct CacheCodec<CacheQuant::kFp8> {
  static constexpr bool kQuantized = true;
  static FA_HD uint8_t encode(float x, float quant_mult) { return float_to_e4m3(x * quant_mult); }
  static FA_HD float decode(uint8_t b, float dequant_mult) { return e4m3_to_float(b) * dequant_mult; }
#if defined(__CUDACC__)
  // encode() of eight elements, two per conversion instruction (E4m3Format::pack2).
  static FA_DEVICE uint2 encode8(const float* x, float quant_mult) {
    float y[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) y[e] = x[e] * quant_mult;
    return pack_e4m3x8(y);
  }
#endif
};

// A float32 or bf16 tensor of scales: a static per-head vector or a dynamic per-row table.
struct ScaleTensor {
  void* data;
  bool is_bf16;

  FA_HD float load(int64_t i) const {
    return is_bf16 ? Bf16Format::to_float(static_cast<const uint16_t*>(data)[i])
                   : static_cast<const float*>(data)[i];
  }
  FA_HD void store(int64_t i, float s) const {
    if (is_bf16) static_cast<uint16_t*>(data)[i] = Bf16Format::from_float(s);
    else static_cast<float*>(data)[i] = s;
  }
};

// Physical addressing of a paged cache. Unmapped positions (a -1 or out-of-range block id, or a
// position past the block table) give row -1: callers skip them, so a bad table never reads or
// writes outside the cache. The Python wrappers can report such entries (validate=True).
struct PagedCacheLayout {
  const int32_t* block_tables;  // [batch, max_blocks_per_seq]
  int num_blocks;
  int num_heads;
  int block_size;  // a power of two
  int head_dim;
  int max_blocks_per_seq;
  int block_shift;  // log2(block_size): the hot path shifts instead of dividing

  FA_HD static int log2_of(int power_of_two) {
    int shift = 0;
    while ((1 << shift) < power_of_two) ++shift;
    return shift;
  }

  // The cache block that holds position `pos` of sequence `seq`, or -1 if unmapped.
  FA_HD int block(int seq, int pos) const {
    const int logical_block = pos >> block_shift;
    if (pos < 0 || logical_block >= max_blocks_per_seq) return -1;
    const int block = block_tables[int64_t(seq) * max_blocks_per_seq + logical_block];
    return block >= 0 && block < num_blocks ? block : -1;
  }

  // Row index of (seq, pos, head) in [num_blocks * num_heads * block_size), or -1 if unmapped.
  // The row's elements start at row * head_dim; its dynamic scale sits at row. Its own lookup:
  // written on block(), the paged prefill kernel at head_dim 128 spilled 124 bytes, not 12.
  FA_HD int64_t row(int seq, int pos, int head) const {
    const int logical_block = pos >> block_shift;
    if (pos < 0 || logical_block >= max_blocks_per_seq) return -1;
    const int block = block_tables[int64_t(seq) * max_blocks_per_seq + logical_block];
    if (block < 0 || block >= num_blocks) return -1;
    return (int64_t(block) * num_heads + head) * block_size + (pos & (block_size - 1));
  }
};

// Sequence that owns packed token `token`, given cu_seqlens [batch + 1]; -1 if no sequence does.
// Empty sequences are skipped (upper bound, then step back).
FA_HD int sequence_of_token(const int32_t* cu_seqlens, int batch, int token) {
  int lo = 0, hi = batch + 1;  // first index with cu_seqlens[i] > token lies in [lo, hi]
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (cu_seqlens[mid] <= token) lo = mid + 1; else hi = mid;
  }
  const int seq = lo - 1;
  return (seq >= 0 && seq < batch && token < cu_seqlens[seq + 1]) ? seq : -1;
}

}  // namespace fastattn
