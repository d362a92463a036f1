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

// N consecutive 16-bit values (N = 8 or 16): one or two 16-byte words.
template <int N>
struct HalfVec {
  static_assert(N % 8 == 0, "whole 16-byte words");
  uint4 w[N / 8];
};

template <int N>
FA_DEVICE HalfVec<N> load_half_vec(const void* base, int64_t elem_offset) {
  const uint16_t* p = static_cast<const uint16_t*>(base) + elem_offset;
  HalfVec<N> v;
#pragma unroll
  for (int i = 0; i < N / 8; ++i) v.w[i] = load_streaming_16(p + 8 * i);
  return v;
}

template <int N>
FA_DEVICE void store_half_vec(void* base, int64_t elem_offset, const HalfVec<N>& v) {
  uint16_t* p = static_cast<uint16_t*>(base) + elem_offset;
#pragma unroll
  for (int i = 0; i < N / 8; ++i) store_16(p + 8 * i, v.w[i]);
}

// N consecutive bytes (N = 8 or 16) in one load or store.
template <int N>
FA_DEVICE void load_bytes(const void* base, int64_t offset, uint8_t* b) {
  const uint8_t* p = static_cast<const uint8_t*>(base) + offset;
  uint32_t words[N / 4];
  if constexpr (N == 16) {
    const uint4 w = load_streaming_16(p);
    words[0] = w.x, words[1] = w.y, words[2] = w.z, words[3] = w.w;
  } else {
    static_assert(N == 8, "8 or 16 bytes");
    const uint2 w = load_streaming_8(p);
    words[0] = w.x, words[1] = w.y;
  }
#pragma unroll
  for (int i = 0; i < N; ++i) b[i] = uint8_t(words[i / 4] >> (8 * (i % 4)));
}

template <int N>
FA_DEVICE void store_bytes(void* base, int64_t offset, const uint8_t* b) {
  uint32_t words[N / 4] = {};
#pragma unroll
  for (int i = 0; i < N; ++i) words[i / 4] |= uint32_t(b[i]) << (8 * (i % 4));
  uint8_t* p = static_cast<uint8_t*>(base) + offset;
  if constexpr (N == 16) store_16(p, make_uint4(words[0], words[1], words[2], words[3]));
  else store_8(p, make_uint2(words[0], words[1]));
}

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

}  // namespace fastattn
#endif
