// CPU kernel of flash_attn_varlen and paged_attention: one (query, head) row at a time through the
// shared online-softmax state, descales folded in fp32 as the numerics rules say (q and per-head k
// into the score scale, per-token k per score, per-token v into the weight, per-head v into the
// output).
#include <algorithm>
#include <vector>

#include "attention.h"
#include "fastattn/softmax_state.h"

namespace fastattn {
namespace {

constexpr int kKeyBlock = 64;  // keys per partial sum

// q . k over head_dim (64, 128 or 256: check_query) in eight interleaved sums, which the
// compiler can keep in vector registers: one running sum is a chain of dependent adds, several
// times slower.
float dot_product(const float* q, const float* k, int head_dim) {
  constexpr int kLanes = 8;
  float lanes[kLanes] = {};
  for (const float* end = q + head_dim; q != end; q += kLanes, k += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += q[l] * k[l];
  }
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  return sum;
}

// One kv head's keys of one sequence: raw element values and the multipliers that make them real.
struct KeyRows {
  std::vector<float> k, v;            // [len, head_dim], raw (fp8/int8 codes decoded, no scale)
  std::vector<float> k_mult, v_mult;  // [len]: per-token multipliers (1 where scales are per head)
  std::vector<bool> mapped;           // paged: false where the block table maps no block
  float k_head = 1.0f, v_head = 1.0f;  // per-head multipliers
};

KeyRows load_keys(const AttentionParams& p, int seq, int kv_head, int len) {
  const int D = p.head_dim;
  KeyRows r;
  r.k.assign(size_t(len) * D, 0.0f);
  r.v.assign(size_t(len) * D, 0.0f);
  r.k_mult.assign(len, 1.0f);
  r.v_mult.assign(len, 1.0f);
  r.mapped.assign(len, true);
  if (!p.paged) {
    r.k_head = p.k_descale.at(seq, kv_head, p.heads_kv);
    r.v_head = p.v_descale.at(seq, kv_head, p.heads_kv);
    for (int j = 0; j < len; ++j) {
      const int64_t row = (int64_t(p.cu_seqlens_k[seq] + j) * p.heads_kv + kv_head) * D;
      for (int d = 0; d < D; ++d) {
        r.k[size_t(j) * D + d] = load_element(p.k, row + d, p.kv_type);
        r.v[size_t(j) * D + d] = load_element(p.v, row + d, p.kv_type);
      }
    }
    return r;
  }
  const bool dynamic = p.quant == CacheQuant::kBlockWiseFp8;
  if (p.quant == CacheQuant::kInt8 || p.quant == CacheQuant::kFp8) {
    r.k_head = p.k_scale.load(kv_head);
    r.v_head = p.v_scale.load(kv_head);
  }
  for (int j = 0; j < len; ++j) {
    const int64_t row = p.layout.row(seq, j, kv_head);
    if (row < 0) {
      r.mapped[j] = false;
      continue;
    }
    if (dynamic) {
      r.k_mult[j] = p.k_scale.load(row);
      r.v_mult[j] = p.v_scale.load(row);
    }
    for (int d = 0; d < D; ++d) {
      const int64_t i = row * D + d;
      float kx, vx;
      if (p.quant == CacheQuant::kNone) {
        kx = load_element(p.key_cache, i, p.kv_type);
        vx = load_element(p.value_cache, i, p.kv_type);
      } else if (p.quant == CacheQuant::kInt8) {
        kx = float(static_cast<const int8_t*>(p.key_cache)[i]);
        vx = float(static_cast<const int8_t*>(p.value_cache)[i]);
      } else {
        kx = e4m3_to_float(static_cast<const uint8_t*>(p.key_cache)[i]);
        vx = e4m3_to_float(static_cast<const uint8_t*>(p.value_cache)[i]);
      }
      r.k[size_t(j) * D + d] = kx;
      r.v[size_t(j) * D + d] = vx;
    }
  }
  return r;
}

}  // namespace

void attention_cpu(const AttentionParams& p) {
  const int D = p.head_dim, group = p.heads_q / p.heads_kv;
  std::vector<float> q(D), acc(D), part_acc(D);
  for (int seq = 0; seq < p.batch; ++seq) {
    const int q_first = p.cu_seqlens_q[seq], q_len = p.cu_seqlens_q[seq + 1] - q_first;
    if (q_len <= 0) continue;
    const int k_len = p.paged ? p.seq_lens_kv[seq] : p.cu_seqlens_k[seq + 1] - p.cu_seqlens_k[seq];
    // Paged keys past the block table's reach map to no block: none is read (nor loaded).
    const int64_t reach = p.paged ? int64_t(p.layout.max_blocks_per_seq) * p.layout.block_size : k_len;
    const int loaded = int(std::clamp<int64_t>(k_len, 0, reach));
    for (int kv_head = 0; kv_head < p.heads_kv; ++kv_head) {
      const KeyRows keys = load_keys(p, seq, kv_head, loaded);
      const float score_scale = p.softmax_scale * p.q_descale.at(seq, kv_head, p.heads_kv) * keys.k_head;
      for (int i = 0; i < q_len; ++i) {
        const int token = q_first + i;
        int limit = loaded;
        if (p.causal) limit = int(std::min<int64_t>(limit, int64_t(i) + k_len - q_len + 1));
        if (p.kv_end != nullptr) limit = std::min(limit, p.kv_end[token]);
        for (int h = kv_head * group; h < (kv_head + 1) * group; ++h) {
          const int64_t row = (int64_t(token) * p.heads_q + h) * D;
          for (int d = 0; d < D; ++d) q[d] = load_element(p.q, row + d, p.q_type);
          SoftmaxState state = SoftmaxState::empty();
          std::fill(acc.begin(), acc.end(), 0.0f);
          for (int first = 0; first < limit; first += kKeyBlock) {  // two-level sums: see add(state)
            SoftmaxState part = SoftmaxState::empty();
            std::fill(part_acc.begin(), part_acc.end(), 0.0f);
            for (int j = first; j < std::min(limit, first + kKeyBlock); ++j) {
              if (!keys.mapped[j]) continue;
              const float dot = dot_product(q.data(), &keys.k[size_t(j) * D], D);
              const SoftmaxState::Step step = part.add(dot * score_scale * keys.k_mult[j]);
              const float w = step.weight * keys.v_mult[j];
              for (int d = 0; d < D; ++d) part_acc[d] = part_acc[d] * step.rescale + w * keys.v[size_t(j) * D + d];
            }
            const SoftmaxState::Step merge = state.add(part);
            for (int d = 0; d < D; ++d) acc[d] = merge.fold(acc[d], part_acc[d]);
          }
          const float out_mult = state.inv_sum() * keys.v_head;
          for (int d = 0; d < D; ++d) store_element(p.out, row + d, p.out_type, acc[d] * out_mult);
          p.lse[int64_t(h) * p.tokens_q + token] = state.lse();
        }
      }
    }
  }
  // Queries past cu_seqlens_q[batch] belong to no sequence: zeros and -inf, never garbage.
  for (int token = p.cu_seqlens_q[p.batch]; token < p.tokens_q; ++token) {
    for (int h = 0; h < p.heads_q; ++h) {
      for (int d = 0; d < D; ++d) store_element(p.out, (int64_t(token) * p.heads_q + h) * D + d, p.out_type, 0.0f);
      p.lse[int64_t(h) * p.tokens_q + token] = -INFINITY;
    }
  }
}

}  // namespace fastattn
