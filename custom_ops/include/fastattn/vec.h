// Vectorized global-memory access for memory-bound CUDA kernels (device only).
#pragma once

#include <cstdint>

#include "fastattn/numerics.h"

#if defined(__CUDACC__)
namespace fastattn {

// 16-byte load that bypasses L1: for data read exactly once.
FA_DEVICE uint4 load_streaming_16(const void* ptr) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(ptr));
  return r;
}

FA_DEVICE uint2 load_streaming_8(const void* ptr) {
  uint2 r;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(ptr));
  return r;
}

FA_DEVICE void store_16(void* ptr, const uint4& v) { *static_cast<uint4*>(ptr) = v; }
FA_DEVICE void store_8(void* ptr, const uint2& v) { *static_cast<uint2*>(ptr) = v; }

// Eight 16-bit floats <-> one 16-byte word (element 0 in the low half of .x).
template <typename Fmt>
FA_DEVICE void unpack_half8(const uint4& w, float* x) {
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    x[2 * i] = Fmt::to_float(uint16_t(words[i] & 0xffffu));
    x[2 * i + 1] = Fmt::to_float(uint16_t(words[i] >> 16));
  }
}

template <typename Fmt>
FA_DEVICE uint4 pack_half8(const float* x) {
  uint32_t words[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    words[i] = uint32_t(Fmt::from_float(x[2 * i])) | (uint32_t(Fmt::from_float(x[2 * i + 1])) << 16);
  }
  return make_uint4(words[0], words[1], words[2], words[3]);
}

// Eight bytes <-> one 8-byte word (element 0 in the low byte of .x).
FA_DEVICE void unpack_byte8(const uint2& w, uint8_t* b) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    b[i] = uint8_t(w.x >> (8 * i));
    b[4 + i] = uint8_t(w.y >> (8 * i));
  }
}

FA_DEVICE uint2 pack_byte8(const uint8_t* b) {
  uint2 w = make_uint2(0, 0);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    w.x |= uint32_t(b[i]) << (8 * i);
    w.y |= uint32_t(b[4 + i]) << (8 * i);
  }
  return w;
}

}  // namespace fastattn
#endif
