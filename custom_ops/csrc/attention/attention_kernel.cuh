// The prefill main loop on the tensor cores (mma.sync m16n8k16, sm_80 and newer) for
// flash_attn_varlen and paged_attention, and what every attention kernel shares: row tiles, key
// splits, masks, scales, the K/V tile copies and the stores of finished rows.
//
// One CTA computes a tile of rows of one (sequence, kv head) over one split of its keys. Rows are
// the sequence's queries times the query heads that share the kv head (row r: query r / group,
// head kv_head * group + r % group), so one K/V tile feeds every head of the group. K/V tiles
// stream through shared memory in their storage format (cp.async, kStages deep) and become 16-bit
// in registers right before the tensor cores; every scale folds in fp32.
//
// The contraction dimension of Q.K^T is walked 32 elements at a time with lane t owning elements
// 8t..8t+7 of Q and K rows (a permutation of the k index, applied to both operands, so the dot
// products are unchanged): one 16- or 8-byte shared load per row gives a lane both k-steps.
#pragma once

#include <cstdint>

#include "attention.h"
#include "fastattn/launch.h"
#include "fastattn/mma.h"
#include "fastattn/softmax_state.h"

namespace fastattn {
namespace attention_gpu {

// K/V storage formats: bytes per element, the 16-bit type the tensor cores use for them and, for
// 8-bit storage, how four bytes unpack into two fp16 pairs.
struct KvBf16 {
  static constexpr int kBytes = 2;
  using Mma = MmaBf16;
};
struct KvFp16 {
  static constexpr int kBytes = 2;
  using Mma = MmaFp16;
};
struct KvFp8 {
  static constexpr int kBytes = 1;
  using Mma = MmaFp16;
  using Unpack = UnpackE4m3;
};
struct KvInt8 {
  static constexpr int kBytes = 1;
  using Mma = MmaFp16;
  using Unpack = UnpackInt8;
};

// Keys per tile: 64, or 32 where a warp's score and output registers are already large (prefill
// warps of two row blocks at head_dim 128; head_dim 256). The host plan sizes key splits by it.
constexpr int tile_keys(int head_dim, int row_blocks) {
  return head_dim == 256 || (head_dim == 128 && row_blocks == 2) ? 32 : 64;
}

// Prefill warps take 32 rows (two 16-row blocks) where registers allow: each K/V fragment then
// feeds two MMAs.
constexpr int prefill_row_blocks(int head_dim) { return head_dim <= 128 ? 2 : 1; }

// One stage of K/V tiles in shared memory, in storage format, with the per-token scales of
// block_wise_fp8 caches. Row strides in bytes are padded so that the fragment loads are free of
// bank conflicts: K rows are read 16 (8) bytes per lane, 4 lanes per row, 2 (4) rows per phase,
// so a stride of 64 (32) mod 128 bytes; V rows by ldmatrix, 8 rows of 16 bytes per matrix, so an
// odd multiple of 16.
template <int D, class Kv, int kTileKeys>
struct KvTileLayout {
  static constexpr int kHeadDim = D;
  static constexpr int kKeys = kTileKeys;
  static constexpr int kKStride = Kv::kBytes == 2 ? 2 * D + 64 : D + 32;
  static constexpr int kVStride = Kv::kBytes * D + 16;
  static constexpr int kScaleBytes = kKeys * 4;
  static constexpr int kKOffset = 0;
  static constexpr int kVOffset = kKOffset + kKeys * kKStride;
  static constexpr int kKScaleOffset = kVOffset + kKeys * kVStride;
  static constexpr int kVScaleOffset = kKScaleOffset + kScaleBytes;
  static constexpr int kStageBytes = kVScaleOffset + kScaleBytes;
};

// Q rows in shared memory: 16-bit (or the FP8 bytes), read like K rows.
constexpr int q_stride(int head_dim, bool fp8) { return fp8 ? head_dim + 32 : 2 * head_dim + 64; }

// kWarps warps split the CTA's rows; each owns kRowBlocks blocks of 16 rows, so every K/V
// fragment it loads (and converts) feeds that many MMAs.
template <int D, int kWarpsM, class Kv, bool kFp8QueryKeys, int kRowBlocksPerWarp>
struct TileShape : KvTileLayout<D, Kv, tile_keys(D, kRowBlocksPerWarp)> {
  using Layout = KvTileLayout<D, Kv, tile_keys(D, kRowBlocksPerWarp)>;
  static constexpr int kWarps = kWarpsM;
  static constexpr int kThreads = 32 * kWarpsM;
  static constexpr int kRowBlocks = kRowBlocksPerWarp;
  static constexpr int kRows = 16 * kRowBlocks * kWarpsM;
  // FP8 q over FP8 keys: Q.K^T on the FP8 tensor cores straight from the stored bytes.
  static constexpr bool kFp8QK = kFp8QueryKeys;
  static constexpr int kQElementBytes = kFp8QK ? 1 : 2;
  static constexpr int kStages = 2;
  static constexpr int kQStride = q_stride(D, kFp8QK);
  static constexpr int kQBytes = kRows * kQStride;
  static constexpr int kSmemBytes = kQBytes + kStages * Layout::kStageBytes;
  static constexpr bool kTakesShort = false;  // (SeqSelect::kShort: the decode kernel only)
  static constexpr bool kWidened = false;     // (K / V widened before it: the sm_90a kernel only)
};

// The first virtual tile of sequence b is floor(cu_q[b] * group / rows) + b: sequences never
// share a tile, the grid needs no host-side schedule, and tile -> sequence is a search over cu_q.
FA_DEVICE int64_t first_tile_of(const int32_t* cu_q, int b, int group, int rows) {
  return int64_t(cu_q[b]) * group / rows + b;
}

struct TileOrigin {
  int seq;         // batch: the rows past cu_seqlens_q[batch] (no sequence)
  int local_tile;  // tile index inside the sequence's rows
};

// The largest b in [0, batch] with key(b) <= x, key non-decreasing, by each warp (all 32 lanes):
// every round its lanes test 32 evenly spaced candidates at once, so a batch of up to 32^k
// sequences takes k dependent reads, where a binary search took log2(batch). In find_tile those
// reads come before everything else a CTA does (the first key tile's copies included), and a
// decode CTA's start is a measurable part of its time (batch 64: 7 reads in series became 2;
// 8 x 1024 keys 0.6 us faster).
template <class Key>
FA_DEVICE int warp_search(int batch, int64_t x, const Key& key) {
  const int lane = threadIdx.x % 32;
  int lo = 0, hi = batch;  // the answer lies in [lo, hi]
  while (lo < hi) {
    const int step = (hi - lo + 31) / 32;
    const int candidate = min(lo + step * (lane + 1), hi);
    const bool at_or_before = key(candidate) <= x;
    const int passed = __popc(__ballot_sync(0xffffffffu, at_or_before));  // a prefix of the lanes
    hi = min(lo + step * (passed + 1) - 1, hi);
    lo = min(lo + step * passed, hi);
  }
  return lo;
}

FA_DEVICE TileOrigin find_tile(const AttentionParams& p, int64_t tile, int group, int rows) {
  const int seq = warp_search(p.batch, tile, [&](int b) { return first_tile_of(p.cu_seqlens_q, b, group, rows); });
  return {seq, int(tile - first_tile_of(p.cu_seqlens_q, seq, group, rows))};
}

// The sequence of a token before cu_seqlens_q[batch], by each warp (all 32 lanes).
FA_DEVICE int sequence_of_token(const AttentionParams& p, int token) {
  return warp_search(p.batch, token, [&](int b) { return int64_t(p.cu_seqlens_q[b]); });
}

// Whether a launch takes a sequence of `rows` rows (query x q head of a kv head's group).
FA_HD bool selects(const AttentionParams& p, int rows) {
  return p.select == SeqSelect::kAll || (rows <= p.short_rows) == (p.select == SeqSelect::kShort);
}

// Over a cache widened before the kernel: the slot of sequence `seq` (which the launch takes),
// the count of those before it that it takes too, by each warp (all 32 lanes); widened_seqs for
// every one past those (AttentionParams::widened_seqs).
FA_DEVICE int widened_slot(const AttentionParams& p, int seq) {
  const int lane = threadIdx.x % 32, group = p.heads_q / p.heads_kv;
  int before = 0;
  for (int b0 = 0; b0 < seq && before < p.widened_seqs; b0 += 32) {
    const int b = b0 + lane;
    const int rows = b < seq ? (p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b]) * group : 0;
    before += __popc(__ballot_sync(0xffffffffu, rows > p.short_rows));  // (a launch's, as locate_tile_rows)
  }
  return min(before, p.widened_seqs);
}

// Queries past cu_seqlens_q[batch] belong to no sequence: zeros and lse -inf.
// `thread` of `threads` writes its share.
template <class Shape>
FA_DEVICE void write_tail_rows(const AttentionParams& p, int local_tile, int group, int kv_head, int thread, int threads) {
  constexpr int D = Shape::kHeadDim;
  const int first_token = p.cu_seqlens_q[p.batch];
  const int64_t tail_rows = int64_t(p.tokens_q - first_token) * group;
  const int64_t row0 = int64_t(local_tile) * Shape::kRows;
  for (int i = thread; i < Shape::kRows * D; i += threads) {
    const int64_t r = row0 + i / D;
    if (r >= tail_rows) break;
    const int token = first_token + int(r / group), head = kv_head * group + int(r % group);
    store_element(p.out, (int64_t(token) * p.heads_q + head) * D + i % D, p.out_type, 0.0f);
    if (i % D == 0) p.lse[int64_t(head) * p.tokens_q + token] = -INFINITY;
  }
}

// The rows of one CTA: a tile of one sequence's rows (query x head of the kv head's group).
struct CtaRows {
  int group;                         // q heads per kv head
  int seq, q_first, q_len, rows;     // rows = q_len * group
  int row0;                          // the CTA's first row
  int k_first, k_len;                // the sequence's keys (k_first: contiguous keys; a cache's
                                     // widened before the kernel: its slot's first row)

  FA_DEVICE int token(int r) const { return q_first + r / group; }
  FA_DEVICE int head(int r, int kv_head) const { return kv_head * group + r % group; }

  // Keys visible to row r: causal (bottom-right), kv_end. Rows past the sequence's end take the
  // last real row's (finite work whose results are dropped).
  FA_DEVICE int key_limit(const AttentionParams& p, int r) const {
    const int query = min(r, rows - 1) / group;
    int limit = k_len;
    if (p.causal) limit = min(limit, query + k_len - q_len + 1);
    if (p.kv_end != nullptr) limit = min(limit, p.kv_end[q_first + query]);
    return max(limit, 0);
  }
};

// Virtual row tiles of a kv head: every sequence's rows start a fresh tile, and the rows past the
// last sequence get tiles of their own (see first_tile_of). A mixed batch's short sequences
// (SeqSelect::kShort, the decode kernel's) take a tile each instead, the rows past the last one
// none: launch_row_tiles.
FA_HD int64_t virtual_row_tiles(const AttentionParams& p, int rows_per_tile) {
  return int64_t(p.tokens_q) * (p.heads_q / p.heads_kv) / rows_per_tile + p.batch + 2;
}
inline int64_t launch_row_tiles(const AttentionParams& p, int rows_per_tile) {
  return p.select == SeqSelect::kShort ? p.batch : virtual_row_tiles(p, rows_per_tile);
}

// The rows of virtual tile `tile` (of launch_row_tiles: with SeqSelect::kShort a sequence), by
// each warp that calls it (all 32 lanes). False when it has no rows of a sequence this launch
// takes: the tail rows it owns, if any, are written by `thread` of `threads`.
template <class Shape, bool kPaged>
FA_DEVICE bool locate_tile_rows(const AttentionParams& p, int64_t tile, int kv_head, int split, CtaRows& c, int thread,
                                int threads) {
  c.group = p.heads_q / p.heads_kv;
  TileOrigin origin;
  if constexpr (Shape::kTakesShort) {
    origin = p.select == SeqSelect::kShort ? TileOrigin{int(tile), 0} : find_tile(p, tile, c.group, Shape::kRows);
  } else {
    origin = find_tile(p, tile, c.group, Shape::kRows);
  }
  if (origin.seq == p.batch) {
    if (split == 0) write_tail_rows<Shape>(p, origin.local_tile, c.group, kv_head, thread, threads);
    return false;
  }
  c.seq = origin.seq;
  c.q_first = p.cu_seqlens_q[c.seq];
  c.q_len = p.cu_seqlens_q[c.seq + 1] - c.q_first;
  c.rows = c.q_len * c.group;
  c.row0 = origin.local_tile * Shape::kRows;
  c.k_first = kPaged ? 0 : p.cu_seqlens_k[c.seq];
  c.k_len = max(kPaged ? p.seq_lens_kv[c.seq] : p.cu_seqlens_k[c.seq + 1] - c.k_first, 0);
  // A mixed batch's launches each take their own sequences (short_rows is 0 for SeqSelect::kAll).
  if constexpr (Shape::kTakesShort) {
    if (p.select == SeqSelect::kShort) return c.row0 < c.rows && c.rows <= p.short_rows;
  }
  const bool takes = c.row0 < c.rows && c.rows > p.short_rows;
  if constexpr (kPaged && Shape::kWidened) {
    if (takes) c.k_first = widened_slot(p, c.seq) * p.widened_keys;
  }
  return takes;
}
// The CTA's rows, from its block index taken in reverse (the longest causal tiles start first).
template <class Shape, bool kPaged>
FA_DEVICE bool locate_rows(const AttentionParams& p, int kv_head, int split, CtaRows& c) {
  return locate_tile_rows<Shape, kPaged>(p, int64_t(gridDim.x) - 1 - blockIdx.x, kv_head, split, c, threadIdx.x,
                                         Shape::kThreads);
}

// The row (in head_dim elements) of a key of the CTA's sequence in k/v or the cache; -1 where
// its cache block is unmapped.
template <bool kPaged>
FA_DEVICE int64_t key_row(const AttentionParams& p, const CtaRows& c, int key, int kv_head) {
  return kPaged ? p.layout.row(c.seq, key, kv_head) : int64_t(c.k_first + key) * p.heads_kv + kv_head;
}

// Per-head scales folded in fp32: into the score (with log2(e): the main loop works in base 2)
// and into the output.
struct FoldedScales {
  float score, out;
};
template <bool kPaged>
FA_DEVICE FoldedScales fold_scales(const AttentionParams& p, int seq, int kv_head) {
  FoldedScales s{p.softmax_scale * kLog2e * p.q_descale.at(seq, kv_head, p.heads_kv), 1.0f};
  if (!kPaged) {
    s.score *= p.k_descale.at(seq, kv_head, p.heads_kv);
    s.out = p.v_descale.at(seq, kv_head, p.heads_kv);
  } else if (p.quant == CacheQuant::kInt8 || p.quant == CacheQuant::kFp8) {
    s.score *= p.k_scale.load(kv_head);
    s.out = p.v_scale.load(kv_head);
  }
  return s;
}

// A bf16 q meeting 8-bit keys goes to fp16 times 2^e, e chosen so that the tile's largest element
// lands in [2^14, 2^15): exact except for elements 2^29 times smaller than that maximum. 0 for a
// tile of zeros (or one holding inf or NaN, which then reach the scores as they are).
FA_DEVICE int fp16_query_exponent(float amax) {
  return amax > 0.0f && amax < INFINITY ? min(max(14 - ilogbf(amax), -100), 100) : 0;
}

// Q rows of the CTA -> shared memory as the tensor cores' 16-bit type (FP8 q over FP8 keys: the
// bytes as they are; a bf16 q over 8-bit keys times 2^fp16_query_exponent). Returns the inverse
// power, to fold into the score scale (1 where none). Rows past the sequence's end copy its last
// row. Called by every thread after a barrier that follows q_amax_bits = 0.
template <class Shape, class Kv>
FA_DEVICE float stage_queries(const AttentionParams& p, const CtaRows& cta, int kv_head, uint8_t* q_smem,
                              int& q_amax_bits) {
  constexpr int D = Shape::kHeadDim, kRows = Shape::kRows, kThreads = Shape::kThreads;
  using Mma = typename Kv::Mma;
  const bool rescale_q = Kv::kBytes == 1 && !Shape::kFp8QK && p.q_type == ElementType::kBf16;
  constexpr int kQGroups = kRows * D / 8;
  auto q_index = [&](int i) {  // element index of the first of 8 q elements of group i
    const int r = min(cta.row0 + i / (D / 8), cta.rows - 1);
    return (int64_t(cta.token(r)) * p.heads_q + cta.head(r, kv_head)) * D + (i % (D / 8)) * 8;
  };
  float q_mult = 1.0f, score_mult = 1.0f;
  if (rescale_q) {
    float amax = 0.0f;
    for (int i = threadIdx.x; i < kQGroups; i += kThreads) {
      const int64_t e = q_index(i);
      for (int j = 0; j < 8; ++j) amax = fmaxf(amax, fabsf(load_element(p.q, e + j, p.q_type)));
    }
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (threadIdx.x % 32 == 0) atomicMax(&q_amax_bits, __float_as_int(amax));  // non-negative floats order as ints
    __syncthreads();
    const int e = fp16_query_exponent(__int_as_float(q_amax_bits));
    q_mult = ldexpf(1.0f, e);
    score_mult = ldexpf(1.0f, -e);
  }
  for (int i = threadIdx.x; i < kQGroups; i += kThreads) {
    const int64_t e = q_index(i);
    if constexpr (Shape::kFp8QK) {
      *reinterpret_cast<uint2*>(q_smem + (i / (D / 8)) * Shape::kQStride + (i % (D / 8)) * 8) =
          *reinterpret_cast<const uint2*>(static_cast<const uint8_t*>(p.q) + e);
    } else {
      uint32_t packed[4];
      for (int j = 0; j < 4; ++j) {
        packed[j] = Mma::pack(load_element(p.q, e + 2 * j, p.q_type) * q_mult,
                              load_element(p.q, e + 2 * j + 1, p.q_type) * q_mult);
      }
      *reinterpret_cast<uint4*>(q_smem + (i / (D / 8)) * Shape::kQStride + (i % (D / 8)) * 16) =
          make_uint4(packed[0], packed[1], packed[2], packed[3]);
    }
  }
  return score_mult;
}

// Copies of the K/V tile whose first key is key0 (and its per-token scales) into `stage`, by
// cp.async from all Shape::kThreads threads; keys at key_end or past it read as zeros. A key of
// an unmapped cache block reads zeros too and sets `unmapped` to `tile` (its scores are masked).
// A tile starts at a multiple of kKeys, so where cache blocks hold at least kKeys keys (or keys are
// contiguous) its keys' rows are evenly spaced from its first key's: one row lookup per tile, and
// per copy only an add, not a table read and 64-bit address arithmetic.
template <class Shape, class Kv, bool kPaged, bool kTokenScales>
FA_DEVICE void load_kv_tile(const AttentionParams& p, const CtaRows& cta, int kv_head, int key0, int key_end,
                            uint8_t* stage, int& unmapped, int tile) {
  constexpr int kKeys = Shape::kKeys, kThreads = Shape::kThreads;
  constexpr int kRowBytes = Shape::kHeadDim * Kv::kBytes, kRowChunks = kRowBytes / 16, kCopies = kKeys * kRowChunks;
  const uint8_t* k_base = static_cast<const uint8_t*>(kPaged ? p.key_cache : p.k);
  const uint8_t* v_base = static_cast<const uint8_t*>(kPaged ? p.value_cache : p.v);
  const bool tile_in_one_block = !kPaged || p.layout.block_size >= kKeys;
  const int row_step_bytes = (kPaged ? 1 : p.heads_kv) * kRowBytes;
  const int64_t first_row = tile_in_one_block ? key_row<kPaged>(p, cta, key0, kv_head) : -1;
  const int64_t tile_offset = first_row >= 0 ? first_row * kRowBytes : 0;
#pragma unroll
  for (int it = 0; it < (kCopies + kThreads - 1) / kThreads; ++it) {  // unrolled: table reads overlap
    const int i = threadIdx.x + it * kThreads;
    if (kCopies % kThreads != 0 && i >= kCopies) break;
    const int r = i / kRowChunks, c = i % kRowChunks, key = key0 + r;
    bool valid;
    int64_t offset;
    if (tile_in_one_block) {
      valid = first_row >= 0 && key < key_end;
      offset = tile_offset + (valid ? r * row_step_bytes + c * 16 : 0);
    } else {
      const int64_t row = key < key_end ? key_row<kPaged>(p, cta, key, kv_head) : -1;
      valid = row >= 0;
      offset = valid ? row * kRowBytes + c * 16 : 0;
    }
    cp_async<16>(smem_address(stage + Shape::kKOffset + r * Shape::kKStride + c * 16), k_base + offset, valid);
    cp_async<16>(smem_address(stage + Shape::kVOffset + r * Shape::kVStride + c * 16), v_base + offset, valid);
    if (kPaged && !valid && key < key_end && c == 0) unmapped = tile;
  }
  if constexpr (kTokenScales) {  // two keys per copy: a pair never straddles a block
    for (int i = threadIdx.x; i < kKeys; i += kThreads) {
      const int pair = i % (kKeys / 2), key = key0 + 2 * pair;
      const ScaleTensor& table = i < kKeys / 2 ? p.k_scale : p.v_scale;
      uint8_t* dst = stage + (i < kKeys / 2 ? Shape::kKScaleOffset : Shape::kVScaleOffset);
      int64_t row = -1;
      if (key < key_end) row = tile_in_one_block ? (first_row < 0 ? -1 : first_row + 2 * pair) : p.layout.row(cta.seq, key, kv_head);
      const uint8_t* src = static_cast<const uint8_t*>(table.data);
      if (table.is_bf16) cp_async<4>(smem_address(dst + pair * 4), src + (row >= 0 ? row * 2 : 0), row >= 0);
      else cp_async<8>(smem_address(dst + pair * 8), src + (row >= 0 ? row * 4 : 0), row >= 0);
    }
  }
}


// A key's scale from the stage, 0 past the split's last key: scales are copied in pairs, and the
// partner of the last key may be any bytes (even NaN, which 0 * NaN would spread).
FA_DEVICE float staged_token_scale(const uint8_t* raw, const ScaleTensor& table, int key, int valid_keys) {
  const float scale = ScaleTensor{const_cast<uint8_t*>(raw), table.is_bf16}.load(key);  // the table's own format
  return key < valid_keys ? scale : 0.0f;
}

// The keys [begin, end) of this split for a CTA whose rows see keys below `limit`: the sequence's
// keys in num_splits equal chunks of whole tiles.
struct KeyRange {
  int begin, end, tiles;
};
FA_DEVICE KeyRange split_key_range(const AttentionParams& p, int k_len, int limit, int split, int tile_keys) {
  const int split_keys = (k_len + p.num_splits - 1) / p.num_splits;
  const int chunk = (split_keys + tile_keys - 1) / tile_keys * tile_keys;
  KeyRange k{split * chunk, min(split * chunk + chunk, limit), 0};
  k.tiles = k.end > k.begin ? (k.end - k.begin + tile_keys - 1) / tile_keys : 0;
  return k;
}

// Where a finished row goes: out / lse, or with key splits its split's partial results (merged
// by combine_splits_kernel). output_row_index is the element index of the row's column 0. (Not
// for SeqSelect::kShort's split results: row_place below.)
FA_DEVICE int64_t output_row_index(const AttentionParams& p, int split, int token, int head) {
  const int64_t row = int64_t(token) * p.heads_q + head;
  return (p.num_splits > 1 ? int64_t(split) * p.tokens_q * p.heads_q + row : row) * p.head_dim;
}
FA_DEVICE void store_output(const AttentionParams& p, int split, int token, int head, int d, float x) {
  const int64_t index = output_row_index(p, split, token, head) + d;
  if (p.num_splits > 1) p.partial_out[index] = x;
  else store_element(p.out, index, p.out_type, x);
}
FA_DEVICE void store_lse(const AttentionParams& p, int split, int token, int head, float lse) {
  if (p.num_splits > 1) p.partial_lse[(int64_t(split) * p.heads_q + head) * p.tokens_q + token] = lse;
  else p.lse[int64_t(head) * p.tokens_q + token] = lse;
}
// A short sequence's row r's split results (short_partial_rows).
FA_DEVICE int64_t short_partial_row(const AttentionParams& p, int split, int seq, int kv_head, int r) {
  return split * short_partial_rows(p) + (int64_t(seq) * p.heads_kv + kv_head) * p.short_rows + r;
}
// The same places as element indices, worked out once for a row's stores: its column 0's and its
// LSE's, in out and lse or in the partial results.
struct RowPlace {
  int64_t out, lse;
};
FA_DEVICE RowPlace row_place(const AttentionParams& p, int split, const CtaRows& c, int r, int kv_head) {
  const int token = c.token(r), head = c.head(r, kv_head);
  if (p.num_splits > 1 && p.select == SeqSelect::kShort) {
    const int64_t row = short_partial_row(p, split, c.seq, kv_head, r);
    return {row * p.head_dim, row};
  }
  const int64_t lse_split = p.num_splits > 1 ? int64_t(split) * p.heads_q : 0;
  return {output_row_index(p, split, token, head), (lse_split + head) * p.tokens_q + token};
}
FA_DEVICE void store_output(const AttentionParams& p, int64_t element, float x) {
  if (p.num_splits > 1) p.partial_out[element] = x;
  else store_element(p.out, element, p.out_type, x);
}
FA_DEVICE void store_lse(const AttentionParams& p, int64_t element, float lse) {
  (p.num_splits > 1 ? p.partial_lse : p.lse)[element] = lse;
}

// Every element of a (multi-dimensional) register array set to v, or multiplied by f.
FA_DEVICE void set_all(float& x, float v) { x = v; }
template <class T, int N>
FA_DEVICE void set_all(T (&a)[N], float v) {
#pragma unroll
  for (int i = 0; i < N; ++i) set_all(a[i], v);
}
FA_DEVICE void scale_all(float& x, float f) { x *= f; }
template <class T, int N>
FA_DEVICE void scale_all(T (&a)[N], float f) {
#pragma unroll
  for (int i = 0; i < N; ++i) scale_all(a[i], f);
}

// What a CTA knows once it has started: its rows, the key limits of the lane's rows, the scales
// (Q's power of two folded into the score's) and its split's keys.
template <int kLaneRows>
struct CtaStart {
  CtaRows cta;
  int limit[kLaneRows];  // key limits of the lane's rows
  int min_limit;         // the smallest limit of the warp's rows
  float score_scale, out_scale;
  KeyRange keys;
};

// A CTA's start, by every thread: its rows (false where it has none; the tail rows it owns, if
// any, are then written), the key limits of the lane's rows row_of(cta, i) for i < kLaneRows, Q in
// shared memory, the scales and the split's keys. `unmapped` (kStages entries) is reset.
template <class Shape, class Kv, bool kPaged, int kLaneRows, class RowOf>
FA_DEVICE bool start_cta(const AttentionParams& p, int kv_head, int split, const RowOf& row_of, uint8_t* smem,
                         int* unmapped, CtaStart<kLaneRows>& s) {
  __shared__ int cta_limit;    // the largest key limit of the CTA's rows
  __shared__ int q_amax_bits;  // the largest |q| of the tile, as float bits
  if (!locate_rows<Shape, kPaged>(p, kv_head, split, s.cta)) return false;
  int lane_min_limit = s.cta.k_len, lane_max_limit = 0;
#pragma unroll
  for (int i = 0; i < kLaneRows; ++i) {
    s.limit[i] = s.cta.key_limit(p, row_of(s.cta, i));
    lane_min_limit = min(lane_min_limit, s.limit[i]);
    lane_max_limit = max(lane_max_limit, s.limit[i]);
  }
  s.min_limit = __reduce_min_sync(0xffffffffu, lane_min_limit);
  if (threadIdx.x == 0) cta_limit = q_amax_bits = 0;
  if (threadIdx.x < Shape::kStages) unmapped[threadIdx.x] = -1;
  const FoldedScales scales = fold_scales<kPaged>(p, s.cta.seq, kv_head);
  __syncthreads();
  s.score_scale = scales.score * stage_queries<Shape, Kv>(p, s.cta, kv_head, smem, q_amax_bits);
  s.out_scale = scales.out;
  atomicMax(&cta_limit, lane_max_limit);
  __syncthreads();
  s.keys = split_key_range(p, s.cta.k_len, cta_limit, split, Shape::kKeys);
  return true;
}

// The cp.async pipeline over a CTA's key tiles, Shape::kStages deep: the first kStages - 1 tiles
// go out before the loop, and each tile's wait sends out the tile kStages - 1 ahead. A group is
// committed for every tile, sent or not, so that the wait counts stay right at the end.
template <class Shape, class Kv, bool kPaged, bool kTokenScales>
struct KvTilePipeline {
  static constexpr int kStages = Shape::kStages;
  const AttentionParams& p;
  const CtaRows& cta;
  int kv_head;
  KeyRange keys;
  uint8_t* stages;
  int* unmapped;  // [kStages]: a tile index whose copies met an unmapped cache block

  FA_DEVICE uint8_t* stage(int tile) const { return stages + (tile % kStages) * Shape::kStageBytes; }
  FA_DEVICE int key0(int tile) const { return keys.begin + tile * Shape::kKeys; }
  FA_DEVICE void load(int tile) const {
    load_kv_tile<Shape, Kv, kPaged, kTokenScales>(p, cta, kv_head, key0(tile), keys.end, stage(tile),
                                                  unmapped[tile % kStages], tile);
  }
  FA_DEVICE void start() const {
#pragma unroll 1
    for (int tile = 0; tile < kStages - 1; ++tile) {
      if (tile < keys.tiles) load(tile);
      cp_async_commit();
    }
  }
  // Every thread: tile's stage, once its copies have landed.
  FA_DEVICE const uint8_t* await(int tile) const {
    if (tile + kStages - 1 < keys.tiles) load(tile + kStages - 1);
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    __syncthreads();
    return stage(tile);
  }
  FA_DEVICE bool tile_unmapped(int tile) const { return kPaged && unmapped[tile % kStages] == tile; }
};

template <class Shape, class Kv, bool kPaged, bool kTokenScales>
__global__ void __launch_bounds__(Shape::kThreads, 1) attention_kernel(const AttentionParams p) {
  constexpr int D = Shape::kHeadDim, kKeys = Shape::kKeys, kStages = Shape::kStages, kChunks = D / 32;
  constexpr int kOutTiles = D / 8, kKeyTiles = kKeys / 8;
  constexpr int kRowBlocks = Shape::kRowBlocks;
  constexpr bool k8Bit = Kv::kBytes == 1;
  using Mma = typename Kv::Mma;

  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ int unmapped_tile[kStages];  // a tile index whose load met an unmapped block

  wait_then_allow_next_grid();  // launched overlapping the kernel before it
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int kv_head = blockIdx.y, split = blockIdx.z;
  // This lane's rows: the warp's first + 16 rb + g + 8 h, as lane row 2 rb + h.
  auto lane_row = [&](const CtaRows& c, int i) { return c.row0 + (warp * kRowBlocks + i / 2) * 16 + g + 8 * (i % 2); };
  CtaStart<2 * kRowBlocks> start;
  if (!start_cta<Shape, Kv, kPaged>(p, kv_head, split, lane_row, smem, unmapped_tile, start)) return;
  const CtaRows& cta = start.cta;
  const int seq = cta.seq, rows = cta.rows, warp_min_limit = start.min_limit;
  const float score_scale = start.score_scale;
  const int key_end = start.keys.end, num_tiles = start.keys.tiles;
  const int(&limit)[2 * kRowBlocks] = start.limit;

  uint8_t* stages = smem + Shape::kQBytes;
  const KvTilePipeline<Shape, Kv, kPaged, kTokenScales> tiles{p, cta, kv_head, start.keys, stages, unmapped_tile};

  // Q fragments (rows g and g+8 of row block rb), k-steps 2c and 2c+1 of chunk c.
  constexpr int kQChunkBytes = 32 * Shape::kQElementBytes;
  const uint32_t q_warp_addr =
      smem_address(smem + (warp * 16 * kRowBlocks + g) * Shape::kQStride + t * 8 * Shape::kQElementBytes);
  auto q_fragments = [&](int rb, int c, uint32_t (&a0)[4], uint32_t (&a1)[4]) {
    const uint32_t q_row_addr = q_warp_addr + rb * 16 * Shape::kQStride;
    if constexpr (Shape::kFp8QK) {  // one k32 step: a0 only
      const uint2 x = lds64(q_row_addr + c * kQChunkBytes), y = lds64(q_row_addr + 8 * Shape::kQStride + c * kQChunkBytes);
      a0[0] = x.x; a0[1] = y.x; a0[2] = x.y; a0[3] = y.y;
    } else {
      const uint4 x = lds128(q_row_addr + c * kQChunkBytes), y = lds128(q_row_addr + 8 * Shape::kQStride + c * kQChunkBytes);
      a0[0] = x.x; a0[1] = y.x; a0[2] = x.y; a0[3] = y.y;
      a1[0] = x.z; a1[1] = y.z; a1[2] = x.w; a1[3] = y.w;
    }
  };

  SoftmaxState2 state[kRowBlocks][2];  // rows g, g+8 of each row block
  float acc[kRowBlocks][kOutTiles][4];
  set_all(acc, 0.0f);
#pragma unroll
  for (int rb = 0; rb < kRowBlocks; ++rb) state[rb][0] = state[rb][1] = SoftmaxState2::empty();
  float v_ref = 0.0f, inv_ref = 0.0f;  // per-token v scales: the largest seen, so that p * scale / v_ref <= 1

  tiles.start();
#pragma unroll 1
  for (int tile = 0; tile < num_tiles; ++tile) {
    const uint8_t* stage = tiles.await(tile);
    const int key0 = tiles.key0(tile);

    // Per-token scales of this lane's columns (2t, 2t + 1 of each 8-key block), read before
    // Q.K^T so that their latency and the v_ref reduction hide under it. P is scaled by
    // v_scale / v_ref with v_ref the running max of the warp's v scales (P stays <= 1 in fp16).
    float k_token[kKeyTiles][2], v_token[kKeyTiles][2], ref_ratio = 1.0f;
    if constexpr (kTokenScales) {
      float tile_ref = 0.0f;
#pragma unroll
      for (int j = 0; j < kKeyTiles; ++j)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int col = 8 * j + 2 * t + c;
          k_token[j][c] = staged_token_scale(stage + Shape::kKScaleOffset, p.k_scale, col, key_end - key0);
          v_token[j][c] = staged_token_scale(stage + Shape::kVScaleOffset, p.v_scale, col, key_end - key0);
          tile_ref = fmaxf(tile_ref, v_token[j][c]);
        }
      tile_ref = fmaxf(tile_ref, __shfl_xor_sync(0xffffffffu, tile_ref, 1));  // a row's 4 lanes hold all its columns
      tile_ref = fmaxf(tile_ref, __shfl_xor_sync(0xffffffffu, tile_ref, 2));
      if (tile_ref > v_ref) {  // warp-uniform (every quad holds the same columns) and rare
        const float new_inv = __frcp_rn(tile_ref);
        ref_ratio = v_ref * new_inv;
        v_ref = tile_ref;
        inv_ref = new_inv;
      }
    }

    // S = Q K^T.
    float s[kRowBlocks][kKeyTiles][4];
#pragma unroll
    for (int rb = 0; rb < kRowBlocks; ++rb)
#pragma unroll
      for (int j = 0; j < kKeyTiles; ++j) s[rb][j][0] = s[rb][j][1] = s[rb][j][2] = s[rb][j][3] = 0.0f;
    const uint32_t k_addr =
        smem_address(stage + Shape::kKOffset + g * Shape::kKStride + t * 8 * Kv::kBytes);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      uint32_t a0[kRowBlocks][4], a1[kRowBlocks][4];
#pragma unroll
      for (int rb = 0; rb < kRowBlocks; ++rb) q_fragments(rb, c, a0[rb], a1[rb]);
#pragma unroll
      for (int j = 0; j < kKeyTiles; ++j) {
        const uint32_t addr = k_addr + j * 8 * Shape::kKStride + c * 32 * Kv::kBytes;
        if constexpr (Shape::kFp8QK) {
          const uint2 w = lds64(addr);
#pragma unroll
          for (int rb = 0; rb < kRowBlocks; ++rb) MmaE4m3::mma(s[rb][j], a0[rb], w.x, w.y);
        } else {
          uint32_t b[4];
          if constexpr (k8Bit) {
            const uint2 w = lds64(addr);
            Kv::Unpack::four(w.x, b[0], b[1]);
            Kv::Unpack::four(w.y, b[2], b[3]);
          } else {
            const uint4 w = lds128(addr);
            b[0] = w.x; b[1] = w.y; b[2] = w.z; b[3] = w.w;
          }
#pragma unroll
          for (int rb = 0; rb < kRowBlocks; ++rb) {
            Mma::mma(s[rb][j], a0[rb], b[0], b[1]);
            Mma::mma(s[rb][j], a1[rb], b[2], b[3]);
          }
        }
      }
    }

    // Scale, mask, online softmax.
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j)
#pragma unroll
      for (int rb = 0; rb < kRowBlocks; ++rb)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          s[rb][j][e] = scaled_score(s[rb][j][e], kTokenScales ? score_scale * k_token[j][e & 1] : score_scale);
    // Masks, in a branch of their own: only a tile that crosses some row's key limit or met an
    // unmapped cache block has any.
    const bool tile_unmapped = tiles.tile_unmapped(tile);
    if (key0 + kKeys > warp_min_limit || tile_unmapped) {
#pragma unroll
      for (int j = 0; j < kKeyTiles; ++j) {
        const int key = key0 + 8 * j + 2 * t;
        const bool mapped = !tile_unmapped || p.layout.row(seq, key, kv_head) >= 0;
#pragma unroll
        for (int rb = 0; rb < kRowBlocks; ++rb)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            if (!(mapped && key + (e & 1) < limit[2 * rb + e / 2])) s[rb][j][e] = -INFINITY;
          }
      }
    }
    float rescale[kRowBlocks][2];
#pragma unroll
    for (int rb = 0; rb < kRowBlocks; ++rb)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < kKeyTiles; ++j) mx = fmaxf(mx, fmaxf(s[rb][j][2 * h], s[rb][j][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        rescale[rb][h] = state[rb][h].raise_max(fmaxf(state[rb][h].m, mx));
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < kKeyTiles; ++j) {
          s[rb][j][2 * h] = state[rb][h].weight(s[rb][j][2 * h]);
          s[rb][j][2 * h + 1] = state[rb][h].weight(s[rb][j][2 * h + 1]);
          sum += s[rb][j][2 * h] + s[rb][j][2 * h + 1];
        }
        state[rb][h].add_sum(sum);  // this lane's columns only: the lanes' sums add up at the end
      }
    if constexpr (kTokenScales) {  // p * v_scale / v_ref
#pragma unroll
      for (int rb = 0; rb < kRowBlocks; ++rb) {
        rescale[rb][0] *= ref_ratio;
        rescale[rb][1] *= ref_ratio;
#pragma unroll
        for (int j = 0; j < kKeyTiles; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[rb][j][e] *= v_token[j][e & 1] * inv_ref;
      }
    }
    // Once a row's max settles, most tiles leave it alone: skip the accumulator's rescale when no
    // row of the warp moved.
    bool unchanged = true;
#pragma unroll
    for (int rb = 0; rb < kRowBlocks; ++rb) unchanged = unchanged && rescale[rb][0] == 1.0f && rescale[rb][1] == 1.0f;
    if (!__all_sync(0xffffffffu, unchanged)) {
#pragma unroll
      for (int rb = 0; rb < kRowBlocks; ++rb)
#pragma unroll
        for (int j = 0; j < kOutTiles; ++j) {
          acc[rb][j][0] *= rescale[rb][0]; acc[rb][j][1] *= rescale[rb][0];
          acc[rb][j][2] *= rescale[rb][1]; acc[rb][j][3] *= rescale[rb][1];
        }
    }

    // O += P V, 16 keys per k-step; P's accumulator layout is the A fragment's.
    const uint32_t v_addr =
        smem_address(stage + Shape::kVOffset + (lane & 15) * Shape::kVStride + (lane >> 4) * 16);
#pragma unroll
    for (int ks = 0; ks < kKeys / 16; ++ks) {
      uint32_t a[kRowBlocks][4];
#pragma unroll
      for (int rb = 0; rb < kRowBlocks; ++rb) {
        const float(&lo)[4] = s[rb][2 * ks];
        const float(&hi)[4] = s[rb][2 * ks + 1];
        a[rb][0] = Mma::pack(lo[0], lo[1]);
        a[rb][1] = Mma::pack(lo[2], lo[3]);
        a[rb][2] = Mma::pack(hi[0], hi[1]);
        a[rb][3] = Mma::pack(hi[2], hi[3]);
      }
      if constexpr (k8Bit) {
        // A transposed 8x8 matrix of 16-bit pairs gives lane (g, t) the bytes of keys 2t, 2t+1 at
        // columns 2g, 2g+1; regrouped by column they are the B fragments of two output tiles, one
        // of even and one of odd columns.
#pragma unroll
        for (int nq = 0; nq < D / 32; ++nq) {
          uint32_t r[4];
          ldmatrix_x4_trans(r, v_addr + ks * 16 * Shape::kVStride + nq * 32);
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            uint32_t even0, odd0, even1, odd1;
            Kv::Unpack::four(__byte_perm(r[2 * h], 0, 0x3120), even0, odd0);
            Kv::Unpack::four(__byte_perm(r[2 * h + 1], 0, 0x3120), even1, odd1);
#pragma unroll
            for (int rb = 0; rb < kRowBlocks; ++rb) {
              Mma::mma(acc[rb][4 * nq + 2 * h], a[rb], even0, even1);
              Mma::mma(acc[rb][4 * nq + 2 * h + 1], a[rb], odd0, odd1);
            }
          }
        }
      } else {
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
          uint32_t r[4];
          ldmatrix_x4_trans(r, v_addr + ks * 16 * Shape::kVStride + np * 32);
#pragma unroll
          for (int rb = 0; rb < kRowBlocks; ++rb) {
            Mma::mma(acc[rb][2 * np], a[rb], r[0], r[1]);
            Mma::mma(acc[rb][2 * np + 1], a[rb], r[2], r[3]);
          }
        }
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();

  // The lanes' partial sums, the accumulator back in real units (each warp kept its own v_ref).
#pragma unroll
  for (int rb = 0; rb < kRowBlocks; ++rb)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      state[rb][h].d += __shfl_xor_sync(0xffffffffu, state[rb][h].d, 1);
      state[rb][h].d += __shfl_xor_sync(0xffffffffu, state[rb][h].d, 2);
    }
  if constexpr (kTokenScales) scale_all(acc, v_ref);
  // Epilogue: out = acc / d (0 for a row that saw no key).
#pragma unroll
  for (int rb = 0; rb < kRowBlocks; ++rb)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = lane_row(cta, 2 * rb + h);
      if (r >= rows) continue;
      const int token = cta.token(r), head = cta.head(r, kv_head);
      const float mult = state[rb][h].inv_sum() * start.out_scale;
#pragma unroll
      for (int j = 0; j < kOutTiles; ++j)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          // Output column of accumulator (tile j, element c): the 8-bit V path interleaves even
          // and odd columns (see the P V loop).
          const int d = k8Bit ? 16 * (j / 2) + 4 * t + 2 * c + (j & 1) : 8 * j + 2 * t + c;
          store_output(p, split, token, head, d, acc[rb][j][2 * h + c] * mult);
        }
      if (t == 0) store_lse(p, split, token, head, state[rb][h].lse());
    }
}

// Merges the splits' normalized partial results of one (token, head) row, by a warp, through the
// shared softmax state: split s's LSE at partial_lse[lse_at(s)], its row at partial_out +
// row_at(s). The splits' log-sum-exps are folded across the warp first (lane i takes splits i,
// i + 32, ...), so the partial rows are then read with no dependence between splits: one split
// after another, each waiting on its load, took 11 us at 16 splits.
template <int D, class LseAt, class RowAt>
FA_DEVICE void combine_row(const AttentionParams& p, int token, int head, const LseAt& lse_at, const RowAt& row_at) {
  constexpr int kPerLane = D / 32, kUnroll = 4;
  const int lane = threadIdx.x % 32;
  auto split_state = [&](int s) { return SoftmaxState::from_lse(p.partial_lse[lse_at(s)]); };
  SoftmaxState state = SoftmaxState::empty();
  for (int s = lane; s < p.num_splits; s += 32) state.add(split_state(s));
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {  // every lane ends with the same state
    state.add(SoftmaxState{__shfl_xor_sync(0xffffffffu, state.m, offset), __shfl_xor_sync(0xffffffffu, state.d, offset)});
  }
  const float inv = state.inv_sum();
  float acc[kPerLane] = {};
  for (int s0 = 0; s0 < p.num_splits; s0 += 32) {
    // Weight of split s0 + lane; an empty split has weight 0 and is never read.
    const float lane_weight = s0 + lane < p.num_splits ? split_state(s0 + lane).rescale_to(state.m) * inv : 0.0f;
    const int count = min(32, p.num_splits - s0);
    for (int k0 = 0; k0 < count; k0 += kUnroll) {
      float w[kUnroll], x[kUnroll][kPerLane];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {  // all loads first
        w[u] = __shfl_sync(0xffffffffu, lane_weight, (k0 + u) & 31);
        if (k0 + u >= count) w[u] = 0.0f;
        const float* src = p.partial_out + row_at(s0 + k0 + u);
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) x[u][i] = w[u] != 0.0f ? src[lane + 32 * i] : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) acc[i] += w[u] * x[u][i];
    }
  }
  const int64_t row = int64_t(token) * p.heads_q + head;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) store_element(p.out, row * D + lane + 32 * i, p.out_type, acc[i]);
  if (lane == 0) p.lse[int64_t(head) * p.tokens_q + token] = state.lse();
}

// The split results of every (token, head) row, a warp each; kLongOnly: but the short sequences'
// of a mixed batch (SeqSelect::kLong; the kShort launch writes those). kLongOnly is a kernel of
// its own: a first build with the search for a row's sequence in the one kernel, behind a branch
// that a batch of decodes never takes (and the indices written another way), measured that
// batch's combine at twice the time (8 x 1024 keys, 6 splits: 5.8 to 11 us). Without it the
// kernel takes the registers it took before the mixed launches.
template <int D, bool kLongOnly>
__global__ void combine_splits_kernel(const AttentionParams p) {
  wait_then_allow_next_grid();  // the splits' results come from the kernel just before
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= int64_t(p.tokens_q) * p.heads_q) return;
  const int token = int(row / p.heads_q), head = int(row % p.heads_q);
  if (token >= p.cu_seqlens_q[p.batch]) return;  // written by the main kernel
  if constexpr (kLongOnly) {
    const int seq = sequence_of_token(p, token);
    if (!selects(p, (p.cu_seqlens_q[seq + 1] - p.cu_seqlens_q[seq]) * (p.heads_q / p.heads_kv))) return;
  }
  combine_row<D>(
      p, token, head, [&](int s) { return (int64_t(s) * p.heads_q + head) * p.tokens_q + token; },
      [&](int s) { return ((int64_t(s) * p.tokens_q + token) * p.heads_q + head) * D; });
}

// The split results of a mixed batch's short sequences (SeqSelect::kShort): a CTA per (sequence,
// kv head), a warp per row.
template <int D>
__global__ void combine_short_splits_kernel(const AttentionParams p) {
  wait_then_allow_next_grid();
  const int seq = blockIdx.x, kv_head = blockIdx.y, group = p.heads_q / p.heads_kv;
  const int q_first = p.cu_seqlens_q[seq];
  const int rows = (p.cu_seqlens_q[seq + 1] - q_first) * group;
  if (!selects(p, rows)) return;
  for (int r = threadIdx.x / 32; r < rows; r += blockDim.x / 32) {
    auto partial = [&](int s) { return short_partial_row(p, s, seq, kv_head, r); };
    combine_row<D>(p, q_first + r / group, kv_head * group + r % group, partial, [&](int s) { return partial(s) * D; });
  }
}

}  // namespace attention_gpu
}  // namespace fastattn
