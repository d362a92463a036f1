// CUDA kernel of check_packed_conversions (see numerics_check.h). Device only: pack2 exists only
// in device code.
#include <cuda_runtime.h>

#include <climits>
#include <stdexcept>
#include <string>

#include "fastattn/numerics.h"
#include "numerics_check.h"

namespace fastattn {
namespace {

constexpr int kFormats = 3;

__global__ void init_result(int64_t* result) {
  for (int i = 0; i < kFormats; ++i) result[i] = 0, result[kFormats + i] = INT64_MAX;
}

__global__ void check_packed_kernel(int64_t stride, unsigned long long* counters) {
  unsigned long long mismatches[kFormats] = {}, first[kFormats] = {ULLONG_MAX, ULLONG_MAX, ULLONG_MAX};
  const uint64_t step = uint64_t(gridDim.x) * blockDim.x * uint64_t(stride);
  for (uint64_t pattern = (uint64_t(blockIdx.x) * blockDim.x + threadIdx.x) * uint64_t(stride);
       pattern < (uint64_t(1) << 32); pattern += step) {
    const float lo = __uint_as_float(uint32_t(pattern)), hi = -0.75f * lo;
    const bool bad[kFormats] = {
        Bf16Format::pack2(lo, hi) != (Bf16Format::from_float(lo) | uint32_t(Bf16Format::from_float(hi)) << 16),
        Fp16Format::pack2(lo, hi) != (Fp16Format::from_float(lo) | uint32_t(Fp16Format::from_float(hi)) << 16),
        E4m3Format::pack2(lo, hi) != (float_to_e4m3(lo) | float_to_e4m3(hi) << 8)};
    for (int i = 0; i < kFormats; ++i) {
      if (bad[i]) ++mismatches[i], first[i] = min(first[i], (unsigned long long)pattern);
    }
  }
  for (int i = 0; i < kFormats; ++i) {
    if (mismatches[i]) {
      atomicAdd(counters + i, mismatches[i]);
      atomicMin(counters + kFormats + i, first[i]);
    }
  }
}

}  // namespace

void check_packed_conversions_cuda(const PackedConversionCheckParams& p) {
  auto stream = static_cast<cudaStream_t>(p.stream);
  init_result<<<1, 1, 0, stream>>>(p.result);
  check_packed_kernel<<<1024, 256, 0, stream>>>(p.stride, reinterpret_cast<unsigned long long*>(p.result));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("check_packed_conversions: ") + cudaGetErrorString(err));
}

}  // namespace fastattn
