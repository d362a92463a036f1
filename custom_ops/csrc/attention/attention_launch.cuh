// The launches of one head_dim's attention kernels: which kernel runs a call as planned (its
// storage formats, CTA shape and tensor maps), the launch, and the split combine. Included by the
// head_dim's translation unit only (attention_hd64.cu, ...), which instantiates the entry points
// of attention_launch.h with FASTATTN_ATTENTION_HEAD_DIM.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "attention_decode.cuh"
#include "attention_kernel.cuh"
#include "attention_launch.h"
#include "attention_wgmma.cuh"
#include "attention_widen.cuh"
#include "fastattn/device_property.h"
#include "fastattn/launch.h"

namespace fastattn {
namespace {

using namespace attention_gpu;

// Throws the launch's error (`launched`, or else the last error, which this clears).
void check_launch(const char* what, cudaError_t launched = cudaSuccess) {
  const cudaError_t last = cudaGetLastError();
  const cudaError_t err = launched != cudaSuccess ? launched : last;
  if (err != cudaSuccess) throw std::runtime_error(std::string("fastattn: ") + what + ": " + cudaGetErrorString(err));
}

// A kernel and its CTA shape, as the dispatch below hands them over; kTensorMaps: it takes K and
// V's tensor maps after the params (the sm_90a kernel).
template <class CtaShape, auto kKernel, bool kTakesTensorMaps = false>
struct KernelChoice {
  using Shape = CtaShape;
  static constexpr auto kernel = kKernel;
  static constexpr bool kTensorMaps = kTakesTensorMaps;
};

// Lets the kernel have its dynamic shared memory, once per device; false where the device refuses.
template <class Choice>
bool configure() {
  static std::atomic<int> configured[kMaxDevices] = {};  // per device, like the attribute: 1 done, 2 refused
  return device_property(configured, [](int) {
    return cudaFuncSetAttribute(Choice::kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                Choice::Shape::kSmemBytes) == cudaSuccess ? 1 : 2;
  }) == 1;
}

// CTAs of the kernel that one multiprocessor holds at once (registers, shared memory, threads).
template <class Choice>
int resident_ctas() {
  static std::atomic<int> cache[kMaxDevices] = {};
  return device_property(cache, [](int) {
    int ctas = 0;
    if (configure<Choice>()) {
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, Choice::kernel, Choice::Shape::kThreads,
                                                    Choice::Shape::kSmemBytes);
    }
    cudaGetLastError();  // a refusal shows at the launch
    return std::max(ctas, 1);
  });
}

template <class Choice, class... Extra>
void launch_kernel(const AttentionParams& p, const Extra&... extra) {
  using Shape = typename Choice::Shape;
  if (!configure<Choice>()) throw std::runtime_error("fastattn: attention kernel needs more shared memory");
  const int64_t tiles = launch_row_tiles(p, Shape::kRows);
  dim3 grid(unsigned(tiles), unsigned(p.heads_kv), unsigned(p.num_splits));
  if constexpr (Choice::kTensorMaps) {  // the sm_90a kernel, whose shape says whether its CTAs persist
    if constexpr (Shape::kPersistent) {
      // As many CTAs as reside at once, each taking the grid's blocks in turn off a counter.
      const int64_t items = tiles * p.heads_kv * p.num_splits;
      grid = dim3(unsigned(std::min<int64_t>(items, int64_t(multiprocessor_count()) * resident_ctas<Choice>())));
      check_launch("attention queue reset",
                   cudaMemsetAsync(p.item_counter, 0, sizeof(int), static_cast<cudaStream_t>(p.stream)));
    }
  }
  check_launch("attention kernel launch", launch_overlapping(Choice::kernel, grid, dim3(Shape::kThreads), Shape::kSmemBytes,
                                                            static_cast<cudaStream_t>(p.stream), p, extra...));
}

// Prefill: 4 warps over 128 rows (64 for head_dim 256). Decode: 8 or 16 rows per CTA
// (decode_rows_per_cta) whose key tiles 4 warps share (2 for head_dim 256, whose tiles have 32
// keys). FP8 q over FP8 keys multiplies Q.K^T in FP8.
template <int D, class Kv, bool kPaged, bool kTokenScales, bool kFp8QK = false, class Fn>
void with_shape(const AttentionParams& p, Fn&& fn) {
  if constexpr (std::is_same_v<Kv, KvFp8> && !kFp8QK) {
    if (p.q_type == ElementType::kFp8) return with_shape<D, Kv, kPaged, kTokenScales, true>(p, fn);
  }
  if (p.warps_m == 1) {
    if (decode_rows_per_cta(p) == 8) {
      using Shape = DecodeShape<D, Kv, kFp8QK, 1>;
      return fn(KernelChoice<Shape, attention_decode_kernel<Shape, Kv, kPaged, kTokenScales>>{});
    }
    using Shape = DecodeShape<D, Kv, kFp8QK, 2>;
    return fn(KernelChoice<Shape, attention_decode_kernel<Shape, Kv, kPaged, kTokenScales>>{});
  }
  using Shape = TileShape<D, 4, Kv, kFp8QK, prefill_row_blocks(D)>;
  fn(KernelChoice<Shape, attention_kernel<Shape, Kv, kPaged, kTokenScales>>{});
}

// The wgmma kernel's K and V as tensor maps: boxes of a tile's rows (contiguous keys) or a cache
// block's (at most a tile's), one column tile wide. Not ready (every tile copied row by row)
// where the driver cannot encode them, or for blocks of under 8 keys (the ops take 16 to 128),
// whose boxes would not start on the swizzle's atoms. And the output's: boxes of a computing
// warpgroup's 64 rows (64 / group tokens x the group's heads), a column tile wide. Not ready
// (rows stored a chunk at a time) for key splits (their rows go to the fp32 partials), where the
// group does not divide 64 (a box would not hold whole tokens), or where the driver cannot
// encode it (an output not 16-byte aligned, say). And an FP8 q's: boxes of a CTA's rows (its tokens
// x the group's heads), one column tile wide; not ready (rows copied one by one) where the group
// does not divide the CTA's rows or the driver cannot encode it.
template <int D>
PrefillTensorMaps prefill_tensor_maps(const AttentionParams& p) {
  using Shape = WgmmaShape<D>;
  PrefillTensorMaps maps{};
  const PagedCacheLayout& cache = p.layout;
  if (p.paged ? cache.block_size >= 8 && cache.num_blocks > 0 : p.tokens_k > 0) {
    // Paged: [blocks x heads_kv, block_size, D]; contiguous: [tokens_k, heads_kv, D].
    const uint64_t dims[3] = {D, uint64_t(p.paged ? cache.block_size : p.heads_kv),
                              p.paged ? uint64_t(cache.num_blocks) * cache.num_heads : uint64_t(p.tokens_k)};
    const uint64_t strides[2] = {D, dims[1] * D};
    const uint32_t rows = uint32_t(Shape::box_rows(p.paged, cache.block_size));
    const uint32_t box[3] = {uint32_t(Shape::kSwizzleBytes), p.paged ? rows : 1u, p.paged ? 1u : rows};
    maps.kv_ready = tma::encode_bytes_3d(&maps.k, p.paged ? p.key_cache : p.k, dims, strides, box) &&
                    (p.values_fp16 != nullptr || tma::encode_bytes_3d(&maps.v, p.paged ? p.value_cache : p.v, dims, strides, box));
  }
  // K and V widened before the kernel, [widened_rows, heads_kv, D] fp16: boxes of a tile's keys x 64
  // columns, sent whether or not the FP8 ones are (kWidenedBefore).
  auto encode_widened = [&](CUtensorMap* map, const void* base) {
    const uint64_t dims[3] = {uint64_t(D) * 2, uint64_t(p.heads_kv), uint64_t(widened_rows(p))};
    const uint64_t strides[2] = {dims[0], dims[0] * p.heads_kv};
    const uint32_t box[3] = {128u, 1u, uint32_t(Shape::kKeys)};
    if (!tma::encode_bytes_3d(map, base, dims, strides, box)) {
      throw std::runtime_error("fastattn: the widened keys' or values' tensor map could not be encoded");
    }
  };
  if (p.values_fp16 != nullptr) encode_widened(&maps.v, p.values_fp16);
  if (p.keys_fp16 != nullptr) encode_widened(&maps.k, p.keys_fp16);
  // q and the output, [tokens_q, heads_q, row_bytes]: boxes of a column tile x the group's heads x
  // the tokens of `rows` rows (a CTA's rows are token-major: row r is token r / group, head r % group).
  const int group = p.heads_q / p.heads_kv;
  auto encode_rows = [&](CUtensorMap* map, const void* base, uint64_t row_bytes, uint32_t tile_bytes, int rows) {
    if (p.tokens_q == 0 || rows % group != 0) return false;
    const uint64_t dims[3] = {row_bytes, uint64_t(p.heads_q), uint64_t(p.tokens_q)};
    const uint64_t strides[2] = {row_bytes, row_bytes * p.heads_q};
    const uint32_t box[3] = {tile_bytes, uint32_t(group), uint32_t(rows / group)};
    return tma::encode_bytes_3d(map, base, dims, strides, box);
  };
  maps.q_ready = p.q_type == ElementType::kFp8 && encode_rows(&maps.q, p.q, D, Shape::kSwizzleBytes, Shape::kRows);
  maps.out_ready = p.num_splits == 1 &&
                   encode_rows(&maps.out, p.out, uint64_t(D) * element_bytes(p.out_type), kOutTileBytes, 64);
  return maps;
}

template <int D, bool kFp8Q, bool kTokenScales, bool kFp8Pv = false, class Fn>
void with_wgmma_kernel(const AttentionParams& p, Fn&& fn) {
  if constexpr (D <= 128 && kFp8Q && !kFp8Pv) {
    if (p.fp8_pv) return with_wgmma_kernel<D, kFp8Q, kTokenScales, true>(p, fn);
  }
  auto with = [&](auto paged, auto small_blocks) {
    constexpr bool kPaged = decltype(paged)::value, kSmall = decltype(small_blocks)::value;
    // (widening_pays: FP8 q at head_dim 128 over contiguous keys and block_wise_fp8, a 16-bit q
    // over contiguous keys and either cache.)
    if constexpr (!kFp8Pv && (kFp8Q ? D == 128 && (!kPaged || kTokenScales) : true)) {
      if (p.values_fp16 != nullptr) {
        // (maps.k holds the widened keys where given: the kernel reads them with a 16-bit q only.)
        if ((p.keys_fp16 != nullptr) == kFp8Q) throw std::logic_error("fastattn: widened keys go with a 16-bit q, and only there");
        return fn(KernelChoice<WgmmaShape<D, kFp8Q, kTokenScales, kFp8Pv, kPaged, kSmall, true>,
                               attention_wgmma_kernel<D, kPaged, kFp8Q, kTokenScales, kFp8Pv, kSmall, true>, true>{});
      }
    }
    // (maps.v then holds the fp16 buffer, which this kernel would read as FP8 V.)
    if (p.values_fp16 != nullptr) throw std::logic_error("fastattn: widened values for a kernel that widens its own");
    if constexpr (D == 256 && !kFp8Q && kTokenScales) {  // (see wgmma_prefill_applies)
      throw std::logic_error("fastattn: a 16-bit q over per-token scales at head_dim 256 needs K and V widened");
    } else {
      fn(KernelChoice<WgmmaShape<D, kFp8Q, kTokenScales, kFp8Pv, kPaged, kSmall>,
                      attention_wgmma_kernel<D, kPaged, kFp8Q, kTokenScales, kFp8Pv, kSmall>, true>{});
    }
  };
  using Tiles = WgmmaShape<D>;  // (kSmallBlocks: a quarter tile or less; the tile's keys are the head_dim's)
  const bool small_blocks = p.paged && Tiles::small_boxes(Tiles::box_rows(true, p.layout.block_size));
  if constexpr (kTokenScales) {  // (a cache's)
    // Over per-token scales with FP8 q at head_dim 128, cache blocks of 16 and 32 keys split the
    // hand-over (perf notes v64): a kernel of their own, so that larger blocks pay no branch for it.
    if constexpr (D == 128 && kFp8Q && !kFp8Pv) {
      if (small_blocks) return with(std::true_type{}, std::true_type{});
    }
    with(std::true_type{}, std::false_type{});
  } else if (p.paged) {
    // Over cache_fp8 with FP8 q at head_dim 256 blocks of 16 keys keep the max first (perf notes
    // v80), a kernel of their own.
    if constexpr (D == 256 && kFp8Q) {
      if (small_blocks) return with(std::true_type{}, std::true_type{});
    }
    with(std::true_type{}, std::false_type{});
  } else {
    with(std::false_type{}, std::false_type{});
  }
}

// Calls fn(KernelChoice) with the kernel that runs p, as planned (warps_m, wgmma).
template <int D, class Fn>
void with_kernel(const AttentionParams& p, Fn&& fn) {
  if (p.wgmma) {
    const bool token_scales = p.paged && p.quant == CacheQuant::kBlockWiseFp8;
    if (p.q_type == ElementType::kFp8) {
      if (token_scales) return with_wgmma_kernel<D, true, true>(p, fn);
      return with_wgmma_kernel<D, true, false>(p, fn);
    }
    if (token_scales) return with_wgmma_kernel<D, false, true>(p, fn);
    return with_wgmma_kernel<D, false, false>(p, fn);
  }
  if (!p.paged) {
    switch (p.kv_type) {
      case ElementType::kBf16: return with_shape<D, KvBf16, false, false>(p, fn);
      case ElementType::kFp16: return with_shape<D, KvFp16, false, false>(p, fn);
      case ElementType::kFp8: return with_shape<D, KvFp8, false, false>(p, fn);
      default: throw std::invalid_argument("fastattn: unsupported k/v dtype");
    }
  }
  switch (p.quant) {
    case CacheQuant::kNone:
      if (p.kv_type == ElementType::kBf16) return with_shape<D, KvBf16, true, false>(p, fn);
      return with_shape<D, KvFp16, true, false>(p, fn);
    case CacheQuant::kInt8: return with_shape<D, KvInt8, true, false>(p, fn);
    case CacheQuant::kFp8: return with_shape<D, KvFp8, true, false>(p, fn);
    case CacheQuant::kBlockWiseFp8: return with_shape<D, KvFp8, true, true>(p, fn);
  }
}

}  // namespace

template <int D>
bool wgmma_kernels_built() {
  static std::atomic<int> cache[kMaxDevices] = {};  // 1 yes, 2 no
  return device_property(cache, [](int) {
    cudaFuncAttributes attributes{};
    const bool built = cudaFuncGetAttributes(&attributes, attention_wgmma_kernel<D, false>) == cudaSuccess &&
                       attributes.binaryVersion == 90;
    cudaGetLastError();  // a missing image is an answer here, not an error for the next launch
    return built ? 1 : 2;
  }) == 1;
}

template <int D>
int decode_ctas_per_sm(const AttentionParams& p) {
  AttentionParams decode = p;
  decode.warps_m = 1;
  decode.wgmma = false;
  int ctas = 1;
  with_kernel<D>(decode, [&](auto choice) { ctas = resident_ctas<decltype(choice)>(); });
  return ctas;
}

template <int D>
void run_attention(const AttentionParams& p) {
  if (p.values_fp16 != nullptr) {
    // A block per 8 keys of a sequence (over a cache), or a thread per 16 columns of a row; V, and
    // with a 16-bit q K (blockIdx.y 1).
    const int64_t work = p.paged ? int64_t(p.batch) * (p.widened_keys / 8) : (widened_rows(p) * p.heads_kv * (D / 16) + 255) / 256;
    const int64_t blocks = std::max<int64_t>(std::min<int64_t>(work, int64_t(multiprocessor_count()) * 8), 1);
    const dim3 grid(unsigned(blocks), p.keys_fp16 != nullptr ? 2u : 1u);
    check_launch("widen k/v launch", launch_overlapping(p.paged ? widen_cached_kv_kernel<D> : widen_kv_kernel<D>, grid, dim3(256), 0,
                                                        static_cast<cudaStream_t>(p.stream), p));
  }
  with_kernel<D>(p, [&](auto choice) {
    using Choice = decltype(choice);
    if constexpr (Choice::kTensorMaps) {
      launch_kernel<Choice>(p, prefill_tensor_maps<D>(p));
    } else {
      launch_kernel<Choice>(p);
    }
  });
  if (p.num_splits > 1 && p.select == SeqSelect::kShort) {
    check_launch("split combine launch",
                 launch_overlapping(combine_short_splits_kernel<D>, dim3(unsigned(p.batch), unsigned(p.heads_kv)), dim3(128), 0,
                                    static_cast<cudaStream_t>(p.stream), p));
  } else if (p.num_splits > 1 && p.tokens_q > 0) {
    constexpr int kRowsPerBlock = 4;
    const int64_t blocks = (int64_t(p.tokens_q) * p.heads_q + kRowsPerBlock - 1) / kRowsPerBlock;
    const auto kernel = p.select == SeqSelect::kLong ? combine_splits_kernel<D, true> : combine_splits_kernel<D, false>;
    check_launch("split combine launch", launch_overlapping(kernel, dim3(unsigned(blocks)), dim3(32 * kRowsPerBlock), 0,
                                                            static_cast<cudaStream_t>(p.stream), p));
  }
}

}  // namespace fastattn

// Instantiates the entry points of attention_launch.h for head_dim d (once per head_dim, in its
// own translation unit).
#define FASTATTN_ATTENTION_HEAD_DIM(d)                                        \
  namespace fastattn {                                                        \
  template bool wgmma_kernels_built<d>();                                     \
  template int decode_ctas_per_sm<d>(const AttentionParams& p);               \
  template void run_attention<d>(const AttentionParams& p);                   \
  }
