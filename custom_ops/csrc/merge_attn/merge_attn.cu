// CUDA kernel of merge_attn_states. Memory-bound: each thread merges kVec consecutive elements of
// one (token, head) row (8 with 16-byte vector accesses when head_dim allows, else 1). Grid: x covers
// tokens x chunks, y is the head, so consecutive rows are consecutive tokens of one head and the
// [heads, tokens] LSE reads and writes are coalesced. The FP8 output is quantized in the same pass,
// from the fp32 merge result. The launch may overlap the end of the kernel before it (launch.h):
// a merge usually follows the attention kernels whose outputs it reads, and at small sizes the
// launch gap is a large part of its time.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "fastattn/launch.h"
#include "fastattn/vec.h"
#include "merge_attn.h"
#include "merge_attn_row.h"

namespace fastattn {
namespace {

constexpr int kThreadsPerBlock = 256;

template <typename In, typename Out, int kVec>
__global__ void __launch_bounds__(kThreadsPerBlock)
    merge_attn_states_kernel(MergeAttnParams p, uint32_t chunks_per_row, int chunk_shift) {
  allow_next_grid();
  const uint32_t gid = blockIdx.x * kThreadsPerBlock + threadIdx.x;
  const uint32_t t = chunk_shift >= 0 ? gid >> chunk_shift : gid / chunks_per_row;
  if (t >= uint32_t(p.tokens)) return;
  wait_for_previous_grid();
  const uint32_t chunk = gid - t * chunks_per_row;
  const int h = blockIdx.y;
  const int64_t lse_index = int64_t(h) * p.tokens + t;
  const MergeWeights w = merge_weights(SoftmaxState::from_lse(p.prefix_lse[lse_index]),
                                       SoftmaxState::from_lse(p.suffix_lse[lse_index]));
  if (chunk == 0) p.out_lse[lse_index] = w.merged.lse();
  constexpr bool kFp8Out = std::is_same_v<Out, E4m3Format>;
  float quant_mult = 1.0f;
  if constexpr (kFp8Out) quant_mult = div_rn(1.0f, *p.output_scale);

  const int64_t offset = (int64_t(t) * p.heads + h) * p.head_dim + chunk * kVec;
  const auto* a = static_cast<const typename In::Storage*>(p.prefix_out) + offset;
  const auto* b = static_cast<const typename In::Storage*>(p.suffix_out) + offset;
  auto* out = static_cast<typename Out::Storage*>(p.out) + offset;
  float xa[kVec], xb[kVec], x[kVec];
  if constexpr (kVec == 8) {
    load_chunk8<In>(a, xa);
    load_chunk8<In>(b, xb);
  } else {
    xa[0] = In::to_float(a[0]);
    xb[0] = In::to_float(b[0]);
  }
  merge_elements(w, xa, xb, x, kVec);
  if constexpr (kFp8Out) {
#pragma unroll
    for (int i = 0; i < kVec; ++i) x[i] *= quant_mult;
  }
  if constexpr (kVec == 8) {
    store_chunk8<Out>(out, x);
  } else {
    out[0] = Out::from_float(x[0]);
  }
}

}  // namespace

void merge_attn_states_cuda(const MergeAttnParams& p) {
  if (p.tokens == 0 || p.heads == 0) return;
  if (p.heads > 65535) throw std::invalid_argument("merge_attn_states: more than 65535 heads");
  const int vec = p.head_dim % 8 == 0 && p.aligned_16 ? 8 : 1;
  const uint32_t chunks = uint32_t(p.head_dim / vec);
  int shift = -1;
  for (int s = 0; s < 31; ++s) {
    if ((1u << s) == chunks) shift = s;
  }
  const int64_t threads = int64_t(p.tokens) * chunks;
  if (threads > int64_t(UINT32_MAX) - kThreadsPerBlock) {
    throw std::invalid_argument("merge_attn_states: too many tokens for one launch");
  }
  const dim3 grid(unsigned((threads + kThreadsPerBlock - 1) / kThreadsPerBlock), unsigned(p.heads));
  auto stream = static_cast<cudaStream_t>(p.stream);
  dispatch_merge_types(p.in_type, p.out_type, [&](auto in_fmt, auto out_fmt) {
    using In = decltype(in_fmt);
    using Out = decltype(out_fmt);
    const cudaError_t launched =
        vec == 8 ? launch_overlapping(merge_attn_states_kernel<In, Out, 8>, grid, kThreadsPerBlock, 0, stream, p, chunks, shift)
                 : launch_overlapping(merge_attn_states_kernel<In, Out, 1>, grid, kThreadsPerBlock, 0, stream, p, chunks, shift);
    if (launched != cudaSuccess) {
      throw std::runtime_error(std::string("merge_attn_states: ") + cudaGetErrorString(launched));
    }
  });
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("merge_attn_states: ") + cudaGetErrorString(err));
}

}  // namespace fastattn
