// Tensor copies of sm_90 (TMA): one thread asks the copy engine for a whole tile, global to shared
// memory, swizzled on the way as wgmma reads it, its bytes counted on an mbarrier; or back, shared
// to global memory, unswizzled on the way. The host describes each tensor once per launch (a
// tensor map), and the kernel takes the map as a __grid_constant__ parameter.
#pragma once

#include <cuda.h>  // CUtensorMap and the encoding function's type; the driver is reached at run time
#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/platform.h"

namespace fastattn {
namespace tma {

#if defined(__CUDACC__)
// The 3-D box of `map` at element coordinates (x, y, z) into shared memory at `dst`, counted in
// bytes on mbarrier `bar`. Coordinates out of the tensor read zeros (their bytes count too).
FA_DEVICE void load_3d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int x, int y, int z) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];"
      ::"r"(dst), "l"(map), "r"(bar), "r"(x), "r"(y), "r"(z)
      : "memory");
#endif
}

// The 3-D box of `map` at element coordinates (x, y, z) from shared memory at `src` to global
// memory, in the bulk group of the issuing thread. The generic proxy's writes of `src` need
// fence.proxy.async first, and `src` must stay as it is until wait_stores_read.
FA_DEVICE void store_3d(const CUtensorMap* map, uint32_t src, int x, int y, int z) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.tile.bulk_group [%0, {%2, %3, %4}], [%1];"
               ::"l"(map), "r"(src), "r"(x), "r"(y), "r"(z)
               : "memory");
#endif
}

// The issuing thread's stores so far, as a bulk group; then the wait until every group's shared
// memory has been read (the global writes complete on their own).
FA_DEVICE void commit_stores() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
#endif
}
FA_DEVICE void wait_stores_read() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
#endif
}

// Bytes that the current phase of mbarrier `bar` waits for on top of its arrivals.
FA_DEVICE void expect_bytes(uint32_t bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
#endif
}

// A 3-D tensor of bytes: dims[0] contiguous, then dims[1] rows `strides[0]` bytes apart and
// dims[2] planes `strides[1]` bytes apart, copied in boxes of box[0] x box[1] x box[2] with the
// 128- or 64-byte swizzle (box[0], 128 or 64, picks it). False where the driver refuses it (too
// old a driver, or an address or stride not a multiple of 16): the caller copies another way.
inline bool encode_bytes_3d(CUtensorMap* map, const void* base, const uint64_t (&dims)[3], const uint64_t (&strides)[2],
                            const uint32_t (&box)[3]) {
  using Encode = decltype(&cuTensorMapEncodeTiled);
  static const Encode encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &found);
#endif
    cudaGetLastError();  // a missing entry point is an answer, not an error for the next launch
    return err == cudaSuccess && found == cudaDriverEntryPointSuccess ? reinterpret_cast<Encode>(fn) : nullptr;
  }();
  if (encode == nullptr) return false;
  const uint32_t element_strides[3] = {1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, const_cast<void*>(base), dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, box[0] == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}
#endif  // __CUDACC__

}  // namespace tma
}  // namespace fastattn
