// CUDA kernels of write_cache_kv and append_cache_kv_c8.
//
// Both are memory-bound row copies with a conversion. A group of head_dim/8 lanes owns one
// (token, head) row; each lane moves 8 elements of K and 8 of V (two independent 16-byte loads in
// flight). The grid covers the packed token rows, a size known from shapes alone, so a launch never
// needs device data on the host (CUDA-graph safe). Rows with no sequence, an unmapped block or
// (gather) outside the cached prefix are skipped.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cache_kv.h"
#include "fastattn/dispatch.h"
#include "fastattn/vec.h"

namespace fastattn {
namespace {

constexpr int kElemsPerLane = 8;
constexpr int kThreadsPerBlock = 256;

// Max over the lanes of one row group (lanes_per_row in {8, 16, 32}, aligned inside the warp).
FA_DEVICE float group_max(float x, int lanes_per_row) {
  const int lane = threadIdx.x & 31;
  const unsigned mask = lanes_per_row == 32
                            ? 0xffffffffu
                            : ((1u << lanes_per_row) - 1u) << (lane & ~(lanes_per_row - 1));
  for (int offset = lanes_per_row >> 1; offset > 0; offset >>= 1) {
    x = fmaxf(x, __shfl_xor_sync(mask, x, offset));
  }
  return x;
}

template <typename Fmt, typename Codec, bool kDynamicQuant>
FA_DEVICE void quantize_lane(const uint4& in, void* cache, const ScaleTensor& scale, int64_t row,
                             int head, int lane, int lanes_per_row) {
  float x[8];
  unpack_half8<Fmt>(in, x);
  float mult;
  if constexpr (kDynamicQuant) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(x[i]));
    const DynamicScale s = dynamic_fp8_scale(group_max(amax, lanes_per_row));
    if (lane == 0) scale.store(row, s.scale);
    mult = s.inverse;
  } else {
    mult = scale.load(head);
  }
  uint8_t b[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) b[i] = Codec::encode(x[i], mult);
  *reinterpret_cast<uint2*>(static_cast<uint8_t*>(cache) + row * (lanes_per_row * kElemsPerLane) +
                            lane * kElemsPerLane) = pack_byte8(b);
}

template <typename Fmt, typename Codec, bool kDynamicQuant>
__global__ void __launch_bounds__(kThreadsPerBlock) write_cache_kv_kernel(WriteCacheKVParams p) {
  const int D = p.layout.head_dim, H = p.layout.num_heads;
  const int lanes_per_row = D / kElemsPerLane;
  const int64_t gid = int64_t(blockIdx.x) * kThreadsPerBlock + threadIdx.x;
  const int64_t src_row = gid / lanes_per_row;  // (token, head), packed
  const int lane = int(gid % lanes_per_row);
  if (src_row >= int64_t(p.num_tokens) * H) return;  // a whole row group leaves together
  const int token = int(src_row / H), head = int(src_row % H);
  const int seq = sequence_of_token(p.cu_seqlens_q, p.batch, token);
  if (seq < 0) return;
  const int pos = p.seq_lens_decoder[seq] + token - p.cu_seqlens_q[seq];
  const int64_t row = p.layout.row(seq, pos, head);
  if (row < 0) return;

  const int64_t src = src_row * D + lane * kElemsPerLane;
  const uint4 kin = load_streaming_16(static_cast<const uint16_t*>(p.k) + src);
  const uint4 vin = load_streaming_16(static_cast<const uint16_t*>(p.v) + src);
  if constexpr (!Codec::kQuantized) {
    const int64_t dst = row * D + lane * kElemsPerLane;
    *reinterpret_cast<uint4*>(static_cast<uint16_t*>(p.key_cache) + dst) = kin;
    *reinterpret_cast<uint4*>(static_cast<uint16_t*>(p.value_cache) + dst) = vin;
  } else {
    quantize_lane<Fmt, Codec, kDynamicQuant>(kin, p.key_cache, p.k_scale, row, head, lane, lanes_per_row);
    quantize_lane<Fmt, Codec, kDynamicQuant>(vin, p.value_cache, p.v_scale, row, head, lane, lanes_per_row);
  }
}

template <typename Fmt, typename Codec, bool kDynamicQuant>
FA_DEVICE uint4 dequantize_lane(const uint2& in, const ScaleTensor& scale, int64_t row, int head) {
  const float mult = kDynamicQuant ? scale.load(row) : scale.load(head);
  uint8_t b[8];
  unpack_byte8(in, b);
  float x[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) x[i] = Codec::decode(b[i], mult);
  return pack_half8<Fmt>(x);
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
  uint4 kout, vout;
  if constexpr (!Codec::kQuantized) {
    kout = load_streaming_16(static_cast<const uint16_t*>(p.key_cache) + src);
    vout = load_streaming_16(static_cast<const uint16_t*>(p.value_cache) + src);
  } else {
    const uint2 kin = load_streaming_8(static_cast<const uint8_t*>(p.key_cache) + src);
    const uint2 vin = load_streaming_8(static_cast<const uint8_t*>(p.value_cache) + src);
    kout = dequantize_lane<Fmt, Codec, kDynamicQuant>(kin, p.k_scale, row, head);
    vout = dequantize_lane<Fmt, Codec, kDynamicQuant>(vin, p.v_scale, row, head);
  }
  *reinterpret_cast<uint4*>(static_cast<uint16_t*>(p.k_out) + dst) = kout;
  *reinterpret_cast<uint4*>(static_cast<uint16_t*>(p.v_out) + dst) = vout;
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
