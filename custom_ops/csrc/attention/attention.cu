// CUDA side of flash_attn_varlen and paged_attention: the plan (kernel, CTA shape, key splits) and
// the call to the head_dim's launches (attention_launch.cuh, built per head_dim in
// attention_hd64.cu ...). The kernels are in attention_decode.cuh (decode), attention_kernel.cuh
// (mma.sync prefill) and attention_wgmma.cuh (sm_90a prefill over FP8 k/v); this unit takes only
// their shapes.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "attention_decode.cuh"
#include "attention_kernel.cuh"
#include "attention_launch.h"
#include "attention_wgmma_shape.cuh"
#include "fastattn/device_property.h"

namespace fastattn {
namespace {

using namespace attention_gpu;

// The sm_90a kernels exist where the build targeted sm_90a and the device is an sm_90 part.
bool sm90_device() {
  static std::atomic<int> cache[kMaxDevices] = {};  // 1 yes, 2 no
  return device_property(cache, [](int device) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    return major == 9 && minor == 0 ? 1 : 2;
  }) == 1;
}

// Calls fn with the head_dim as a compile-time constant.
template <class Fn>
auto with_head_dim(int head_dim, Fn&& fn) {
  switch (head_dim) {
    case 64: return fn(std::integral_constant<int, 64>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    case 256: return fn(std::integral_constant<int, 256>{});
    default: throw std::invalid_argument("fastattn: head_dim must be 64, 128 or 256");
  }
}

// Whether the sm_90a kernel would take V (and with a 16-bit q K) widened before it: by the formats,
// FASTATTN_WIDENED_KV, the buffers' bytes and the batch's row tiles.
bool widening_pays(const AttentionParams& p, double widened_bytes, int64_t widened_seqs) {
  // The sm_90a kernel with P V in fp16: there the copying warpgroup widens every tile in every CTA
  // (each of the 128 row tiles of a kv head's 4096-token prefill widens the same tiles). With FP8
  // q at head_dim 128 it widens V, 7-8% of the kernel's time over contiguous keys and
  // block_wise_fp8 (perf notes v82, v83); over cache_fp8 the kernel gained 3%, which the widening
  // before it took back. With a 16-bit q it widens K too, up to 12% (v83), over contiguous keys
  // and either cache, at every head_dim (v88). At head_dim 256 only K and V widened before leave
  // a 16-bit q's kernel room for per-token scales (wgmma_prefill_applies).
  const bool q_16bit = p.q_type != ElementType::kFp8;
  const bool keys_apply = p.paged ? p.quant == CacheQuant::kBlockWiseFp8 || (p.quant == CacheQuant::kFp8 && q_16bit)
                                  : p.kv_type == ElementType::kFp8;
  if ((p.head_dim != 128 && !q_16bit) || p.fp8_pv || !keys_apply) return false;
  // Over a cache every sequence of the launch takes the bound's rows, however few keys it has: a
  // step of short chunks after long prefixes would ask for tens of gigabytes. Past 2 GiB the
  // kernel widens for itself (mma.sync for a 16-bit q over block_wise_fp8 at head_dim 256),
  // whatever the override.
  constexpr double kMaxWidenedBytes = double(int64_t(1) << 31);
  if (widened_bytes > kMaxWidenedBytes) return false;
  // FASTATTN_WIDENED_KV=always / never overrides the choice below (the tests run both paths).
  const char* choice = std::getenv("FASTATTN_WIDENED_KV");
  if (choice != nullptr && std::strcmp(choice, "always") == 0) return true;
  if (choice != nullptr && std::strcmp(choice, "never") == 0) return false;
  // Widening before the kernel reads each key once and writes it twice as wide; it pays where the
  // kernel reads each key in many row tiles. The host knows only the batch's totals: take it where
  // a sequence with a slot (widened_seqs of them) has 64 row tiles or more on average. Uniform
  // causal prefills at head_dim 128, 4 q heads a kv head, widened (16 / 32 / 64 / 128 row tiles a
  // sequence at 512 / 1024 / 2048 / 4096 tokens): 4-6% / 1-3% slower, 1.5% / 4-7% faster (perf
  // notes v83); a batch of decodes beside a long chunk has about 1 row tile a sequence, and there
  // it ran 44% slower.
  // Over block_wise_fp8 at head_dim 256 a 16-bit q has no sm_90a kernel without the widening; the
  // mma.sync kernel it would take instead ran 1.4x slower at 1 row tile a sequence (32-token chunks
  // over 4096 keys) and 2.0-3.0x at 2 to 32 (v89): there it pays from a row tile a sequence.
  const bool only_kernel = q_16bit && p.head_dim == 256 && p.paged && p.quant == CacheQuant::kBlockWiseFp8;
  const int64_t min_row_tiles = only_kernel ? 1 : 64;
  const int64_t row_tiles = int64_t(p.tokens_q) * (p.heads_q / p.heads_kv) / wgmma_rows(p.head_dim);
  return row_tiles >= min_row_tiles * widened_seqs;
}

// FP8 k/v: contiguous, or a cache_fp8 or block_wise_fp8 cache (but for a 16-bit q at head_dim 256
// that widens K and V in the kernel, whose shared memory then has no room for per-token scales).
bool wgmma_prefill_applies(const AttentionParams& p, bool widened) {
  const bool q_16bit = p.q_type == ElementType::kBf16 || p.q_type == ElementType::kFp16;
  // Per-token scales: room for them, and tables aligned to a lane's copy of its keys' scales; the
  // other kernels copy pairs (the op checks the tables for those).
  auto lane_copy_aligned = [&](const ScaleTensor& table) {
    const uintptr_t bytes = uintptr_t(wgmma_scale_keys(p.head_dim) * (table.is_bf16 ? 2 : 4));
    return reinterpret_cast<uintptr_t>(table.data) % bytes == 0;
  };
  const bool token_scales_fit = !(q_16bit && p.head_dim == 256 && !widened) && lane_copy_aligned(p.k_scale) &&
                                lane_copy_aligned(p.v_scale);
  const bool fp8_kv = p.paged ? p.quant == CacheQuant::kFp8 || (p.quant == CacheQuant::kBlockWiseFp8 && token_scales_fit)
                              : p.kv_type == ElementType::kFp8;
  return (p.q_type == ElementType::kFp8 || q_16bit) && fp8_kv && sm90_device() &&
         with_head_dim(p.head_dim, [](auto d) { return wgmma_kernels_built<decltype(d)::value>(); });
}

}  // namespace

namespace {

// Key splits of the decode kernel: every sequence takes a CTA per kv head (tiles never span
// sequences), `ctas` in all. Models the time in key tiles: waves of CTAs over the SMs' slots (as
// many per SM as the kernel's registers and shared memory let reside), each wave as long as a
// split's tiles plus a CTA's fixed cost (its start, the last tile's wait, the epilogue, the
// split's share of the combine), about 6 tiles (fitted to a sweep of splits on an H200,
// docs/perf-notes.md). Few splits leave slots empty or a wave mostly idle; many multiply the fixed
// cost.
int decode_splits(const AttentionParams& p, int64_t ctas, int64_t max_keys) {
  constexpr int64_t kCtaCostTiles = 6;
  const int keys_per_tile = tile_keys(p.head_dim, 1);
  const int64_t max_tiles = std::max<int64_t>((max_keys + keys_per_tile - 1) / keys_per_tile, 1);
  const int ctas_per_sm = with_head_dim(p.head_dim, [&](auto d) { return decode_ctas_per_sm<decltype(d)::value>(p); });
  const int64_t slots = int64_t(multiprocessor_count()) * ctas_per_sm;
  int64_t best_time = INT64_MAX;
  int splits = 1;
  for (int64_t s = 1; s <= std::min<int64_t>(max_tiles, 64); ++s) {
    const int64_t time = (ctas * s + slots - 1) / slots * ((max_tiles + s - 1) / s + kCtaCostTiles);
    if (time < best_time) best_time = time, splits = int(s);
  }
  return splits;
}

}  // namespace

AttentionPlan plan_attention(const AttentionParams& p, const HostBounds& bounds, int requested_splits) {
  const int group = p.heads_q / p.heads_kv;
  const int64_t rows = int64_t(p.tokens_q) * group;
  // Decode-like batches (16 rows or less per sequence) take the decode kernel's CTAs of 8 or 16
  // rows: a prefill tile of 64 or 128 rows would be mostly padding.
  const int warps_m = rows <= int64_t(16) * std::max(p.batch, 1) ? 1 : 4;
  // A prefill batch of several sequences may hold short ones too (a server's step: decodes beside
  // a chunk of a prompt). In a prefill tile each would cost a tile's work over its keys for a few
  // rows: the sequences of one decode CTA's rows or fewer (8, or 16 for groups of 9 to 16: a
  // decode's group of one token) go to the decode kernel, a launch of their own. 64 decodes of
  // 8192 keys beside a 2048-token chunk at head_dim 128 took the call 1.34x the time of the two
  // parts alone, now 1.09x (perf notes v90).
  const int short_rows = warps_m == 4 && p.batch > 1 && group <= 16 ? (group <= 8 ? 8 : 16) : 0;
  // The widened buffers (widened_rows): contiguous keys take their own rows and a tile's room
  // after each sequence; over a cache each sequence of the launch a slot of the bound's rows
  // (without a bound, none). Where short sequences have a launch of their own, the prefill
  // launch's have two queries or more each (short_rows is at least the group): the caller's
  // count of those bounds the slots (one more for any past it).
  const bool keys_bounded = !p.paged || bounds.key_bound > 0;
  const int64_t widened_keys =
      p.paged && bounds.key_bound > 0 ? widened_keys_for(std::min(bounds.key_bound, bounds.keys)) : 0;
  const int64_t widened_seqs = p.paged && short_rows > 0 && bounds.multi_token_seqs >= 0
                                   ? std::min<int64_t>(bounds.multi_token_seqs, p.batch)
                                   : p.batch;
  const double widened_bytes = double(widened_rows(p, widened_keys, int(widened_seqs))) * p.heads_kv * p.head_dim *
                               (p.q_type == ElementType::kFp8 ? 2 : 4);
  const bool widened =
      warps_m == 4 && keys_bounded && widened_seqs > 0 && widening_pays(p, widened_bytes, widened_seqs);
  const bool wgmma = warps_m == 4 && wgmma_prefill_applies(p, widened);
  const int short_splits =
      short_rows == 0        ? 0
      : requested_splits > 0 ? requested_splits
                             : decode_splits(short_launch(p, short_rows, 1), int64_t(p.batch) * p.heads_kv, bounds.keys);
  const int row_blocks = warps_m == 1 ? 1 : prefill_row_blocks(p.head_dim);
  const int rows_per_cta = wgmma          ? wgmma_rows(p.head_dim)
                           : warps_m == 1 ? decode_rows_per_cta(p)
                                          : 16 * warps_m * row_blocks;
  int splits = requested_splits;
  const int64_t row_tiles = std::max<int64_t>((rows + rows_per_cta - 1) / rows_per_cta, 1);
  if (splits <= 0 && warps_m == 1) {
    splits = decode_splits(p, std::max<int64_t>(row_tiles, p.batch) * p.heads_kv, bounds.keys);
  } else if (splits <= 0) {
    // Prefill: split the keys only where the CTAs leave multiprocessors idle, into no more CTAs
    // than there are multiprocessors, and only where each split keeps at least 2048 keys: a
    // split writes its rows in fp32 and the combine reads them back, which cost more than a few
    // key tiles (CTAs of 1k to 4k keys ran 1.5 to 2.6x slower with 2 splits than with none).
    // Every sequence starts a row tile of its own: at most row_tiles + batch of them.
    const int64_t ctas = (row_tiles + p.batch) * p.heads_kv;
    splits = int(std::clamp<int64_t>(std::min<int64_t>(multiprocessor_count() / ctas, bounds.keys / 2048), 1, 64));
  }
  // (widened: the buffers within widening_pays' 2 GiB, so widened_keys fits an int.)
  const bool takes_widened = wgmma && widened;
  return {warps_m, std::max(splits, 1), wgmma, takes_widened, takes_widened ? int(widened_keys) : 0,
          takes_widened ? int(widened_seqs) : 0, short_rows, short_splits};
}

// A tile past the bound stays inside its sequence's keys (a tile starts before the bound).
int64_t widened_keys_for(int64_t max_keys) { return (max_keys + 7) / 8 * 8 + kWidenedTileKeys; }

// The buffers' rows (widen_kv_kernel, widen_cached_kv_kernel): over a cache every slot's,
// contiguous every sequence's (the next sequence's first row).
int64_t widened_rows(const AttentionParams& p, int64_t widened_keys, int widened_seqs) {
  return p.paged ? widened_slots(p.batch, widened_seqs) * widened_keys : widened_row(false, p.batch, p.tokens_k, 0);
}
int64_t widened_rows(const AttentionParams& p) { return widened_rows(p, p.widened_keys, p.widened_seqs); }

void attention_cuda(const AttentionParams& p) {
  with_head_dim(p.head_dim, [&](auto d) { run_attention<decltype(d)::value>(p); });
}

}  // namespace fastattn
