// CUDA kernels of write_cache_kv and append_cache_kv_c8.
//
// Both are memory-bound row copies with a conversion. Grid: x covers the tokens, y is the kv head.
// A row (token, head) is cut into chunks of 8 elements and a group of kLanes lanes owns it; lane l
// takes chunks l, l + kLanes, ... so that every load and store instruction of a warp covers whole
// 32-byte sectors. (With 16 contiguous elements per lane, each store instruction covered half of
// every sector and the quantized gather took 87.8 us instead of 64.1 us.) Quantized caches use 2
// chunks per lane (16 cache bytes in flight per tensor), bf16/fp16 caches 1. Consecutive row groups
// take consecutive tokens of one head, i.e. consecutive slots of a cache block. head_dim is a
// template parameter so that every index split is a shift. Slower alternatives measured on an
// H200 are listed in docs/perf-notes.md.
// The grid depends on shapes alone, so a launch never needs device data on the host (CUDA-graph
// safe). Rows with no sequence, an unmapped block or (gather) outside the cached prefix are skipped.
#include <cuda_runtime.h>

#include <limits>
#include <stdexcept>
#include <string>

#include "cache_kv.h"
#include "fastattn/dispatch.h"
#include "fastattn/vec.h"

namespace fastattn {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int kChunk = 8;  // elements per chunk: 16 bytes of bf16/fp16, 8 bytes of a quantized cache

template <typename Codec>
constexpr int chunks_per_lane() {
  return Codec::kQuantized ? 2 : 1;
}

// Max over the kLanes lanes of one row group (aligned inside the warp).
template <int kLanes>
FA_DEVICE float group_max(float x) {
  static_assert(kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "a power of two within a warp");
  const unsigned lane = threadIdx.x & 31u;
  const unsigned mask = kLanes == 32 ? 0xffffffffu : ((1u << kLanes) - 1u) << (lane & ~(kLanes - 1u));
#pragma unroll
  for (int offset = kLanes >> 1; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(mask, x, offset));
  return x;
}

// What one thread serves: lane `lane` of the row (token, blockIdx.y). A block covers
// kThreadsPerBlock / kLanes consecutive tokens.
template <int kHeadDim, int kChunks>
struct LaneTask {
  static constexpr int kLanes = kHeadDim / (kChunk * kChunks);
  static constexpr uint32_t kTokensPerBlock = kThreadsPerBlock / kLanes;
  uint32_t token, lane;
  FA_DEVICE LaneTask() : token(blockIdx.x * kTokensPerBlock + threadIdx.x / kLanes), lane(threadIdx.x % kLanes) {}
  // Element offset of chunk j of this lane inside a row.
  FA_DEVICE uint32_t element(int j) const { return (lane + j * kLanes) * kChunk; }
};

// One lane's chunks of a K or V row, quantized into the cache row `row`.
template <typename Fmt, typename Codec, bool kDynamicQuant, typename Task, int kChunks>
FA_DEVICE void quantize_lane(const uint4 (&in)[kChunks], uint8_t* cache_row, const ScaleTensor& scale,
                             int64_t row, int head, const Task& task) {
  float x[kChunks][kChunk];
#pragma unroll
  for (int j = 0; j < kChunks; ++j) unpack_half8<Fmt>(in[j], x[j]);
  float mult;
  if constexpr (kDynamicQuant) {
    float amax = 0.0f;
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
#pragma unroll
      for (int e = 0; e < kChunk; ++e) amax = fmaxf(amax, fabsf(x[j][e]));
    }
    const DynamicScale s = dynamic_fp8_scale(group_max<Task::kLanes>(amax));
    if (task.lane == 0) scale.store(row, s.scale);
    mult = s.inverse;
  } else {
    mult = scale.load(head);
  }
#pragma unroll
  for (int j = 0; j < kChunks; ++j) store_8(cache_row + task.element(j), Codec::encode8(x[j], mult));
}

template <typename Fmt, typename Codec, bool kDynamicQuant, int kHeadDim>
__global__ void __launch_bounds__(kThreadsPerBlock) write_cache_kv_kernel(WriteCacheKVParams p) {
  constexpr int kChunks = chunks_per_lane<Codec>();
  using Task = LaneTask<kHeadDim, kChunks>;
  const Task task;
  const int head = blockIdx.y, H = p.layout.num_heads;
  if (task.token >= uint32_t(p.num_tokens)) return;  // a whole row group leaves together
  // The source does not depend on the block table: start its loads before the index chain.
  const int64_t src = (int64_t(task.token) * H + head) * kHeadDim;
  uint4 kin[kChunks], vin[kChunks];
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    kin[j] = load_streaming_16(static_cast<const uint16_t*>(p.k) + src + task.element(j));
    vin[j] = load_streaming_16(static_cast<const uint16_t*>(p.v) + src + task.element(j));
  }
  const int token = int(task.token);
  const int seq = sequence_of_token(p.cu_seqlens_q, p.batch, token);
  if (seq < 0) return;
  const int64_t row = p.layout.row(seq, p.seq_lens_decoder[seq] + token - p.cu_seqlens_q[seq], head);
  if (row < 0) return;
  const int64_t dst = row * kHeadDim;
  if constexpr (!Codec::kQuantized) {
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      store_16(static_cast<uint16_t*>(p.key_cache) + dst + task.element(j), kin[j]);
      store_16(static_cast<uint16_t*>(p.value_cache) + dst + task.element(j), vin[j]);
    }
  } else {
    quantize_lane<Fmt, Codec, kDynamicQuant>(kin, static_cast<uint8_t*>(p.key_cache) + dst, p.k_scale, row, head,
                                             task);
    quantize_lane<Fmt, Codec, kDynamicQuant>(vin, static_cast<uint8_t*>(p.value_cache) + dst, p.v_scale, row,
                                             head, task);
  }
}

// One lane's chunks of a cached row, dequantized into the 16-bit output row `out_row`.
template <typename Fmt, typename Codec, typename Task, int kChunks>
FA_DEVICE void dequantize_lane(const uint2 (&in)[kChunks], float mult, uint16_t* out_row, const Task& task) {
#pragma unroll
  for (int j = 0; j < kChunks; ++j) {
    uint8_t b[kChunk];
    unpack_byte8(in[j], b);
    float x[kChunk];
#pragma unroll
    for (int e = 0; e < kChunk; ++e) x[e] = Codec::decode(b[e], mult);
    store_16(out_row + task.element(j), pack_half8<Fmt>(x));
  }
}

// Cache row holding `token` of k_out/v_out, or -1 when the token is no cached-prefix row to gather.
FA_DEVICE int64_t gather_source_row(const GatherCacheKVParams& p, int token, int head) {
  if (token >= p.total_k_tokens) return -1;
  const int seq = sequence_of_token(p.cu_seqlens_k, p.batch, token);
  if (seq < 0 || p.seq_lens_this_time[seq] <= 0) return -1;
  const int t = token - p.cu_seqlens_k[seq];
  return t < p.seq_lens_decoder[seq] ? p.layout.row(seq, t, head) : -1;
}

template <typename Fmt, typename Codec, bool kDynamicQuant, int kHeadDim>
__global__ void __launch_bounds__(kThreadsPerBlock) gather_cache_kv_kernel(GatherCacheKVParams p) {
  constexpr int kChunks = chunks_per_lane<Codec>();
  using Task = LaneTask<kHeadDim, kChunks>;
  const Task task;
  const int head = blockIdx.y, H = p.layout.num_heads;
  const int64_t row = gather_source_row(p, int(task.token), head);
  if (row < 0) return;
  const int64_t src = row * kHeadDim;
  const int64_t dst = (int64_t(task.token) * H + head) * kHeadDim;
  if constexpr (!Codec::kQuantized) {
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      const uint4 k = load_streaming_16(static_cast<const uint16_t*>(p.key_cache) + src + task.element(j));
      const uint4 v = load_streaming_16(static_cast<const uint16_t*>(p.value_cache) + src + task.element(j));
      store_16(static_cast<uint16_t*>(p.k_out) + dst + task.element(j), k);
      store_16(static_cast<uint16_t*>(p.v_out) + dst + task.element(j), v);
    }
  } else {
    uint2 k[kChunks], v[kChunks];
#pragma unroll
    for (int j = 0; j < kChunks; ++j) {
      k[j] = load_streaming_8(static_cast<const uint8_t*>(p.key_cache) + src + task.element(j));
      v[j] = load_streaming_8(static_cast<const uint8_t*>(p.value_cache) + src + task.element(j));
    }
    const float k_mult = p.k_scale.load(kDynamicQuant ? row : head);
    const float v_mult = p.v_scale.load(kDynamicQuant ? row : head);
    dequantize_lane<Fmt, Codec>(k, k_mult, static_cast<uint16_t*>(p.k_out) + dst, task);
    dequantize_lane<Fmt, Codec>(v, v_mult, static_cast<uint16_t*>(p.v_out) + dst, task);
  }
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Grid for `tokens` rows of each of `heads` heads; token indices are 32-bit.
template <typename Task>
dim3 grid_for(int64_t tokens, int heads, const char* what) {
  const int64_t tokens_per_block = Task::kTokensPerBlock;
  if (tokens > std::numeric_limits<int32_t>::max() - tokens_per_block || heads > 65535) {
    throw std::invalid_argument(std::string(what) + ": too many tokens or heads for one launch");
  }
  return dim3(unsigned((tokens + tokens_per_block - 1) / tokens_per_block), unsigned(heads));
}

}  // namespace

void write_cache_kv_cuda(const WriteCacheKVParams& p) {
  if (p.num_tokens == 0) return;
  dispatch_cache_types(p.is_bf16, p.quant, [&](auto fmt, auto codec, auto dynamic_quant) {
    dispatch_head_dim(p.layout.head_dim, [&](auto head_dim) {
      using Codec = decltype(codec);
      constexpr int kHeadDim = decltype(head_dim)::value;
      using Task = LaneTask<kHeadDim, chunks_per_lane<Codec>()>;
      write_cache_kv_kernel<decltype(fmt), Codec, decltype(dynamic_quant)::value, kHeadDim>
          <<<grid_for<Task>(p.num_tokens, p.layout.num_heads, "write_cache_kv"), kThreadsPerBlock, 0,
             static_cast<cudaStream_t>(p.stream)>>>(p);
    });
  });
  check_launch("write_cache_kv");
}

void gather_cache_kv_cuda(const GatherCacheKVParams& p) {
  if (p.total_k_tokens == 0) return;
  dispatch_cache_types(p.is_bf16, p.quant, [&](auto fmt, auto codec, auto dynamic_quant) {
    dispatch_head_dim(p.layout.head_dim, [&](auto head_dim) {
      using Codec = decltype(codec);
      constexpr int kHeadDim = decltype(head_dim)::value;
      using Task = LaneTask<kHeadDim, chunks_per_lane<Codec>()>;
      gather_cache_kv_kernel<decltype(fmt), Codec, decltype(dynamic_quant)::value, kHeadDim>
          <<<grid_for<Task>(p.total_k_tokens, p.layout.num_heads, "append_cache_kv_c8"), kThreadsPerBlock, 0,
             static_cast<cudaStream_t>(p.stream)>>>(p);
    });
  });
  check_launch("append_cache_kv_c8");
}

}  // namespace fastattn
