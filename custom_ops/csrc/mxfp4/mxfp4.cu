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

// The block's largest |x| as float bits (NaN above +inf), reduced over its group of lanes.
// Called by every lane of the warp (the kernel has no early exit).
FA_DEVICE uint32_t group_max(uint32_t max_abs) {
#pragma unroll
  for (int offset = 1; offset < kLanesPerMxBlock; offset <<= 1) {
    max_abs = max(max_abs, __shfl_xor_sync(0xffffffffu, max_abs, offset));
  }
  return max_abs;
}

// Eight consecutive elements in their storage format: one 16-byte load, two for fp32.
template <typename Fmt>
struct Lane8 {
  typename Fmt::Storage x[8];
};
template <typename Fmt>
FA_DEVICE Lane8<Fmt> load_lane8(const typename Fmt::Storage* p) {
  Lane8<Fmt> lane;
  constexpr int kWords = sizeof(lane) / 16;
#pragma unroll
  for (int i = 0; i < kWords; ++i) {
    const uint4 w = load_streaming_16(p + i * (8 / kWords));
    memcpy(reinterpret_cast<uint8_t*>(lane.x) + 16 * i, &w, 16);
  }
  return lane;
}

// Eight 16-bit elements times the block's multiplier 2^-e -> their e2m1 codes, through fp16.
template <typename Fmt>
FA_DEVICE uint32_t e2m1x8_of_16bit(const Lane8<Fmt>& lane, float mult) {
  uint32_t pairs[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __half2 y = __floats2half2_rn(Fmt::to_float(lane.x[2 * i]) * mult, Fmt::to_float(lane.x[2 * i + 1]) * mult);
    memcpy(&pairs[i], &y, 4);
  }
  return e2m1x8_of_half2(pairs);
}

// A lane's eight elements -> its packed word, and the block's scale byte. 16-bit inputs take a
// packed path: the amax from a 16-bit max over pairs of |x| bits; bf16 blocks without inf or NaN
// are then converted in bf16 arithmetic (e2m1x8_of_bf16x2), fp16 and the other bf16 blocks
// through x * 2^-e rounded to fp16 (exact wherever |x * 2^-e| >= 2^-14; smaller values stay below
// 0.25, code 0 either way). fp32 inputs, and targets with the e2m1 instruction, convert from fp32.
template <typename Fmt>
FA_DEVICE uint32_t quantize_lane(const Lane8<Fmt>& lane, uint8_t& scale) {
  if constexpr (sizeof(typename Fmt::Storage) == 2 && !FASTATTN_HARDWARE_E2M1) {
    uint32_t words[4];
    memcpy(words, lane.x, 16);
    uint32_t pair_max = 0;  // |x| bits of both halves: non-negative, so unsigned order is float order
#pragma unroll
    for (int i = 0; i < 4; ++i) pair_max = __vmaxu2(pair_max, words[i] & 0x7fff7fffu);
    const uint16_t half_max = uint16_t(max(pair_max & 0xffffu, pair_max >> 16));
    const uint32_t max_abs = group_max(float_as_bits(Fmt::to_float(half_max)));
    scale = mx_scale_byte(max_abs);
#if __CUDA_ARCH__ >= 800
    // (inf needs the fp16 path's clamp)
    if (std::is_same_v<Fmt, Bf16Format> && max_abs < 0x7f800000u) return e2m1x8_of_bf16x2(words, mx_quant_multiplier(scale));
#endif
    return e2m1x8_of_16bit<Fmt>(lane, mx_quant_multiplier(scale));
  } else {
    float v[8];
    uint32_t max_abs = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      v[i] = Fmt::to_float(lane.x[i]);
      max_abs = max(max_abs, abs_bits(v[i]));
    }
    scale = mx_scale_byte(group_max(max_abs));
    const float mult = mx_quant_multiplier(scale);
    uint32_t word = 0;
#pragma unroll
    for (int i = 0; i < 8; i += 2) word |= uint32_t(pack_e2m1x2(v[i] * mult, v[i + 1] * mult)) << (4 * i);
    return word;
  }
}

// Each group of 4 lanes quantizes kBlocksPerGroup blocks: a warp takes 8 x kBlocksPerGroup
// consecutive blocks, its 8 groups blocks g, g + 8, ..., so that every load instruction of the
// warp covers one contiguous run (512 bytes of bf16) and a CTA one contiguous range. All loads
// are issued before any block is converted (one 16-byte load per lane was too little in flight
// to cover latency).
constexpr int kBlocksPerGroup = 4;
constexpr int kGroupsPerWarp = 32 / kLanesPerMxBlock;

// 5 CTAs per SM (48 registers, a 4-byte spill in the bf16 kernel): the compiler's own 57 registers
// left room for 4 CTAs, 2% slower.
template <typename Fmt>
__global__ void __launch_bounds__(kThreadsPerBlock, 5) quant_mxfp4_kernel(QuantMxfp4Params p) {
  const int64_t gid = int64_t(blockIdx.x) * kThreadsPerBlock + threadIdx.x;
  const int64_t first_block = gid / 32 * (kGroupsPerWarp * kBlocksPerGroup) + threadIdx.x % 32 / kLanesPerMxBlock;
  const int lane = int(gid % kLanesPerMxBlock);
  Lane8<Fmt> x[kBlocksPerGroup] = {};
#pragma unroll
  for (int k = 0; k < kBlocksPerGroup; ++k) {
    const int64_t block = first_block + k * kGroupsPerWarp;
    if (block < p.num_blocks) {
      x[k] = load_lane8<Fmt>(static_cast<const typename Fmt::Storage*>(p.x) + block * kMxBlock + lane * 8);
    }
  }
  // Past the last block a lane converts zeros and stores nothing: the warp stays converged for
  // the shuffles.
#pragma unroll
  for (int k = 0; k < kBlocksPerGroup; ++k) {
    const int64_t block = first_block + k * kGroupsPerWarp;
    uint8_t scale;
    const uint32_t word = quantize_lane(x[k], scale);
    if (block >= p.num_blocks) continue;
    reinterpret_cast<uint32_t*>(p.packed)[block * kLanesPerMxBlock + lane] = scale == kMxNaNScale ? 0 : word;
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

// The 16-bit paths of quant_mxfp4: every NaN-free bf16/fp16 bit pattern times every multiplier
// 2^-e (e in [-127, 127]), through e2m1x8_of_16bit, and for bf16 also through e2m1x8_of_bf16x2
// wherever |x| 2^-e <= 6 (its domain), against e2m1_by_rounding of the fp32 product.
// Index (e + 127) * 2^16 + pattern; a thread takes 8 consecutive patterns.
template <typename Fmt>
__global__ void check_e2m1_16bit_kernel(int64_t stride, unsigned long long* mismatches, unsigned long long* first) {
  constexpr uint64_t kIndices = uint64_t(255) << 16;
  unsigned long long local = 0, local_first = ULLONG_MAX;
  for (uint64_t base = (uint64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 8 * uint64_t(stride); base < kIndices;
       base += uint64_t(gridDim.x) * blockDim.x * 8 * uint64_t(stride)) {
    const float mult = exp2_neg(int(base >> 16) - 127);
    Lane8<Fmt> lane;
    for (int i = 0; i < 8; ++i) lane.x[i] = uint16_t(base + i);
    const uint32_t word = e2m1x8_of_16bit<Fmt>(lane, mult);
    uint32_t bf16_word = 0;
#if __CUDA_ARCH__ >= 800
    if constexpr (std::is_same_v<Fmt, Bf16Format>) {
      uint32_t words[4];
      memcpy(words, lane.x, 16);
      bf16_word = e2m1x8_of_bf16x2(words, mult);
    }
#endif
    for (int i = 0; i < 8; ++i) {
      const float x = Fmt::to_float(lane.x[i]);
      if (is_nan(x)) continue;
      const uint8_t want = e2m1_by_rounding(x * mult);
      bool wrong = ((word >> (4 * i)) & 0xfu) != want;
#if __CUDA_ARCH__ >= 800
      if (std::is_same_v<Fmt, Bf16Format> && fabsf(x * mult) <= 6.0f) wrong |= ((bf16_word >> (4 * i)) & 0xfu) != want;
#endif
      if (wrong) {
        ++local;
        local_first = min(local_first, (unsigned long long)(base + i));
      }
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
      constexpr int64_t kBlocksPerCta = kThreadsPerBlock / kLanesPerMxBlock * kBlocksPerGroup;
      const int64_t ctas = (p.num_blocks + kBlocksPerCta - 1) / kBlocksPerCta;
      quant_mxfp4_kernel<Fmt><<<unsigned(ctas), kThreadsPerBlock, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
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
  switch (p.input) {
    case ElementType::kFp32:
      check_e2m1_kernel<<<1024, kThreadsPerBlock, 0, stream>>>(p.stride, counters, counters + 1);
      break;
    case ElementType::kBf16:
      check_e2m1_16bit_kernel<Bf16Format><<<1024, kThreadsPerBlock, 0, stream>>>(p.stride, counters, counters + 1);
      break;
    case ElementType::kFp16:
      check_e2m1_16bit_kernel<Fp16Format><<<1024, kThreadsPerBlock, 0, stream>>>(p.stride, counters, counters + 1);
      break;
    default: throw std::invalid_argument("check_e2m1_conversion: input must be float32, bfloat16 or float16");
  }
  check_launch("check_e2m1_conversion");
}

}  // namespace fastattn
