// Portability macros shared by host (CPU kernels) and device (CUDA kernels) code.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FA_HD __host__ __device__ __forceinline__
#define FA_DEVICE __device__ __forceinline__
#else
#define FA_HD inline
#endif

namespace fastattn {

FA_HD uint32_t float_as_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

FA_HD float bits_as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

FA_HD bool is_nan(float x) { return x != x; }

}  // namespace fastattn
