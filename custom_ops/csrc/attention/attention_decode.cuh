// The decode main loop (mma.sync, sm_80 and newer): a few query rows per (sequence, kv head) over
// many keys. paged_attention and flash_attn_varlen take it when their batch has at most 16 rows
// of query x q head per sequence on average, and for a mixed batch's short sequences (SeqSelect).
//
// The tensor cores take the keys as the matrix rows and the CTA's query rows as the 8 columns
// (two column tiles for 16 rows): S^T = K Q^T, then O^T = V^T P^T. A GQA group of 4 q heads fills
// half of each MMA where, as the 16 rows of the A operand, it filled a quarter: half the MMAs,
// half the scores per lane in the softmax and half the accumulator registers. Each warp takes 16
// keys of every tile; the warps' states merge at the end. Tiles, copies, masks and scales are
// those of attention_kernel.cuh.
#pragma once

#include "attention_kernel.cuh"

namespace fastattn {
namespace attention_gpu {

// Registers are capped for 3 CTAs per SM, as many as three stages of head_dim 128 leave room for
// in shared memory (head_dim 64 fits more; the host plan asks the runtime).
constexpr int kDecodeCtasPerSm = 3;

template <int D, class Kv, bool kFp8QueryKeys, int kColumnTiles>
struct DecodeShape : KvTileLayout<D, Kv, tile_keys(D, 1)> {
  using Layout = KvTileLayout<D, Kv, tile_keys(D, 1)>;
  static constexpr int kNTiles = kColumnTiles;
  static constexpr int kRows = 8 * kNTiles;
  static constexpr int kWarps = Layout::kKeys / 16;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr bool kFp8QK = kFp8QueryKeys;
  static constexpr int kStages = 3;
  static constexpr int kQStride = q_stride(D, kFp8QK);
  static constexpr int kQBytes = kRows * kQStride;
  static constexpr int kAccFloats = D / 16 * kNTiles * 4;  // per lane
  static constexpr int kMergeBytes = kWarps * 32 * (kAccFloats + 4 * kNTiles) * 4;  // acc, m, d
  static_assert(kMergeBytes <= kStages * Layout::kStageBytes, "the warps' merge reuses the stages");
  static constexpr int kSmemBytes = kQBytes + kStages * Layout::kStageBytes;
  static constexpr bool kQInRegisters = D / 32 * kNTiles <= 8;
  static constexpr bool kTakesShort = true;  // a mixed batch's short sequences (SeqSelect::kShort)
  static constexpr bool kWidened = false;
};

// Query rows per decode CTA: a mixed batch's short sequences' short_rows (a CTA each); otherwise
// 16 where the batch averages more than 8 rows per sequence.
inline int decode_rows_per_cta(const AttentionParams& p) {
  if (p.select == SeqSelect::kShort) return p.short_rows;
  return int64_t(p.tokens_q) * (p.heads_q / p.heads_kv) > int64_t(8) * p.batch ? 16 : 8;
}

// A column's weights are taken against its running max while no score of the warp's tile exceeds
// that max by more than this (base 2): weights up to 2^8, far inside fp16, and no max reduction
// on the common path.
constexpr float kDecodeSlack = 8.0f;

template <class Shape, class Kv, bool kPaged, bool kTokenScales>
__global__ void __launch_bounds__(Shape::kThreads, kDecodeCtasPerSm) attention_decode_kernel(const AttentionParams p) {
  constexpr int D = Shape::kHeadDim, kKeys = Shape::kKeys, kStages = Shape::kStages, kChunks = D / 32;
  constexpr int kNTiles = Shape::kNTiles, kMTiles = D / 16, kWarps = Shape::kWarps;
  constexpr bool k8Bit = Kv::kBytes == 1;
  constexpr unsigned kAll = 0xffffffffu;
  using Mma = typename Kv::Mma;

  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ int unmapped_tile[kStages];  // a tile index whose load met an unmapped block

  wait_then_allow_next_grid();  // launched overlapping the kernel before it
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int kv_head = blockIdx.y, split = blockIdx.z;
  // This lane's columns: rows row0 + 8 nt + 2t + c of the sequence (c = 0, 1), as lane row 2 nt + c.
  auto lane_row = [&](const CtaRows& c, int i) { return c.row0 + 8 * (i / 2) + 2 * t + i % 2; };
  CtaStart<2 * kNTiles> start;
  if (!start_cta<Shape, Kv, kPaged>(p, kv_head, split, lane_row, smem, unmapped_tile, start)) return;
  const CtaRows& cta = start.cta;
  const int min_limit = start.min_limit;
  const float score_scale = start.score_scale;
  const int key_end = start.keys.end, num_tiles = start.keys.tiles;
  uint8_t* stages = smem + Shape::kQBytes;
  const KvTilePipeline<Shape, Kv, kPaged, kTokenScales> tiles{p, cta, kv_head, start.keys, stages, unmapped_tile};

  // Q^T as the B operand: lane (g, t) holds row 8 nt + g, elements 8t..8t+7 of each 32-element
  // chunk (the k index permuted as in attention_kernel.cuh); k-step 0 takes the first half.
  constexpr int kQElementBytes = Shape::kFp8QK ? 1 : 2;
  const uint32_t q_lane_addr = smem_address(smem + g * Shape::kQStride + t * 8 * kQElementBytes);
  auto q_fragment = [&](int c, int nt, uint32_t (&b)[4]) {
    const uint32_t addr = q_lane_addr + nt * 8 * Shape::kQStride + c * 32 * kQElementBytes;
    if constexpr (Shape::kFp8QK) {
      const uint2 x = lds64(addr);
      b[0] = x.x; b[1] = x.y; b[2] = b[3] = 0;
    } else {
      const uint4 x = lds128(addr);
      b[0] = x.x; b[1] = x.y; b[2] = x.z; b[3] = x.w;
    }
  };
  uint32_t q_regs[Shape::kQInRegisters ? kChunks : 1][kNTiles][4];
  if constexpr (Shape::kQInRegisters) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c)
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) q_fragment(c, nt, q_regs[c][nt]);
  }

  SoftmaxState2 state[kNTiles][2];  // the lane's columns; d sums only the lane's keys until the end
  float acc[kMTiles][kNTiles][4];   // O^T: rows are output columns d (see the epilogue), columns as S
  set_all(acc, 0.0f);
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) state[nt][0] = state[nt][1] = SoftmaxState2::empty();
  float v_ref = 0.0f, inv_ref = 0.0f;  // per-token v scales: the largest seen, so that p * scale / v_ref <= p

  tiles.start();
#pragma unroll 1
  for (int tile = 0; tile < num_tiles; ++tile) {
    const uint8_t* stage = tiles.await(tile);
    const int key0 = tiles.key0(tile);
    const int warp_key0 = warp * 16;  // this warp's keys: key0 + warp_key0 + [0, 16); the lane's: g, g + 8

    // Per-token scales of the lane's keys and the warp's largest v scale, read before S so that
    // their latency and the shuffles' hide under it. The branch on the largest comes after the
    // softmax: ahead of S it made S wait for the shuffles (1-4% slower). P is scaled by
    // v_scale / v_ref with v_ref the running max of the warp's v scales.
    float k_token[2], v_token[2], tile_ref = 0.0f;
    if constexpr (kTokenScales) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int key = warp_key0 + g + 8 * h;
        k_token[h] = staged_token_scale(stage + Shape::kKScaleOffset, p.k_scale, key, key_end - key0);
        v_token[h] = staged_token_scale(stage + Shape::kVScaleOffset, p.v_scale, key, key_end - key0);
        tile_ref = fmaxf(tile_ref, v_token[h]);
      }
#pragma unroll
      for (int o = 4; o < 32; o <<= 1) tile_ref = fmaxf(tile_ref, __shfl_xor_sync(kAll, tile_ref, o));
    }

    // S^T = K Q^T: lane (g, t) gets keys g and g + 8 (elements 0-1 and 2-3) of columns 2t, 2t + 1.
    float s[kNTiles][4];
    set_all(s, 0.0f);
    const uint32_t k_addr =
        smem_address(stage + Shape::kKOffset + (warp_key0 + g) * Shape::kKStride + t * 8 * Kv::kBytes);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      uint32_t b[kNTiles][4];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        if constexpr (Shape::kQInRegisters) {
#pragma unroll
          for (int i = 0; i < 4; ++i) b[nt][i] = q_regs[c][nt][i];
        } else {
          q_fragment(c, nt, b[nt]);
        }
      }
      const uint32_t addr = k_addr + c * 32 * Kv::kBytes;
      if constexpr (Shape::kFp8QK) {  // one k32 step on the stored bytes
        const uint2 lo = lds64(addr), hi = lds64(addr + 8 * Shape::kKStride);
        const uint32_t a[4] = {lo.x, hi.x, lo.y, hi.y};
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) MmaE4m3::mma(s[nt], a, b[nt][0], b[nt][1]);
      } else {
        uint32_t k16[2][4];  // keys g, g + 8: elements 8t..8t+7 of the chunk as 16-bit pairs
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if constexpr (k8Bit) {
            const uint2 w = lds64(addr + h * 8 * Shape::kKStride);
            Kv::Unpack::four(w.x, k16[h][0], k16[h][1]);
            Kv::Unpack::four(w.y, k16[h][2], k16[h][3]);
          } else {
            const uint4 w = lds128(addr + h * 8 * Shape::kKStride);
            k16[h][0] = w.x; k16[h][1] = w.y; k16[h][2] = w.z; k16[h][3] = w.w;
          }
        }
        const uint32_t a0[4] = {k16[0][0], k16[1][0], k16[0][1], k16[1][1]};
        const uint32_t a1[4] = {k16[0][2], k16[1][2], k16[0][3], k16[1][3]};
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          Mma::mma(s[nt], a0, b[nt][0], b[nt][1]);
          Mma::mma(s[nt], a1, b[nt][2], b[nt][3]);
        }
      }
    }

#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = scaled_score(s[nt][e], kTokenScales ? score_scale * k_token[e / 2] : score_scale);
    // Masks, in a branch of their own: only a tile that crosses some row's key limit or met an
    // unmapped cache block has any.
    const bool tile_unmapped = tiles.tile_unmapped(tile);
    if (key0 + kKeys > min_limit || tile_unmapped) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int key = key0 + warp_key0 + g + 8 * h;
        const bool mapped = !tile_unmapped || p.layout.row(cta.seq, key, kv_head) >= 0;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            if (!(mapped && key < start.limit[2 * nt + c])) s[nt][2 * h + c] = -INFINITY;
          }
      }
    }

    // Weights against the running max while every score of the warp's tile stays within the
    // slack of its column's max. Else (a column's first scores, or scores that rose) the column
    // maxima are taken first and a max moves where the tile's exceeds it by more than the slack.
    // An empty column (max -inf) makes x +inf or NaN: that tile takes the second path.
    bool settled = true;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) settled = settled && s[nt][e] - state[nt][e & 1].m <= kDecodeSlack;
    float w[kNTiles][4];
    if (__all_sync(kAll, settled)) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) w[nt][e] = fast_exp2(s[nt][e] - state[nt][e & 1].m);
    } else {
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          float mx = fmaxf(s[nt][c], s[nt][2 + c]);
#pragma unroll
          for (int o = 4; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(kAll, mx, o));  // the column's 8 lanes
          SoftmaxState2& st = state[nt][c];
          const float rescale = st.raise_max(st.max_with_slack(mx, kDecodeSlack));
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            acc[mt][nt][c] *= rescale;
            acc[mt][nt][2 + c] *= rescale;
          }
          w[nt][c] = st.weight(s[nt][c]);
          w[nt][2 + c] = st.weight(s[nt][2 + c]);
        }
    }
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int c = 0; c < 2; ++c) state[nt][c].add_sum(w[nt][c] + w[nt][2 + c]);
    if constexpr (kTokenScales) {  // p * v_scale / v_ref
      if (tile_ref > v_ref) {  // warp-uniform and rare: the accumulator moves to the new reference
        const float new_inv = __frcp_rn(tile_ref), ratio = v_ref * new_inv;
        v_ref = tile_ref;
        inv_ref = new_inv;
        scale_all(acc, ratio);
      }
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) w[nt][e] *= v_token[e / 2] * inv_ref;
    }

    // P^T as the B operand of O^T += V^T P^T: the 16-bit weights of keys g (and g + 8) x columns
    // 2t, 2t + 1 form an 8x8 matrix fragment, and its transpose gives lane (g, t) keys 2t, 2t + 1
    // (and 8 + 2t, 9 + 2t) of column g.
    uint32_t pb[kNTiles][2];
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      pb[nt][0] = movmatrix_trans(Mma::pack(w[nt][0], w[nt][1]));
      pb[nt][1] = movmatrix_trans(Mma::pack(w[nt][2], w[nt][3]));
    }
    if constexpr (k8Bit) {
      // A transposed 8x8 matrix of byte pairs gives lane (g, t) the bytes of keys 2t, 2t + 1 at
      // columns 2g, 2g + 1: regrouped by column they are the A fragment of output rows 2g
      // (fragment row g) and 2g + 1 (row g + 8) of a 16-column tile.
      const uint32_t v_addr =
          smem_address(stage + Shape::kVOffset + (warp_key0 + (lane & 15)) * Shape::kVStride + (lane >> 4) * 16);
#pragma unroll
      for (int q = 0; q < D / 32; ++q) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, v_addr + q * 32);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          uint32_t a[4];
          Kv::Unpack::four(__byte_perm(r[2 * h], 0, 0x3120), a[0], a[1]);
          Kv::Unpack::four(__byte_perm(r[2 * h + 1], 0, 0x3120), a[2], a[3]);
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) Mma::mma(acc[2 * q + h][nt], a, pb[nt][0], pb[nt][1]);
        }
      }
    } else {
      // Matrices: keys 0-7 x columns 0-7, keys 0-7 x 8-15, keys 8-15 x 0-7, keys 8-15 x 8-15.
      const uint32_t v_addr = smem_address(stage + Shape::kVOffset +
                                           (warp_key0 + (lane & 7) + (lane >> 4) * 8) * Shape::kVStride +
                                           ((lane >> 3) & 1) * 16);
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        uint32_t a[4];
        ldmatrix_x4_trans(a, v_addr + mt * 32);
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) Mma::mma(acc[mt][nt], a, pb[nt][0], pb[nt][1]);
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();

  // The lanes' partial sums (a column's 8 lanes hold different keys), the accumulator back in
  // real units (each warp kept its own v_ref), then the other warps' states folded into warp 0's.
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int c = 0; c < 2; ++c)
#pragma unroll
      for (int o = 4; o < 32; o <<= 1) state[nt][c].d += __shfl_xor_sync(kAll, state[nt][c].d, o);
  if constexpr (kTokenScales) scale_all(acc, v_ref);
  // Every warp's accumulator and states to shared memory (free now), lane-major so that every
  // access is one word per bank; then each warp folds all the warps' parts of its share of the
  // output tiles mt, in warp order, and stores them. (Warp 0 folding in the others alone, and
  // storing every column, took 2.6-3 us per CTA: 5% of a CTA at 64 x 8192 keys, a third at 8 x 1024.)
  __syncthreads();
  float* shared_acc = reinterpret_cast<float*>(stages);
  float* shared_m = shared_acc + kWarps * Shape::kAccFloats * 32;
  float* shared_d = shared_m + kWarps * 2 * kNTiles * 32;
  auto acc_slot = [&](int w, int mt, int nt, int e) { return (((w * kMTiles + mt) * kNTiles + nt) * 4 + e) * 32 + lane; };
  auto state_slot = [&](int w, int nt, int c) { return ((w * kNTiles + nt) * 2 + c) * 32 + lane; };
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) shared_acc[acc_slot(warp, mt, nt, e)] = acc[mt][nt][e];
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      shared_m[state_slot(warp, nt, c)] = state[nt][c].m;
      shared_d[state_slot(warp, nt, c)] = state[nt][c].d;
    }
  __syncthreads();

  // Epilogue: out = acc / d (0 for a row that saw no key). Accumulator row g (elements 0, 1) and
  // g + 8 (2, 3) of output tile mt are columns 16 mt + 2g and 2g + 1 for 8-bit V (see the P V
  // loop), 16 mt + g and g + 8 for 16-bit V.
  static_assert(kMTiles % kWarps == 0, "the warps share the output tiles evenly");
  constexpr int kWarpTiles = kMTiles / kWarps;
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int r = lane_row(cta, 2 * nt + c);
      if (r >= cta.rows) continue;
      SoftmaxState2 merged{shared_m[state_slot(0, nt, c)], shared_d[state_slot(0, nt, c)]};
      SoftmaxState2::Step steps[kWarps];
#pragma unroll
      for (int w = 1; w < kWarps; ++w) steps[w] = merged.add(SoftmaxState2{shared_m[state_slot(w, nt, c)], shared_d[state_slot(w, nt, c)]});
      const RowPlace place = row_place(p, split, cta, r, kv_head);
      const float mult = merged.inv_sum() * start.out_scale;
#pragma unroll
      for (int mt = warp * kWarpTiles; mt < (warp + 1) * kWarpTiles; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float o = shared_acc[acc_slot(0, mt, nt, 2 * h + c)];
#pragma unroll
          for (int w = 1; w < kWarps; ++w) o = steps[w].fold(o, shared_acc[acc_slot(w, mt, nt, 2 * h + c)]);
          const int d = k8Bit ? 16 * mt + 2 * g + h : 16 * mt + g + 8 * h;
          store_output(p, place.out + d, o * mult);
        }
      if (warp == 0 && g == 0) store_lse(p, place.lse, merged.lse());
    }
}

}  // namespace attention_gpu
}  // namespace fastattn
