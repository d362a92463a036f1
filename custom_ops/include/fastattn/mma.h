// Warp-level tensor-core, shared-memory and async-copy primitives of the attention kernels
// (sm_80 and newer), and the packed 8-bit -> 16-bit conversions that feed the tensor cores.
//
// Fragment layouts are PTX's for mma.m16n8k16 (lane = 4 * g + t, g = lane / 4, t = lane % 4):
// A (16x16, row-major): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 8+2t..), a3 = (g+8, 8+2t..);
// B (16x8, k-major):    b0 = (k 2t..2t+1, n g), b1 = (k 8+2t.., n g);
// C (16x8, fp32):       c0, c1 = (g, 2t..2t+1), c2, c3 = (g+8, 2t..2t+1).
#pragma once

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "fastattn/numerics.h"

namespace fastattn {

// The 16-bit formats the tensor cores multiply, with a round-to-nearest pack of two floats
// (the low half holds the first).
struct MmaBf16 {
  static FA_DEVICE uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  static FA_DEVICE void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

struct MmaFp16 {
  static FA_DEVICE uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  static FA_DEVICE __half2 as_half2(uint32_t packed) { return *reinterpret_cast<const __half2*>(&packed); }
  static FA_DEVICE void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// m16n8k32 with e4m3 operands (four bytes per register: a0 = (g, 4t..4t+3), a1 = (g+8, ..),
// a2 = (g, 16+4t..), a3 = (g+8, 16+4t..); b0 = (k 4t..4t+3, n g), b1 = (k 16+4t.., n g)). The
// tensor cores take FP8 from sm_89; older archs run it as two exact fp16 k-steps.
struct MmaE4m3 {
  static FA_DEVICE void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
};

FA_DEVICE uint32_t smem_address(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

FA_DEVICE uint4 lds128(uint32_t addr) {
  uint4 r;
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "r"(addr));
  return r;
}

FA_DEVICE uint2 lds64(uint32_t addr) {
  uint2 r;
  asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];" : "=r"(r.x), "=r"(r.y) : "r"(addr));
  return r;
}

// Four 8x8 matrices of 16-bit elements, transposed: lanes 8i..8i+7 give the row addresses of
// matrix i, and lane 4g+t receives rows 2t and 2t+1 of column g of each.
FA_DEVICE void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Four 8x8 matrices of 16-bit elements to shared memory, lane 8i + r giving the address of matrix
// i's row r and each lane its fragments' elements (row g, columns 2t and 2t + 1 for lane 4g + t).
FA_DEVICE void stmatrix_x4(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1,%2,%3,%4};" ::"r"(addr), "r"(r0), "r"(r1), "r"(r2),
               "r"(r3));
}

// The transpose of an 8x8 matrix of 16-bit elements held as one fragment (lane 4g+t: row g,
// columns 2t and 2t+1): lane 4g+t receives rows 2t and 2t+1 of column g.
FA_DEVICE uint32_t movmatrix_trans(uint32_t x) {
  uint32_t r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(r) : "r"(x));
  return r;
}

// Asynchronous global -> shared copies of kBytes: the first src_bytes read, the rest zeros.
template <int kBytes>
FA_DEVICE void cp_async_prefix(uint32_t dst, const void* src, int src_bytes) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
  if constexpr (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(dst), "l"(src), "n"(kBytes), "r"(src_bytes));
  }
}

// A false `valid` writes zeros and reads nothing.
template <int kBytes>
FA_DEVICE void cp_async(uint32_t dst, const void* src, bool valid) {
  cp_async_prefix<kBytes>(dst, src, valid ? kBytes : 0);
}

FA_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;"); }

// One of the arrivals the mbarrier at `bar` expects, made once every cp.async copy this thread
// issued before it has landed, whatever its group (their writes visible to whoever then sees the
// phase complete): a thread that arrives this way for a tile must have no other copies in flight.
FA_DEVICE void cp_async_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}

// (A memory clobber: plain loads of what the copies wrote must not move above the wait.)
template <int kPending>
FA_DEVICE void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

// ---------------------------------------------------------------------------------------------
// Packed conversions: four bytes -> two pairs of fp16 (bytes 0,1 -> lo; bytes 2,3 -> hi). Exact:
// every e4m3 value and every int8 is an fp16 number (e4m3's smallest subnormal, 2^-9, is a normal
// fp16).

struct UnpackE4m3 {
  static FA_DEVICE uint32_t pair(uint32_t two_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    uint32_t r;
    asm("{\n .reg .b16 lo;\n cvt.u16.u32 lo, %1;\n cvt.rn.f16x2.e4m3x2 %0, lo;\n}" : "=r"(r) : "r"(two_bytes));
    return r;
#else
    return MmaFp16::pack(e4m3_to_float(uint8_t(two_bytes)), e4m3_to_float(uint8_t(two_bytes >> 8)));
#endif
  }
  // The halves go to the conversions as register halves: no instructions to extract them.
  static FA_DEVICE void four(uint32_t w, uint32_t& lo, uint32_t& hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n cvt.rn.f16x2.e4m3x2 %1, h;\n}"
        : "=r"(lo), "=r"(hi) : "r"(w));
#else
    lo = pair(w & 0xffffu);
    hi = pair(w >> 16);
#endif
  }
};

FA_DEVICE void MmaE4m3::mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  // Each half of k is one fp16 k-step whose k index is permuted alike in A and B.
  for (int half = 0; half < 2; ++half) {
    uint32_t a_lo[2], a_hi[2], b_lo, b_hi;
    UnpackE4m3::four(a[2 * half], a_lo[0], a_hi[0]);
    UnpackE4m3::four(a[2 * half + 1], a_lo[1], a_hi[1]);
    UnpackE4m3::four(half ? b1 : b0, b_lo, b_hi);
    const uint32_t a16[4] = {a_lo[0], a_lo[1], a_hi[0], a_hi[1]};
    MmaFp16::mma(c, a16, b_lo, b_hi);
  }
#endif
}

struct UnpackInt8 {
  // (b ^ 0x80) in the low byte of an fp16 whose high byte is 0x64 is 1024 + 128 + b exactly.
  static FA_DEVICE void four(uint32_t w, uint32_t& lo, uint32_t& hi) {
    const uint32_t biased = w ^ 0x80808080u;
    const __half2 offset = __half2half2(__ushort_as_half(0x6480));  // 1152
    const uint32_t l = __byte_perm(biased, 0x64646464u, 0x5140);
    const uint32_t h = __byte_perm(biased, 0x64646464u, 0x7362);
    const __half2 lv = __hsub2(*reinterpret_cast<const __half2*>(&l), offset);
    const __half2 hv = __hsub2(*reinterpret_cast<const __half2*>(&h), offset);
    lo = *reinterpret_cast<const uint32_t*>(&lv);
    hi = *reinterpret_cast<const uint32_t*>(&hv);
  }
};

}  // namespace fastattn

#endif  // __CUDACC__
