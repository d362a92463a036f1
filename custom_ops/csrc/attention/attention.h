// flash_attn_varlen and paged_attention: arguments shared by the registration and the kernels.
#pragma once

#include <cstdint>

#include "fastattn/dispatch.h"
#include "fastattn/kv_cache.h"

namespace fastattn {

// A descale tensor [batch, kv_heads] (or one broadcast value): the real value of an FP8 element
// is element * descale.
struct Descale {
  const float* data;  // nullptr: 1
  bool broadcast;
  FA_HD float at(int seq, int kv_head, int kv_heads) const {
    return data == nullptr ? 1.0f : data[broadcast ? 0 : seq * kv_heads + kv_head];
  }
};

// Which of a batch's sequences a launch takes. A batch mixing long sequences with short ones (a
// server's step: a chunk of a prompt beside decodes) runs in two launches (plan_attention): the
// prefill kernel over those of more than short_rows rows (query x q head of a kv head's group),
// then the decode kernel over the others, a CTA per (sequence, kv head, split).
enum class SeqSelect : uint8_t { kAll, kLong, kShort };

struct AttentionParams {
  const void* q;  // [tokens_q, heads_q, head_dim]
  ElementType q_type;
  const int32_t* cu_seqlens_q;  // [batch + 1]
  int tokens_q, heads_q, heads_kv, head_dim, batch;
  float softmax_scale;
  bool causal;
  Descale q_descale;
  void* out;  // [tokens_q, heads_q, head_dim]
  ElementType out_type;
  float* lse;  // [heads_q, tokens_q]

  // Contiguous keys (flash_attn_varlen): k/v [tokens_k, heads_kv, head_dim].
  const void* k;
  const void* v;
  ElementType kv_type;
  const int32_t* cu_seqlens_k;
  int tokens_k;  // rows of k and v
  Descale k_descale, v_descale;

  // Paged keys (paged_attention): a layer's cache as write_cache_kv left it.
  bool paged;
  const void* key_cache;
  const void* value_cache;
  CacheQuant quant;
  PagedCacheLayout layout;
  ScaleTensor k_scale, v_scale;  // per-head dequant [heads_kv] or tables [blocks, heads_kv, block_size]
  const int32_t* seq_lens_kv;    // [batch]: all keys of each sequence, this step's included
  const int32_t* kv_end;         // [tokens_q] or nullptr: query i sees keys j < kv_end[i]
  void* stream;
  // P V on the FP8 tensor cores, P rounded to e4m3 (the ops' fp8_pv): only the sm_90a kernel at
  // head_dim 64 and 128 with FP8 q takes it; every other kernel, and the CPU, computes as without it.
  bool fp8_pv;

  // CUDA only (see plan_attention): key splits and their normalized partial results
  // [num_splits, tokens_q, heads_q, head_dim] and log-sum-exps [num_splits, heads_q, tokens_q]
  // (SeqSelect::kShort: short_partial_rows' layout).
  int num_splits = 1;
  int warps_m = 4;
  SeqSelect select = SeqSelect::kAll;
  int short_rows = 0;  // the most rows a short sequence has (kAll: 0)
  bool wgmma = false;  // the sm_90a prefill kernel (attention_wgmma.cuh)
  float* partial_out = nullptr;
  float* partial_lse = nullptr;
  // The persistent prefill kernel's queue of row tiles: a counter the launch zeroes (one int).
  int* item_counter = nullptr;
  // Over contiguous FP8 keys, or over a cache given a bound on the keys, where the plan says so
  // (AttentionPlan::widened): V (and with a 16-bit q K) widened to fp16 before the prefill kernel,
  // which copies them as they are instead of widening every tile in every CTA; [widened_rows,
  // heads_kv, head_dim] each, zeros past each sequence's keys. Paged: a slot of widened_keys rows
  // (the bound rounded up to 8, plus 128 keys: the largest tile's room) for each sequence the
  // launch takes, in batch order (widened_slot), up to widened_seqs of them; past those, when the
  // caller's bound on them was too low, one slot more, NaN throughout, which the rest share.
  // Contiguous: that room after each sequence's keys.
  // nullptr: the kernel widens.
  void* values_fp16 = nullptr;
  void* keys_fp16 = nullptr;
  int widened_keys = 0;
  int widened_seqs = 0;
};

// A mixed batch's short sequences (SeqSelect::kShort) keep their split results in rows of their
// own, short_rows per (sequence, kv head): [num_splits, short_partial_rows] rows of head_dim floats
// and LSEs, which then need not span the long sequences' tokens too.
FA_HD int64_t short_partial_rows(const AttentionParams& p) {
  return int64_t(p.batch) * p.heads_kv * p.short_rows;
}

// A mixed batch's second launch (AttentionPlan::short_rows > 0): the decode kernel over the
// sequences of at most short_rows rows, in `splits` key splits.
inline AttentionParams short_launch(const AttentionParams& p, int short_rows, int splits) {
  AttentionParams s = p;
  s.select = SeqSelect::kShort;
  s.short_rows = short_rows;
  s.warps_m = 1;
  s.num_splits = splits;
  return s;
}

void attention_cpu(const AttentionParams& p);

// How the CUDA kernels cover a batch: which kernel (the sm_90a prefill kernel, or the mma.sync
// kernel with warps_m warps of 16-row blocks per CTA) and key splits. Needs only host-side shapes
// (never the device's lengths, so it is safe under CUDA-graph capture: the caller's bounds are
// frozen with it). widened: the sm_90a kernel takes V (and with a 16-bit q K) widened before it
// (AttentionParams::values_fp16, keys_fp16), over contiguous keys or over a cache given
// HostBounds::key_bound; widened_keys and widened_seqs size the buffers (AttentionParams).
// short_rows > 0: the sequences of at most that many rows go to a second launch, of the decode
// kernel with short_splits key splits (SeqSelect).
struct AttentionPlan {
  int warps_m, num_splits;
  bool wgmma, widened;
  int widened_keys, widened_seqs;
  int short_rows, short_splits;
};
// What the caller knows on the host. keys bounds every sequence's key count (a cache: its block
// tables' width); key_bound > 0 and multi_token_seqs >= 0 are the caller's tighter bounds (paged:
// max_seqlen_kv, and the sequences of two queries or more), which may size the widened buffers.
struct HostBounds {
  int64_t keys;
  int64_t key_bound = 0;
  int64_t multi_token_seqs = -1;
};
AttentionPlan plan_attention(const AttentionParams& p, const HostBounds& bounds, int requested_splits);

// The keys per sequence the widened buffers hold over a cache, and their rows (as p sets them, or
// for the keys and sequences given).
int64_t widened_keys_for(int64_t max_keys);
int64_t widened_rows(const AttentionParams& p, int64_t widened_keys, int widened_seqs);
int64_t widened_rows(const AttentionParams& p);

void attention_cuda(const AttentionParams& p);

}  // namespace fastattn
