// The online-softmax state and its -inf guards, in one place for every kernel that combines
// partial softmax results: merge_attn_states, the attention kernels' main loop and their split-KV
// combine.
//
// A state summarizes the scores s_j seen so far as (m, d): m = max_j s_j and d = sum_j exp(s_j - m),
// so that log-sum-exp = m + log(d). The empty state is (m = -inf, d = 0). Every rescale
// exp(m_old - m_new) is guarded: a state whose m is -inf contributes nothing (weight 0) and never
// produces NaN through -inf - (-inf).
#pragma once

#include <cmath>

#include "fastattn/platform.h"

namespace fastattn {

FA_HD float fast_exp(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(x);
#else
  return std::exp(x);
#endif
}

FA_HD float fast_log(float x) {
#if defined(__CUDA_ARCH__)
  return __logf(x);
#else
  return std::log(x);
#endif
}

// The hardware ex2 alone (one MUFU.EX2; exp2f adds three instructions to keep subnormal
// results). Here every argument is <= 0: a weight below 2^-126 next to the row's largest, 1,
// is flushed to 0.
FA_HD float fast_exp2(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return std::exp2(x);
#endif
}

FA_HD float fast_log2(float x) {
#if defined(__CUDA_ARCH__)
  return __log2f(x);
#else
  return std::log2(x);
#endif
}

// A score times its scale, rounded on its own. The row max is the largest of these products,
// and a weight must take the same product: nvcc fuses a multiply into the subtraction after it
// by default, which takes the exact product, up to half an fp32 step of the max away from the
// rounded one (2^6 at 2^30: a weight of 2^64 or 2^-64 where it should be 1).
FA_HD float scaled_score(float s, float c) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(s, c);
#else
  return s * c;
#endif
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Natural-log scores (merge kernels, CPU attention).
struct NaturalBase {
  static FA_HD float exp(float x) { return fast_exp(x); }
  static FA_HD float lse(float m, float d) { return m + fast_log(d); }
};

// Scores pre-multiplied by log2(e) (the attention main loop on the GPU): one exp2 per score.
// lse() still reports the natural log-sum-exp.
struct Base2 {
  static FA_HD float exp(float x) { return fast_exp2(x); }
  static FA_HD float lse(float m, float d) { return (m + fast_log2(d)) * kLn2; }
};

template <class Base>
struct BasicSoftmaxState {
  float m;  // running max of the scores, -inf while empty
  float d;  // running sum of exp(score - m), 0 while empty

  static FA_HD BasicSoftmaxState empty() { return {-INFINITY, 0.0f}; }

  // The state of a finished, normalized partial result with log-sum-exp `lse`. An lse of +inf
  // is read as -inf: some kernels report empty rows that way.
  static FA_HD BasicSoftmaxState from_lse(float lse) {
    if (!(lse < INFINITY) || lse == -INFINITY) return empty();  // +inf, -inf and NaN: empty
    return {lse, 1.0f};
  }

  FA_HD bool is_empty() const { return m == -INFINITY; }

  // exp(m - m_new) for m_new >= m; 0 for an empty state (guard against -inf - -inf).
  FA_HD float rescale_to(float m_new) const { return is_empty() ? 0.0f : Base::exp(m - m_new); }

  // The max to subtract from scores: m, or 0 while empty (every score seen is then -inf, and
  // exp(-inf - 0) = 0 where exp(-inf - -inf) would be NaN).
  FA_HD float safe_max() const { return is_empty() ? 0.0f : m; }

  // exp(s - m) of a score already folded in (or -inf: masked, weight 0).
  FA_HD float weight(float s) const { return Base::exp(s - safe_max()); }
  // exp(c r - m) of a raw score r whose scale c > 0 was left out of it (or r = -inf: weight 0):
  // one fused multiply-add instead of a multiply and a subtraction. The fma takes the exact
  // product c r, while m was a rounded one (scaled_score): up to half an fp32 step of m apart, a
  // factor of 2^0.25 on the weights while fine_max(), but 2^64 at 2^30 (or 2^-64, a weight that
  // vanishes as wrongly). Past that, weigh scaled_score(r, c) with weight(s).
  FA_HD float weight(float r, float c) const { return Base::exp(fmaf(r, c, -safe_max())); }
  // Whether weight(r, c) holds: |m| < 2^22 (steps of 2^-1 at most); not while empty. A NaN max
  // (a NaN q read past a sequence's end) counts as fine: that row is lost anyway, and the rows a
  // kernel handles beside it must not change their path for it.
  FA_HD bool fine_max() const { return !(fabsf(m) >= 4194304.0f); }

  FA_HD float lse() const { return d > 0.0f ? Base::lse(m, d) : -INFINITY; }

  // 1 / d, or 0 for an empty state: a row that saw no key outputs 0, never NaN.
  FA_HD float inv_sum() const { return d > 0.0f ? 1.0f / d : 0.0f; }

  // Folds in one visible (finite) score s. Returns the factor for the running output
  // accumulator (exp(m_old - m_new), 0 while empty) and the weight exp(s - m_new) of s's value.
  struct Step {
    float rescale, weight;
    // One element of the merged accumulator after add(other): acc * rescale + part * weight. A
    // factor of 0 drops its side whatever that holds: the accumulator of a part that saw no key
    // may carry NaN (0 x a NaN code read past the keys), which must not reach the result.
    FA_HD float fold(float acc, float part) const {
      return (rescale != 0.0f ? acc * rescale : 0.0f) + (weight != 0.0f ? part * weight : 0.0f);
    }
  };
  FA_HD Step add(float s) {
    const float m_new = fmaxf(m, s);
    const Step step{rescale_to(m_new), Base::exp(s - m_new)};
    d = d * step.rescale + step.weight;
    m = m_new;
    return step;
  }

  // Folds in another partial state (unnormalized: its accumulator holds sum exp(s - other.m) * v).
  // Returns the factors for this state's accumulator (rescale) and the other's (weight). Summing
  // a long key range as a sum of block sums keeps the rounding error from growing with length.
  FA_HD Step add(const BasicSoftmaxState& other) {
    const float m_new = fmaxf(m, other.m);
    const Step step{rescale_to(m_new), other.rescale_to(m_new)};
    d = d * step.rescale + other.d * step.weight;
    m = m_new;
    return step;
  }

  // Moves the max to m_new >= m ahead of adding a block of scores whose max is m_new; returns the
  // factor for the running accumulator. The block's weights are then weight(s) and its sum is
  // added with add_sum().
  FA_HD float raise_max(float m_new) {
    const float rescale = rescale_to(m_new);
    d *= rescale;
    m = m_new;
    return rescale;
  }
  FA_HD void add_sum(float block_sum) { d += block_sum; }
  // The max to raise to for a kernel whose weights may exceed 1: m_block where it exceeds m by
  // more than `slack`, else m (rescale 1), so that most blocks leave the accumulator as it is.
  // The block's weights are then at most exp(slack) (base 2: 2^slack). A raised max may go
  // `headroom` (<= slack) below m_block, so that the block's largest weight is exp(headroom): an
  // 8-bit P keeps more of the smaller weights in its normal range.
  // (The difference, not m + slack: above 2^26 that sum rounds by more than slack allows.)
  FA_HD float max_with_slack(float m_block, float slack, float headroom = 0.0f) const {
    return m_block - m > slack ? m_block - headroom : m;
  }
};

using SoftmaxState = BasicSoftmaxState<NaturalBase>;
using SoftmaxState2 = BasicSoftmaxState<Base2>;

// Weights that merge two normalized partial outputs: out = w_a * out_a + w_b * out_b, with the
// merged state. Both empty: weights 0 and an empty state (out 0, lse -inf). One side empty: the
// other side's weight is exactly 1.
struct MergeWeights {
  float w_a, w_b;
  SoftmaxState merged;
};

FA_HD MergeWeights merge_weights(const SoftmaxState& a, const SoftmaxState& b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {0.0f, 0.0f, SoftmaxState::empty()};
  const float sa = a.d * a.rescale_to(m);
  const float sb = b.d * b.rescale_to(m);
  const float d = sa + sb;
  const float inv = 1.0f / d;
  return {sa * inv, sb * inv, {m, d}};
}

}  // namespace fastattn
