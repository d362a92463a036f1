// K and V widened to fp16 once per call, before the sm_90a prefill kernel that then copies them
// by tensor copies (kWidenedBefore in attention_wgmma_shape.cuh): the cache's keys
// (widen_cached_kv_kernel) or contiguous FP8 keys (widen_kv_kernel). The plan decides where this
// pays (widening_pays in attention.cu); attention_launch.cuh launches it.
#pragma once

#include <cstdint>

#include "attention_kernel.cuh"
#include "attention_wgmma_shape.cuh"

namespace fastattn {
namespace attention_gpu {

// 16 FP8 values at `from` (none: zeros) -> fp16 at `to`, exactly as the copying warpgroup's
// widen_to_fp16 (attention_wgmma.cuh) converts them; NaN throughout where `nan`.
FA_DEVICE void widen_chunk(const void* from, void* to, bool nan) {
  uint4 x = make_uint4(0u, 0u, 0u, 0u);
  if (from != nullptr) x = *static_cast<const uint4*>(from);
  uint4 h[2];
  UnpackE4m3::four(x.x, h[0].x, h[0].y);
  UnpackE4m3::four(x.y, h[0].z, h[0].w);
  UnpackE4m3::four(x.z, h[1].x, h[1].y);
  UnpackE4m3::four(x.w, h[1].z, h[1].w);
  if (nan) {
    constexpr uint32_t kNaNs = 0x7e007e00u;  // two fp16 NaNs
    h[0] = h[1] = make_uint4(kNaNs, kNaNs, kNaNs, kNaNs);
  }
  static_cast<uint4*>(to)[0] = h[0];
  static_cast<uint4*>(to)[1] = h[1];
}

// The tensor the widening's blocks with this blockIdx.y take: V (0) into p.values_fp16, or with a
// 16-bit q K (1) into p.keys_fp16.
FA_DEVICE void widened_tensor(const AttentionParams& p, const void*& from, uint16_t*& to) {
  const bool keys = blockIdx.y == 1;
  from = keys ? (p.paged ? p.key_cache : p.k) : (p.paged ? p.value_cache : p.v);
  to = static_cast<uint16_t*>(keys ? p.keys_fp16 : p.values_fp16);
}

// The cache's V (and K) of the first `widened_keys` keys of every sequence the prefill launch
// takes -> fp16, into its slot (widened_slot; [slots x widened_keys, heads_kv, D]), zeros past the
// sequence and at unmapped blocks: the paged kernel's kWidenedBefore input. Only the rows the
// kernel can read are written: its tiles start at multiples of a tile below the sequence's keys,
// so rows past the sequence's last tile are left as they were (a sequence of few keys beside a
// long one writes its own keys, not the bound's). A block per 8 keys of a sequence at a time, a
// thread per 16 columns of a row. Launched overlapping the kernel before it (which may write the
// cache). A sequence longer than the bound the buffer was sized by, rounded up to 8 (past that its
// tiles might run into the next slot's rows), gets NaN in all its slot's rows, and so do the
// sequences past the caller's count that share the last slot: their rows come out NaN rather than
// silently wrong.
template <int D>
__global__ void widen_cached_kv_kernel(const AttentionParams p) {
  wait_then_allow_next_grid();
  constexpr int kChunks = D / 16, kKeys = WgmmaShape<D>::kKeys, kGroupKeys = 8;
  const void* source;
  uint16_t* widened;
  widened_tensor(p, source, widened);
  const int groups_per_seq = p.widened_keys / kGroupKeys;  // (the bound rounded up to 8, plus 128 keys)
  const int group_chunks = kGroupKeys * p.heads_kv * kChunks, group = p.heads_q / p.heads_kv;
  int slot_seq = -1, slot = 0;  // the last sequence's slot
  for (int64_t g = blockIdx.x; g < int64_t(p.batch) * groups_per_seq; g += gridDim.x) {
    const int seq = int(g / groups_per_seq), key0 = int(g % groups_per_seq) * kGroupKeys;
    if ((p.cu_seqlens_q[seq + 1] - p.cu_seqlens_q[seq]) * group <= p.short_rows) continue;  // (not the launch's)
    if (seq != slot_seq) slot = widened_slot(p, seq), slot_seq = seq;
    const int keys = p.seq_lens_kv[seq];
    // (widened_keys_for's room)
    const bool nan = keys > p.widened_keys - kWidenedTileKeys || slot == p.widened_seqs;
    if (key0 >= (nan ? p.widened_keys : (keys + kKeys - 1) / kKeys * kKeys)) continue;
    for (int i = threadIdx.x; i < group_chunks; i += blockDim.x) {
      const int c = i % kChunks, head = i / kChunks % p.heads_kv, key = key0 + i / (kChunks * p.heads_kv);
      const int64_t row = key < keys ? p.layout.row(seq, key, head) : -1;
      const int64_t r = widened_row(true, seq, int64_t(slot) * p.widened_keys, key) * p.heads_kv + head;
      widen_chunk(row >= 0 ? static_cast<const uint8_t*>(source) + row * D + c * 16 : nullptr, widened + r * D + c * 16,
                  nan);
    }
  }
}

// Contiguous FP8 V (and K) ([tokens_k, heads_kv, D]) -> fp16, sequence b's key i at widened_row:
// zeros past each sequence's keys up to its last tile (the rest of the tile's room after it, never
// read, is left as it was): the contiguous kernel's kWidenedBefore input. A thread per 16 columns
// of a row, which finds its sequence by bisection.
template <int D>
__global__ void widen_kv_kernel(const AttentionParams p) {
  wait_then_allow_next_grid();
  constexpr int kChunks = D / 16, kKeys = WgmmaShape<D>::kKeys;
  const void* source;
  uint16_t* widened;
  widened_tensor(p, source, widened);
  const int64_t row_chunks = int64_t(p.heads_kv) * kChunks;
  const int64_t chunks = widened_row(false, p.batch, p.tokens_k, 0) * row_chunks;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < chunks; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / row_chunks;
    const int rest = int(i % row_chunks), head = rest / kChunks, c = rest % kChunks;
    int lo = 0, hi = p.batch - 1;  // the last sequence whose rows start at or before r
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (widened_row(false, mid, p.cu_seqlens_k[mid], 0) <= r) lo = mid;
      else hi = mid - 1;
    }
    const int first = p.cu_seqlens_k[lo], keys = p.cu_seqlens_k[lo + 1] - first;
    const int key = int(r - widened_row(false, lo, first, 0));
    if (key < 0 || key >= (keys + kKeys - 1) / kKeys * kKeys) continue;  // (rows before cu_seqlens_k[0])
    const int64_t row = (int64_t(first) + key) * p.heads_kv + head;
    widen_chunk(key < keys ? static_cast<const uint8_t*>(source) + row * D + c * 16 : nullptr,
                widened + (r * p.heads_kv + head) * D + c * 16, false);
  }
}

}  // namespace attention_gpu
}  // namespace fastattn
