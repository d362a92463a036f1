// Warpgroup tensor-core primitives of sm_90a (wgmma): shared-memory matrix descriptors for the
// 128- and 64-byte swizzled layouts, the m64n64, m64n72 and m64n128 instructions the attention
// prefill uses, and their fences.
//
// A warpgroup is 4 consecutive warps (128 threads). The m64nN accumulator of one warpgroup is
// spread like mma.m16n8's C over the warps: warp w holds rows 16w + g and 16w + g + 8
// (g = lane / 4, t = lane % 4); its register i is row 16w + g + 8 * ((i >> 1) & 1), column
// 8 * (i / 4) + 2t + (i & 1). An A operand in registers (16-bit, k16) is mma.m16n8k16's A per
// warp.
//
// Operands in shared memory have rows of 128 bytes (64 for K-major operands of 64 bytes), stored
// in atoms of 8 rows (1024 or 512 bytes, aligned to that) where the 16-byte chunk c of row r sits
// at chunk c ^ (r % 8) (c ^ (r / 2 % 4) in 64-byte rows): the bits of the chunk's address that
// the hardware swizzles with. K-major operands (rows along M or N, K within a row): a K step of
// the instruction (32 bytes) starts inside the row; its descriptor is the tile's plus the byte
// offset, and the hardware applies the swizzle to the full address. N-major operands (16-bit
// only: rows along K, 64 N columns per row): a K step (16 rows) is two atoms, and N columns
// beyond 64 are in blocks of their own.
#pragma once

#if defined(__CUDACC__)

#include <cstdint>

#include "fastattn/platform.h"

namespace fastattn {
namespace wgmma {

// Byte offset of chunk `chunk` (16 bytes) of row `row` in a swizzled tile of kRowBytes-byte rows.
template <int kRowBytes = 128>
FA_DEVICE uint32_t swizzled_offset(int row, int chunk) {
  static_assert(kRowBytes == 128 || kRowBytes == 64, "the 128- and 64-byte swizzles");
  const int swizzle = kRowBytes == 128 ? row & 7 : (row >> 1) & 3;
  return uint32_t(row) * kRowBytes + (uint32_t(chunk ^ swizzle) << 4);
}

// `leading_bytes`: unused for K-major operands; for N-major ones the distance between their
// blocks of 64 columns.
template <int kRowBytes = 128>
FA_DEVICE uint64_t descriptor(uint32_t smem_addr, uint32_t leading_bytes = 16) {
  static_assert(kRowBytes == 128 || kRowBytes == 64, "the 128- and 64-byte swizzles");
  uint64_t desc = (smem_addr & 0x3ffffu) >> 4;                 // start address / 16
  desc |= uint64_t((leading_bytes >> 4) & 0x3fffu) << 16;      // leading byte offset / 16
  desc |= uint64_t(8 * kRowBytes >> 4) << 32;                  // stride byte offset: the next atom of 8 rows
  desc |= uint64_t(kRowBytes == 128 ? 1 : 2) << 62;            // the 128- or 64-byte swizzle
  return desc;
}

// The descriptor of the operand `bytes` further into the same buffer. The start address is the
// low 14 bits in 16-byte units and shared memory ends below 256 KB, so the add never carries out
// of that field; the other half of the descriptor, a constant, is left as it is (a uniform add
// per instruction where building the descriptor again took five).
FA_DEVICE uint64_t advanced(uint64_t desc, uint32_t bytes) {
  const uint32_t lo = uint32_t(desc) + (bytes >> 4), hi = uint32_t(desc >> 32);
  return uint64_t(hi) << 32 | lo;
}

FA_DEVICE void fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
FA_DEVICE void commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int kPending>
FA_DEVICE void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}

// Shared-memory writes of the generic proxy (st.shared, cp.async) made visible to the reads of
// the async proxy (wgmma, tensor copies); a barrier must follow before another thread's wgmma or
// tensor copy reads them.
FA_DEVICE void fence_shared_for_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// Keeps the compiler from moving accesses of accumulator registers across a wait.
template <int N>
FA_DEVICE void fence_registers(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

template <int M, int N>
FA_DEVICE void fence_registers(float (&r)[M][N]) {
#pragma unroll
  for (int i = 0; i < M; ++i) fence_registers(r[i]);
}

// The same for the A fragments in registers of an asynchronous wgmma: they must stay as they are
// until the wait that covers it.
template <int M, int N>
FA_DEVICE void fence_registers(uint32_t (&r)[M][N]) {
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int j = 0; j < N; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}

// Accumulator operand lists: "%0, ..., %31", "{%0, ..., %31}", "%0, ..., %63" and "{%0, ..., %63}", and the
// matching "+f" bindings.
#define FA_WGMMA_L32                                                                                          \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
  "%23, %24, %25, %26, %27, %28, %29, %30, %31"
#define FA_WGMMA_D32 "{" FA_WGMMA_L32 "}"
#define FA_WGMMA_L64                                                                                          \
  FA_WGMMA_L32 ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, " \
  "%50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define FA_WGMMA_D64 "{" FA_WGMMA_L64 "}"
#define FA_WGMMA_F8(d, i) \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define FA_WGMMA_F32(d) FA_WGMMA_F8(d, 0), FA_WGMMA_F8(d, 8), FA_WGMMA_F8(d, 16), FA_WGMMA_F8(d, 24)
#define FA_WGMMA_F64(d)                                                                                      \
  FA_WGMMA_F8(d, 0), FA_WGMMA_F8(d, 8), FA_WGMMA_F8(d, 16), FA_WGMMA_F8(d, 24), FA_WGMMA_F8(d, 32), \
      FA_WGMMA_F8(d, 40), FA_WGMMA_F8(d, 48), FA_WGMMA_F8(d, 56)

// The instruction's N is the accumulator's size times 2 (64 or 128): each function has one
// overload per size.

// d (+)= A B^T for A [64 x 32] and B [N x 32] e4m3, both K-major in shared memory.
FA_DEVICE void mma_e4m3_k32(float (&d)[64], uint64_t a_desc, uint64_t b_desc, bool accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " FA_WGMMA_D64 ", %64, %65, p, 1, 1;\n}\n"
      : FA_WGMMA_F64(d)
      : "l"(a_desc), "l"(b_desc), "r"(int(accumulate)));
#endif
}
FA_DEVICE void mma_e4m3_k32(float (&d)[32], uint64_t a_desc, uint64_t b_desc, bool accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 " FA_WGMMA_D32 ", %32, %33, p, 1, 1;\n}\n"
      : FA_WGMMA_F32(d)
      : "l"(a_desc), "l"(b_desc), "r"(int(accumulate)));
#endif
}

// d (+)= A B^T for A [64 x 32] e4m3 in registers (the k32 A fragment: bytes 4t.. and 16 + 4t.. of
// rows g and g + 8 of the warp's 16) and B [N x 32] e4m3, K-major in shared memory.
FA_DEVICE void mma_e4m3_k32(float (&d)[64], const uint32_t (&a)[4], uint64_t b_desc, bool accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " FA_WGMMA_D64 ", {%64, %65, %66, %67}, %68, p, 1, 1;\n}\n"
      : FA_WGMMA_F64(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(int(accumulate)));
#endif
}

FA_DEVICE void mma_e4m3_k32(float (&d)[32], const uint32_t (&a)[4], uint64_t b_desc, bool accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 " FA_WGMMA_D32 ", {%32, %33, %34, %35}, %36, p, 1, 1;\n}\n"
      : FA_WGMMA_F32(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(int(accumulate)));
#endif
}

// The same with A's row sums: m64n72k32, whose last 8 rows of B (an atom of 8 rows after d's) are
// e4m3 ones; `sums` as in the m64n72k16 below.
FA_DEVICE void mma_e4m3_k32(float (&d)[32], float (&sums)[4], const uint32_t (&a)[4], uint64_t b_desc,
                            bool accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k32.f32.e4m3.e4m3 {" FA_WGMMA_L32 ", %32, %33, %34, %35}, "
      "{%36, %37, %38, %39}, %40, p, 1, 1;\n}\n"
      : FA_WGMMA_F32(d), "+f"(sums[0]), "+f"(sums[1]), "+f"(sums[2]), "+f"(sums[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(int(accumulate)));
#endif
}

// d (+)= A B^T for A [64 x 16] and B [N x 16] fp16, both K-major in shared memory.
FA_DEVICE void mma_f16_k16(float (&d)[64], uint64_t a_desc, uint64_t b_desc, bool accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " FA_WGMMA_D64 ", %64, %65, p, 1, 1, 0, 0;\n}\n"
      : FA_WGMMA_F64(d)
      : "l"(a_desc), "l"(b_desc), "r"(int(accumulate)));
#endif
}
FA_DEVICE void mma_f16_k16(float (&d)[32], uint64_t a_desc, uint64_t b_desc, bool accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " FA_WGMMA_D32 ", %32, %33, p, 1, 1, 0, 0;\n}\n"
      : FA_WGMMA_F32(d)
      : "l"(a_desc), "l"(b_desc), "r"(int(accumulate)));
#endif
}

// d += A B for A [64 x 16] fp16 in registers and B [16 x N] fp16, N-major in shared memory
// (descriptor with the blocks' distance).
FA_DEVICE void mma_f16_k16(float (&d)[64], const uint32_t (&a)[4], uint64_t b_desc) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " FA_WGMMA_D64 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : FA_WGMMA_F64(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));
#endif
}
FA_DEVICE void mma_f16_k16(float (&d)[32], const uint32_t (&a)[4], uint64_t b_desc) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " FA_WGMMA_D32 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : FA_WGMMA_F32(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));
#endif
}

// The same with P's row sums: m64n72k16, whose last 8 columns (B's second block of 64 columns,
// `leading_bytes` from the first in b_desc) are fp16 ones, so that each of `sums` is the sum of
// its row of A: sums[i] belongs to row (i >> 1) & 1 as d[i] does. Without `accumulate` both
// start from the product (a persistent item's first P V).
FA_DEVICE void mma_f16_k16(float (&d)[32], float (&sums)[4], const uint32_t (&a)[4], uint64_t b_desc,
                            bool accumulate = true) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n72k16.f32.f16.f16 {" FA_WGMMA_L32 ", %32, %33, %34, %35}, "
      "{%36, %37, %38, %39}, %40, p, 1, 1, 1;\n}\n"
      : FA_WGMMA_F32(d), "+f"(sums[0]), "+f"(sums[1]), "+f"(sums[2]), "+f"(sums[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(int(accumulate)));
#endif
}

#undef FA_WGMMA_L32
#undef FA_WGMMA_D32
#undef FA_WGMMA_L64
#undef FA_WGMMA_D64
#undef FA_WGMMA_F8
#undef FA_WGMMA_F32
#undef FA_WGMMA_F64

}  // namespace wgmma
}  // namespace fastattn

#endif  // __CUDACC__
