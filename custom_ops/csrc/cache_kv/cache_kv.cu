// CUDA kernels of write_cache_kv and append_cache_kv_c8.
//
// Both are memory-bound row copies with a conversion. A group of head_dim/16 lanes owns one
// (token, head) row; each lane moves 16 elements of K and of V, so a lane has 64 bytes (write) or
// 32 bytes (gather of a quantized cache) of loads in flight. The grid covers the packed token rows,
// a size known from shapes alone, so a launch never needs device data on the host (CUDA-graph
// safe). Rows with no sequence, an unmapped block or (gather) outside the cached prefix are skipped.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cache_kv.h"
#include "fastattn/dispatch.h"
#include "fastattn/vec.h"

namespace fastattn {
namespace {

constexpr int kElemsPerLane = 16;
constexpr int kThreadsPerBlock = 256;

// Max over the lanes of one row group (lanes_per_row in {4, 8, 16}, aligned inside the warp).
FA_DEVICE float group_max(float x, int lanes_per_row) {
  const int lane = threadIdx.x & 31;
  const unsigned mask = ((1u << lanes_per_row) - 1u) << (lane & ~(lanes_per_row - 1));
  for (int offset = lanes_per_row >> 1; offset > 0; offset >>= 1) {
    x = fmaxf(x, __shfl_xor_sync(mask, x, offset));
  }
  return x;
}

// 16 elements of one row of K or V, as loaded from a 16-bit tensor.
struct HalfLane {
  uint4 lo, hi;
};

FA_DEVICE HalfLane load_half_lane(const void* base, int64_t elem_offset) {
  const uint16_t* p = static_cast<const uint16_t*>(base) + elem_offset;
  return {load_streaming_16(p), load_streaming_16(p + 8)};
}

template <typename Fmt, typename Codec, bool kDynamicQuant>
FA_DEVICE void quantize_lane(const HalfLane& in, void* cache, const ScaleTensor& scale, int64_t row,
                             int64_t dst, int head, int lane, int lanes_per_row) {
  float x[kElemsPerLane];
  unpack_half8<Fmt>(in.lo, x);
  unpack_half8<Fmt>(in.hi, x + 8);
  float mult;
  if constexpr (kDynamicQuant) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kElemsPerLane; ++i) amax = fmaxf(amax, fabsf(x[i]));
    const DynamicScale s = dynamic_fp8_scale(group_max(amax, lanes_per_row));
    if (lane == 0) scale.store(row, s.scale);
    mult = s.inverse;
  } else {
    mult = scale.load(head);
  }
  uint8_t b[kElemsPerLane];
#pragma unroll
  for (int i = 0; i < kElemsPerLane; ++i) b[i] = Codec::encode(x[i], mult);
  store_16(static_cast<uint8_t*>(cache) + dst, pack_byte16(b));
}

template <typename Fmt, typename Codec, bool kDynamicQuant>
__global__ void __launch_bounds__(kThreadsPerBlock) write_cache_kv_kernel(WriteCacheKVParams p) {
  const int D = p.layout.head_dim, H = p.layout.num_heads;
  const int lanes_per_row = D / kElemsPerLane;
  const int64_t gid = int64_t(blockIdx.x) * kThreadsPerBlock + threadIdx.x;
  const int64_t src_row = gid / lanes_per_row;  // (token, head), packed
  const int lane = int(gid % lanes_per_row);
  if (src_row >= int64_t(p.num_tokens) * H) return;  // a whole row group leaves together
  // The source does not depend on the block table: start its loads before the index chain.
  const int64_t src = src_row * D + lane * kElemsPerLane;
  const HalfLane kin = load_half_lane(p.k, src);
  const HalfLane vin = load_half_lane(p.v, src);

  const int token = int(src_row / H), head = int(src_row % H);
  const int seq = sequence_of_token(p.cu_seqlens_q, p.batch, token);
  if (seq < 0) return;
  const int pos = p.seq_lens_decoder[seq] + token - p.cu_seqlens_q[seq];
  const int64_t row = p.layout.row(seq, pos, head);
  if (row < 0) return;
  const int64_t dst = row * D + lane * kElemsPerLane;
  if constexpr (!Codec::kQuantized) {
    uint16_t* kc = static_cast<uint16_t*>(p.key_cache) + dst;
    uint16_t* vc = static_cast<uint16_t*>(p.value_cache) + dst;
    store_16(kc, kin.lo);
    store_16(kc + 8, kin.hi);
    store_16(vc, vin.lo);
    store_16(vc + 8, vin.hi);
  } else {
    quantize_lane<Fmt, Codec, kDynamicQuant>(kin, p.key_cache, p.k_scale, row, dst, head, lane, lanes_per_row);
    quantize_lane<Fmt, Codec, kDynamicQuant>(vin, p.value_cache, p.v_scale, row, dst, head, lane, lanes_per_row);
  }
}

template <typename Fmt, typename Codec, bool kDynamicQuant>
FA_DEVICE void dequantize_lane(const uint4& in, const ScaleTensor& scale, int64_t row, int head,
                               void* out, int64_t dst) {
  const float mult = kDynamicQuant ? scale.load(row) : scale.load(head);
  uint8_t b[kElemsPerLane];
  unpack_byte16(in, b);
  float x[kElemsPerLane];
#pragma unroll
  for (int i = 0; i < kElemsPerLane; ++i) x[i] = Codec::decode(b[i], mult);
  uint16_t* o = static_cast<uint16_t*>(out) + dst;
  store_16(o, pack_half8<Fmt>(x));
  store_16(o + 8, pack_half8<Fmt>(x + 8));
}

template <typename Fmt, typename Codec, bool kDynamicQuant>
__global__ void __launch_bounds__(kThreadsPerBlock) gather_cache_kv_kernel(GatherCacheKVParams p) {
  const int D = p.layout.head_dim, H = p.layout.num_heads;
  const int lanes_per_row = D / kElemsPerLane;
  const int64_t gid = int64_t(blockIdx.x) * kThreadsPerBlock + threadIdx.x;
  const int64_t out_row = gid / lanes_per_row;  // (token, head) of k_out/v_out
  const int lane = int(gid % lanes_per_row);
  if (out_row >= int64_t(p.total_k_tokens) * H) return;
  const int token = int(out_row / H), head = int(out_row % H);
  const int seq = sequence_of_token(p.cu_seqlens_k, p.batch, token);
  if (seq < 0 || p.seq_lens_this_time[seq] <= 0) return;
  const int t = token - p.cu_seqlens_k[seq];
  if (t >= p.seq_lens_decoder[seq]) return;
  const int64_t row = p.layout.row(seq, t, head);
  if (row < 0) return;

  const int64_t src = row * D + lane * kElemsPerLane;
  const int64_t dst = out_row * D + lane * kElemsPerLane;
  if constexpr (!Codec::kQuantized) {
    const HalfLane k = load_half_lane(p.key_cache, src);
    const HalfLane v = load_half_lane(p.value_cache, src);
    uint16_t* ko = static_cast<uint16_t*>(p.k_out) + dst;
    uint16_t* vo = static_cast<uint16_t*>(p.v_out) + dst;
    store_16(ko, k.lo);
    store_16(ko + 8, k.hi);
    store_16(vo, v.lo);
    store_16(vo + 8, v.hi);
  } else {
    const uint4 kin = load_streaming_16(static_cast<const uint8_t*>(p.key_cache) + src);
    const uint4 vin = load_streaming_16(static_cast<const uint8_t*>(p.value_cache) + src);
    dequantize_lane<Fmt, Codec, kDynamicQuant>(kin, p.k_scale, row, head, p.k_out, dst);
    dequantize_lane<Fmt, Codec, kDynamicQuant>(vin, p.v_scale, row, head, p.v_out, dst);
  }
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

int grid_for_rows(int64_t rows, int head_dim) {
  const int64_t threads = rows * (head_dim / kElemsPerLane);
  return int((threads + kThreadsPerBlock - 1) / kThreadsPerBlock);
}

}  // namespace

void write_cache_kv_cuda(const WriteCacheKVParams& p) {
  const int64_t rows = int64_t(p.num_tokens) * p.layout.num_heads;
  if (rows == 0) return;
  dispatch_cache_types(p.is_bf16, p.quant, [&](auto fmt, auto codec, auto dynamic_quant) {
    write_cache_kv_kernel<decltype(fmt), decltype(codec), decltype(dynamic_quant)::value>
        <<<grid_for_rows(rows, p.layout.head_dim), kThreadsPerBlock, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
  });
  check_launch("write_cache_kv");
}

void gather_cache_kv_cuda(const GatherCacheKVParams& p) {
  const int64_t rows = int64_t(p.total_k_tokens) * p.layout.num_heads;
  if (rows == 0) return;
  dispatch_cache_types(p.is_bf16, p.quant, [&](auto fmt, auto codec, auto dynamic_quant) {
    gather_cache_kv_kernel<decltype(fmt), decltype(codec), decltype(dynamic_quant)::value>
        <<<grid_for_rows(rows, p.layout.head_dim), kThreadsPerBlock, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
  });
  check_launch("append_cache_kv_c8");
}

}  // namespace fastattn
