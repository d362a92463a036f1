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
  for (int i = 0; i < 4; ++i) words[i] = Fmt::pack2(x[2 * i], x[2 * i + 1]);
  return make_uint4(words[0], words[1], words[2], words[3]);
}

// Eight floats -> eight e4m3 bytes (element 0 in the low byte of .x).
FA_DEVICE uint2 pack_e4m3x8(const float* x) {
  uint32_t words[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    words[i] = uint32_t(E4m3Format::pack2(x[4 * i], x[4 * i + 1])) |
               (uint32_t(E4m3Format::pack2(x[4 * i + 2], x[4 * i + 3])) << 16);
  }
  return make_uint2(words[0], words[1]);
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

// Eight consecutive elements of any element format (16-bit, fp32 or e4m3 storage) <-> floats,
// with the widest aligned accesses: the pointer must be aligned to 8 elements.
template <typename Fmt>
FA_DEVICE void load_chunk8(const typename Fmt::Storage* p, float* x) {
  using S = typename Fmt::Storage;
  if constexpr (sizeof(S) == 2) {
    unpack_half8<Fmt>(load_streaming_16(p), x);
  } else {
    static_assert(sizeof(S) == 4, "16-bit or fp32 storage");
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const uint4 w = load_streaming_16(p + 4 * i);
      x[4 * i] = __uint_as_float(w.x), x[4 * i + 1] = __uint_as_float(w.y);
      x[4 * i + 2] = __uint_as_float(w.z), x[4 * i + 3] = __uint_as_float(w.w);
    }
  }
}

template <typename Fmt>
FA_DEVICE void store_chunk8(typename Fmt::Storage* p, const float* x) {
  using S = typename Fmt::Storage;
  if constexpr (sizeof(S) == 2) {
    store_16(p, pack_half8<Fmt>(x));
  } else if constexpr (sizeof(S) == 4) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      store_16(p + 4 * i, make_uint4(__float_as_uint(x[4 * i]), __float_as_uint(x[4 * i + 1]),
                                     __float_as_uint(x[4 * i + 2]), __float_as_uint(x[4 * i + 3])));
    }
  } else {
    static_assert(sizeof(S) == 1, "16-bit, fp32 or e4m3 storage");
    store_8(p, pack_e4m3x8(x));
  }
}

}  // namespace fastattn
#endif
