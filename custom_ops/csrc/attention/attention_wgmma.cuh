// The prefill main loop on sm_90a's warpgroup tensor cores (wgmma), for FP8 q over FP8 keys and
// values at head_dim 128: flash_attn_varlen with FP8 q/k/v and paged_attention over a cache_fp8
// cache. Everything else runs attention_kernel.cuh, whose row tiling, masking, scales and
// epilogue this kernel shares.
//
// A CTA is three warpgroups over 128 rows. The first copies: every 128-key tile of K and V
// (cp.async, two tiles ahead) and V's transpose to fp16; mbarriers hand each buffer to the other
// two and back. Those two compute, 64 rows each. S = Q K^T runs on the FP8 tensor cores straight from
// the stored bytes (m64n128k32, Q and K 128-byte swizzled in shared memory). P V runs in fp16
// (m64n128k16, P from registers): P keeps 11 bits, as in the mma.sync kernel, so accuracy does not
// change. Its B operand must be K-major, i.e. V^T, hence the transpose. Each computing warpgroup
// keeps P V of tile j and Q K^T of tile j + 1 in flight while it runs the softmax of tile j + 1,
// and the two take turns to issue their wgmmas, so that one's softmax runs while the other's
// matrix products do.
#pragma once

#include "attention_kernel.cuh"
#include "fastattn/warp_roles.h"
#include "fastattn/wgmma.h"

namespace fastattn {
namespace attention_gpu {

struct WgmmaShape {
  static constexpr int kHeadDim = 128;  // one FP8 row = one 128-byte swizzled row
  static constexpr int kThreads = 384;  // the copying warpgroup, then two computing ones
  static constexpr int kRows = 128, kKeys = 128;
  // Copies run two tiles ahead of the transpose, which runs one ahead of the consumers: 4 stages
  // of K and V as copied, 2 of V^T.
  static constexpr int kStages = 4, kVtBuffers = 2;
  static constexpr int kTileBytes = 128 * 128;     // Q, K or V of a tile in FP8; half of V^T in fp16
  static constexpr int kVtBytes = 2 * kTileBytes;  // V^T: keys 0-63, then keys 64-127
  static constexpr int kStageBytes = 2 * kTileBytes;  // K (wgmma swizzle), then V (transpose swizzle)
  static constexpr int kQOffset = 0;
  static constexpr int kStagesOffset = kQOffset + kTileBytes;
  static constexpr int kVtOffset = kStagesOffset + kStages * kStageBytes;
  static constexpr int kSmemBytes = kVtOffset + kVtBuffers * kVtBytes + 1024;  // + 1024-byte alignment
  // Registers per thread after the hand-over (the CTA launches with 65536 / 384 = 168 each).
  static constexpr int kCopyRegisters = 80, kComputeRegisters = 208;
  static_assert(128 * kCopyRegisters + 256 * kComputeRegisters <= 65536, "the register file holds both roles");
};

// The FP8 V staging tile: chunk c of key row r at chunk c ^ ((r / 8) % 8), so that the transpose's
// reads of 8 consecutive rows by 8 lanes fall in distinct banks.
FA_DEVICE uint32_t v_staging_offset(int row, int chunk) {
  return uint32_t(row) * 128 + (uint32_t(chunk ^ ((row >> 3) & 7)) << 4);
}

// FP8 V [128 keys][128 d] (staging layout) -> fp16 V^T [128 d][128 keys] as two swizzled K-major
// tiles of 64 keys, by the 128 threads of the copying warpgroup. Lane 8a + b of warp w handles
// d = 4 quad .. 4 quad + 3 for quad = 4 (w + 4 round) + a, and keys 8 ko .. 8 ko + 7 for ko = b,
// b + 8: eight 4-byte reads, pairs of keys interleaved by byte_perm and widened by one cvt per two
// values, four 16-byte stores (one per d, 8 lanes filling one 128-byte row).
FA_DEVICE void transpose_v_to_fp16(uint32_t staging, uint32_t vt, int thread) {
  const int warp = thread / 32, lane = thread % 32, a = lane / 8, b = lane % 8;
#pragma unroll 1
  for (int round = 0; round < 2; ++round) {
    const int quad = 4 * (warp + 4 * round) + a;  // d = 4 * quad + e
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
}

template <bool kPaged>
__global__ void __launch_bounds__(WgmmaShape::kThreads, 1) attention_wgmma_kernel(const AttentionParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = WgmmaShape;
  namespace roles = warp_roles;
  constexpr int D = Shape::kHeadDim, kKeys = Shape::kKeys, kTile = Shape::kTileBytes;
  constexpr int kStages = Shape::kStages, kVtBuffers = Shape::kVtBuffers;
  extern __shared__ uint8_t smem_raw[];
  __shared__ int cta_limit;
  __shared__ int unmapped_tile[kStages];
  // ready[s]: the copying warpgroup's 128 threads arrive when a tile's K (stage s) and V^T are in;
  // k_free[s] / vt_free[b]: the computing warpgroups' 256 threads arrive when done with a K stage
  // (its Q K^T and softmax) / a V^T buffer (its P V).
  __shared__ __align__(8) uint64_t ready_bars[kStages], k_free_bars[kStages], vt_free_bars[kVtBuffers];
  const uint32_t smem = (smem_address(smem_raw) + 1023u) & ~1023u;  // swizzle atoms are 1024-aligned
  auto ready = [&](int tile) { return smem_address(&ready_bars[tile % kStages]); };
  auto k_free = [&](int tile) { return smem_address(&k_free_bars[tile % kStages]); };
  auto vt_free = [&](int tile) { return smem_address(&vt_free_bars[tile % kVtBuffers]); };
  auto stage_of = [&](int tile) { return smem + Shape::kStagesOffset + (tile % kStages) * Shape::kStageBytes; };
  auto vt_of = [&](int tile) { return smem + Shape::kVtOffset + (tile % kVtBuffers) * Shape::kVtBytes; };
  // A barrier of a ring of n completes its phase k when it has seen tile (its index) + k n: the
  // wait for `tile` checks the parity of phase tile / n, the wait for the release of the tile
  // that used the buffer before it that of the phase before.
  auto phase_of = [&](int tile, int n) { return uint32_t(tile / n) & 1u; };

  const int warpgroup = threadIdx.x / 128, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const bool computes = warpgroup > 0;
  const int kv_head = blockIdx.y, split = blockIdx.z;
  CtaRows cta;
  if (!locate_rows<Shape, kPaged>(p, kv_head, split, cta)) return;

  // A computing thread's rows: row_g and row_g + 8 (the copying threads take the CTA's first).
  const int row_g = cta.row0 + (computes ? 64 * (warpgroup - 1) + 16 * warp + g : 0);
  const int limit[2] = {cta.key_limit(p, row_g), cta.key_limit(p, row_g + 8)};
  const int warp_min_limit = __reduce_min_sync(0xffffffffu, min(limit[0], limit[1]));
  if (threadIdx.x == 0) cta_limit = 0;
  if (threadIdx.x < kStages) {
    unmapped_tile[threadIdx.x] = -1;
    roles::mbarrier_init(ready(threadIdx.x), 128);
    roles::mbarrier_init(k_free(threadIdx.x), 256);
    if (threadIdx.x < kVtBuffers) roles::mbarrier_init(vt_free(threadIdx.x), 256);
  }
  __syncthreads();
  atomicMax(&cta_limit, max(limit[0], limit[1]));

  // Q: the CTA's 128 rows, the bytes as they are (rows past the sequence repeat its last row).
  for (int i = threadIdx.x; i < Shape::kRows * 8; i += Shape::kThreads) {
    const int r = min(cta.row0 + i / 8, cta.rows - 1);
    const uint8_t* src = static_cast<const uint8_t*>(p.q) + (int64_t(cta.token(r)) * p.heads_q + cta.head(r, kv_head)) * D;
    cp_async<16>(smem + Shape::kQOffset + wgmma::swizzled_offset(i / 8, i % 8), src + (i % 8) * 16, true);
  }
  cp_async_commit();
  cp_async_wait<0>();
  wgmma::fence_shared_for_async();
  __syncthreads();
  const KeyRange range = split_key_range(p, cta.k_len, cta_limit, split, kKeys);

  if (!computes) {
    // The copying warpgroup: tiles j + 1 and j + 2 are in flight while tile j's V is transposed.
    roles::lower_registers<Shape::kCopyRegisters>();
    const int thread = threadIdx.x;
    const uint8_t* k_base = static_cast<const uint8_t*>(kPaged ? p.key_cache : p.k);
    const uint8_t* v_base = static_cast<const uint8_t*>(kPaged ? p.value_cache : p.v);
    auto load_tile = [&](int tile) {
      if (tile >= kStages) roles::mbarrier_wait(k_free(tile), phase_of(tile, kStages) ^ 1u);
      const uint32_t stage = stage_of(tile);
      const int key0 = range.begin + tile * kKeys;
#pragma unroll
      for (int it = 0; it < kKeys * 8 / 128; ++it) {  // unrolled: the table reads overlap
        const int i = thread + it * 128, r = i / 8, c = i % 8, key = key0 + r;
        const int64_t row = key < range.end ? key_row<kPaged>(p, cta, key, kv_head) : -1;
        const bool valid = row >= 0;
        const int64_t offset = valid ? row * D + c * 16 : 0;
        cp_async<16>(stage + wgmma::swizzled_offset(r, c), k_base + offset, valid);
        cp_async<16>(stage + kTile + v_staging_offset(r, c), v_base + offset, valid);
        if (kPaged && !valid && key < range.end && c == 0) unmapped_tile[tile % kStages] = tile;
      }
    };
    // Tile j landed for this thread: its V to V^T once everyone's copies are in and the buffer
    // is free, then K and V^T go to the computing warpgroups.
    auto hand_over = [&](int tile) {
      wgmma::fence_shared_for_async();  // this thread's K copies, for the wgmma reads
      roles::named_sync(1, 128);
      if (tile >= kVtBuffers) roles::mbarrier_wait(vt_free(tile), phase_of(tile, kVtBuffers) ^ 1u);
      transpose_v_to_fp16(stage_of(tile) + kTile, vt_of(tile), thread);
      wgmma::fence_shared_for_async();
      roles::mbarrier_arrive(ready(tile));
    };
#pragma unroll 1
    for (int tile = 0; tile < 2; ++tile) {
      if (tile < range.tiles) load_tile(tile);
      cp_async_commit();
    }
#pragma unroll 1
    for (int tile = 0; tile < range.tiles; ++tile) {
      if (tile + 2 < range.tiles) load_tile(tile + 2);
      cp_async_commit();
      cp_async_wait<2>();
      hand_over(tile);
    }
    cp_async_wait<0>();
    return;
  }

  // The computing warpgroups.
  roles::raise_registers<Shape::kComputeRegisters>();
  const int wg = warpgroup - 1;
  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.0f;
  SoftmaxState2 state[2] = {SoftmaxState2::empty(), SoftmaxState2::empty()};
  const uint32_t q_tile = smem + Shape::kQOffset + wg * 64 * 128;
  const FoldedScales scales = fold_scales<kPaged>(p, cta.seq, kv_head);

  // Turns at the tensor cores: warpgroup w issues its wgmmas after named barrier 2 + w, at which
  // the other one arrives once it has issued its own. The second warpgroup arrives once before
  // its first turn, so the first one starts, and not after its last, which no turn answers.
  const int issues = range.tiles > 0 ? range.tiles + 1 : 0;
  int issued = 0;
  auto take_turn = [&] { roles::named_sync(2 + wg, 256); };
  auto pass_turn = [&] {
    if (++issued < issues || wg == 0) roles::named_arrive(2 + (wg ^ 1), 256);
  };
  if (wg == 1 && issues > 0) roles::named_arrive(2, 256);

  float s[64];        // S of the tile after the one whose P V runs; no initial value needed
  uint32_t pf[8][4];  // P as fp16 A fragments, one per 16 keys
  // S = Q K^T of `tile` on the FP8 tensor cores (asynchronous: a commit group of its own).
  auto issue_qk = [&](int tile) {
    wgmma::fence_registers(s);  // keeps the last reads of s (pack_p) before the fence
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < D / 32; ++ks)
      wgmma::mma_e4m3_m64n128k32(s, wgmma::descriptor(q_tile + 32 * ks),
                                 wgmma::descriptor(stage_of(tile) + 32 * ks), ks > 0);
    wgmma::commit();
  };
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
  // Scale, mask and online softmax of S in place (S becomes P); the factor for the accumulator.
  // Register i: row h = (i >> 1) & 1, key 8 (i / 4) + 2t + (i & 1).
  auto softmax = [&](int tile, float (&rescale)[2]) {
    const int key0 = range.begin + tile * kKeys;
    const bool need_mask = key0 + kKeys > warp_min_limit;
#pragma unroll
    for (int i = 0; i < 64; ++i) s[i] *= scales.score;
    if (__builtin_expect(need_mask, 0)) {  // a branch, not predication: most tiles need no mask
#pragma unroll
      for (int i = 0; i < 64; ++i) {
        if (key0 + 8 * (i / 4) + 2 * t + (i & 1) >= limit[(i >> 1) & 1]) s[i] = -INFINITY;
      }
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

  // Software pipeline (see the top): tile 0's S and softmax come first; the loop runs every tile
  // but the last, whose P V ends it. The loop body issues its wgmmas unconditionally: with the
  // next tile's Q K^T under an `if`, ptxas serialized every wgmma of the kernel (warning C7514).
  float rescale[2];
  if (range.tiles > 0) {
    roles::mbarrier_wait(ready(0), phase_of(0, kStages));
    take_turn();
    issue_qk(0);
    pass_turn();
    wgmma::wait<0>();
    wgmma::fence_registers(s);
    softmax(0, rescale);  // o is still 0: nothing to rescale
    roles::mbarrier_arrive(k_free(0));
    pack_p();
  }
#pragma unroll 1
  for (int tile = 0; tile + 1 < range.tiles; ++tile) {
    roles::mbarrier_wait(ready(tile + 1), phase_of(tile + 1, kStages));
    take_turn();
    issue_qk(tile + 1);
    issue_pv(tile);
    pass_turn();
    wgmma::wait<1>();  // Q K^T of tile + 1 (groups complete in order)
    wgmma::fence_registers(s);
    softmax(tile + 1, rescale);
    roles::mbarrier_arrive(k_free(tile + 1));  // after the softmax, which reads the stage's unmapped_tile
    wgmma::wait<0>();  // P V of tile
    wgmma::fence_registers(o);
    wgmma::fence_registers(pf);
    roles::mbarrier_arrive(vt_free(tile));
    // Once a row's max settles most tiles leave it: skip the rescale where the whole warp's do.
    if (!__all_sync(0xffffffffu, rescale[0] == 1.0f && rescale[1] == 1.0f)) {
#pragma unroll
      for (int i = 0; i < 64; ++i) o[i] *= rescale[(i >> 1) & 1];
    }
    pack_p();
  }
  if (range.tiles > 0) {
    take_turn();
    issue_pv(range.tiles - 1);
    pass_turn();
    wgmma::wait<0>();
    wgmma::fence_registers(o);
  }

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
