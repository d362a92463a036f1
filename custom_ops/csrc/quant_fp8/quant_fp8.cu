// CUDA kernel of quantize_fp8: 8 elements per thread (16-byte loads of 16-bit input) when the
// tensor allows, one otherwise.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "fastattn/vec.h"
#include "quant_fp8.h"

namespace fastattn {
namespace {

constexpr int kThreadsPerBlock = 256;

template <typename Fmt, int kVec>
__global__ void __launch_bounds__(kThreadsPerBlock) quantize_fp8_kernel(QuantFp8Params p) {
  const int64_t first = (int64_t(blockIdx.x) * kThreadsPerBlock + threadIdx.x) * kVec;
  if (first >= p.numel) return;
  const float mult = div_rn(1.0f, *p.scale);
  const auto* x = static_cast<const typename Fmt::Storage*>(p.x) + first;
  if constexpr (kVec == 8) {
    float v[8];
    load_chunk8<Fmt>(x, v);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] *= mult;
    store_chunk8<E4m3Format>(p.out + first, v);
  } else {
    p.out[first] = float_to_e4m3(Fmt::to_float(x[0]) * mult);
  }
}

}  // namespace

void quantize_fp8_cuda(const QuantFp8Params& p) {
  if (p.numel == 0) return;
  const bool vec = p.aligned_16 && p.numel % 8 == 0;
  const int64_t threads = vec ? p.numel / 8 : p.numel;
  const unsigned grid = unsigned((threads + kThreadsPerBlock - 1) / kThreadsPerBlock);
  auto stream = static_cast<cudaStream_t>(p.stream);
  dispatch_float_format(p.in_type, [&](auto fmt) {
    using Fmt = decltype(fmt);
    if constexpr (std::is_same_v<Fmt, E4m3Format>) {
      throw std::invalid_argument("quantize_fp8: the input is already fp8");
    } else if (vec) {
      quantize_fp8_kernel<Fmt, 8><<<grid, kThreadsPerBlock, 0, stream>>>(p);
    } else {
      quantize_fp8_kernel<Fmt, 1><<<grid, kThreadsPerBlock, 0, stream>>>(p);
    }
  });
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("quantize_fp8: ") + cudaGetErrorString(err));
}

}  // namespace fastattn
