// CPU kernels of write_cache_kv and append_cache_kv_c8: plain loops over the same numerics and
// addressing headers as the CUDA kernels, so both produce the same bytes.
#include <cmath>

#include "cache_kv.h"
#include "fastattn/dispatch.h"

namespace fastattn {
namespace {

template <typename Fmt, typename Codec, bool kDynamicQuant>
void write_row(const uint16_t* src, void* cache, const ScaleTensor& scale, int64_t row, int head,
               int head_dim) {
  if constexpr (!Codec::kQuantized) {
    uint16_t* dst = static_cast<uint16_t*>(cache) + row * head_dim;
    for (int d = 0; d < head_dim; ++d) dst[d] = src[d];
  } else {
    uint8_t* dst = static_cast<uint8_t*>(cache) + row * head_dim;
    float mult;
    if constexpr (kDynamicQuant) {
      float amax = 0.0f;  // NaN, quiet or signaling, never counts (glibc's fmaxf returns a signaling one)
      for (int d = 0; d < head_dim; ++d) {
        const float a = fabsf(Fmt::to_float(src[d]));
        if (a > amax) amax = a;
      }
      const DynamicScale s = dynamic_fp8_scale(amax);
      scale.store(row, s.scale);
      mult = s.inverse;
    } else {
      mult = scale.load(head);
    }
    for (int d = 0; d < head_dim; ++d) dst[d] = Codec::encode(Fmt::to_float(src[d]), mult);
  }
}

template <typename Fmt, typename Codec, bool kDynamicQuant>
void gather_row(const void* cache, uint16_t* dst, const ScaleTensor& scale, int64_t row, int head,
                int head_dim) {
  if constexpr (!Codec::kQuantized) {
    const uint16_t* src = static_cast<const uint16_t*>(cache) + row * head_dim;
    for (int d = 0; d < head_dim; ++d) dst[d] = src[d];
  } else {
    const uint8_t* src = static_cast<const uint8_t*>(cache) + row * head_dim;
    const float mult = kDynamicQuant ? scale.load(row) : scale.load(head);
    for (int d = 0; d < head_dim; ++d) dst[d] = Fmt::from_float(Codec::decode(src[d], mult));
  }
}

}  // namespace

void write_cache_kv_cpu(const WriteCacheKVParams& p) {
  const int H = p.layout.num_heads, D = p.layout.head_dim;
  dispatch_cache_types(p.is_bf16, p.quant, [&](auto fmt, auto codec, auto dynamic_quant) {
    using Fmt = decltype(fmt);
    using Codec = decltype(codec);
    constexpr bool kDynamicQuant = decltype(dynamic_quant)::value;
    for (int token = 0; token < p.num_tokens; ++token) {
      const int seq = sequence_of_token(p.cu_seqlens_q, p.batch, token);
      if (seq < 0) continue;
      const int pos = p.seq_lens_decoder[seq] + token - p.cu_seqlens_q[seq];
      for (int h = 0; h < H; ++h) {
        const int64_t row = p.layout.row(seq, pos, h);
        if (row < 0) continue;
        const int64_t src = (int64_t(token) * H + h) * D;
        write_row<Fmt, Codec, kDynamicQuant>(static_cast<const uint16_t*>(p.k) + src, p.key_cache,
                                             p.k_scale, row, h, D);
        write_row<Fmt, Codec, kDynamicQuant>(static_cast<const uint16_t*>(p.v) + src, p.value_cache,
                                             p.v_scale, row, h, D);
      }
    }
  });
}

void gather_cache_kv_cpu(const GatherCacheKVParams& p) {
  const int H = p.layout.num_heads, D = p.layout.head_dim;
  dispatch_cache_types(p.is_bf16, p.quant, [&](auto fmt, auto codec, auto dynamic_quant) {
    using Fmt = decltype(fmt);
    using Codec = decltype(codec);
    constexpr bool kDynamicQuant = decltype(dynamic_quant)::value;
    for (int token = 0; token < p.total_k_tokens; ++token) {
      const int seq = sequence_of_token(p.cu_seqlens_k, p.batch, token);
      if (seq < 0 || p.seq_lens_this_time[seq] <= 0) continue;
      const int t = token - p.cu_seqlens_k[seq];
      if (t >= p.seq_lens_decoder[seq]) continue;
      for (int h = 0; h < H; ++h) {
        const int64_t row = p.layout.row(seq, t, h);
        if (row < 0) continue;
        const int64_t dst = (int64_t(token) * H + h) * D;
        gather_row<Fmt, Codec, kDynamicQuant>(p.key_cache, static_cast<uint16_t*>(p.k_out) + dst,
                                              p.k_scale, row, h, D);
        gather_row<Fmt, Codec, kDynamicQuant>(p.value_cache, static_cast<uint16_t*>(p.v_out) + dst,
                                              p.v_scale, row, h, D);
      }
    }
  });
}

}  // namespace fastattn
