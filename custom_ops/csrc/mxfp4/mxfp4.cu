// CUDA kernels of quant_mxfp4, dequant_mxfp4 and the e2m1 self-check.
//
// quant: a group of 4 lanes owns one 32-element block, 8 contiguous elements per lane, so a warp
// reads 8 blocks as one contiguous run and writes 128 contiguous packed bytes. The block's amax
// and whether it holds NaN come from one integer max of |x|'s bits, reduced over the group with
// two shuffles.
#include <cuda_runtime.h>

#include <climits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "e2m1_by_rounding.h"
#include "fastattn/vec.h"
#include "mxfp4.h"
#include "mxfp4_block.h"

namespace fastattn {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int kLanesPerMxBlock = kMxBlock / 8;

// Each group of 4 lanes quantizes kBlocksPerGroup blocks, spaced `stride` blocks apart so that
// every load instruction of a warp still covers one contiguous run; all loads are issued before
// any block is converted (one 16-byte load per lane was too little in flight to cover latency).
constexpr int kBlocksPerGroup = 4;

template <typename Fmt>
__global__ void __launch_bounds__(kThreadsPerBlock) quant_mxfp4_kernel(QuantMxfp4Params p, int64_t stride) {
  const int64_t gid = int64_t(blockIdx.x) * kThreadsPerBlock + threadIdx.x;
  const int64_t first_block = gid / kLanesPerMxBlock;
  const int lane = int(gid % kLanesPerMxBlock);
  float v[kBlocksPerGroup][8];
#pragma unroll
  for (int k = 0; k < kBlocksPerGroup; ++k) {
    const int64_t block = first_block + k * stride;
    if (block < p.num_blocks) {
      load_chunk8<Fmt>(static_cast<const typename Fmt::Storage*>(p.x) + block * kMxBlock + lane * 8, v[k]);
    }
  }
  const unsigned mask = 0xfu << (threadIdx.x & 28u);
#pragma unroll
  for (int k = 0; k < kBlocksPerGroup; ++k) {
    const int64_t block = first_block + k * stride;
    if (block >= p.num_blocks) break;  // uniform across the group, as the shuffles need
    uint32_t max_abs = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) max_abs = max(max_abs, abs_bits(v[k][i]));
#pragma unroll
    for (int offset = 1; offset < kLanesPerMxBlock; offset <<= 1) {
      max_abs = max(max_abs, __shfl_xor_sync(mask, max_abs, offset));
    }
    const uint8_t scale = mx_scale_byte(max_abs);
    const float mult = mx_quant_multiplier(scale);
    uint32_t word = 0;
#pragma unroll
    for (int i = 0; i < 8; i += 2) word |= uint32_t(pack_e2m1x2(v[k][i] * mult, v[k][i + 1] * mult)) << (4 * i);
    if (scale == kMxNaNScale) word = 0;
    reinterpret_cast<uint32_t*>(p.packed)[block * kLanesPerMxBlock + lane] = word;
    if (lane == 0) p.scales[block] = scale;
  }
}

// One thread per 8 elements (4 packed bytes).
template <typename Fmt>
__global__ void __launch_bounds__(kThreadsPerBlock) dequant_mxfp4_kernel(DequantMxfp4Params p) {
  const int64_t chunk = int64_t(blockIdx.x) * kThreadsPerBlock + threadIdx.x;
  if (chunk >= p.num_blocks * kLanesPerMxBlock) return;
  const uint32_t word = reinterpret_cast<const uint32_t*>(p.packed)[chunk];
  const float scale = mx_scale_value(p.scales[chunk / kLanesPerMxBlock]);
  float v[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = e2m1_to_float(uint8_t((word >> (4 * i)) & 0xfu)) * scale;
  store_chunk8<Fmt>(static_cast<typename Fmt::Storage*>(p.out) + chunk * 8, v);
}

__global__ void check_e2m1_kernel(int64_t stride, unsigned long long* mismatches, unsigned long long* first) {
  const uint64_t step = uint64_t(gridDim.x) * blockDim.x * uint64_t(stride);
  unsigned long long local = 0, local_first = ULLONG_MAX;
  for (uint64_t pattern = (uint64_t(blockIdx.x) * blockDim.x + threadIdx.x) * uint64_t(stride);
       pattern < (uint64_t(1) << 32); pattern += step) {
    const float x = __uint_as_float(uint32_t(pattern));
    if (float_to_e2m1(x) != e2m1_by_rounding(x)) {
      ++local;
      local_first = min(local_first, (unsigned long long)pattern);
    }
  }
  if (local) {
    atomicAdd(mismatches, local);
    atomicMin(first, local_first);
  }
}

__global__ void init_check_result(int64_t* result) {
  result[0] = 0;
  result[1] = INT64_MAX;
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

unsigned grid_for(int64_t threads) {
  return unsigned((threads + kThreadsPerBlock - 1) / kThreadsPerBlock);
}

}  // namespace

void quant_mxfp4_cuda(const QuantMxfp4Params& p) {
  if (p.num_blocks == 0) return;
  dispatch_float_format(p.in_type, [&](auto fmt) {
    using Fmt = decltype(fmt);
    if constexpr (std::is_same_v<Fmt, E4m3Format>) {
      throw std::invalid_argument("quant_mxfp4: fp8 input is not supported");
    } else {
      // Groups cover the first `stride` blocks; each also takes the blocks stride, 2 * stride, ... on.
      const int64_t groups_per_cta = kThreadsPerBlock / kLanesPerMxBlock;
      const int64_t ctas = (p.num_blocks + groups_per_cta * kBlocksPerGroup - 1) / (groups_per_cta * kBlocksPerGroup);
      quant_mxfp4_kernel<Fmt><<<unsigned(ctas), kThreadsPerBlock, 0, static_cast<cudaStream_t>(p.stream)>>>(
          p, ctas * groups_per_cta);
    }
  });
  check_launch("quant_mxfp4");
}

void dequant_mxfp4_cuda(const DequantMxfp4Params& p) {
  if (p.num_blocks == 0) return;
  dispatch_float_format(p.out_type, [&](auto fmt) {
    using Fmt = decltype(fmt);
    if constexpr (std::is_same_v<Fmt, E4m3Format>) {
      throw std::invalid_argument("dequant_mxfp4: fp8 output is not supported");
    } else {
      dequant_mxfp4_kernel<Fmt><<<grid_for(p.num_blocks * kLanesPerMxBlock), kThreadsPerBlock, 0,
                                  static_cast<cudaStream_t>(p.stream)>>>(p);
    }
  });
  check_launch("dequant_mxfp4");
}

void check_e2m1_cuda(const E2m1CheckParams& p) {
  auto stream = static_cast<cudaStream_t>(p.stream);
  init_check_result<<<1, 1, 0, stream>>>(p.result);
  auto* counters = reinterpret_cast<unsigned long long*>(p.result);
  check_e2m1_kernel<<<1024, kThreadsPerBlock, 0, stream>>>(p.stride, counters, counters + 1);
  check_launch("check_e2m1_conversion");
}

}  // namespace fastattn
