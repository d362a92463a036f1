// The prefill main loop on sm_90a's warpgroup tensor cores (wgmma), over FP8 keys and values
// (flash_attn_varlen with FP8 k/v, paged_attention over a cache_fp8 cache), FP8, bf16 or fp16 q,
// head_dim 64, 128 and 256. Everything else runs attention_kernel.cuh, whose row tiling, masking,
// scales and epilogue this kernel shares.
//
// A CTA is a copying warpgroup and two computing ones over 128 rows; three over 192 rows at
// head_dim 64, where the softmax weighs most against a tile's matrix products. The copying one
// copies every tile of K and V (128 keys, 64 at head_dim 256; two tiles ahead) and widens V to
// fp16 (with fp8_pv transposes it; with FP8 q at head_dim 256 a second copying warpgroup widens
// it; with FP8 q at head_dim 128 over contiguous FP8 keys, and over block_wise_fp8 given a bound
// on the keys, it copies V as attention_widen.cuh's kernels widened it once per
// call, kWidenedBefore); mbarriers hand each buffer to the computing ones and back.
// Whole tiles travel by tensor copies (TMA: one box per tile, or per cache block), issued by one
// warp (two for small blocks); a tile that runs past the sequence's end by cp.async, a row per
// thread, so that keys past the sequence read as zeros (with kWidenedBefore its fp16 V still by tensor
// copies: the widening before the kernel wrote those zeros). The
// computing warpgroups take 64 rows each. S = Q K^T runs on the FP8 tensor cores straight from the
// stored bytes (m64nKk32, Q and K swizzled in shared memory; Q in registers where that paid). P V
// runs in fp16 (m64nDk16, P from registers, V N-major; two n128 halves at head_dim 256; at head_dim
// 64 with FP8 q 8 more columns of ones give P's row sums): P keeps 11 bits, as in the mma.sync
// kernel, so accuracy does not change. The ops' opt-in fp8_pv (kFp8Pv: head_dim 64 and 128, FP8 q) runs P V
// on the FP8 tensor cores instead: P in e4m3, V transposed by the copying warpgroup (FP8 wgmma
// operands must be K-major), o added into fp32 sums every few tiles; where the softmax takes the
// max first, 8 rows of e4m3 ones after V^T give P's row sums. Each computing warpgroup
// keeps P V of tile j and Q K^T of tile j + 1 in flight while it runs the softmax of tile j + 1,
// and they take turns to issue their wgmmas, so that one's softmax runs while the others' matrix
// products do. Where that was faster (kWeighFirst), the
// softmax weighs a tile against the row's running max and checks the tile's max afterwards
// (softmax, settle_max).
//
// With FP8 q at head_dim 128, and at 64 over a cache (not fp8_pv there), and with a 16-bit q over
// K and V widened before the kernel (kKV16Copied), the grid is a CTA per multiprocessor, and each
// CTA runs row tiles ("items") one after another, taken off a counter (kPersistent). A copying
// warp finds the next item's rows while the current one runs or ends; the copying warpgroup sends
// its Q (into Q's buffer, free once the computing warpgroups hold Q in registers; where Q K^T reads
// Q from shared memory, into the other of two) and first tiles while the computing ones stage
// their rows for the epilogue in places of the stage ring of their own (kEpiloguePlaces; fp8_pv's
// in its fp32 sums; kKV16Copied's in the stages, which hold no tile, and there each computing
// warpgroup stages its 16-bit q itself). A CTA's start (its rows found, Q and the first tiles on
// their way: some 3 us) is then paid once per multiprocessor rather than once per row tile.
//
// The shape (tiles, stages, shared-memory layout, register split) is in attention_wgmma_shape.cuh.
//
// A 16-bit q (kFp8Q false) goes to shared memory as fp16, a bf16 q times a power of two as in the
// mma.sync kernel (so every element stays exact), each computing warpgroup its own rows while the
// first tile is copied; the copying warpgroup widens K to fp16 as it does V. S = Q K^T then runs
// on the fp16 tensor cores (m64nKk16, both operands K-major in shared memory) with the mma.sync
// kernel's products. The copying warpgroup frees a stage itself once it has widened it; fp16 Q and
// K leave room for two of the four FP8 stages at head_dim 128 and for one at 256. Over contiguous
// FP8 keys, and over either cache given a bound on the keys, K and V come widened once per call
// instead (kWidenedBefore, kKV16Copied): one copying warp sends them straight into the fp16
// buffers by tensor copies; the FP8 stages hold no tile (the epilogue may stage its rows there;
// at head_dim 256 they take no room, which leaves room for per-token scales).
#pragma once

#include <type_traits>

#include "attention_kernel.cuh"
#include "attention_wgmma_shape.cuh"
#include "fastattn/tma.h"
#include "fastattn/vec.h"
#include "fastattn/warp_roles.h"
#include "fastattn/wgmma.h"

namespace fastattn {
namespace attention_gpu {

// FP8 V (or K) [keys][D] as copied -> fp16 in Shape's kV16 layout (blocks of 64 columns, chunk j
// of key r's 128-byte row at chunk j ^ (r % 8)): the N-major B operand of P V, and the K-major B
// operand of an fp16 Q K^T. By the 128 threads of a copying warpgroup. A thread converts the 16
// columns of chunk c = (thread / 8) % kChunks of keys 8 group + thread % 8: the 8 lanes of a
// quarter warp read and write one chunk of 8 different keys, which fall in 8 different banks. Its
// addresses differ between passes by constants. kBatched: the loads of 4 passes go out together
// (more registers; the kernel says where that pays). kFromFirstPass: each address written as the
// first pass's plus its constant (a pass's keys are 8 kGroupsPerPass rows after the pass before's,
// the same rows mod 8, both swizzles' period), which leaves ptxas three registers where it
// otherwise keeps one per pass: for the persistent kernels' copying warpgroups, which hold an
// item's state too (elsewhere that form measured 4% slower over cache_fp8, perf notes v63).
template <class Shape, bool kBatched, bool kFromFirstPass>
FA_DEVICE void widen_to_fp16(uint32_t staging, uint32_t v16, int thread) {
  constexpr int kChunks = Shape::kHeadDim / 16, kGroupsPerPass = 128 / (8 * kChunks);
  constexpr int kPasses = Shape::kKeys / 8 / kGroupsPerPass, kBatch = kBatched ? 4 : 1;
  static_assert(kPasses % kBatch == 0, "whole batches of passes");
  if constexpr (kFromFirstPass) {  // (read again, so that its addresses are worked out here, not held)
    asm volatile("mov.u32 %0, %%tid.x;" : "=r"(thread));
    thread %= 128;
  }
  const int key = thread % 8, c = thread / 8 % kChunks, group = thread / (8 * kChunks);
  auto key_of = [&](int pass) { return 8 * (group + pass * kGroupsPerPass) + key; };
  // Columns 16c.. are chunks 2 (c % 4) and 2 (c % 4) + 1 of the row in column block c / 4.
  auto row_of = [&](int pass) { return v16 + (c / 4) * Shape::kV16BlockBytes + key_of(pass) * 128; };
  const uint32_t first_from = staging + fp8_row_offset<Shape, Shape::kKTileBytes>(key_of(0), c);
  const uint32_t first_to[2] = {row_of(0) + ((uint32_t(2 * (c % 4)) ^ key) << 4),
                                row_of(0) + ((uint32_t(2 * (c % 4) + 1) ^ key) << 4)};
  auto from = [&](int pass) {
    if constexpr (kFromFirstPass) return first_from + pass * (8 * kGroupsPerPass * Shape::kSwizzleBytes);
    return staging + fp8_row_offset<Shape, Shape::kKTileBytes>(key_of(pass), c);
  };
  auto to = [&](int pass, int half) {
    if constexpr (kFromFirstPass) return first_to[half] + pass * (8 * kGroupsPerPass * 128);
    return row_of(pass) + (((2 * (c % 4) + half) ^ (key_of(pass) % 8)) << 4);
  };
#pragma unroll
  for (int first = 0; first < kPasses; first += kBatch) {
    uint32_t x[kBatch][4];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(x[b][0]), "=r"(x[b][1]), "=r"(x[b][2]), "=r"(x[b][3])
                   : "r"(from(first + b)));
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      uint32_t h[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) UnpackE4m3::four(x[b][i], h[2 * i], h[2 * i + 1]);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(to(first + b, half)),
                     "r"(h[4 * half]), "r"(h[4 * half + 1]), "r"(h[4 * half + 2]), "r"(h[4 * half + 3]));
      }
    }
  }
}

// FP8 V [keys][D] as copied -> V^T [D][keys] (128-byte rows, swizzled as K), the K-major B operand
// of an FP8 P V. Within each 16 keys the positions follow P's registers: position 4t + i holds key
// {2t, 2t + 1, 8 + 2t, 9 + 2t}[i], so that P packs without shuffles. Warp w takes columns
// D/4 w.. (two 16-byte chunks at head_dim 128, one at 64), 32 bytes of chunk-keys a step: 16 keys
// of both chunks, or 32 keys of the one. ldmatrix.trans gives lane (g, t) keys 2t, 2t + 1 (and
// 8 + 2t, 9 + 2t) of columns 2g, 2g + 1 of a chunk; two byte permutes make rows 2g and 2g + 1;
// stmatrix stores them, matrices 0 and 2 taking even rows from lanes g < 4 and odd ones from the
// others (8 rows in 8 bank groups).
template <class Shape>
FA_DEVICE void transpose_values(uint32_t staging, uint32_t vt, int thread) {
  constexpr int D = Shape::kHeadDim, kWide = D == 128;  // kWide: matrices 2, 3 the warp's second chunk
  static_assert((D == 128 || D == 64) && Shape::kKeys == 128, "head_dim 64 or 128, 128-key tiles");
  const int warp = thread / 32, lane = thread % 32, g = lane / 4;
  const int mat = lane / 8, r = lane % 8, half = mat >> 1;  // half: the second chunk, or keys 16..
  const uint32_t src = staging + fp8_row_offset<Shape, Shape::kKTileBytes>(8 * (mat & 1) + 16 * !kWide * half + r,
                                                                          (1 + kWide) * warp + kWide * half);
  const int d = D / 4 * warp + 16 * kWide * half + 2 * r + ((mat & 1) ? (r < 4) : (r >= 4));
  const uint32_t dst = vt + d * 128 + (((!kWide * half) ^ (d & 7)) << 4);
  const uint32_t sel0 = g < 4 ? 0x6420u : 0x7531u, sel1 = sel0 ^ 0x1111u;
  constexpr int kStepKeys = kWide ? 16 : 32, kSteps = Shape::kKeys / kStepKeys;
  // Steps loaded ahead of the one stored: two over the caches at head_dim 128 (!kValueRing), whose
  // copies of tile j + 2 go out after this tile's transposition (cache_fp8 0.8% / 1.5% faster at
  // 8 x 4096 / 1 x 16384, block_wise_fp8 unchanged); none with contiguous keys, whose copies go
  // first (two: 0.5% / 0.9% slower). Four: 1-3% slower (perf notes v77).
  constexpr int kLoadsAhead = D == 128 && !Shape::kValueRing ? 2 : 0;
  uint32_t x[kLoadsAhead + 1][4];
#pragma unroll
  for (int b = 0; b < kSteps + kLoadsAhead; ++b) {
    if (b < kSteps) ldmatrix_x4_trans(x[b % (kLoadsAhead + 1)], src + b * kStepKeys * Shape::kSwizzleBytes);
    if (b >= kLoadsAhead) {
      const int c = b - kLoadsAhead;
      const uint32_t(&y)[4] = x[c % (kLoadsAhead + 1)];
      stmatrix_x4(dst ^ (c * kStepKeys / 16 << 4), __byte_perm(y[0], y[1], sel0), __byte_perm(y[0], y[1], sel1),
                  __byte_perm(y[2], y[3], sel0), __byte_perm(y[2], y[3], sel1));
    }
  }
}

// A computing warpgroup's 64 rows of a 16-bit q (the CTA's rows first_row..) -> fp16 in shared
// memory at `q_smem` (column tile d / 64, 128-byte rows, their 8-element chunks swizzled as
// V16's), by its 128 threads, while the copying warpgroup brings the first tile; rows past the
// sequence repeat its last row. A bf16 q goes times 2^fp16_query_exponent of the rows' largest
// element, as in the mma.sync kernel (`amax_bits` 0 on entry: its bits; `barrier` a named barrier
// of the warpgroup); returns the inverse power, to fold into the score scale. The stores still
// need a fence and the warpgroup's barrier before a wgmma reads them.
template <class Shape>
FA_DEVICE float stage_16bit_query(const AttentionParams& p, const CtaRows& cta, int kv_head, int first_row,
                                  uint32_t q_smem, int thread, int barrier, int& amax_bits) {
  constexpr int D = Shape::kHeadDim, kRowChunks = D / 8, kPerThread = 64 * kRowChunks / 128;
  uint4 x[kPerThread];  // chunk i: row i / kRowChunks, elements 8 (i % kRowChunks).., i = thread + 128 j
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {  // all loads in flight at once
    const int i = thread + 128 * j, r = min(cta.row0 + first_row + i / kRowChunks, cta.rows - 1);
    const auto* row = static_cast<const uint16_t*>(p.q) + (int64_t(cta.token(r)) * p.heads_q + cta.head(r, kv_head)) * D;
    x[j] = *reinterpret_cast<const uint4*>(row + 8 * (i % kRowChunks));
  }
  const bool rescale = p.q_type == ElementType::kBf16;
  int e = 0;
  if (rescale) {
    float amax = 0.0f;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      float f[8];
      unpack_half8<Bf16Format>(x[j], f);
#pragma unroll
      for (int k = 0; k < 8; ++k) amax = fmaxf(amax, fabsf(f[k]));
    }
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (thread % 32 == 0) atomicMax(&amax_bits, __float_as_int(amax));  // non-negative floats order as ints
    warp_roles::named_sync(barrier, 128);
    e = fp16_query_exponent(__int_as_float(amax_bits));
    const float mult = ldexpf(1.0f, e);
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      float f[8];
      unpack_half8<Bf16Format>(x[j], f);
      x[j] = make_uint4(MmaFp16::pack(f[0] * mult, f[1] * mult), MmaFp16::pack(f[2] * mult, f[3] * mult),
                        MmaFp16::pack(f[4] * mult, f[5] * mult), MmaFp16::pack(f[6] * mult, f[7] * mult));
    }
  }
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = thread + 128 * j, r = first_row + i / kRowChunks, c = i % kRowChunks;
    const uint32_t dst = q_smem + (c / 8) * Shape::kQTileBytes + wgmma::swizzled_offset(r, c % 8);
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(dst), "r"(x[j].x), "r"(x[j].y), "r"(x[j].z), "r"(x[j].w));
  }
  return ldexpf(1.0f, -e);
}

// Keys 2 pair and 2 pair + 1 of a tile's k or v scales as staged (the table's format).
FA_DEVICE float2 staged_scale_pair(const uint8_t* scales, bool is_bf16, int pair) {
  if (is_bf16) {
    const uint32_t two = *reinterpret_cast<const uint32_t*>(scales + 4 * pair);
    return make_float2(Bf16Format::to_float(uint16_t(two & 0xffffu)), Bf16Format::to_float(uint16_t(two >> 16)));
  }
  return *reinterpret_cast<const float2*>(scales + 8 * pair);
}

// A persistent CTA's next item (WgmmaShape::kPersistent), as copying warp 0 found it.
struct PersistentItem {
  CtaRows cta;
  KeyRange range;
  int kv_head, split;
  bool done;  // no item left: the CTA ends
};

// kSmallBlocks: the cache's blocks hold a quarter tile or less (32 keys at head_dim 128, 16 at
// 256). The launch picks it where it changes the hand-over (below: at 128 over per-token scales) or
// the softmax's order (WgmmaShape::kWeighFirst: at 256 over cache_fp8).
// (Whether two copying warps send a tile's tensor copies is the boxes' size: small_boxes.)
// kWidenedBefore: V comes as fp16 from p.values_fp16 (WgmmaShape's kV16InStage), with a 16-bit q
// K too, from p.keys_fp16 (kKV16Copied).
template <int D, bool kPaged, bool kFp8Q = true, bool kTokenScales = false, bool kFp8Values = false,
          bool kSmallBlocks = false, bool kWidenedBefore = false>
__global__ void __launch_bounds__(WgmmaShape<D, kFp8Q, kTokenScales, kFp8Values, kPaged, kSmallBlocks, kWidenedBefore>::kThreads, 1)
    attention_wgmma_kernel(const AttentionParams p, const __grid_constant__ PrefillTensorMaps maps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(kPaged || !kTokenScales, "per-token scales are a paged cache's");
  static_assert(!kSmallBlocks || kPaged, "cache blocks are a paged cache's");
  using Shape = WgmmaShape<D, kFp8Q, kTokenScales, kFp8Values, kPaged, kSmallBlocks, kWidenedBefore>;
  constexpr bool kV16InStage = Shape::kV16InStage, kKV16Copied = Shape::kKV16Copied;
  constexpr bool kFoldKeysInCopies = Shape::kFoldKeysInCopies;
  constexpr bool kPersistent = Shape::kPersistent;
  static_assert(!kPersistent || Shape::kCopyGroups == 1, "the item loop is one copying warpgroup's");
  static_assert(!kV16InStage || kPersistent, "a stage's release after its P V: the persistent loop's");
  namespace roles = warp_roles;
  constexpr int kKeys = Shape::kKeys, kChunks = D / 16;  // 16-byte chunks per FP8 row
  constexpr int kQTile = Shape::kQTileBytes, kKTile = Shape::kKTileBytes;
  constexpr int kStages = Shape::kStages, kV16Buffers = Shape::kV16Buffers, kK16Buffers = Shape::kK16Buffers;
  constexpr int kOutParts = Shape::kOutParts, kPartRegs = Shape::kPartRegs, kScoreRegs = Shape::kScoreRegs;
  constexpr int kGroups = Shape::kComputeGroups, kComputeThreads = 128 * kGroups;
  // The epilogue stages each warpgroup's rows in a stage of its own; with FP8 q not in the last
  // tile's, which the other warpgroups may still read (a 16-bit q that the kernel widens leaves
  // the stages to the copying warpgroup, done with them by then). A 16-bit q at head_dim 256 has one stage: there each
  // warpgroup takes an fp16 K buffer, once every one is done with the last tile's K. With FP8 P V
  // each warpgroup takes its own fp32 sums, read into o by then (kOutputInSums): the stage ring
  // stays the copying warpgroup's, which sends a persistent CTA's next tiles there meanwhile.
  // kKV16Copied copies no tile into the stages: each warpgroup keeps an equal part of them for its
  // rows, item after item, whole kilobytes (the tensor copies' swizzle), where they fit (with one
  // stage, over per-token scales at head_dim 128, rows of 16-bit elements do; fp32 rows, and any
  // at head_dim 256, whose stages have no bytes, go out a pair at a time).
  constexpr bool kOutputInSums = Shape::kFp8Pv;
  constexpr bool kOutputInStages = !kOutputInSums && (kKV16Copied || kGroups + int(kFp8Q) <= kStages);
  static_assert(kOutputInSums || kOutputInStages || (!kFp8Q && kGroups <= kK16Buffers),
                "a buffer per computing warpgroup at the end");
  constexpr int kOutputBufferBytes = kOutputInSums     ? Shape::kOutSumsBytes / kGroups
                                     : kKV16Copied     ? kStages * Shape::kStageBytes / kGroups / 1024 * 1024
                                     : kOutputInStages ? Shape::kStageBytes
                                                       : Shape::kK16Bytes;
  constexpr bool kSplitHandOver =
      kFp8Q && !Shape::kFp8Pv && kStages == 4 && (D == 256 || (D == 128 && (!kTokenScales || kSmallBlocks)));
  // Named barriers: 1 the copying warpgroup's (16-bit q widened here), 2 + w computing warpgroup w's turn at
  // the tensor cores, 2 + kGroups + w its epilogue's (and its q staging's).
  static_assert(2 + 2 * kGroups <= 16, "16 named barriers");
  // A tile's note that it met an unmapped cache block, at unmapped_tile[tile % kNotes], read by
  // the softmax. The copying warpgroup writes tile j's when it copies it: with FP8 q once tile
  // j - kStages released its stage (after its softmax); with a 16-bit q once it has widened tile
  // j - kStages, by when it has seen only tile j - kStages - kK16Buffers release its fp16 K.
  constexpr int kNotes = 8;
  static_assert(kNotes >= kStages + kK16Buffers, "a note outlives the softmax that reads it");
  extern __shared__ uint8_t smem_raw[];
  __shared__ int cta_limit;
  __shared__ int q_amax_bits[kGroups];  // a 16-bit q's largest element per computing warpgroup, as bits
  __shared__ int unmapped_tile[kNotes];
  __shared__ int2 row_place[Shape::kRows];  // a row's {token, q head}; token -1 past the sequence
  // k_ready[s] / v16_ready[b]: the copying warpgroup's 128 threads arrive when their copies of a
  // tile's K and V (stage s; the tensor copies' bytes count too; with a 16-bit q each arrival is
  // made as the thread's copies land) / its fp16 V (buffer b; the second copying warpgroup's
  // threads where there are two) are in.
  // Apart, because a computing warpgroup issues Q K^T of tile j + 1 with P V of tile j: waiting
  // for V of j + 1 there would wait for the other warpgroups' P V of j - 1, issued just before,
  // to finish, and for the widening after it. Each copying thread arrives for K of j + 1 after
  // widening V of j, so with FP8 q the wait for K of j + 1 covers V of j (fewer instructions
  // before each tile's wgmmas: +0.3-1.4%); a 16-bit q keeps its V wait (without it 0-2% slower).
  // Except where the hand-over is split (kSplitHandOver): there each copying thread arrives for
  // K of j + 1 before it widens V of j, and a computing warpgroup waits for V of j inside its
  // turn, between Q K^T of j + 1 and P V of j, so that the widening is off Q K^T's path; as it
  // does where a second copying warpgroup widens V (kCopyGroups), whatever the order. Split
  // with FP8 q and four stages, except over per-token scales in blocks of 64 and 128 (there
  // 0.4-1.3% slower; in blocks of 32 and 16, kSmallBlocks, 1.4-2% / 6% faster), at head_dim 64
  // (up to 1% slower) and with FP8 P V (its four stages at 128: 2% slower, perf notes v76).
  // Faster at 8 x 4096 / 1 x 16384: contiguous by 3.6% / 4.6% at 128 and 10% / 8% at 256; paged
  // at 256 by 13%, at 128 over cache_fp8 by 1% / 2.4% (2-8% in smaller blocks; with the copies
  // after the widening, as before: with them first 1.7% slower).
  // k_free[s] / v16_free[b]: the computing warpgroups' threads arrive when done with a K stage
  // (its Q K^T and softmax; with kV16InStage its P V too, which reads fp16 V there) / an fp16 V
  // buffer (its P V). Where a second copying warpgroup widens
  // V, its threads arrive on k_free too once they have read the stage's V: a stage is free only
  // when both halves are, and the copies into it wait for that alone.
  // With a 16-bit q the computing warpgroups read fp16 K (k16_ready / k16_free, as for V) and
  // never a stage: k_ready only tells the copying warpgroup that a stage's copies are in, and
  // k_free goes unused.
  __shared__ __align__(8) uint64_t k_ready_bars[kStages], k_free_bars[kStages];
  __shared__ __align__(8) uint64_t v16_ready_bars[kV16Buffers], v16_free_bars[kV16Buffers];
  constexpr int kK16Slots = kFp8Q ? 1 : kK16Buffers;  // (one unused with FP8 q)
  __shared__ __align__(8) uint64_t k16_ready_bars[kK16Slots], k16_free_bars[kK16Slots];
  const uint32_t smem = (smem_address(smem_raw) + 1023u) & ~1023u;  // swizzle atoms are 1024-aligned
  // kPersistent: the rings run on from one item to the next. An item's tile j takes stage
  // s + j and fp16 V buffer s + j - E k (s: ring_base / 2, k the items before it with key tiles,
  // E kEpiloguePlaces); after its tiles E more places of the stage ring go to its epilogue (a
  // computing warpgroup's rows each), so that the copying warpgroup sends the next item's first
  // tiles while those rows are staged. Items without key tiles take no place in either ring. Two
  // fp16 V buffers: the buffer is s + j's parity; its phase needs k's parity too where E / 2 is
  // odd, which ring_base carries in its low bit (one register for the copying warpgroup, which
  // has none to spare), and that bit picks Q's buffer where there are two. (kKV16Copied: E is 0,
  // and fp16 K takes the same index as fp16 V.)
  constexpr int kEpiloguePlaces = Shape::kEpiloguePlaces;
  int ring_base = 0;
  auto stage_index = [&](int tile) { return kPersistent ? (ring_base >> 1) + tile : tile; };
  // Past an item with `tiles` key tiles (both roles, once it is done with the item's places).
  auto pass_item = [&](int tiles) { ring_base = (ring_base + 2 * (tiles + kEpiloguePlaces)) ^ 1; };
  auto v16_slot = [&](int tile) { return stage_index(tile) % kV16Buffers; };
  auto k_ready = [&](int tile) { return smem_address(&k_ready_bars[stage_index(tile) % kStages]); };
  auto v16_ready = [&](int tile) { return smem_address(&v16_ready_bars[v16_slot(tile)]); };
  auto k_free = [&](int tile) { return smem_address(&k_free_bars[stage_index(tile) % kStages]); };
  auto v16_free = [&](int tile) { return smem_address(&v16_free_bars[v16_slot(tile)]); };
  auto k16_ready = [&](int tile) { return smem_address(&k16_ready_bars[stage_index(tile) % kK16Slots]); };
  auto k16_free = [&](int tile) { return smem_address(&k16_free_bars[stage_index(tile) % kK16Slots]); };
  // What the computing warpgroups' Q K^T waits for and releases.
  auto qk_ready = [&](int tile) { return kFp8Q ? k_ready(tile) : k16_ready(tile); };
  auto qk_free = [&](int tile) { return kFp8Q ? k_free(tile) : k16_free(tile); };
  constexpr int kQkBuffers = kFp8Q ? kStages : kK16Buffers;
  auto stage_of = [&](int tile) {
    return smem + Shape::kStagesOffset + (stage_index(tile) % kStages) * Shape::kStageStride;
  };
  // V of a tile as copied: after K in its stage, or in a slot of its own (kValueRing).
  auto values_of = [&](int tile) {
    if constexpr (Shape::kValueRing) {
      return smem + Shape::kValuesOffset + (stage_index(tile) % Shape::kValueSlots) * Shape::kKBytes;
    } else {
      return stage_of(tile) + Shape::kKBytes;
    }
  };
  auto v16_of = [&](int tile) {
    if constexpr (kV16InStage) return stage_of(tile) + Shape::kKBytes;
    return smem + Shape::kV16Offset + v16_slot(tile) * Shape::kV16Bytes;
  };
  // The item's Q: with two buffers the parity of the items before it with key tiles picks one.
  auto query_offset = [&] { return Shape::kQBuffers == 2 ? uint32_t(ring_base & 1) * Shape::kQBytes : 0u; };
  auto k16_of = [&](int tile) { return smem + Shape::kK16Offset + (stage_index(tile) % kK16Slots) * Shape::kK16Bytes; };
  constexpr int kScaleSlots = Shape::kTokenScales ? Shape::kScaleSlots : 1;  // (none without per-token scales)
  auto scales_of = [&](int tile) {
    return smem + Shape::kScalesOffset + (stage_index(tile) % kScaleSlots) * Shape::kScaleSlotBytes;
  };
  auto scales_at = [&](int tile) { return smem_raw + (scales_of(tile) - smem_address(smem_raw)); };
  // A barrier of a ring of n completes its phase k when it has seen tile (its index) + k n: the
  // wait for `tile` checks the parity of phase tile / n, the wait for the release of the tile
  // that used the buffer before it that of the phase before.
  auto phase_of = [&](int tile, int n) { return uint32_t(tile / n) & 1u; };
  auto stage_phase = [&](int tile) { return phase_of(stage_index(tile), kStages); };
  static_assert(kV16Buffers == 2, "the fp16 V ring's phase from ring_base's parity bit");
  auto v16_phase = [&](int tile) {
    constexpr int kItemParity = kEpiloguePlaces / 2 % 2;  // (a buffer's uses an item skips, mod 2)
    return kPersistent ? uint32_t((stage_index(tile) >> 1) ^ (ring_base & kItemParity)) & 1u : phase_of(tile, kV16Buffers);
  };
  // Whether a tile before this one had its fp16 V buffer (the first tiles wait for none).
  auto v16_reused = [&](int tile) { return ring_base > 0 || tile >= kV16Buffers; };
  auto qk_phase = [&](int tile) { return kFp8Q ? stage_phase(tile) : phase_of(stage_index(tile), kQkBuffers); };

  wait_then_allow_next_grid();  // launched overlapping the kernel before it
  const int warpgroup = threadIdx.x / 128, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  constexpr int kCopyGroups = Shape::kCopyGroups;
  const bool computes = warpgroup >= kCopyGroups;
  // The item: a tile of a sequence's rows, its kv head, its split of the keys, and those keys. The
  // grid's block, or with kPersistent each one the CTA takes (take_item).
  int kv_head = blockIdx.y, split = blockIdx.z;
  CtaRows cta;
  KeyRange range;
  // A computing thread's rows: row_g and row_g + 8 (the copying threads take the CTA's first).
  int row_g = 0, limit[2] = {0, 0}, warp_min_limit = 0;
  auto locate_thread_rows = [&](const CtaRows& c) {
    row_g = c.row0 + (computes ? 64 * (warpgroup - kCopyGroups) + 16 * warp + g : 0);
    limit[0] = c.key_limit(p, row_g);
    limit[1] = c.key_limit(p, row_g + 8);
    warp_min_limit = __reduce_min_sync(0xffffffffu, min(limit[0], limit[1]));
  };
  if constexpr (!kPersistent) {
    if (!locate_rows<Shape, kPaged>(p, kv_head, split, cta)) return;
    locate_thread_rows(cta);
  }
  // kPersistent: item i goes through slot i % 2. A warp of the copying warpgroup posts it
  // (item_full; which one and when: see the copying warpgroup's item loop) once the slot's item
  // before is read by every thread that takes items (item_empty): every thread, but with
  // kKV16Copied the copying warps that send nothing (warp 1, and warps 2 and 3 without per-token
  // scales), which leave at the start.
  constexpr int kItemReaders = kKV16Copied ? kComputeThreads + 32 * (1 + 2 * kTokenScales) : Shape::kThreads;
  __shared__ PersistentItem item_slots[2];
  __shared__ __align__(8) uint64_t item_full_bars[2], item_empty_bars[2], q_free_bar;
  auto item_full = [&](int i) { return smem_address(&item_full_bars[i % 2]); };
  auto item_empty = [&](int i) { return smem_address(&item_empty_bars[i % 2]); };
  if (threadIdx.x == 0) cta_limit = 0;
  if (threadIdx.x < kGroups) q_amax_bits[threadIdx.x] = 0;
  if (threadIdx.x < kNotes) unmapped_tile[threadIdx.x] = -1;
  if (threadIdx.x < kStages) {
    roles::mbarrier_init(k_ready(threadIdx.x), 128);
    roles::mbarrier_init(k_free(threadIdx.x), kComputeThreads + 128 * (Shape::kCopyGroups - 1));
  }
  // (kKV16Copied: one copying thread's arrival, with the tensor copies' bytes; for K the two
  // warps' that copy per-token scales too.)
  constexpr int kV16Arrivals = kKV16Copied ? 1 : 128, kK16Arrivals = kKV16Copied ? 1 + 64 * kTokenScales : 128;
  if (threadIdx.x < kV16Buffers) {
    roles::mbarrier_init(v16_ready(threadIdx.x), kV16Arrivals);
    roles::mbarrier_init(v16_free(threadIdx.x), kComputeThreads);
  }
  if (int(threadIdx.x) < kK16Buffers) {  // (none with FP8 q)
    roles::mbarrier_init(k16_ready(threadIdx.x), kK16Arrivals);
    roles::mbarrier_init(k16_free(threadIdx.x), kComputeThreads);
  }
  if constexpr (kPersistent) {
    if (threadIdx.x < 2) {
      roles::mbarrier_init(item_full(threadIdx.x), 1);
      roles::mbarrier_init(item_empty(threadIdx.x), kItemReaders);
    }
    // The computing threads arrive once they have taken the item's Q: held in registers, its buffer
    // may take the next item's; read from shared memory (two buffers), every computing thread is
    // done with the item before, and the next item's Q goes to that one's buffer.
    if (Shape::kQSentPerItem && threadIdx.x == 0) roles::mbarrier_init(smem_address(&q_free_bar), kComputeThreads);
  }
  if constexpr (Shape::kRowSumsByMma) {  // the ones after each buffer's V
    constexpr int kBlockChunks = Shape::kOnesBytes / 16;
    for (int i = threadIdx.x; i < kV16Buffers * kBlockChunks; i += Shape::kThreads) {
      const uint32_t ones = smem + Shape::kV16Offset + (i / kBlockChunks) * Shape::kV16Bytes + Shape::kOnesOffset;
      asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(ones + 16 * (i % kBlockChunks)), "r"(Shape::kOnesWord));
    }
    wgmma::fence_shared_for_async();
  }
  __syncthreads();
  if constexpr (!kPersistent) {
    atomicMax(&cta_limit, max(limit[0], limit[1]));
    __syncthreads();
    range = split_key_range(p, cta.k_len, cta_limit, split, kKeys);
  }
  // kPersistent: the items are the grid's blocks of the non-persistent launch, in their order:
  // (virtual row tile, kv head, split), the row tiles taken in reverse (the longest causal tiles
  // first). The CTA's first is its own index; each next one comes off a counter that starts at 0.
  // By one warp of the copying warpgroup (all its lanes): posts item i, the first with rows from
  // index v on (the tail rows of those it passes are written here), or the end.
  auto claim_item = [&] {  // (all lanes of the warp)
    int claimed = 0;
    if (lane == 0) claimed = atomicAdd(p.item_counter, 1);
    return int64_t(gridDim.x) + __shfl_sync(0xffffffffu, claimed, 0);
  };
  auto post_item = [&](int i, int64_t v) {
    if (i >= 2) roles::mbarrier_wait(item_empty(i), phase_of(i - 2, 2));
    const int64_t row_tiles = virtual_row_tiles(p, Shape::kRows);
    PersistentItem item;
    item.done = true;
    while (v < row_tiles * p.heads_kv * p.num_splits) {
      const int64_t head_split = v / row_tiles;
      item.kv_head = int(head_split % p.heads_kv);
      item.split = int(head_split / p.heads_kv);
      const int64_t tile = row_tiles - 1 - v % row_tiles;
      if (locate_tile_rows<Shape, kPaged>(p, tile, item.kv_head, item.split, item.cta, lane, 32)) {
        int largest = 0;  // the largest key limit of the item's rows
        for (int r = lane; r < Shape::kRows; r += 32) largest = max(largest, item.cta.key_limit(p, item.cta.row0 + r));
        item.range = split_key_range(p, item.cta.k_len, __reduce_max_sync(0xffffffffu, largest), item.split, kKeys);
        item.done = false;
        break;
      }
      v = claim_item();
    }
    if (lane == 0) {
      item_slots[i % 2] = item;
      roles::mbarrier_arrive(item_full(i));
    }
  };
  // By every thread: item i's rows, keys, kv head and split; false at the end.
  auto take_item = [&](int i) {
    roles::mbarrier_wait(item_full(i), phase_of(i, 2));
    const PersistentItem item = item_slots[i % 2];
    roles::mbarrier_arrive(item_empty(i));
    cta = item.cta;
    range = item.range;
    kv_head = item.kv_head;
    split = item.split;
    return !item.done;
  };
  if constexpr (kPersistent) {
    if (threadIdx.x < 32) post_item(0, blockIdx.x);
  }

  // V of a tile to fp16 (or V^T), by the 128 threads of the copying warpgroup, or of the second
  // where there are two (kCopyGroups).
  // The widening's loads go out 4 passes at a time where it sets the pace: at head_dim 256, whose
  // tiles have half as many keys (+8-14%); for a 16-bit q at 128, whose K is widened too (+5-12%);
  // with FP8 q over one scale's cache at 128, which widens a tile before it sends the next copies
  // (+2% / +1.7% at 8 x 4096 / 1 x 16384). Not with FP8 q at 128 otherwise (contiguous -2.7%: its
  // copying loop then reloads 10 spilled registers a tile; over block_wise_fp8 -1.3%), nor at
  // head_dim 64 (at most +2%; its copying warpgroup has 32 registers).
  constexpr bool kBatchedWidening = D == 256 || (D == 128 && (!kFp8Q || (kPaged && !kTokenScales)));
  // `phase`: the buffer's for this tile; `reused`: a tile before it had the buffer.
  auto widen = [&](uint32_t from, uint32_t to, uint32_t ready, uint32_t free, bool reused, uint32_t phase) {
    if (reused) roles::mbarrier_wait(free, phase ^ 1u);
    if constexpr (kV16InStage) {
      // Copied as fp16 already: the arrival alone keeps the fp16 V ring's order (the waits for
      // v16_ready and v16_free that the copying and computing loops make).
    } else if constexpr (Shape::kFp8Pv) {
      transpose_values<Shape>(from, to, threadIdx.x);
    } else {
      // (Addresses from the first pass's where there are two copying warpgroups: with its 56
      // registers the widening one then spills none.)
      const int thread = kCopyGroups == 2 ? threadIdx.x % 128 : threadIdx.x;
      widen_to_fp16<Shape, kBatchedWidening, kPersistent || kCopyGroups == 2>(from, to, thread);
    }
    wgmma::fence_shared_for_async();
    roles::mbarrier_arrive(ready);
  };
  auto widen_values = [&](int tile) {
    widen(values_of(tile), v16_of(tile), v16_ready(tile), v16_free(tile), v16_reused(tile), v16_phase(tile));
  };
  if constexpr (kCopyGroups == 2) {
    if (warpgroup == 1) {  // the second copying warpgroup: each tile's V, once the tile is in
      roles::lower_registers<Shape::kWidenRegisters>();
#pragma unroll 1
      for (int tile = 0; tile < range.tiles; ++tile) {
        roles::mbarrier_wait(k_ready(tile), stage_phase(tile));
        widen_values(tile);
        roles::mbarrier_arrive(k_free(tile));  // (its V as copied is read)
      }
      return;
    }
  }

  if (!computes) {
    // The copying warpgroup: with FP8 q the copies of tiles j + 1 and j + 2 are in flight around
    // the widening of tile j's V (or its hand-over, where the second copying warpgroup widens);
    // with a 16-bit q those of the kStages - 1 tiles after it (kKV16Copied: those the fp16 K and V
    // buffers have room for).
    roles::lower_registers<Shape::kCopyRegisters>();
    const int thread = threadIdx.x;
    const uint8_t* k_base = static_cast<const uint8_t*>(kPaged ? p.key_cache : p.k);
    const uint8_t* v_base = static_cast<const uint8_t*>(kPaged ? p.value_cache : p.v);
    // A tile's boxes go out one at a time (a tensor copy takes uniform operands, so the lanes take
    // turns): lane b of warp 0 sends box b of K and of V. Where cache blocks of a quarter tile or
    // less make four or more boxes a tensor (blocks of 16 and 32 keys at head_dim 128, of 16 at
    // 256), lane b of warp 1 sends V's, so that two warps issue them side by side: FP8 q over
    // cache_fp8 in blocks of 16 +10-12%, of 32 +6% (perf notes v60). That takes a copying loop of
    // its own (copy_tiles), so that the loop over larger blocks keeps its registers; one or two
    // boxes a tensor gained nothing from the second warp. (Warp 1's bytes may land before thread
    // 0's expect_bytes: the phase also waits for every copying thread's arrival, made later.)
    const int box_rows = Shape::box_rows(kPaged, p.layout.block_size);
    const bool values_by_warp_1 = kPaged && Shape::small_boxes(box_rows);
    const int box = thread % 32;
    // Paged: the cache block of this lane's box, read a tile ahead so that the table's latency
    // is off the copying path (waiting for it before each tile's copies cost 2-3.5%); tile 0's
    // goes out ahead of Q's copies. Whole tiles are a prefix of the range and load_tile takes them
    // in order, so the block held is always the next whole tile's.
    int next_block = -1;
    auto first_block = [&] {
      if (kPaged && maps.kv_ready && (thread < 32 || (values_by_warp_1 && thread < 64)) && box * box_rows < kKeys) {
        next_block = p.layout.block(cta.seq, range.begin + box * box_rows);
      }
    };
    if constexpr (!kPersistent && !kKV16Copied) first_block();
    // A tile's per-token scales, in the tables' format: copying warp 2 copies the k scales and warp
    // 3 the v scales, kScaleKeys keys a lane (a lane's keys never straddle a cache block, which
    // holds 16 or more). Keys past the sequence read as 0, those of the last key's lane too: a
    // stale scale there (NaN, say) would meet a masked key's zero weight.
    constexpr int kScaleKeys = Shape::kScaleKeys;
    const int scale_lane = thread % 32;
    const bool copies_scales = thread / 32 >= 2, copies_values = thread / 32 == 3;
    auto copy_token_scales = [&](int tile, int key0) {
      if (!copies_scales) return;  // whole warps
      const int key = key0 + kScaleKeys * scale_lane;
      const ScaleTensor& table = copies_values ? p.v_scale : p.k_scale;
      const int64_t row = key < cta.k_len ? p.layout.row(cta.seq, key, kv_head) : -1;
      const int keys = row < 0 ? 0 : min(cta.k_len - key, kScaleKeys), bytes = table.is_bf16 ? 2 : 4;
      const uint32_t dst = scales_of(tile) + (copies_values ? Shape::kValueScalesOffset : 0) + kScaleKeys * bytes * scale_lane;
      const uint8_t* src = static_cast<const uint8_t*>(table.data) + (row < 0 ? 0 : row * bytes);
      if (table.is_bf16) cp_async_prefix<2 * kScaleKeys>(dst, src, keys * bytes);
      else cp_async_prefix<4 * kScaleKeys>(dst, src, keys * bytes);
    };
    // This lane's keys' scales as staged (warp 2's k scales, warp 3's v scales), in fp32.
    auto staged_scales = [&](int tile, const ScaleTensor& table, int offset, float (&x)[kScaleKeys]) {
#pragma unroll
      for (int i = 0; i < kScaleKeys / 2; ++i) {
        const float2 two = staged_scale_pair(scales_at(tile) + offset, table.is_bf16, kScaleKeys / 2 * scale_lane + i);
        x[2 * i] = two.x;
        x[2 * i + 1] = two.y;
      }
    };
    // Once warp 2's copies landed (kFoldKeysInCopies): the k scales times the score scale, in fp32,
    // so that the computing warpgroups take one multiply per score for both (see softmax). A
    // 16-bit q's power of two stays with them: it differs between them.
    float key_scale = 0.0f;
    auto fold_key_scale = [&] {
      if constexpr (kFoldKeysInCopies) key_scale = fold_scales<kPaged>(p, cta.seq, kv_head).score;
    };
    if constexpr (!kPersistent) fold_key_scale();
    auto weigh_keys = [&](int tile) {
      if (!copies_scales || copies_values) return;  // warp 2
      float k[kScaleKeys];
      staged_scales(tile, p.k_scale, 0, k);
      float* out = reinterpret_cast<float*>(scales_at(tile) + Shape::kKeyMultipliersOffset) + kScaleKeys * scale_lane;
#pragma unroll
      for (int i = 0; i < kScaleKeys; ++i) out[i] = k[i] * key_scale;
    };
    // Once warp 3's copies landed: the v scales over v_ref, the largest v scale of the tiles so
    // far, in fp16 for the computing warpgroups' P (fp32 with FP8 P V; see scale_by_values), and
    // v_ref. A tile whose scales are all within v_ref keeps it: a vote instead of the tile's max
    // (and no other warp).
    float value_ref = 0.0f, value_inv = 0.0f;
    auto weigh_values = [&](int tile) {
      if (!copies_values) return;  // warp 3
      float v[kScaleKeys];
      staged_scales(tile, p.v_scale, Shape::kValueScalesOffset, v);
      bool above = false;
#pragma unroll
      for (int i = 0; i < kScaleKeys; ++i) above |= v[i] > value_ref;
      if (__any_sync(0xffffffffu, above)) {
        float mx = v[0];
#pragma unroll
        for (int i = 1; i < kScaleKeys; ++i) mx = fmaxf(mx, v[i]);
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        value_ref = mx;
        value_inv = __frcp_rn(mx);
      }
      uint8_t* slot = scales_at(tile);
      constexpr int kPairs = kScaleKeys / 2;
      if constexpr (Shape::kFp8Pv) {  // key pair 4m + t goes to row t, place m; this lane's pairs share m
        static_assert(4 % kPairs == 0, "a lane's pairs in one group of 4");
        const int first = kPairs * scale_lane;
        float2* weights = reinterpret_cast<float2*>(slot + Shape::kValueWeightsOffset) + first % 4 * Shape::kWeightRowPairs + first / 4;
#pragma unroll
        for (int i = 0; i < kPairs; ++i) {
          weights[i * Shape::kWeightRowPairs] = make_float2(v[2 * i] * value_inv, v[2 * i + 1] * value_inv);
        }
      } else {
        __half2* weights = reinterpret_cast<__half2*>(slot + Shape::kValueWeightsOffset) + kPairs * scale_lane;
#pragma unroll
        for (int i = 0; i < kPairs; ++i) weights[i] = __floats2half2_rn(v[2 * i] * value_inv, v[2 * i + 1] * value_inv);
      }
      if (scale_lane == 0) *reinterpret_cast<float*>(slot + Shape::kValueRefOffset) = value_ref;
    };
    auto load_tile = [&](int tile, auto by_warp_1) {
      constexpr bool kValuesByWarp1 = decltype(by_warp_1)::value;  // values_by_warp_1, as a constant
      // (Where V stays in its stage its addresses are formed as before the value ring: formed
      // otherwise, ptxas allocated those kernels' registers differently.)
      const uint32_t stage = stage_of(tile), value_slot = Shape::kValueRing ? values_of(tile) : 0u;
      const int key0 = range.begin + tile * kKeys;
      // A tile inside the sequence goes whole, keys past the CTA's range included (the last tile
      // of a causal range): the softmax masks them for every row, as it masks a row's keys past
      // its own limit in any tile.
      const bool by_tma = maps.kv_ready && key0 + kKeys <= cta.k_len;
      // The tensor copies are one warp's (two with kValuesByWarp1); per-token scales two others'.
      constexpr int kBoxWarps = kValuesByWarp1 ? 2 : 1;
      // (With a 16-bit q the copying warpgroup's own barrier after the widening frees a stage.)
      auto wait_for_stage = [&] {
        if (kFp8Q && stage_index(tile) >= kStages) roles::mbarrier_wait(k_free(tile), stage_phase(tile) ^ 1u);
      };
      if (by_tma && thread >= 32 * kBoxWarps && !(kTokenScales && copies_scales)) {
        // Where a second copying warpgroup widens, a thread that sends nothing waits for the stage
        // too: nothing else keeps it from arriving for tiles a ring ahead.
        if constexpr (kCopyGroups == 2) wait_for_stage();
        return;
      }
      wait_for_stage();
      // kValueRing: V's slot once every copying thread has transposed the tile that had it (within
      // the item: the last item's tiles are all transposed before the next one's copies). Each
      // has transposed tile j - 2 before the arrival for K of j - 1, which this thread waited for
      // before transposing j - 1, so the barrier of j - 1 is in that tile's phase or past it.
      if constexpr (Shape::kValueRing) {
        constexpr int kBefore = Shape::kValueSlots;
        static_assert(kBefore == 3, "tile j + 2's copies go out at tile j: its V slot is that of j - 1");
        if (tile >= kBefore) roles::mbarrier_wait(v16_ready(tile - kBefore), v16_phase(tile - kBefore));
      }
      if constexpr (kV16InStage) {
        // fp16 V from p.values_fp16 (widened_rows x [heads_kv, D], zeros past each
        // sequence's keys, so that every tile is one box per 64 columns), after K in the stage.
        if (thread == 0) {
          tma::expect_bytes(k_ready(tile), by_tma ? Shape::kStageBytes : Shape::kStageBytes - Shape::kKBytes);
          const int token = int(widened_row(kPaged, cta.seq, cta.k_first, key0));
#pragma unroll
          for (int c = 0; c < D / 64; ++c) {
            tma::load_3d(stage + Shape::kKBytes + c * Shape::kV16BlockBytes, &maps.v, k_ready(tile), c * 128, kv_head, token);
          }
        }
      }
      if (by_tma && thread < 32 * kBoxWarps) {
        // A whole tile of the sequence: boxes of its kKeys rows (contiguous keys) or of a cache
        // block's rows (at most kKeys), one per lane, K and V of every column tile.
        if (!kV16InStage && thread == 0) tma::expect_bytes(k_ready(tile), Shape::kStageBytes);
        __syncwarp();
        if (box * box_rows < kKeys) {
          const int key = key0 + box * box_rows;
          int y = kv_head, z = cta.k_first + key;  // contiguous: (column, head, token)
          if constexpr (kPaged) {
            // (column, row in the block, block x heads + head); an unmapped block reads zeros.
            const int block = next_block;
            next_block = p.layout.block(cta.seq, key + kKeys);  // this lane's box in the next tile
            y = block >= 0 ? key & (p.layout.block_size - 1) : 0;
            z = block >= 0 ? block * p.layout.num_heads + kv_head : -1;
            if (block < 0 && thread < 32) unmapped_tile[stage_index(tile) % kNotes] = stage_index(tile);
          }
          const uint32_t box_offset = box * box_rows * Shape::kSwizzleBytes, dst = stage + box_offset;
          const bool keys = thread < 32, values = !kV16InStage && (!kValuesByWarp1 || thread >= 32);
#pragma unroll
          for (int ct = 0; ct < Shape::kColumnTiles; ++ct) {
            if (keys) tma::load_3d(dst + ct * kKTile, &maps.k, k_ready(tile), ct * Shape::kSwizzleBytes, y, z);
            if (values) {
              const uint32_t value_dst = Shape::kValueRing ? value_slot + box_offset : dst + Shape::kKBytes;
              tma::load_3d(value_dst + ct * kKTile, &maps.v, k_ready(tile), ct * Shape::kSwizzleBytes, y, z);
            }
          }
        }
      }
      if constexpr (kTokenScales) copy_token_scales(tile, key0);
      if (by_tma) return;
      // A tile past the sequence's last key (keys past it read as zeros), and caches without
      // tensor maps: a lookup per row. Unrolled (the table reads overlap) at head_dim 128 only:
      // elsewhere the copying warpgroup's registers then spilled in its loop (-7% at head_dim 256).
      constexpr int kUnroll = D == 128 ? kKeys * kChunks / 128 : 1;
#pragma unroll kUnroll
      for (int it = 0; it < kKeys * kChunks / 128; ++it) {
        const int i = thread + it * 128, r = i / kChunks, c = i % kChunks, key = key0 + r;
        const int64_t row = key < range.end ? key_row<kPaged>(p, cta, key, kv_head) : -1;
        const bool valid = row >= 0;
        const int64_t offset = valid ? row * D + c * 16 : 0;
        cp_async<16>(stage + fp8_row_offset<Shape, kKTile>(r, c), k_base + offset, valid);
        if constexpr (!kV16InStage) {
          cp_async<16>((Shape::kValueRing ? value_slot : stage + Shape::kKBytes) + fp8_row_offset<Shape, kKTile>(r, c), v_base + offset,
                       valid);
        }
        if (kPaged && !valid && key < range.end && c == 0) unmapped_tile[stage_index(tile) % kNotes] = stage_index(tile);
      }
    };
    // Tile j's copies landed: with FP8 q this thread's own (if any), and K goes to the computing
    // warpgroups once everyone's have and the tensor copies' bytes are in; V to fp16 then, once its
    // buffer is free (by the second copying warpgroup where there are two). With a 16-bit q every
    // copy of the tile has landed once k_ready completes, and K is widened first, to its own
    // buffers. The tile's per-token scales are weighed first.
    auto weigh_scales = [&](int tile) {
      if constexpr (kTokenScales) {
        if constexpr (kFoldKeysInCopies) weigh_keys(tile);
        weigh_values(tile);
      }
    };
    if constexpr (kKV16Copied) {
      // K and V widened before the kernel: warp 0 copies each tile's fp16 K and V into the buffers
      // the computing warpgroups read, as those free them (lane 0 sends the tensor copies, a box of
      // the tile's keys per 64 columns; zeros past each sequence's keys fill its last tile). Over a
      // cache its lanes look up the tile's blocks, so that one left unmapped is noted as ever.
      // Per-token scales: warps 2 and 3 copy and weigh each tile's into its scale slot and arrive
      // on the tile's fp16 K barrier. Tile j's slot was tile j - kScaleSlots's; they first wait for
      // tile j - kK16Buffers to free its fp16 K, after its softmax and scale_by_values, which
      // follow those of every tile before it. (Tiles count on through the items, as the rings do.)
      auto await_k16_buffer = [&](int tile) {
        if (stage_index(tile) >= kK16Buffers) roles::mbarrier_wait(k16_free(tile), phase_of(stage_index(tile), kK16Buffers) ^ 1u);
      };
      static_assert(!kTokenScales || Shape::kScaleSlots > kK16Buffers, "a scale slot is free once an fp16 K buffer is");
      auto copy_item_scales = [&] {
#pragma unroll 1
        for (int tile = 0; tile < range.tiles; ++tile) {
          await_k16_buffer(tile);
          copy_token_scales(tile, range.begin + tile * kKeys);
          cp_async_commit();
          cp_async_wait<0>();
          weigh_scales(tile);
          roles::mbarrier_arrive(k16_ready(tile));
        }
      };
      static_assert(Shape::kV16Bytes == Shape::kK16Bytes, "a tile of fp16 V takes as many bytes as one of K");
      auto copy = [&](const CUtensorMap* map, uint32_t to, uint32_t ready, int token) {
        if (lane == 0) {
          tma::expect_bytes(ready, Shape::kK16Bytes);
#pragma unroll
          for (int c = 0; c < D / 64; ++c) tma::load_3d(to + c * Shape::kV16BlockBytes, map, ready, c * 128, kv_head, token);
          roles::mbarrier_arrive(ready);
        }
      };
      auto copy_item_tiles = [&] {
#pragma unroll 1
        for (int tile = 0; tile < range.tiles; ++tile) {
          const int key0 = range.begin + tile * kKeys;
          bool unmapped = false;
          if constexpr (kPaged) {
            const int key = key0 + lane * p.layout.block_size;
            unmapped = key < key0 + kKeys && key < cta.k_len && p.layout.block(cta.seq, key) < 0;
          }
          unmapped = __any_sync(0xffffffffu, unmapped);
          const int token = int(widened_row(kPaged, cta.seq, cta.k_first, key0));
          await_k16_buffer(tile);
          // (The note's slot was tile j - kNotes's, whose softmax is done once K of j - kK16Buffers is free.)
          if (unmapped && lane == 0) unmapped_tile[stage_index(tile) % kNotes] = stage_index(tile);
          copy(&maps.k, k16_of(tile), k16_ready(tile), token);
          if (v16_reused(tile)) roles::mbarrier_wait(v16_free(tile), v16_phase(tile) ^ 1u);
          copy(&maps.v, v16_of(tile), v16_ready(tile), token);
        }
      };
      // Warp 0 copies the tiles and posts the next item once it has sent this one's copies, some
      // two tiles before the computing warpgroups end it. Warps 2 and 3 copy per-token scales;
      // the others leave. (Posted by warp 1 as each item started, every copying warp taking the
      // items, which let warp 1 claim two items ahead: 1 x 16384 3-4% slower, 8 x 4096 2% less
      // fast; perf notes v85.)
      const bool copies_tiles = thread < 32;
      if (!copies_tiles && !(kTokenScales && copies_scales)) return;
      for (int i = 0; take_item(i); ++i) {
        value_ref = value_inv = 0.0f;
        fold_key_scale();
        if (copies_tiles) {
          copy_item_tiles();
          post_item(i + 1, claim_item());
        } else {
          copy_item_scales();
        }
        if (range.tiles > 0) pass_item(range.tiles);
      }
      return;
    }
    auto arrive_for_keys = [&](int tile) {  // FP8 q: this thread's part of tile j is in
      weigh_scales(tile);
      wgmma::fence_shared_for_async();  // this thread's cp.async copies of K and Q, for the wgmma reads
      roles::mbarrier_arrive(k_ready(tile));
    };
    auto widen_own_values = [&](int tile) {  // FP8 q: V of tile j, once every copying thread's part is in
      if constexpr (kCopyGroups == 1) {  // (else the second copying warpgroup widens it)
        roles::mbarrier_wait(k_ready(tile), stage_phase(tile));
        widen_values(tile);
      }
    };
    auto hand_over = [&](int tile) {  // a 16-bit q: K widened, then V
      roles::mbarrier_wait(k_ready(tile), stage_phase(tile));
      weigh_scales(tile);  // (before K's widening, which hands the weights over with it)
      widen(stage_of(tile), k16_of(tile), k16_ready(tile), k16_free(tile), tile >= kK16Buffers, phase_of(tile, kK16Buffers));
      widen_values(tile);
    };
    auto copy_tiles = [&](auto by_warp_1) {
      if constexpr (!kFp8Q) {
        // Each thread arrives on a tile's k_ready as its copies of the tile go out, the arrival made
        // once they land (cp_async_arrive): the widening then waits for the tile's bytes alone, not
        // for every copying thread to reach it. A stage takes its next tile's copies once the whole
        // warpgroup has widened it; every stage is copied before the first widening.
        auto copy_tile = [&](int tile) {
          if (tile >= range.tiles) return;
          load_tile(tile, by_warp_1);
          cp_async_arrive(k_ready(tile));
        };
#pragma unroll 1
        for (int tile = 0; tile < kStages; ++tile) copy_tile(tile);
#pragma unroll 1
        for (int tile = 0; tile < range.tiles; ++tile) {
          hand_over(tile);
          roles::named_sync(1, 128);
          copy_tile(tile + kStages);
        }
        return;
      }
      // FP8 Q (the CTA's rows, the bytes as they are) travels with the first tile: k_ready(0)
      // covers both, and no CTA barrier waits for it. By one tensor copy per column tile where the
      // group divides the CTA's rows (a box of its tokens x the group's heads; rows past the
      // sequence read the tokens after it, or zeros, and are dropped); else a row at a time, rows
      // past the sequence repeating its last.
      // kPersistent: Q goes to its buffer once the computing warpgroups have taken the last item's
      // (each item with key tiles has a Q; see q_free_bar), and tile 0's stage is free (Q counts on
      // its k_ready). Every copying thread waits, not only those that copy Q: a thread that sends no
      // tensor copies waits for a stage's release only at the tiles it copies row by row, and no
      // copy waits for an epilogue place's release, so its next wait at a stage could take the
      // release two phases back (the same parity) for the one it waits for. The last Q's release
      // says the computing warpgroups are past every place before the last item's (and the
      // epilogue places' arrivals count on it: see the item loop).
      if constexpr (kPersistent) {
        if (range.tiles > 0) {
          if (stage_index(0) >= kStages) roles::mbarrier_wait(k_free(0), stage_phase(0) ^ 1u);
          if (ring_base > 0) roles::mbarrier_wait(smem_address(&q_free_bar), uint32_t(ring_base & 1) ^ 1u);
        }
      }
      if (kFp8Q && range.tiles > 0 && maps.q_ready) {
        if (thread == 0) {
          tma::expect_bytes(k_ready(0), Shape::kQBytes);
#pragma unroll
          for (int ct = 0; ct < Shape::kColumnTiles; ++ct) {
            tma::load_3d(smem + Shape::kQOffset + query_offset() + ct * kQTile, &maps.q, k_ready(0),
                         ct * Shape::kSwizzleBytes, kv_head * cta.group, cta.token(cta.row0));
          }
        }
      } else if (kFp8Q && range.tiles > 0) {
        for (int i = thread; i < Shape::kRows * kChunks; i += 128) {
          const int r = min(cta.row0 + i / kChunks, cta.rows - 1), c = i % kChunks;
          const uint8_t* src = static_cast<const uint8_t*>(p.q) + (int64_t(cta.token(r)) * p.heads_q + cta.head(r, kv_head)) * D;
          const uint32_t dst = smem + Shape::kQOffset + query_offset() + fp8_row_offset<Shape, kQTile>(i / kChunks, c);
          cp_async<16>(dst, src + c * 16, true);
        }
      }
      // Two tiles copied before the first widening (the stage ring's others wait for the computing
      // warpgroups).
#pragma unroll 1
      for (int tile = 0; tile < 2; ++tile) {
        if (tile < range.tiles) load_tile(tile, by_warp_1);
        cp_async_commit();
      }
      // The copies of tile j + 2 go out before tile j's V is widened, except where the other
      // order was faster: the paged kernels at head_dim 128 (over one scale 8 x 4096 588 -> 599
      // TFLOP/s, over per-token scales 1% faster at every block size; the others lost 1.5-5% with
      // it, most at head_dim 256, where the widening sets the pace) and over per-token scales at
      // head_dim 64 (FP8 q 353 -> 366). With three stages they must widen first: tile j + 2 takes
      // tile j - 1's stage, whose V the other copying threads may widen until they all reach tile
      // j's hand-over (with a second copying warpgroup, which widens, the stage's release says
      // that warpgroup is done with its V).
      constexpr bool kCopiesAfterWidening = kStages < 4 || (kPaged && (D == 128 || (kTokenScales && D == 64)));
      auto copy_ahead = [&](int tile) {
        if (tile + 2 < range.tiles) load_tile(tile + 2, by_warp_1);
        cp_async_commit();
      };
      if constexpr (kSplitHandOver) {
        // Per tile j: the arrival for K of j + 1, then V of j widened (here, or by the second
        // copying warpgroup); the copies of j + 2 before both, or after the widening.
        static_assert(kCopyGroups == 1 || !kCopiesAfterWidening, "copies after this warpgroup's widening");
        if (range.tiles > 0) {
          cp_async_wait<1>();  // this thread's copies of tile 0
          arrive_for_keys(0);
        }
#pragma unroll 1
        for (int tile = 0; tile < range.tiles; ++tile) {
          if constexpr (!kCopiesAfterWidening) {
            // Tile j + 2 takes tile j - 2's stage once every copying thread has widened its V (here
            // the arrival for K of j no longer says so; a second copying warpgroup says so on the
            // stage's k_free).
            if (kCopyGroups == 1 && tile >= 2 && tile + 2 < range.tiles) {
              roles::mbarrier_wait(v16_ready(tile - 2), v16_phase(tile - 2));
            }
            copy_ahead(tile);
          }
          if (tile + 1 < range.tiles) {
            cp_async_wait<kCopiesAfterWidening ? 0 : 1>();  // this thread's copies of tile j + 1
            arrive_for_keys(tile + 1);
          }
          widen_own_values(tile);
          if constexpr (kCopiesAfterWidening) copy_ahead(tile);  // (every thread widened j - 2 before arriving for j)
        }
      } else {
        // Persistent CTAs send the copies of tile j + 2 after the arrival for K of j, not before
        // it: the next item's tile 2 takes the last item's first epilogue place, which the
        // computing warpgroups release once they have the next item's tile 0 (and so its arrivals).
        constexpr bool kCopiesAfterArrival = kPersistent && !kCopiesAfterWidening;
#pragma unroll 1
        for (int tile = 0; tile < range.tiles; ++tile) {
          if constexpr (!kCopiesAfterWidening && !kCopiesAfterArrival) copy_ahead(tile);
          cp_async_wait<kCopiesAfterWidening || kCopiesAfterArrival ? 1 : 2>();  // this thread's copies of tile j
          arrive_for_keys(tile);
          if constexpr (kCopiesAfterArrival) copy_ahead(tile);
          widen_own_values(tile);
          // (Tile j + 2 takes the stage of j - 1, whose V this warpgroup widened before arriving
          // for j, or the second copying warpgroup has once the stage's k_free says so.)
          if constexpr (kCopiesAfterWidening) copy_ahead(tile);
        }
      }
      cp_async_wait<0>();
    };
    auto copy_item = [&] {
      if constexpr (kPaged) {
        if (values_by_warp_1) {
          copy_tiles(std::true_type{});
          return;
        }
      }
      copy_tiles(std::false_type{});
    };
    if constexpr (kPersistent) {
      // Over per-token scales the next item is posted as this one starts, by a warp that sends no
      // tensor copies (warp 1, warp 2 where warp 1 sends V's): the claim and the row lookups run
      // under the first tile's scale copies, off the chain from one item's last copies to the
      // next one's first (8 x 4096 -0.75%, perf notes v70). Elsewhere the first tile's copies land
      // sooner and the posting warp's arrival for it came late (cache_fp8 +3.8%): there warp 0
      // posts once it has sent the item's copies.
      constexpr bool kPostAtStart = kTokenScales;
      const int posting_warp = values_by_warp_1 ? 2 : 1;
      for (int i = 0; take_item(i); ++i) {
        if (kPostAtStart && thread / 32 == posting_warp) post_item(i + 1, claim_item());
        first_block();
        fold_key_scale();
        value_ref = value_inv = 0.0f;
        copy_item();
        const int tiles = range.tiles;
        if (!kPostAtStart && thread < 32) post_item(i + 1, claim_item());
        if (tiles > 0) {
          // The next item's first two tiles take the stages of this one's last two (fp8_pv's, with
          // no epilogue places, those of its kStages-th and (kStages - 1)-th last): every copying
          // thread has widened those first (their stages' release says only that the computing
          // warpgroups are done with K; with kV16InStage with the tile's P V too, which reads fp16
          // V there). Each thread widens its tiles in order, so the last one's V buffer says it for
          // all.
          roles::mbarrier_wait(v16_ready(tiles - 1), v16_phase(tiles - 1));
          // The epilogue's places in the stage ring: nothing is copied there, and their phases of
          // k_ready complete here. The phase before each is complete (this thread waited for every
          // earlier tile's; each copying thread arrived for the earlier places before this item's
          // tile 0) and no computing thread still waits for it: the fp16 V buffer releases widen()
          // waited for follow those waits, and after an item of one tile the wait for the last
          // Q's release does (at the item's start; these phases complete only with its
          // arrivals). The computing warpgroups release the places once the next item's first tile
          // is in, so after these arrivals.
#pragma unroll
          for (int place = 0; place < kEpiloguePlaces; ++place) roles::mbarrier_arrive(k_ready(tiles + place));
          pass_item(tiles);
        }
      }
    } else {
      copy_item();
    }
    return;
  }

  // The computing warpgroups.
  roles::raise_registers<Shape::kComputeRegisters>();
  // (Broadcast from lane 0 so that the compiler knows it is the same across the warp and keeps
  // what derives from it, the wgmma descriptors of Q among them, in uniform registers.)
  const int wg = __shfl_sync(0xffffffffu, warpgroup - kCopyGroups, 0);
  float o[kOutParts][kPartRegs];  // columns 128 part + (the register layout of wgmma.h)
#pragma unroll
  for (int part = 0; part < kOutParts; ++part)
#pragma unroll
    for (int i = 0; i < kPartRegs; ++i) o[part][i] = 0.0f;
  SoftmaxState2 state[2] = {SoftmaxState2::empty(), SoftmaxState2::empty()};
  float row_sums[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // kRowSumsByMma: P's row sums, laid out as o's columns
  const uint64_t q_desc = wgmma::descriptor<Shape::kQkRowBytes>(smem + Shape::kQOffset + wg * 64 * Shape::kQkRowBytes);
  FoldedScales scales = kPersistent ? FoldedScales{1.0f, 1.0f} : fold_scales<kPaged>(p, cta.seq, kv_head);
  float query_power = 1.0f;
  // A 16-bit q: each warpgroup stages its rows (kPersistent: per item, once its last item's Q K^T
  // are done); its power of two joins the score scale.
  auto stage_query = [&] {
    const int barrier = 2 + kGroups + wg;  // the epilogue's, free until then
    query_power = stage_16bit_query<Shape>(p, cta, kv_head, 64 * wg, smem + Shape::kQOffset, threadIdx.x % 128,
                                           barrier, q_amax_bits[wg]);
    scales.score *= query_power;
    wgmma::fence_shared_for_async();
    roles::named_sync(barrier, 128);
    if (kPersistent && threadIdx.x % 128 == 0) q_amax_bits[wg] = 0;  // (read by every thread before the barrier)
  };
  if constexpr (!kFp8Q && !kPersistent) {
    if (range.tiles > 0) stage_query();
  }
  // Where each row goes, worked out while the first tile is on its way. The epilogue reads it:
  // the other lanes of the quad at once (hence the warp's sync; with no key tile nothing else
  // orders it), the other warps after the warpgroup's barrier there.
  auto place_rows = [&] {
    if (t == 0) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = row_g + 8 * h;
        row_place[r - cta.row0] = r < cta.rows ? make_int2(cta.token(r), cta.head(r, kv_head)) : make_int2(-1, 0);
      }
    }
    __syncwarp();
  };
  if constexpr (!kPersistent) place_rows();

  // Turns at the tensor cores, in a ring: warpgroup w issues its wgmmas after named barrier 2 + w,
  // at which the one before it (the last, before the first) arrives once it has issued its own.
  // The last warpgroup arrives once before its first turn, so the first one starts, and not after
  // its last, which no turn answers. (kPersistent: the ring runs on through the items, and the
  // first warpgroup takes one more turn at the end, the last warpgroup's last.)
  const int issues = range.tiles > 0 ? range.tiles + 1 : 0;
  const bool last_group = wg == kGroups - 1;
  const int next_turn = 2 + (wg + 1) % kGroups;
  int issued = 0;
  auto take_turn = [&] { roles::named_sync(2 + wg, 256); };
  auto pass_turn = [&] {
    if (kPersistent || ++issued < issues || !last_group) roles::named_arrive(next_turn, 256);
  };
  if (last_group && (kPersistent || issues > 0)) roles::named_arrive(2, 256);

  float s[kScoreRegs];          // S of the tile after the one whose P V runs; no initial value needed
  constexpr bool kQInRegisters = Shape::kQInRegisters;
  uint32_t qf[kQInRegisters ? D / 32 : 1][4];
  auto query_bytes = [&] {  // Q as staged, for these fragments and for recompute_scores
    return static_cast<const uint8_t*>(smem_raw + (smem + Shape::kQOffset - smem_address(smem_raw)));
  };
  auto load_query_fragments = [&] {
    const uint8_t* q = query_bytes();
    const int row = 64 * wg + 16 * warp + g;
#pragma unroll
    for (int ks = 0; ks < D / 32; ++ks)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int r = row + 8 * (j & 1), chunk = 2 * ks + (j >> 1);
        qf[ks][j] = *reinterpret_cast<const uint32_t*>(q + fp8_row_offset<Shape, kQTile>(r, chunk) + 4 * t);
      }
  };
  constexpr bool kFp8Pv = Shape::kFp8Pv;
  uint32_t pf[kFp8Pv ? kKeys / 32 : kKeys / 16][4];  // P as A fragments: fp16 per 16 keys, e4m3 per 32
  // S = Q K^T of `tile` on the FP8 tensor cores, or the fp16 ones for a 16-bit q (asynchronous: a
  // commit group of its own).
  auto issue_qk = [&](int tile) {
    wgmma::fence_registers(s);  // keeps the last reads of s (pack_p) before the fence
    wgmma::fence();
    constexpr int kTileSteps = Shape::kQkRowBytes / 32;  // k-steps of 32 bytes per column tile
    const uint64_t k_desc = wgmma::descriptor<Shape::kQkRowBytes>(kFp8Q ? stage_of(tile) : k16_of(tile));
#pragma unroll
    for (int ks = 0; ks < D / (kFp8Q ? 32 : 16); ++ks) {
      const uint32_t column = 32 * (ks % kTileSteps);  // in the column tile ks / kTileSteps
      const uint64_t k = wgmma::advanced(k_desc, (ks / kTileSteps) * (kFp8Q ? kKTile : Shape::kV16BlockBytes) + column);
      if constexpr (kQInRegisters) {
        wgmma::mma_e4m3_k32(s, qf[ks], k, ks > 0);
      } else {
        const uint64_t q = wgmma::advanced(q_desc, query_offset() + (ks / kTileSteps) * kQTile + column);
        if constexpr (kFp8Q) {
          wgmma::mma_e4m3_k32(s, q, k, ks > 0);
        } else {
          wgmma::mma_f16_k16(s, q, k, ks > 0);
        }
      }
    }
    wgmma::commit();
  };
  // kFp8Pv: the FP8 tensor cores keep about 13 bits of each sum and truncate what a product has
  // below them (alone, o lost 60% of a long row's small weights' share), so o holds at most
  // kFoldTiles tiles' P V; then each thread adds it, times the rescales since the last fold, into
  // fp32 sums of its own in shared memory (16-byte chunks, chunk-major across the warpgroup: no
  // bank conflicts), and the next P V starts from zero. Every 8 tiles: with exact weights and
  // values near 1 the output comes out 2e-4 low, every 16 tiles 8e-3, every 4 2.5e-5 at a 2-4%
  // higher cost (perf notes v51).
  constexpr int kFoldTiles = 8;
  // Chunk c (o's registers 4c..4c + 3) of the warpgroup's 128 threads at c * kSumChunkStride.
  constexpr int kSumChunks = Shape::kPartRegs / 4, kSumChunkStride = 128 * 16;
  float carried[2] = {1.0f, 1.0f};
  float summed_rows[2] = {0.0f, 0.0f};  // kRowSumsByMma: the row sums' second level
  bool pv_fresh = false;  // the next P V writes o rather than adding to it (fp8_pv's folds; see the item loop)
  const uint32_t out_sums =
      smem + Shape::kOutSumsOffset + wg * (kSumChunks * kSumChunkStride) + (threadIdx.x % 128) * 16;
  // (kPersistent: per item, once the last item's rows staged there are out.)
  auto clear_sums = [&] {
#pragma unroll
    for (int c = 0; c < kSumChunks; ++c)
      asm volatile("st.shared.v4.f32 [%0], {%1, %1, %1, %1};" ::"r"(out_sums + c * kSumChunkStride), "f"(0.0f));
  };
  if constexpr (kFp8Pv && !kPersistent) clear_sums();
  auto fold_output = [&](bool into_sums) {
#pragma unroll
    for (int c = 0; c < kSumChunks; ++c) {
      const uint32_t chunk = out_sums + c * kSumChunkStride;
      float x[4];
      asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(x[0]), "=f"(x[1]), "=f"(x[2]), "=f"(x[3]) : "r"(chunk));
#pragma unroll
      for (int i = 0; i < 4; ++i) x[i] = fmaf(x[i], carried[i >> 1], o[0][4 * c + i]);
      if (into_sums) {
        asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};" ::"r"(chunk), "f"(x[0]), "f"(x[1]), "f"(x[2]), "f"(x[3]));
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) o[0][4 * c + i] = x[i];
      }
    }
    if constexpr (Shape::kRowSumsByMma) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float total = fmaf(summed_rows[h], carried[h], row_sums[2 * h]);
        if (into_sums) summed_rows[h] = total;
        else row_sums[2 * h] = total;
      }
    }
  };
  // o += P V of `tile` (asynchronous: a commit group of its own).
  auto issue_pv = [&](int tile) {
    wgmma::fence_registers(o);  // keeps the rescale of o and the packing of P before the fence
    wgmma::fence_registers(pf);
    if constexpr (Shape::kRowSumsByMma) wgmma::fence_registers(row_sums);
    wgmma::fence();
    if constexpr (kFp8Pv) {
      const uint64_t vt_desc = wgmma::descriptor<128>(v16_of(tile));
#pragma unroll
      for (int ks = 0; ks < kKeys / 32; ++ks) {
        const uint64_t vt = wgmma::advanced(vt_desc, 32 * ks);
        if constexpr (Shape::kRowSumsByMma) {
          wgmma::mma_e4m3_k32(o[0], row_sums, pf[ks], vt, ks > 0 || !pv_fresh);
        } else {
          wgmma::mma_e4m3_k32(o[0], pf[ks], vt, ks > 0 || !pv_fresh);
        }
      }
      pv_fresh = false;
    } else {
      const uint64_t v_desc = wgmma::descriptor(v16_of(tile), Shape::kV16BlockBytes);
#pragma unroll
      for (int ks = 0; ks < kKeys / 16; ++ks) {
        const uint32_t v = ks * 16 * 128;  // keys 16 ks.. (two swizzle atoms)
        if constexpr (Shape::kRowSumsByMma) {
          wgmma::mma_f16_k16(o[0], row_sums, pf[ks], wgmma::advanced(v_desc, v), ks > 0 || !pv_fresh);
        } else {
#pragma unroll
          for (int part = 0; part < kOutParts; ++part)  // output columns 128 part.. are column blocks 2 part, 2 part + 1
            wgmma::mma_f16_k16(o[part], pf[ks], wgmma::advanced(v_desc, v + 2 * part * Shape::kV16BlockBytes));
        }
      }
      if constexpr (Shape::kRowSumsByMma) pv_fresh = false;
    }
    wgmma::commit();
  };
  // Scale, mask and online softmax of S in place (S becomes P); the factor for the accumulator.
  // Register i: row h = (i >> 1) & 1, key 8 (i / 4) + 2t + (i & 1). Over one scale, a positive
  // one (every real one) joins the exponent's fused multiply-add and the row max is taken over
  // the raw scores; otherwise the scores are scaled first. Per-token scales give each key its own
  // multiplier, its k scale times the whole score scale (key_multipliers), whatever its sign:
  // the exponent then takes none.
  bool scale_in_exponent = false;
  float exponent_scale = 1.0f;  // the score scale where it joins the exponent
  auto take_scales = [&] {  // (kPersistent: per item)
    scale_in_exponent = !kTokenScales && scales.score > 0.0f;
    exponent_scale = scale_in_exponent ? scales.score : 1.0f;
  };
  take_scales();
  // The row max moves only when a tile's exceeds it by more than 8: P then stays at most 2^8 (fp16
  // keeps its relative precision there), and the accumulator's rescale, 64 multiplies, drops out
  // of most tiles.
  // e4m3 P: a raised max goes kHeadroom below the tile's, so that the row's largest weight is 2^4
  // and weights down to 2^-10 of it stay in e4m3's normal range (from 2^-6). It may then creep up
  // to 2^8 where the max goes first, to 448 (e4m3's largest) where the weights go first: settle_max
  // screens a tile by each lane's sums, which set off its slow path too often with a headroom of 5
  // (-2.5 to -6%) or 2^8 as the bound there (-13 to -16%; perf notes v53).
  constexpr float kHeadroom = kFp8Pv ? 4.0f : 0.0f;
  constexpr float kMaxSlack = 8.0f, kMaxWeight = kFp8Pv ? 448.0f : 256.0f;
  constexpr bool kWeighFirst = Shape::kWeighFirst;
  static_assert(!(kWeighFirst && Shape::kRowSumsByMma), "settle_max adds the weights' sums itself");
  // The multipliers of registers 4m..4m + 3 (keys 8m + 2t, 8m + 2t + 1 of both rows) over
  // per-token scales: each key's k scale times the score scale, whose part other than a 16-bit q's
  // power of two the copying warpgroup folded in where kFoldKeysInCopies (fp32, in a region of its own).
  // `bf16_table`: the table's format (a constant where the caller has picked it).
  auto key_multipliers = [&](int tile, int m, bool bf16_table) {
    const float2 k = kFoldKeysInCopies
                         ? *reinterpret_cast<const float2*>(scales_at(tile) + Shape::kKeyMultipliersOffset + 8 * (4 * m + t))
                         : staged_scale_pair(scales_at(tile), bf16_table, 4 * m + t);
    const float c = kFoldKeysInCopies ? query_power : scales.score;  // (1 with FP8 q: no multiply)
    return make_float2(k.x * c, k.y * c);
  };
  // Whether a row of the warp stops inside the tile (need_mask), and whether it met an unmapped
  // cache block: rare, and kept out of the common path (as a predicated branch its 32 table reads
  // cost as much as the softmax).
  auto need_mask = [&](int tile) { return range.begin + (tile + 1) * kKeys > warp_min_limit; };
  auto unmapped = [&](int tile) {
    return kPaged && __builtin_expect(unmapped_tile[stage_index(tile) % kNotes] == stage_index(tile), 0);
  };
  // S as the softmax reads it: scaled (unless the scale joins the exponent) and masked.
  // S (or fp32 P) times a pair of keys' multipliers: those of keys 8m + 2t, 8m + 2t + 1, which
  // registers 4m..4m + 3 hold for both rows.
  auto times_key_pair = [&](int m, float2 k) {
    s[4 * m] = scaled_score(s[4 * m], k.x);
    s[4 * m + 1] = scaled_score(s[4 * m + 1], k.y);
    s[4 * m + 2] = scaled_score(s[4 * m + 2], k.x);
    s[4 * m + 3] = scaled_score(s[4 * m + 3], k.y);
  };
  auto prepare_scores = [&](int tile) {
    const int key0 = range.begin + tile * kKeys;
    if constexpr (kTokenScales) {  // times each key's multiplier (the masks below overwrite any NaN)
#pragma unroll
      for (int m = 0; m < kKeys / 8; ++m) times_key_pair(m, key_multipliers(tile, m, p.k_scale.is_bf16));
    } else if (!scale_in_exponent) {
#pragma unroll
      for (int i = 0; i < kScoreRegs; ++i) s[i] = scaled_score(s[i], scales.score);
    }
    if (__builtin_expect(need_mask(tile), 0)) {  // a branch, not predication: most tiles need no mask
#pragma unroll
      for (int i = 0; i < kScoreRegs; ++i) {
        if (key0 + 8 * (i / 4) + 2 * t + (i & 1) >= limit[(i >> 1) & 1]) s[i] = -INFINITY;
      }
    }
    if (unmapped(tile)) {  // both keys of a pair share a block
#pragma unroll
      for (int i = 0; i < kScoreRegs; i += 2) {
        if (p.layout.row(cta.seq, key0 + 8 * (i / 4) + 2 * t, kv_head) < 0) s[i] = s[i + 1] = -INFINITY;
      }
    }
  };
  // Each row's max first, then the weights against it (and their sums, unless the tensor cores
  // take them).
  // Against a max that is not fine (fine_max in softmax_state.h: a coarse one, or none yet) the
  // weights take the rounded products, whose largest the max is, and never go before the max
  // (softmax).
  auto softmax_max_first = [&](float (&rescale)[2]) {
    bool coarse[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int i = 2 * h; i < kScoreRegs; i += 4) mx = fmaxf(mx, fmaxf(s[i], s[i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      rescale[h] = state[h].raise_max(state[h].max_with_slack(scaled_score(mx, exponent_scale), kMaxSlack, kHeadroom));
      coarse[h] = !state[h].fine_max();
    }
    // One branch for the warp (one per row kept ptxas from interleaving the rows' weights: FP8 q
    // over cache_fp8 at 8 x 4096 was 11% slower); inside it each row still goes its own way, so
    // that no row's weights depend on another's.
    float c[2] = {exponent_scale, exponent_scale};
    if (__builtin_expect(__any_sync(0xffffffffu, coarse[0] || coarse[1]), 0)) {
#pragma unroll
      for (int i = 0; i < kScoreRegs; ++i) {
        if (coarse[(i >> 1) & 1]) s[i] = scaled_score(s[i], exponent_scale);
      }
      // (a multiply-add by 1 rounds once: the difference of the rounded products)
#pragma unroll
      for (int h = 0; h < 2; ++h) c[h] = coarse[h] ? 1.0f : exponent_scale;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = 0.0f;
#pragma unroll
      for (int i = 2 * h; i < kScoreRegs; i += 4) {
        s[i] = state[h].weight(s[i], c[h]);
        s[i + 1] = state[h].weight(s[i + 1], c[h]);
        if constexpr (!Shape::kRowSumsByMma) sum += s[i] + s[i + 1];
      }
      if constexpr (!Shape::kRowSumsByMma) state[h].add_sum(sum);  // this lane's columns only: the lanes' sums add up at the end
    }
  };
  // Per-token v scales (kTokenScales): the weights go to P V times v_scale / v_ref, v_ref the largest
  // v scale seen so far, as in the mma.sync kernel: P stays at most 2^kMaxSlack in fp16, its sums
  // stay those of the weights, and the accumulator takes v_ref at the end. The copying warpgroup
  // works out the quotients, in fp16, and v_ref (weigh_values); here they multiply P as packed
  // (two weights an instruction; the quotient's rounding and the product's add two fp16 roundings
  // to P's), and a tile that raises v_ref rescales the accumulator (by `rescale`) to it. With FP8
  // P V the quotients are fp32 and multiply the fp32 weights, before P is rounded to e4m3; each
  // lane reads them from a row of its own, 8 loads of 16 bytes in place of 16 of 8 (1.3-1.6%
  // faster over block_wise_fp8 at 8 x 4096). The same rows in fp16 (4 loads in place of 16) were
  // 0.4-1.2% slower (perf notes v64). (Weighing
  // V's rows as the copying warpgroup widens them instead, as many multiplies at head_dim 128, was
  // 2.6-3.8% slower: perf notes v63.)
  float v_ref = 0.0f;
  auto scale_by_values = [&](int tile, float (&rescale)[2]) {
    const uint8_t* slot = scales_at(tile);
    const float tile_ref = *reinterpret_cast<const float*>(slot + Shape::kValueRefOffset);
    if (tile_ref > v_ref) {  // uniform over the CTA
      const float ratio = v_ref * __frcp_rn(tile_ref);
      rescale[0] *= ratio;
      rescale[1] *= ratio;
      v_ref = tile_ref;
    }
    if constexpr (kFp8Pv) {  // on the fp32 weights, before they are packed: this lane's row, two pairs a load
      const float4* row = reinterpret_cast<const float4*>(slot + Shape::kValueWeightsOffset + 8 * t * Shape::kWeightRowPairs);
#pragma unroll
      for (int k = 0; k < kKeys / 16; ++k) {
        const float4 two = row[k];
        times_key_pair(2 * k, make_float2(two.x, two.y));
        times_key_pair(2 * k + 1, make_float2(two.z, two.w));
      }
    } else {
#pragma unroll
      for (int m = 0; m < kKeys / 8; ++m) {
        const __half2 w = *reinterpret_cast<const __half2*>(slot + Shape::kValueWeightsOffset + 4 * (4 * m + t));
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const __half2 x = __hmul2(MmaFp16::as_half2(pf[m / 2][2 * (m % 2) + h]), w);
          pf[m / 2][2 * (m % 2) + h] = *reinterpret_cast<const uint32_t*>(&x);
        }
      }
    }
  };
  // A weight overflowed (a score 2^7 or more above its row's max, in the exponent's units), and S
  // with it: Q K^T again in fp32, a score at a time, from Q in shared memory and the keys in global
  // memory (their stage may be in use again). Rare (a row whose scores leap by more than 88 in
  // natural units after its first tile), so kept small. Keys past the sequence score 0 (masked).
  auto query_element = [&](int row, int d) {  // Q as staged (a 16-bit q times its power of two)
    const uint8_t* q = query_bytes();
    if constexpr (Shape::kQSentPerItem) {  // (its buffer may hold the next item's Q by now)
      const int r = min(cta.row0 + row, cta.rows - 1);
      const uint8_t* q_row = static_cast<const uint8_t*>(p.q) + (int64_t(cta.token(r)) * p.heads_q + cta.head(r, kv_head)) * D;
      return e4m3_to_float(q_row[d]);
    } else if constexpr (kFp8Q) {
      return e4m3_to_float(q[fp8_row_offset<Shape, kQTile>(row, d / 16) + d % 16]);
    } else {
      const int offset = (d / 64) * kQTile + wgmma::swizzled_offset(row, d % 64 / 8) + 2 * (d % 8);
      return __half2float(*reinterpret_cast<const __half*>(q + offset));
    }
  };
  auto recompute_scores = [&](int tile) {
    const uint8_t* k_base = static_cast<const uint8_t*>(kPaged ? p.key_cache : p.k);
    float fresh[kScoreRegs];
#pragma unroll 1
    for (int i = 0; i < kScoreRegs; ++i) {
      const int row = 64 * wg + 16 * warp + g + 8 * ((i >> 1) & 1);
      const int key = range.begin + tile * kKeys + 8 * (i / 4) + 2 * t + (i & 1);
      const int64_t key_at = key < cta.k_len ? key_row<kPaged>(p, cta, key, kv_head) : -1;
      float acc = 0.0f;
#pragma unroll 1
      for (int c = 0; key_at >= 0 && c < kChunks; ++c) {  // 16 elements at a time
        const uint8_t* k = k_base + key_at * D + 16 * c;
#pragma unroll
        for (int b = 0; b < 16; ++b) acc = fmaf(query_element(row, 16 * c + b), e4m3_to_float(k[b]), acc);
      }
      fresh[i] = acc;
    }
#pragma unroll
    for (int i = 0; i < kScoreRegs; ++i) s[i] = fresh[i];
  };
  // With kWeighFirst, once every row of the warp has a max, the weights go against it at once and
  // the tile's max is checked afterwards, on the packed weights (settle_max): the path from S to
  // the exponentials then holds no max reduction and no shuffles (+5% at head_dim 128, where
  // removing the max altogether, timing only, gave +9%). Returns whether it went that way
  // (uniform over the warp); the weights' sums then wait in `pending` for the check.
  // With per-token scales, a tile that no mask touches takes each key's multiplier as that of the
  // exponent's multiply-add: one instruction per score, as over a single scale, and 2 multiplies
  // per key pair (none with FP8 q where the copying warpgroup folded the score scale).
  auto softmax = [&](int tile, float (&rescale)[2], float (&pending)[2]) {
    const bool weigh_first = kWeighFirst && __all_sync(0xffffffffu, state[0].fine_max() && state[1].fine_max());
    const bool keys_in_exponent = kTokenScales && weigh_first && !need_mask(tile) && !unmapped(tile);
    if (!keys_in_exponent) prepare_scores(tile);
    if (!weigh_first) {
      softmax_max_first(rescale);
      return false;
    }
    pending[0] = pending[1] = 0.0f;
    auto weigh = [&](auto scale_pair) {
#pragma unroll
      for (int m = 0; m < kKeys / 8; ++m) {
        const float2 c = scale_pair(m);
#pragma unroll
        for (int i = 4 * m; i < 4 * m + 4; ++i) s[i] = state[(i >> 1) & 1].weight(s[i], i & 1 ? c.y : c.x);
        pending[0] += s[4 * m] + s[4 * m + 1];
        pending[1] += s[4 * m + 2] + s[4 * m + 3];
      }
    };
    if (keys_in_exponent) {
      // The table's format picked once for the tile: picked per key pair, ptxas predicated both
      // formats' loads and the bf16 unpacking, and every tile issued them all (H100, FP8 q at head_dim
      // 128 over an fp32 table: +1% at 8 x 4096 and 1 x 16384).
      if (kFoldKeysInCopies || !p.k_scale.is_bf16) {
        weigh([&](int m) { return key_multipliers(tile, m, false); });
      } else {
        weigh([&](int m) { return key_multipliers(tile, m, true); });
      }
    } else {
      weigh([&](int) { return make_float2(exponent_scale, exponent_scale); });
    }
    rescale[0] = rescale[1] = 1.0f;
    return true;
  };
  // The accumulator layout of S is the A layout of P.
  auto pack_p = [&] {
    if constexpr (kFp8Pv) {
#pragma unroll
      for (int ks = 0; ks < kKeys / 32; ++ks)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int i = 16 * ks + 8 * (j >> 1) + 2 * (j & 1);
          pf[ks][j] = E4m3Format::pack2(s[i], s[i + 1]) | uint32_t(E4m3Format::pack2(s[i + 4], s[i + 5])) << 16;
        }
    } else {
#pragma unroll
      for (int ks = 0; ks < kKeys / 16; ++ks)
#pragma unroll
        for (int j = 0; j < 4; ++j) pf[ks][j] = MmaFp16::pack(s[8 * ks + 2 * j], s[8 * ks + 2 * j + 1]);
    }
  };
  // After softmax's weights against the old max. Weights are positive, so one above kMaxWeight
  // (fp32's overflow included) takes its row's sum in this lane above that too: the two sums
  // screen the tile (a scan of the packed weights put 19 instructions before the next wgmmas;
  // without it +1-1.5% over block_wise_fp8 at head_dim 128), and only a warp with such a sum looks
  // at its weights. Where one exceeds it the row's max moves to the tile's, as
  // softmax_max_first would move it, and the weights, their sum and (by `rescale`) the accumulator
  // follow; a weight that overflowed fp32 (a score 2^7 or more above the max) takes S from
  // recompute_scores.
  auto settle_max = [&](int tile, float (&rescale)[2], float (&pending)[2]) {
    if (__builtin_expect(__any_sync(0xffffffffu, pending[0] > kMaxWeight || pending[1] > kMaxWeight), 0)) {
      float largest[2] = {0.0f, 0.0f};
#pragma unroll
      for (int i = 0; i < kScoreRegs; ++i) largest[(i >> 1) & 1] = fmaxf(largest[(i >> 1) & 1], s[i]);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        largest[h] = fmaxf(largest[h], __shfl_xor_sync(0xffffffffu, largest[h], 1));
        largest[h] = fmaxf(largest[h], __shfl_xor_sync(0xffffffffu, largest[h], 2));
      }
      if (__any_sync(0xffffffffu, largest[0] == INFINITY || largest[1] == INFINITY)) {
        recompute_scores(tile);
        prepare_scores(tile);
        softmax_max_first(rescale);
      } else {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if (largest[h] > kMaxWeight) rescale[h] = state[h].raise_max(state[h].m + fast_log2(largest[h]) - kHeadroom);
          pending[h] *= rescale[h];
        }
#pragma unroll
        for (int i = 0; i < kScoreRegs; ++i) s[i] *= rescale[(i >> 1) & 1];
#pragma unroll
        for (int h = 0; h < 2; ++h) state[h].add_sum(pending[h]);
      }
      if constexpr (!kFp8Pv) pack_p();
      return;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) state[h].add_sum(pending[h]);  // this lane's columns only: the lanes' sums add up at the end
  };

  // Software pipeline (see the top): tile 0's S and softmax come first; the loop runs every tile
  // but the last, whose P V ends it. The loop body issues its wgmmas unconditionally: with the
  // next tile's Q K^T under an `if`, ptxas serialized every wgmma of the kernel (warning C7514).
  auto run_item = [&] {
    float rescale[2], pending[2];
    if (range.tiles > 0) {
      roles::mbarrier_wait(qk_ready(0), qk_phase(0));
      if constexpr (kQInRegisters) load_query_fragments();
      if constexpr (Shape::kQSentPerItem) {
        roles::mbarrier_arrive(smem_address(&q_free_bar));
        // The last item's epilogue places, just before this item's tile 0 (see the copying loop).
        if (ring_base > 0) {
#pragma unroll
          for (int place = -kEpiloguePlaces; place < 0; ++place) roles::mbarrier_arrive(k_free(place));
        }
      }
      take_turn();
      issue_qk(0);
      pass_turn();
      wgmma::wait<0>();
      wgmma::fence_registers(s);
      prepare_scores(0);
      softmax_max_first(rescale);  // no row has a max yet; o is still 0: nothing to rescale
      if constexpr (kFp8Pv && kTokenScales) scale_by_values(0, rescale);
      pack_p();
      if constexpr (!kFp8Pv && kTokenScales) scale_by_values(0, rescale);
      if constexpr (!kV16InStage) roles::mbarrier_arrive(qk_free(0));  // (else after its P V)
    }
#pragma unroll 1
    for (int tile = 0; tile + 1 < range.tiles; ++tile) {
      roles::mbarrier_wait(qk_ready(tile + 1), qk_phase(tile + 1));
      if constexpr (!kFp8Q) roles::mbarrier_wait(v16_ready(tile), v16_phase(tile));  // (see k_ready)
      take_turn();
      issue_qk(tile + 1);
      if constexpr (kSplitHandOver || kCopyGroups == 2) roles::mbarrier_wait(v16_ready(tile), v16_phase(tile));
      issue_pv(tile);
      pass_turn();
      wgmma::wait<1>();  // Q K^T of tile + 1 (groups complete in order)
      wgmma::fence_registers(s);
      const bool max_pending = softmax(tile + 1, rescale, pending);
      // After the softmax, which reads the tile's unmapped_tile note and k scales; with per-token
      // scales after scale_by_values, which reads its v weights.
      if constexpr (!kTokenScales && !kV16InStage) roles::mbarrier_arrive(qk_free(tile + 1));
      wgmma::wait<0>();  // P V of tile (it reads pf: P of tile + 1 goes there only now)
      wgmma::fence_registers(o);
      wgmma::fence_registers(pf);
      if constexpr (Shape::kRowSumsByMma) wgmma::fence_registers(row_sums);
      roles::mbarrier_arrive(v16_free(tile));
      if constexpr (kV16InStage) roles::mbarrier_arrive(qk_free(tile));  // (its fp16 V is read)
      if constexpr (!kFp8Pv && (kWeighFirst || kTokenScales)) pack_p();  // (scale_by_values takes P packed)
      if constexpr (kWeighFirst) {
        if (max_pending) settle_max(tile + 1, rescale, pending);
      }
      if constexpr (kTokenScales) {
        scale_by_values(tile + 1, rescale);
        if constexpr (!kV16InStage) roles::mbarrier_arrive(qk_free(tile + 1));
      }
      if constexpr (kFp8Pv && (kWeighFirst || kTokenScales)) pack_p();
      // Once a row's max settles most tiles leave it: skip the rescale where the whole warp's do.
      if (!__all_sync(0xffffffffu, rescale[0] == 1.0f && rescale[1] == 1.0f)) {
#pragma unroll
        for (int part = 0; part < kOutParts; ++part)
#pragma unroll
          for (int i = 0; i < kPartRegs; ++i) o[part][i] *= rescale[(i >> 1) & 1];
#pragma unroll
        for (int i = 0; i < 4; ++i) row_sums[i] *= rescale[(i >> 1) & 1];
        if constexpr (kFp8Pv) carried[0] *= rescale[0], carried[1] *= rescale[1];
      }
      if constexpr (kFp8Pv) {
        if (tile % kFoldTiles == kFoldTiles - 1) {
          fold_output(true);
          carried[0] = carried[1] = 1.0f;
          pv_fresh = true;
        }
      }
      if constexpr (!kWeighFirst && !kTokenScales) pack_p();
    }
    if (range.tiles > 0) {
      roles::mbarrier_wait(v16_ready(range.tiles - 1), v16_phase(range.tiles - 1));
      take_turn();
      issue_pv(range.tiles - 1);
      pass_turn();
    }
    auto await_last_pv = [&] {  // (unconditional: under an `if` ptxas adds a wait of its own at the issue)
      wgmma::wait<0>();
      if constexpr (kPersistent) roles::mbarrier_arrive(v16_free(range.tiles - 1));  // (the next item's tiles take it)
      if constexpr (kV16InStage) {
        if (range.tiles > 0) roles::mbarrier_arrive(qk_free(range.tiles - 1));
      }
      wgmma::fence_registers(o);
      if constexpr (Shape::kRowSumsByMma) wgmma::fence_registers(row_sums);
      if constexpr (kFp8Pv) fold_output(false);
    };

    // Epilogue: out = o / d (0 for a row that saw no key), the output's format chosen once (a
    // switch per store cost as much as the stores). The row sums and log-sum-exps go out under
    // the last P V, unless the tensor cores sum the rows.
    if constexpr (Shape::kRowSumsByMma) await_last_pv();
    float mult[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if constexpr (Shape::kRowSumsByMma) {
        state[h].d = row_sums[2 * h];
      } else {
        state[h].d += __shfl_xor_sync(0xffffffffu, state[h].d, 1);
        state[h].d += __shfl_xor_sync(0xffffffffu, state[h].d, 2);
      }
      mult[h] = state[h].inv_sum() * (kTokenScales ? v_ref : scales.out);
      const int2 place = row_place[row_g + 8 * h - cta.row0];
      if (t == 0 && place.x >= 0) store_lse(p, split, place.x, place.y, state[h].lse());
    }
    if constexpr (!Shape::kRowSumsByMma) await_last_pv();
    const bool row_in[2] = {row_g < cta.rows, row_g + 8 < cta.rows};
    // f(d, x0, x1) for each pair of this thread's columns d, d + 1 of row h, normalized.
    auto for_each_pair = [&](int h, auto&& f) {
#pragma unroll
      for (int part = 0; part < kOutParts; ++part)
#pragma unroll
        for (int i = 2 * h; i < kPartRegs; i += 4)
          f(128 * part + 8 * (i / 4) + 2 * t, o[part][i] * mult[h], o[part][i + 1] * mult[h]);
    };
    auto write = [&](auto format, void* out) {
      using Format = decltype(format);
      using Storage = typename Format::Storage;
      constexpr int kRowBytes = D * int(sizeof(Storage));
      if constexpr (64 * kRowBytes <= kOutputBufferBytes) {
        // Through shared memory: the warpgroup's 64 rows go to stage tiles + wg, free by now (only
        // the last tiles' stages may still be read, by the others: the last one's, and with
        // kV16InStage the one before's fp16 V, both other stages than these; V in every stage is
        // widened, the last tile's fp16 V having been waited for), or to fp16 K buffer wg (with
        // kKV16Copied to the warpgroup's part of the stages), in column tiles one swizzle wide as
        // the tensor copies read them. Where all 64 rows are the
        // sequence's, one thread stores them by a tensor copy per column tile; elsewhere each warp
        // writes whole rows with 16-byte stores.
        constexpr int kRowChunks = kRowBytes / 16;
        static_assert(kRowBytes % kOutTileBytes == 0, "whole column tiles");
        if (!kOutputInStages && !kOutputInSums && range.tiles > 0) {
          roles::mbarrier_wait(k16_free(range.tiles - 1), phase_of(stage_index(range.tiles - 1), kK16Buffers));
        }
        const uint32_t buffer = kOutputInSums     ? smem + Shape::kOutSumsOffset + wg * kOutputBufferBytes
                                : kKV16Copied     ? smem + Shape::kStagesOffset + wg * kOutputBufferBytes
                                : kOutputInStages ? stage_of(range.tiles + wg)
                                                  : k16_of(wg);
        // (The other threads' sums must be read first: the staged rows fall on their chunks.)
        if constexpr (kOutputInSums) roles::named_sync(2 + kGroups + wg, 128);
        uint8_t* staging = smem_raw + (buffer - smem_address(smem_raw));
        auto offset = [&](int row, int byte) {
          return (byte / kOutTileBytes) * 64 * kOutTileBytes + wgmma::swizzled_offset(row, byte % kOutTileBytes / 16) +
                 byte % 16;
        };
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if (!row_in[h]) continue;
          const int row = 16 * warp + g + 8 * h;
          for_each_pair(h, [&](int d, float x0, float x1) {
            store_pair_as<Format>(staging + offset(row, d * int(sizeof(Storage))), 0, x0, x1);
          });
        }
        const bool whole_rows = maps.out_ready && p.num_splits == 1 && cta.row0 + 64 * (wg + 1) <= cta.rows;
        if (whole_rows) wgmma::fence_shared_for_async();
        roles::named_sync(2 + kGroups + wg, 128);
        if (whole_rows) {
          if (threadIdx.x % 128 == 0) {
            const int token = cta.token(cta.row0 + 64 * wg);  // the group's heads of 64 / group tokens
#pragma unroll
            for (int ct = 0; ct < kRowBytes / kOutTileBytes; ++ct) {
              tma::store_3d(&maps.out, buffer + ct * 64 * kOutTileBytes, ct * kOutTileBytes, kv_head * cta.group, token);
            }
            tma::commit_stores();
            tma::wait_stores_read();  // the staging stays the CTA's until then
          }
          return;
        }
        // Unrolled, so that the rows' places and chunks are read before the first store.
#pragma unroll
        for (int pass = 0; pass < 64 * kRowChunks / 128; ++pass) {
          const int index = threadIdx.x % 128 + 128 * pass, row = index / kRowChunks, chunk = index % kRowChunks;
          const int2 place = row_place[64 * wg + row];
          if (place.x < 0) continue;
          const int64_t element = output_row_index(p, split, place.x, place.y);
          *reinterpret_cast<uint4*>(static_cast<uint8_t*>(out) + element * int64_t(sizeof(Storage)) + chunk * 16) =
              *reinterpret_cast<const uint4*>(staging + offset(row, chunk * 16));
        }
      } else {  // fp32 at head_dim 256: two elements per store
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if (!row_in[h]) continue;
          const int2 place = row_place[row_g + 8 * h - cta.row0];
          const int64_t first = output_row_index(p, split, place.x, place.y);
          for_each_pair(h, [&](int d, float x0, float x1) { store_pair_as<Format>(out, first + d, x0, x1); });
        }
      }
    };
    if (p.num_splits > 1) {
      write(Fp32Format{}, p.partial_out);
    } else {
      switch (p.out_type) {  // (the attention ops write bf16, fp16 or fp32)
        case ElementType::kBf16: write(Bf16Format{}, p.out); break;
        case ElementType::kFp16: write(Fp16Format{}, p.out); break;
        default: write(Fp32Format{}, p.out); break;
      }
    }
  };
  if constexpr (kPersistent) {
    // An item whose rows see no key: zeros and log-sum-exps -inf, stored from here (it takes no
    // place in the rings).
    auto write_rows_without_keys = [&] {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = row_g + 8 * h;
        if (r >= cta.rows) continue;
        const int token = cta.token(r), head = cta.head(r, kv_head);
        if (t == 0) store_lse(p, split, token, head, -INFINITY);
        for (int d = 2 * t; d < D; d += 8) {
          store_output(p, split, token, head, d, 0.0f);
          store_output(p, split, token, head, d + 1, 0.0f);
        }
      }
    };
    for (int i = 0; take_item(i); ++i) {
      locate_thread_rows(cta);
      if (range.tiles == 0) {
        write_rows_without_keys();
        continue;
      }
      scales = fold_scales<kPaged>(p, cta.seq, kv_head);
      if constexpr (!kFp8Q) stage_query();
      take_scales();
      // o starts from 0. Where the tensor cores sum P's rows (head_dim 64) the item's first P V
      // writes o and the sums in place of adding to them: zeroed by stores here, ptxas ran every
      // wgmma of the kernel over cache_fp8 synchronously (warning C7515). So does fp8_pv's, as
      // its folds do; its second level starts from 0 (the last item's rows are out of it).
      if constexpr (Shape::kRowSumsByMma || kFp8Pv) {
        pv_fresh = true;
      } else {
        set_all(o, 0.0f);
      }
      if constexpr (kFp8Pv) {
        static_assert(!Shape::kRowSumsByMma, "(no second level of row sums to clear)");
        clear_sums();
        carried[0] = carried[1] = 1.0f;
      }
      state[0] = state[1] = SoftmaxState2::empty();
      v_ref = 0.0f;
      place_rows();
      run_item();
      // The warpgroup's rows are out of its epilogue place (the tensor copies have read them) and
      // its threads are done with the rows' places. The places go back to the copying warpgroup
      // with the next item's first tile, whose tensor copies may then write there: the rows'
      // shared stores (the per-chunk path's) are fenced against them. (kKV16Copied: the place is
      // the warpgroup's own part of the stages.)
      wgmma::fence_shared_for_async();
      roles::named_sync(2 + kGroups + wg, 128);
      pass_item(range.tiles);
    }
    if (wg == 0) take_turn();
  } else {
    run_item();
  }
#else
  __trap();  // launched only where the sm_90a build exists (see wgmma_prefill_applies)
#endif
}

}  // namespace attention_gpu
}  // namespace fastattn
