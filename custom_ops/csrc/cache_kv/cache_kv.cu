// CUDA kernels of write_cache_kv and append_cache_kv_c8.
//
// Both are memory-bound row copies with a conversion. Grid: x covers the tokens, y is the kv
// head. A group of kLanes = head_dim / kElems lanes owns one (token, head) row; consecutive groups
// take consecutive tokens of one head, i.e. consecutive slots of a cache block. head_dim is a
// template parameter so that every index split is a shift: these kernels are short enough that
// integer division would cost as much as the memory traffic. Lanes move 16 bytes of the cache
// side each (16 elements of a quantized cache, 8 of a 16-bit one).
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

template <typename Codec>
constexpr int elems_per_lane() {
  return Codec::kQuantized ? 16 : 8;
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

// Each thread serves kTokensPerThread tokens of head blockIdx.y, one lane of each row. A block
// covers kTokensPerThread passes of kThreadsPerBlock / kLanes consecutive tokens; a thread's
// tokens are independent, so their index chains and loads overlap.
constexpr int kTokensPerThread = 2;

template <int kLanes>
struct LaneTask {
  static constexpr uint32_t kTokensPerPass = kThreadsPerBlock / kLanes;
  uint32_t first_token, lane;
  FA_DEVICE LaneTask()
      : first_token(blockIdx.x * kTokensPerPass * kTokensPerThread + threadIdx.x / kLanes),
        lane(threadIdx.x % kLanes) {}
  FA_DEVICE uint32_t token(int i) const { return first_token + i * kTokensPerPass; }
};

template <typename Fmt, typename Codec, bool kDynamicQuant, int kElems, int kLanes>
FA_DEVICE void quantize_lane(const HalfVec<kElems>& in, void* cache, const ScaleTensor& scale,
                             int64_t row, int64_t dst, int head, uint32_t lane) {
  float x[kElems];
#pragma unroll
  for (int i = 0; i < kElems / 8; ++i) unpack_half8<Fmt>(in.w[i], x + 8 * i);
  float mult;
  if constexpr (kDynamicQuant) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kElems; ++i) amax = fmaxf(amax, fabsf(x[i]));
    const DynamicScale s = dynamic_fp8_scale(group_max<kLanes>(amax));
    if (lane == 0) scale.store(row, s.scale);
    mult = s.inverse;
  } else {
    mult = scale.load(head);
  }
  uint8_t b[kElems];
#pragma unroll
  for (int i = 0; i < kElems; ++i) b[i] = Codec::encode(x[i], mult);
  store_bytes<kElems>(cache, dst, b);
}

template <typename Fmt, typename Codec, bool kDynamicQuant, int kHeadDim>
__global__ void __launch_bounds__(kThreadsPerBlock) write_cache_kv_kernel(WriteCacheKVParams p) {
  constexpr int kElems = elems_per_lane<Codec>(), kLanes = kHeadDim / kElems;
  const LaneTask<kLanes> task;
  const int head = blockIdx.y, H = p.layout.num_heads;
  // The source does not depend on the block table: start its loads before the index chains.
  HalfVec<kElems> kin[kTokensPerThread], vin[kTokensPerThread];
#pragma unroll
  for (int i = 0; i < kTokensPerThread; ++i) {
    if (task.token(i) < uint32_t(p.num_tokens)) {
      const int64_t src = (int64_t(task.token(i)) * H + head) * kHeadDim + task.lane * kElems;
      kin[i] = load_half_vec<kElems>(p.k, src);
      vin[i] = load_half_vec<kElems>(p.v, src);
    }
  }
  int64_t rows[kTokensPerThread];
#pragma unroll
  for (int i = 0; i < kTokensPerThread; ++i) {
    const int token = int(task.token(i));
    const int seq = token < p.num_tokens ? sequence_of_token(p.cu_seqlens_q, p.batch, token) : -1;
    rows[i] = seq < 0 ? -1 : p.layout.row(seq, p.seq_lens_decoder[seq] + token - p.cu_seqlens_q[seq], head);
  }
#pragma unroll
  for (int i = 0; i < kTokensPerThread; ++i) {
    if (rows[i] < 0) continue;  // uniform across the row group, as the shuffles need
    const int64_t dst = rows[i] * kHeadDim + task.lane * kElems;
    if constexpr (!Codec::kQuantized) {
      store_half_vec<kElems>(p.key_cache, dst, kin[i]);
      store_half_vec<kElems>(p.value_cache, dst, vin[i]);
    } else {
      quantize_lane<Fmt, Codec, kDynamicQuant, kElems, kLanes>(kin[i], p.key_cache, p.k_scale, rows[i], dst,
                                                              head, task.lane);
      quantize_lane<Fmt, Codec, kDynamicQuant, kElems, kLanes>(vin[i], p.value_cache, p.v_scale, rows[i], dst,
                                                              head, task.lane);
    }
  }
}

template <typename Fmt, typename Codec, bool kDynamicQuant, int kElems>
FA_DEVICE void dequantize_lane(const uint8_t* b, const ScaleTensor& scale, int64_t row, int head,
                               void* out, int64_t dst) {
  const float mult = kDynamicQuant ? scale.load(row) : scale.load(head);
  float x[kElems];
#pragma unroll
  for (int i = 0; i < kElems; ++i) x[i] = Codec::decode(b[i], mult);
  HalfVec<kElems> v;
#pragma unroll
  for (int i = 0; i < kElems / 8; ++i) v.w[i] = pack_half8<Fmt>(x + 8 * i);
  store_half_vec<kElems>(out, dst, v);
}

// Cached row of `token` in k_out/v_out, or -1 when the token is no cached-prefix row to gather.
FA_DEVICE int64_t gather_source_row(const GatherCacheKVParams& p, int token, int head) {
  if (token >= p.total_k_tokens) return -1;
  const int seq = sequence_of_token(p.cu_seqlens_k, p.batch, token);
  if (seq < 0 || p.seq_lens_this_time[seq] <= 0) return -1;
  const int t = token - p.cu_seqlens_k[seq];
  return t < p.seq_lens_decoder[seq] ? p.layout.row(seq, t, head) : -1;
}

template <typename Fmt, typename Codec, bool kDynamicQuant, int kHeadDim>
__global__ void __launch_bounds__(kThreadsPerBlock) gather_cache_kv_kernel(GatherCacheKVParams p) {
  constexpr int kElems = elems_per_lane<Codec>(), kLanes = kHeadDim / kElems;
  const LaneTask<kLanes> task;
  const int head = blockIdx.y, H = p.layout.num_heads;
  int64_t rows[kTokensPerThread];
#pragma unroll
  for (int i = 0; i < kTokensPerThread; ++i) rows[i] = gather_source_row(p, int(task.token(i)), head);
  if constexpr (!Codec::kQuantized) {
    HalfVec<kElems> k[kTokensPerThread], v[kTokensPerThread];
#pragma unroll
    for (int i = 0; i < kTokensPerThread; ++i) {
      if (rows[i] < 0) continue;
      k[i] = load_half_vec<kElems>(p.key_cache, rows[i] * kHeadDim + task.lane * kElems);
      v[i] = load_half_vec<kElems>(p.value_cache, rows[i] * kHeadDim + task.lane * kElems);
    }
#pragma unroll
    for (int i = 0; i < kTokensPerThread; ++i) {
      if (rows[i] < 0) continue;
      const int64_t dst = (int64_t(task.token(i)) * H + head) * kHeadDim + task.lane * kElems;
      store_half_vec<kElems>(p.k_out, dst, k[i]);
      store_half_vec<kElems>(p.v_out, dst, v[i]);
    }
  } else {
    uint8_t kb[kTokensPerThread][kElems], vb[kTokensPerThread][kElems];
#pragma unroll
    for (int i = 0; i < kTokensPerThread; ++i) {
      if (rows[i] < 0) continue;
      load_bytes<kElems>(p.key_cache, rows[i] * kHeadDim + task.lane * kElems, kb[i]);
      load_bytes<kElems>(p.value_cache, rows[i] * kHeadDim + task.lane * kElems, vb[i]);
    }
#pragma unroll
    for (int i = 0; i < kTokensPerThread; ++i) {
      if (rows[i] < 0) continue;
      const int64_t dst = (int64_t(task.token(i)) * H + head) * kHeadDim + task.lane * kElems;
      dequantize_lane<Fmt, Codec, kDynamicQuant, kElems>(kb[i], p.k_scale, rows[i], head, p.k_out, dst);
      dequantize_lane<Fmt, Codec, kDynamicQuant, kElems>(vb[i], p.v_scale, rows[i], head, p.v_out, dst);
    }
  }
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Grid for `tokens` rows of each of `heads` heads; token indices are 32-bit.
dim3 grid_for(int64_t tokens, int heads, int lanes_per_row, const char* what) {
  const int64_t tokens_per_block = int64_t(kThreadsPerBlock / lanes_per_row) * kTokensPerThread;
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
      const dim3 grid = grid_for(p.num_tokens, p.layout.num_heads, kHeadDim / elems_per_lane<Codec>(),
                                 "write_cache_kv");
      write_cache_kv_kernel<decltype(fmt), Codec, decltype(dynamic_quant)::value, kHeadDim>
          <<<grid, kThreadsPerBlock, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
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
      const dim3 grid = grid_for(p.total_k_tokens, p.layout.num_heads, kHeadDim / elems_per_lane<Codec>(),
                                 "append_cache_kv_c8");
      gather_cache_kv_kernel<decltype(fmt), Codec, decltype(dynamic_quant)::value, kHeadDim>
          <<<grid, kThreadsPerBlock, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
    });
  });
  check_launch("append_cache_kv_c8");
}

}  // namespace fastattn
