// The sm_90a prefill kernel's shape (attention_wgmma.cuh): tiles, stages, shared-memory layout and
// register split per head_dim, q format, cache scales and fp8_pv, and what the host encodes for it
// (tensor maps). The plan (attention.cu) sizes its grid and key splits from the free functions here.
#pragma once

#include <cuda.h>  // CUtensorMap

#include <cstdint>

#include "fastattn/platform.h"
#include "fastattn/wgmma.h"

namespace fastattn {
namespace attention_gpu {

// Keys per tile: 128, or 64 at head_dim 256, where the accumulator alone takes 128 registers.
constexpr int wgmma_tile_keys(int head_dim) { return head_dim == 256 ? 64 : 128; }
// Per-token scales: the keys whose scales a lane of a copying warp copies (a warp copies a tile's
// k or v scales).
constexpr int wgmma_scale_keys(int head_dim) { return wgmma_tile_keys(head_dim) / 32; }
// Computing warpgroups of 64 rows: three at head_dim 64, whose accumulator is small enough for
// three in the register file; two otherwise.
constexpr int wgmma_compute_groups(int head_dim) { return head_dim == 64 ? 3 : 2; }
// Rows per CTA (the plan sizes its grid and key splits by it).
constexpr int wgmma_rows(int head_dim) { return 64 * wgmma_compute_groups(head_dim); }

// K and V widened before the kernel (AttentionParams::values_fp16, keys_fp16): the row of sequence
// `seq`'s key `key`. Over a cache `first_row` is the first of the sequence's slot (widened_slot),
// widened_keys rows each. Contiguous keys keep their order with a tile's room after each
// sequence, so that a tile that starts inside a sequence ends inside its rows: `first_row` is the
// sequence's first key (its cu_seqlens_k), and a tile for each sequence before it follows. (The
// room is head_dim 128's tile, the largest: head_dim 256's are 64 keys.)
constexpr int kWidenedTileKeys = wgmma_tile_keys(128);
FA_HD int64_t widened_row(bool paged, int seq, int64_t first_row, int key) {
  return first_row + (paged ? 0 : int64_t(kWidenedTileKeys) * seq) + key;
}
// Over a cache: the slots of the widened buffers, widened_seqs and, where the batch has more
// sequences, one more for those past them (AttentionParams::widened_seqs).
FA_HD int64_t widened_slots(int batch, int widened_seqs) { return widened_seqs + (widened_seqs < batch ? 1 : 0); }

// kFp8Values: P V on the FP8 tensor cores (the ops' fp8_pv), at head_dim 64 and 128 with FP8 q only.
// kPagedKeys: the paged kernel's (a cache's keys), which sets the softmax's order (and at head_dim 64
// whether CTAs persist). kSmallBlocks: the paged kernel's for cache blocks of a quarter tile or less
// (attention_wgmma_kernel's).
// kWidenedBefore: K and V were widened to fp16 once per call, before the kernel (widen_kv_kernel,
// widen_cached_kv_kernel), and arrive by tensor copies rather than widened by the copying
// warpgroup: with FP8 q only V (into the stages, kV16InStage), with a 16-bit q both (straight into
// the fp16 K and V buffers the computing warpgroups read, kKV16Copied). FP8 q at head_dim 128, a
// 16-bit q at every head_dim.
template <int D, bool kFp8Query = true, bool kPerTokenScales = false, bool kFp8Values = false, bool kPagedKeys = false,
          bool kSmallBlocks = false, bool kWidenedBefore = false>
struct WgmmaShape {
  static_assert(D == 64 || D == 128 || D == 256, "head_dim 64, 128 or 256");
  static_assert(!(kPerTokenScales && !kFp8Query && D == 256 && !kWidenedBefore), "no room for per-token scales");
  static_assert(!kFp8Values || (D <= 128 && kFp8Query), "FP8 P V at head_dim 64 and 128 with FP8 q");
  static constexpr int kHeadDim = D;
  static_assert(!kWidenedBefore || ((D == 128 || !kFp8Query) && !kFp8Values),
                "V widened before the kernel: FP8 q at head_dim 128, a 16-bit q at every head_dim");
  // (The kernel takes it where the plan says so: attention.cu's widening_pays.)
  static constexpr bool kFp8Q = kFp8Query, kTokenScales = kPerTokenScales, kFp8Pv = kFp8Values;
  static constexpr bool kV16InStage = kWidenedBefore && kFp8Query, kKV16Copied = kWidenedBefore && !kFp8Query;
  static constexpr int kComputeGroups = wgmma_compute_groups(D);
  // Copying warpgroups: with FP8 q at head_dim 256 a second one widens V, so that the first only
  // sends the copies and hands the tiles over (8 x 4096: contiguous 3.5%, per-token scales 4%,
  // cache_fp8 in blocks of 16 / 32 14% / 8%, of 64 and 128 3% faster; the widening split between
  // the two: slower; perf notes v78-v80). One elsewhere.
  static constexpr int kCopyGroups = D == 256 && kFp8Query ? 2 : 1;
  static constexpr int kThreads = 128 * (kCopyGroups + kComputeGroups);  // the copying warpgroups first
  static constexpr int kRows = wgmma_rows(D), kKeys = wgmma_tile_keys(D);
  static constexpr bool kTakesShort = false;  // (SeqSelect::kShort: the decode kernel only)
  static constexpr bool kWidened = kWidenedBefore;
  // Copies run two tiles ahead of the widening, which runs one ahead of the consumers: 4 stages
  // of K and V as copied, 2 of fp16 V (with kV16InStage fp16 V in the stages and none apart). With
  // a 16-bit q 2 of fp16 K too, and the copies run
  // kStages - 1 tiles ahead of the widening: 4 stages at head_dim 64, 2 at 128, and at 256 (fp16
  // Q alone takes 64 KB) one: the next tile's copies wait for the widening of the last (225 KB).
  // kKV16Copied keeps that layout: its tensor copies go to the fp16 buffers, and the stages hold
  // no tile (at most the epilogue's rows; at head_dim 256 nothing: a warpgroup's 16-bit rows
  // would need 32 KB, and its rows go out from registers).
  // Per-token scales (kTokenScales: a block_wise_fp8 cache) take a stage's room at head_dim 256
  // with FP8 q and at 128 with a 16-bit q; a 16-bit q at 256 that widens in the kernel leaves no
  // room for them (kKV16Copied, whose stages take none, does).
  // FP8 P V (P in e4m3, V^T in place of fp16 V) takes a stage's room for its fp32 sums at head_dim
  // 128; at 64 fp16 V's room holds them. With contiguous keys at 128 (kValueRing) V as copied
  // takes a ring of its own, one slot shorter than K's: the copying warpgroup frees a V slot as
  // soon as it has transposed it, the computing ones a K slot only after the tile's softmax. That
  // gives K four slots in the room of three stages and a half (1.7% / 1.9% faster at 8 x 4096 /
  // 1 x 16384, perf notes v76); over the caches Q's second buffer or the scale slots take that room.
  // A CTA per multiprocessor takes row tiles off a queue, one after another (kPersistent): FP8 q
  // at head_dim 128, and at 64 over a cache. The copying warpgroup sends the next
  // item's Q and first tiles while the computing warpgroups end this one, so that a CTA's start
  // (its rows located, Q and the first tiles on their way) is paid once per multiprocessor rather
  // than once per row tile. Each item's epilogue takes kEpiloguePlaces places of the stage ring
  // after its tiles, a computing warpgroup's rows each (an even count, so that the fp16 V ring's
  // phase follows from the stage index: head_dim 64's three warpgroups leave one unused), and the
  // next item's first two tiles take the stages of this one's last two: kEpiloguePlaces + 2
  // stages. The contiguous kernel at head_dim 64 ran 7% slower that way at 1 x 16384 (no faster
  // at 8 x 4096; perf notes v68), where over cache_fp8 and block_wise_fp8 it gained 3%.
  // fp8_pv persists at head_dim 128: its warpgroups stage their rows in their own fp32 sums
  // (kOutSumsBytes), so its items take no epilogue places and its ring keeps the stages it has
  // room for. Over cache_fp8, whose Q K^T reads Q from shared memory, two Q buffers fit only
  // without the ones after V^T (kRowSumsByMma).
  // kKV16Copied persists too: its tiles go straight to the fp16 K and V buffers, whose rings run on
  // through the items, and the stages, which hold no tile, keep each computing warpgroup's rows
  // for the epilogue in a part of their own (no epilogue places in the rings). Its computing
  // warpgroups stage each item's 16-bit q themselves (one Q buffer) once their last item is done.
  static constexpr bool kPersistent = (kFp8Q && (D == 128 || (D == 64 && kPagedKeys && !kFp8Pv))) || kKV16Copied;
  // The copying warpgroup sends each item's Q (FP8) while the item before runs, into a buffer the
  // computing warpgroups release (q_free_bar); a 16-bit q they stage themselves.
  static constexpr bool kQSentPerItem = kPersistent && kFp8Q;
  static constexpr int kEpiloguePlaces = kFp8Pv || kKV16Copied ? 0 : (kComputeGroups + 1) / 2 * 2;
  static constexpr bool kValueRing = kFp8Pv && D == 128 && !kPagedKeys;
  static constexpr int kStages = kPersistent && kFp8Q && !kFp8Pv ? kEpiloguePlaces + 2
                                 : kFp8Q     ? ((kTokenScales && D == 256) || (kFp8Pv && D == 128 && !kValueRing) ? 3 : 4)
                                             : D == 64 ? 4 : D == 128 && !kTokenScales ? 2 : 1;
  static constexpr int kV16Buffers = 2, kK16Buffers = kFp8Q ? 0 : 2;
  // FP8 rows sit in column tiles one swizzle wide: 128 bytes, two per row at head_dim 256; at
  // head_dim 64 the 64-byte swizzle and one.
  static constexpr int kSwizzleBytes = D < 128 ? D : 128;
  static constexpr int kColumnTiles = D / kSwizzleBytes;
  static constexpr int kKTileBytes = kKeys * kSwizzleBytes;
  static constexpr int kKBytes = kColumnTiles * kKTileBytes;  // K of a stage; V (same layout) follows
  // A tile's K and V as copied; with kV16InStage V as fp16 (twice FP8 V's bytes), which P V reads
  // there: the stage then holds both until the tile's P V is done, and no fp16 V buffers follow.
  // (kKV16Copied: the epilogue's rows, none at head_dim 256.)
  static constexpr int kStageBytes = kKV16Copied && D == 256 ? 0 : (kV16InStage ? 3 : 2) * kKBytes;
  // kValueRing: the stage ring holds K alone, kValueSlots slots of V follow it.
  static constexpr int kValueSlots = kValueRing ? kStages - 1 : 0;
  static constexpr int kStageStride = kValueRing ? kKBytes : kStageBytes;
  // Q in column tiles of 128-byte rows: FP8 as K in a stage; fp16 as V16's blocks, kRows rows each.
  // kQkRowBytes: a row of a column tile of Q, and of K, as Q K^T reads them.
  static constexpr int kQkRowBytes = kFp8Q ? kSwizzleBytes : 128;
  static constexpr int kQTileBytes = kRows * kQkRowBytes;
  static constexpr int kQBytes = (kFp8Q ? kColumnTiles : D / 64) * kQTileBytes;
  // The weights before the max (the kernel's softmax, settle_max) where that measured faster (perf
  // notes v19, v31-v32, v47-v48, v80): the contiguous kernel at head_dim 128, and with FP8 q at 256;
  // every kernel over per-token scales, whose keys' multipliers then join the exponent's
  // multiply-add; a 16-bit q over one scale's cache; FP8 q over cache_fp8 at 256 in blocks of 32
  // keys and more (with one copying warpgroup no faster, with two 3-4%; in blocks of 16 3% slower).
  // The others keep the max first: there ptxas waits for P V ahead of the whole softmax, and that
  // order was the faster one for them (the exponentials kept ahead of the wait lost 2-9%).
  static constexpr bool kWeighFirst =
      kPagedKeys ? kTokenScales || !kFp8Q || (D == 256 && !kSmallBlocks) : D == 128 || (kFp8Q && D == 256);
  // fp16 V, N-major: blocks of 64 columns (128-byte rows), each kKeys rows in swizzle atoms of 8.
  // At head_dim 64 a block of fp16 ones follows V in each buffer, and P V's wgmma takes 8 of its
  // columns too (m64n72): the tensor cores sum P's rows in place of 64 adds per thread and tile,
  // which weigh most where the softmax is longest against the matrix products (+4%). At head_dim
  // 128 the ones need 32 KB that only a third stage frees, and neither that nor a separate m64n8
  // wgmma per k-step was faster. Those sums are of P as rounded to fp16, so the log-sum-exp moves
  // by up to 2^-12 (a row over a few keys): inside FP8 q's score error, but a 16-bit q keeps the
  // fp32 sums, with the mma.sync kernel's log-sum-exp.
  // (Not with per-token scales: P then goes to the tensor cores times each key's v scale; nor where
  // the softmax weighs first, and sums the weights anyway to screen the tile.) With FP8 P V at
  // head_dim 64, 8 rows of e4m3 ones follow V^T (1 KB; m64n72k32): the sums are then of P as
  // rounded to e4m3, as P V takes it, and the log-sum-exp goes with them. Over cache_fp8 at 128
  // they gained 1-2% until fp8_pv persisted there: its second Q buffer takes their room (perf
  // notes v71).
  static constexpr bool kRowSumsByMma = kFp8Q && !kTokenScales && !kWeighFirst && D == 64;
  static constexpr int kV16BlockBytes = kKeys * 128;
  static constexpr int kV16Bytes = kFp8Pv ? (D + 8 * kRowSumsByMma) * kKeys : (D / 64 + kRowSumsByMma) * kV16BlockBytes;
  // Where the ones start in each buffer, their bytes, and 4 of them: fp16 1.0 = 0x3c00, e4m3 0x38.
  static constexpr int kOnesOffset = kFp8Pv ? D * kKeys : D / 64 * kV16BlockBytes;
  static constexpr int kOnesBytes = kFp8Pv ? 8 * kKeys : kV16BlockBytes;
  static constexpr uint32_t kOnesWord = kFp8Pv ? 0x38383838u : 0x3c003c00u;
  static constexpr int kK16Bytes = D / 64 * kV16BlockBytes;  // fp16 K (16-bit q): V16's layout
  // FP8 q at head_dim 128: the warp's rows of Q as Q K^T's A fragments (16 registers), read from
  // shared memory once they have landed with tile 0, so that each Q K^T reads only K there (4 of
  // its 6 KB a k-step): +1% contiguous and over block_wise_fp8 at 8 x 4096. Not over cache_fp8,
  // whose computing warpgroups then spilled and ran 0-1.5% slower.
  static constexpr bool kQInRegisters = kFp8Q && D == 128 && (!kPagedKeys || kTokenScales);
  // kQSentPerItem: where Q sits in registers its buffer takes the next item's Q while the item
  // runs; where every Q K^T reads it from shared memory, two buffers take the items in turn.
  static constexpr int kQBuffers = kQSentPerItem && !kQInRegisters ? 2 : 1;
  static constexpr int kQOffset = 0;
  static constexpr int kStagesOffset = kQOffset + kQBuffers * kQBytes;
  static constexpr int kValuesOffset = kStagesOffset + kStages * kStageStride;
  static constexpr int kK16Offset = kValuesOffset + kValueSlots * kKBytes;
  static constexpr int kV16Offset = kK16Offset + kK16Buffers * kK16Bytes;
  // Per-token scales: where the copying warpgroup multiplies each key's k scale by the score scale
  // (weigh_keys): at head_dim 64 (FP8 q 333 -> 354 TFLOP/s at 8 x 4096), whose softmax weighs most
  // against the matrix products. Elsewhere the copying warpgroup sets more of the pace (with it
  // head_dim 128 lost 2-4% with a 16-bit q and 0.7-1.1% with FP8 q, 256 4%), and the computing
  // warpgroups fold it.
  static constexpr bool kFoldKeysInCopies = kTokenScales && D == 64;
  // Per-token scales: a tile's k scales and its v scales as copied (the tables' rows, fp32 or
  // bf16), its v scales over the reference v_ref (fp16 pairs; fp32 with FP8 P V; see
  // weigh_values), v_ref, and with kFoldKeysInCopies the k scales times the score scale (fp32;
  // see weigh_keys). fp8_pv's v weights lie in a row per computing lane t, holding the pairs
  // that lane multiplies (keys 8m + 2t, 8m + 2t + 1 for every m) so that it loads them 16 bytes
  // at a time; each row is 4 words longer than its pairs, so that the 4 lanes' loads fall in
  // different banks. In a ring of slots that a tile holds from its copies to its softmax: as
  // long as its stage with FP8 q, and as its fp16 K with a 16-bit q, which frees the stage
  // before. Two copying warps copy them, kScaleKeys keys a lane.
  static constexpr int kScaleSlots = kTokenScales ? kStages + kK16Buffers : 0;
  static constexpr int kScaleKeys = wgmma_scale_keys(D);
  static constexpr int kScaleArrayBytes = kKeys * int(sizeof(float));
  static constexpr int kValueScalesOffset = kScaleArrayBytes, kValueWeightsOffset = 2 * kScaleArrayBytes;
  static constexpr int kWeightRowPairs = kKeys / 8 + 2;  // (fp8_pv: a lane's kKeys / 8 fp32 pairs, 16 bytes more)
  static constexpr int kValueWeightsBytes = kFp8Pv ? 4 * 8 * kWeightRowPairs : 2 * kKeys;
  static constexpr int kValueRefOffset = kValueWeightsOffset + kValueWeightsBytes, kKeyMultipliersOffset = kValueRefOffset + 16;
  static constexpr int kScaleSlotBytes = kKeyMultipliersOffset + (kFoldKeysInCopies ? kScaleArrayBytes : 0);
  static constexpr int kScalesOffset = kV16Offset + (kV16InStage ? 0 : kV16Buffers * kV16Bytes);
  // kFp8Pv: o's second accumulation level, fp32, each computing thread's 64 values in 16-byte chunks.
  // With FP8 P V each computing warpgroup's epilogue stages its rows there once o holds the sums,
  // for tensor copies of 128-byte swizzled rows (1024-byte aligned).
  static constexpr int kScalesEnd = kScalesOffset + kScaleSlots * kScaleSlotBytes;
  static constexpr int kOutSumsOffset = kFp8Pv ? (kScalesEnd + 1023) / 1024 * 1024 : kScalesEnd;
  static constexpr int kOutSumsBytes = kFp8Pv ? kComputeGroups * 64 * D * 4 : 0;
  static constexpr int kSmemBytes = kOutSumsOffset + kOutSumsBytes + 1024;  // + 1024-byte alignment
  // Registers per thread after the hand-over. The CTA launches with 65536 / kThreads each,
  // rounded down to a multiple of 8 (168 for 384 threads, 128 for 512); the computing warpgroups
  // share what the copying ones give up. At head_dim 64 they need 160: with 152 ptxas runs every
  // wgmma synchronously (warning C7512 under -Xptxas -v; 15-18% slower), so the copying
  // warpgroup gets the 32 left and spills a few registers in its loop. Elsewhere it keeps enough
  // not to spill there while it widens a pass at a time (with 8 fewer at head_dim 128 it reloaded
  // spilled registers every tile); the batches of widen_to_fp16 spill some and still gain. A
  // 16-bit q at head_dim 128, whose copying warpgroup widens K too, four passes a batch, gets 104
  // (its computing warpgroups 200): with 88 the contiguous kernel's copying loop reloaded about 17
  // spilled registers every tile (H100: bf16 q over FP8 k/v +3.5-4%, over cache_fp8 +2-3%, over
  // block_wise_fp8 +8%).
  // With two copying warpgroups (512 threads) the computing ones keep their 208 and the copying
  // ones share the 96 left: 40 for the one that sends the copies, 56 for the one that widens.
  static constexpr int kLaunchRegisters = 65536 / kThreads / 8 * 8;
  static constexpr int kCopyRegisters = kCopyGroups == 2 ? 40 : D == 256 ? 80 : D == 128 ? (kFp8Q ? 88 : 104) : 32;
  static constexpr int kWidenRegisters = kCopyGroups == 2 ? 56 : 0;
  static constexpr int kComputeRegisters = D == 64 ? 160 : D == 128 && !kFp8Q ? 200 : 208;
  static_assert(128 * (kCopyRegisters + kWidenRegisters) + 128 * kComputeGroups * kComputeRegisters <= kThreads * kLaunchRegisters,
                "the registers the CTA launched with hold every role");
  // Accumulator registers per thread: o in parts of at most 128 columns (one wgmma each), S.
  static constexpr int kOutParts = D > 128 ? D / 128 : 1, kPartRegs = (D > 128 ? 128 : D) / 2;
  static constexpr int kScoreRegs = kKeys / 2;
  // Rows of a tensor copy's box (the host's tensor map and the kernel agree on it): a tile's keys,
  // or a cache block's where blocks are smaller.
  static FA_HD int box_rows(bool paged, int block_size) { return paged && block_size < kKeys ? block_size : kKeys; }
  // Boxes of a quarter tile or less (cache blocks of 16 and 32 keys at head_dim 128, of 16 at 256):
  // four or more a tensor, which two copying warps send (the kernel's values_by_warp_1).
  static FA_HD bool small_boxes(int box_rows) { return 4 * box_rows <= kKeys; }
};

// Chunk `chunk` (16 bytes) of an FP8 row in column tiles of kTileBytes with the wgmma swizzle.
template <class Shape, int kTileBytes>
FA_DEVICE uint32_t fp8_row_offset(int row, int chunk) {
  constexpr int kTileChunks = Shape::kSwizzleBytes / 16;
  return (chunk / kTileChunks) * kTileBytes + wgmma::swizzled_offset<Shape::kSwizzleBytes>(row, chunk % kTileChunks);
}

// Tensor maps of K and V (contiguous [tokens, heads_kv, head_dim] or a cache's [blocks * heads_kv,
// block_size, head_dim]) for boxes of one column tile x the rows of a tile (or of a cache block)
// x 1; without them (`kv_ready` false) every tile is copied by cp.async. And of the output
// ([tokens, heads_q, head_dim] in its format) for boxes of a column tile of the staged rows
// (kOutTileBytes below) x the group's heads x the tokens of a computing warpgroup's 64 rows;
// without it (`out_ready` false: key splits, a group that does not divide 64) rows are stored a
// chunk at a time, as they are under key splits whatever the host encoded (their rows go to the
// fp32 partials). And of an FP8 q ([tokens, heads_q, head_dim]) for boxes of a column tile x the
// group's heads x the tokens of a CTA's rows; without it (`q_ready` false: a group that does not
// divide the CTA's rows, a 16-bit q) Q is copied a row at a time.
struct PrefillTensorMaps {
  CUtensorMap k, v, out, q;
  bool kv_ready, out_ready, q_ready;
};

// Bytes per row of a column tile of the output as staged: one 128-byte swizzle wide (an output
// row, bf16, fp16 or fp32 of 64 or more elements, is a whole number of them).
constexpr int kOutTileBytes = 128;

}  // namespace attention_gpu
}  // namespace fastattn
