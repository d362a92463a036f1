// The prefill main loop on sm_90a's warpgroup tensor cores (wgmma), for FP8 q over FP8 keys and
// values at head_dim 128: flash_attn_varlen with FP8 q/k/v and paged_attention over a cache_fp8
// cache. Everything else runs attention_kernel.cuh, whose row tiling, masking, scales and
// epilogue this kernel shares.
//
// A CTA is two warpgroups of 64 rows each; every 128-key tile of K and V is copied once (cp.async,
// kStages deep) and feeds both. S = Q K^T runs on the FP8 tensor cores straight from the stored
// bytes (m64n128k32, Q and K 128-byte swizzled in shared memory). P V runs in fp16 (m64n128k16,
// P from registers): P keeps 11 bits, as in the mma.sync kernel, so accuracy does not change.
// Its B operand must be K-major, i.e. V^T, so each tile's FP8 V is transposed and widened to fp16
// in shared memory by all threads. Each warpgroup pipelines its tiles: P V of tile j and Q K^T of
// tile j + 1 run on the tensor cores while the warps transpose V of tile j + 1 and then run its
// softmax, so the tensor cores are not idle during the softmax.
#pragma once

#include "attention_kernel.cuh"
#include "fastattn/wgmma.h"

namespace fastattn {
namespace attention_gpu {

struct WgmmaShape {
  static constexpr int kHeadDim = 128;  // one FP8 row = one 128-byte swizzled row
  static constexpr int kThreads = 256;  // two warpgroups
  static constexpr int kRows = 128, kKeys = 128, kStages = 3;
  static constexpr int kTileBytes = 128 * 128;  // Q, K or V of a tile in FP8; half of V^T in fp16
  static constexpr int kVtBytes = 2 * kTileBytes;  // V^T: keys 0-63, then keys 64-127
  static constexpr int kQOffset = 0;
  static constexpr int kVtOffset = kQOffset + kTileBytes;  // two V^T: tile j's is read while j+1's is written
  static constexpr int kStagesOffset = kVtOffset + 2 * kVtBytes;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K (wgmma swizzle), V (transpose swizzle)
  static constexpr int kSmemBytes = kStagesOffset + kStages * kStageBytes + 1024;  // + 1024-byte alignment
};

// The FP8 V staging tile: chunk c of key row r at chunk c ^ ((r / 8) % 8), so that the transpose's
// reads of 8 consecutive rows by 8 lanes fall in distinct banks.
FA_DEVICE uint32_t v_staging_offset(int row, int chunk) {
  return uint32_t(row) * 128 + (uint32_t(chunk ^ ((row >> 3) & 7)) << 4);
}

// FP8 V [128 keys][128 d] (staging layout) -> fp16 V^T [128 d][128 keys] as two swizzled K-major
// tiles of 64 keys. Lane 8a + b of warp w handles d = 4 (4w + a) .. + 3 and keys 8 ko .. 8 ko + 7
// for ko = b, b + 8: eight 4-byte reads, pairs of keys interleaved by byte_perm and widened by one
// cvt per two values, four 16-byte stores (one per d, 8 lanes filling one 128-byte row).
FA_DEVICE void transpose_v_to_fp16(uint32_t staging, uint32_t vt) {
  static_assert(WgmmaShape::kThreads == 256, "8 warps cover the 32 groups of 4 d");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, a = lane / 8, b = lane % 8;
  const int quad = 4 * warp + a;  // d = 4 * quad + e
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int ko = b + 8 * half;
    uint32_t x[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      asm volatile("ld.shared.u32 %0, [%1];"
                   : "=r"(x[i])
                   : "r"(staging + v_staging_offset(8 * ko + i, quad / 4) + (quad % 4) * 4));
    }
    uint32_t out[4][4];  // [e][key pair]
#pragma unroll
    for (int pair = 0; pair < 4; ++pair) {
      const uint32_t lo = __byte_perm(x[2 * pair], x[2 * pair + 1], 0x5140);  // d+0, d+1 of both keys
      const uint32_t hi = __byte_perm(x[2 * pair], x[2 * pair + 1], 0x7362);  // d+2, d+3
      UnpackE4m3::four(lo, out[0][pair], out[1][pair]);
      UnpackE4m3::four(hi, out[2][pair], out[3][pair]);
    }
    const uint32_t tile = vt + (ko / 8) * WgmmaShape::kTileBytes;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(tile + wgmma::swizzled_offset(4 * quad + e, ko % 8)),
                   "r"(out[e][0]), "r"(out[e][1]), "r"(out[e][2]), "r"(out[e][3]));
    }
  }
}

template <bool kPaged>
__global__ void __launch_bounds__(WgmmaShape::kThreads, 1) attention_wgmma_kernel(const AttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = WgmmaShape;
  constexpr int D = Shape::kHeadDim, kKeys = Shape::kKeys, kStages = Shape::kStages, kTile = Shape::kTileBytes;
  extern __shared__ uint8_t smem_raw[];
  __shared__ int cta_limit;
  __shared__ int unmapped_tile[kStages];
  const uint32_t smem = (smem_address(smem_raw) + 1023u) & ~1023u;  // swizzle atoms are 1024-aligned

  const int warpgroup = threadIdx.x / 128, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int kv_head = blockIdx.y, split = blockIdx.z;
  CtaRows cta;
  if (!locate_rows<Shape, kPaged>(p, kv_head, split, cta)) return;

  // This thread's rows: row_g and row_g + 8.
  const int row_g = cta.row0 + 64 * warpgroup + 16 * warp + g;
  const int limit[2] = {cta.key_limit(p, row_g), cta.key_limit(p, row_g + 8)};
  const int warp_min_limit = __reduce_min_sync(0xffffffffu, min(limit[0], limit[1]));
  if (threadIdx.x == 0) cta_limit = 0;
  if (threadIdx.x < kStages) unmapped_tile[threadIdx.x] = -1;
  const FoldedScales scales = fold_scales<kPaged>(p, cta.seq, kv_head);
  __syncthreads();
  atomicMax(&cta_limit, max(limit[0], limit[1]));

  // Q: the CTA's 128 rows, the bytes as they are (rows past the sequence repeat its last row).
  for (int i = threadIdx.x; i < Shape::kRows * 8; i += Shape::kThreads) {
    const int r = min(cta.row0 + i / 8, cta.rows - 1);
    const uint8_t* src = static_cast<const uint8_t*>(p.q) + (int64_t(cta.token(r)) * p.heads_q + cta.head(r, kv_head)) * D;
    cp_async<16>(smem + Shape::kQOffset + wgmma::swizzled_offset(i / 8, i % 8), src + (i % 8) * 16, true);
  }
  __syncthreads();
  const KeyRange range = split_key_range(p, cta.k_len, cta_limit, split, kKeys);

  const uint8_t* k_base = static_cast<const uint8_t*>(kPaged ? p.key_cache : p.k);
  const uint8_t* v_base = static_cast<const uint8_t*>(kPaged ? p.value_cache : p.v);
  auto stage_of = [&](int tile) { return smem + Shape::kStagesOffset + (tile % kStages) * Shape::kStageBytes; };
  auto load_tile = [&](int tile) {
    const uint32_t stage = stage_of(tile);
    const int key0 = range.begin + tile * kKeys;
#pragma unroll
    for (int it = 0; it < kKeys * 8 / Shape::kThreads; ++it) {  // unrolled: the table reads overlap
      const int i = threadIdx.x + it * Shape::kThreads, r = i / 8, c = i % 8, key = key0 + r;
      const int64_t row = key < range.end ? key_row<kPaged>(p, cta, key, kv_head) : -1;
      const bool valid = row >= 0;
      const int64_t offset = valid ? row * D + c * 16 : 0;
      cp_async<16>(stage + wgmma::swizzled_offset(r, c), k_base + offset, valid);
      cp_async<16>(stage + kTile + v_staging_offset(r, c), v_base + offset, valid);
      if (kPaged && !valid && key < range.end && c == 0) unmapped_tile[tile % kStages] = tile;
    }
  };

  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.0f;
  SoftmaxState2 state[2] = {SoftmaxState2::empty(), SoftmaxState2::empty()};
  const uint32_t q_tile = smem + Shape::kQOffset + warpgroup * 64 * 128;
  auto vt_of = [&](int tile) { return smem + Shape::kVtOffset + (tile % 2) * Shape::kVtBytes; };

  float s[64];      // S of the tile after the one whose P V runs; no initial value needed
  uint32_t pf[8][4];  // P as fp16 A fragments, one per 16 keys
  // S = Q K^T of `tile` on the FP8 tensor cores (asynchronous: a commit group of its own).
  auto issue_qk = [&](int tile) {
    wgmma::fence_registers(s);  // keeps the last reads of s (pack_p) before the fence
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < D / 32; ++ks)
      wgmma::mma_e4m3_m64n128k32(s, wgmma::descriptor(q_tile + 32 * ks), wgmma::descriptor(stage_of(tile) + 32 * ks),
                                 ks > 0);
    wgmma::commit();
  };
  // Scale, mask and online softmax of S in place (S becomes P); the factor for the accumulator.
  // Register i: row h = (i >> 1) & 1, key 8 (i / 4) + 2t + (i & 1).
  auto softmax = [&](int tile, float (&rescale)[2]) {
    const int key0 = range.begin + tile * kKeys;
    const bool need_mask = key0 + kKeys > warp_min_limit;
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      const float x = s[i] * scales.score;
      s[i] = need_mask && key0 + 8 * (i / 4) + 2 * t + (i & 1) >= limit[(i >> 1) & 1] ? -INFINITY : x;
    }
    // Columns of unmapped cache blocks: rare, and kept out of the common path (as a predicated
    // branch its 32 table reads cost as much as the softmax). Both keys of a pair share a block.
    if (kPaged && __builtin_expect(unmapped_tile[tile % kStages] == tile, 0)) {
#pragma unroll
      for (int i = 0; i < 64; i += 2) {
        if (p.layout.row(cta.seq, key0 + 8 * (i / 4) + 2 * t, kv_head) < 0) s[i] = s[i + 1] = -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int i = 2 * h; i < 64; i += 4) mx = fmaxf(mx, fmaxf(s[i], s[i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      rescale[h] = state[h].raise_max(fmaxf(state[h].m, mx));
      float sum = 0.0f;
#pragma unroll
      for (int i = 2 * h; i < 64; i += 4) {
        s[i] = state[h].weight(s[i]);
        s[i + 1] = state[h].weight(s[i + 1]);
        sum += s[i] + s[i + 1];
      }
      state[h].add_sum(sum);  // this lane's columns only: the lanes' sums add up at the end
    }
  };
  // The accumulator layout of S is the A layout of P.
  auto pack_p = [&] {
#pragma unroll
    for (int ks = 0; ks < 8; ++ks)
#pragma unroll
      for (int j = 0; j < 4; ++j) pf[ks][j] = MmaFp16::pack(s[8 * ks + 2 * j], s[8 * ks + 2 * j + 1]);
  };
  // Waits for this thread's copies of `tile`, then for everyone's: the barrier also orders the
  // last iteration's V^T writes before this one's P V, and everyone's P V before V^T is rewritten.
  auto tile_landed = [&] {
    cp_async_wait<kStages - 2>();
    wgmma::fence_shared_for_async();
    __syncthreads();
  };

  // Software pipeline (see the top): tile 0's S and softmax come first; the loop runs every tile
  // but the last, whose P V ends it. The loop body issues its wgmmas unconditionally: with the
  // next tile's Q K^T under an `if`, ptxas serialized every wgmma of the kernel (warning C7514).
#pragma unroll 1
  for (int tile = 0; tile < kStages - 1; ++tile) {
    if (tile < range.tiles) load_tile(tile);
    cp_async_commit();
  }
  float rescale[2];
  if (range.tiles > 0) {
    tile_landed();
    issue_qk(0);
    transpose_v_to_fp16(stage_of(0) + kTile, vt_of(0));
    wgmma::fence_shared_for_async();
    wgmma::wait<0>();
    wgmma::fence_registers(s);
    softmax(0, rescale);  // o is still 0: nothing to rescale
    pack_p();
  }
  // o += P V of `tile` (asynchronous: a commit group of its own).
  auto issue_pv = [&](int tile) {
    wgmma::fence_registers(o);  // keeps the rescale of o and the packing of P before the fence
    wgmma::fence_registers(pf);
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < 8; ++ks) {
      const uint32_t vt = vt_of(tile) + (ks / 4) * kTile + (ks % 4) * 32;
      wgmma::mma_f16_m64n128k16(o, pf[ks], wgmma::descriptor(vt));
    }
    wgmma::commit();
  };
#pragma unroll 1
  for (int tile = 0; tile + 1 < range.tiles; ++tile) {
    if (tile + kStages - 1 < range.tiles) load_tile(tile + kStages - 1);
    cp_async_commit();
    tile_landed();  // tile + 1 (its copies were issued kStages - 2 commits ago)
    issue_qk(tile + 1);
    issue_pv(tile);
    transpose_v_to_fp16(stage_of(tile + 1) + kTile, vt_of(tile + 1));
    wgmma::fence_shared_for_async();
    wgmma::wait<1>();  // Q K^T of tile + 1 (groups complete in order)
    wgmma::fence_registers(s);
    softmax(tile + 1, rescale);
    wgmma::wait<0>();  // P V of tile
    wgmma::fence_registers(o);
    wgmma::fence_registers(pf);
#pragma unroll
    for (int i = 0; i < 64; ++i) o[i] *= rescale[(i >> 1) & 1];
    pack_p();
  }
  if (range.tiles > 0) {
    __syncthreads();  // the last V^T is complete
    issue_pv(range.tiles - 1);
    wgmma::wait<0>();
    wgmma::fence_registers(o);
  }
  cp_async_wait<0>();

  // Epilogue: out = o / d (0 for a row that saw no key).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    state[h].d += __shfl_xor_sync(0xffffffffu, state[h].d, 1);
    state[h].d += __shfl_xor_sync(0xffffffffu, state[h].d, 2);
    const int r = row_g + 8 * h;
    if (r >= cta.rows) continue;
    const int token = cta.token(r), head = cta.head(r, kv_head);
    const float mult = state[h].inv_sum() * scales.out;
#pragma unroll
    for (int i = 2 * h; i < 64; i += 4) {
      store_output(p, split, token, head, 8 * (i / 4) + 2 * t, o[i] * mult);
      store_output(p, split, token, head, 8 * (i / 4) + 2 * t + 1, o[i + 1] * mult);
    }
    if (t == 0) store_lse(p, split, token, head, state[h].lse());
  }
#else
  __trap();  // launched only where the sm_90a build exists (see wgmma_prefill_available)
#endif
}

}  // namespace attention_gpu
}  // namespace fastattn
