// Programmatic dependent launch (sm_90 and newer): a kernel launched by launch_overlapping may
// start while the kernel before it in the stream is still finishing, which hides the launch gap
// between short back-to-back kernels. Such a kernel calls wait_for_previous_grid() before it reads
// anything an earlier kernel wrote (the wait returns once that kernel has completed and its
// writes are visible), and allow_next_grid() once the next kernel may be scheduled.
#pragma once

#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <atomic>
#include <utility>

#include "fastattn/device_property.h"
#include "fastattn/platform.h"

namespace fastattn {

FA_DEVICE void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Called by every CTA (or implied when it exits): the next kernel's CTAs are scheduled once all
// of this grid's CTAs have called it, so calling it early only lets them queue up behind ours.
FA_DEVICE void allow_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// A kernel whose every read may depend on the kernel before it: waits for that kernel, then lets
// the next one queue up behind this grid. Called first thing.
FA_DEVICE void wait_then_allow_next_grid() {
  wait_for_previous_grid();
  allow_next_grid();
}

// Whether the current device can overlap launches (compute capability 9.0 and newer).
inline bool overlapping_launch_supported() {
  static std::atomic<int> cache[kMaxDevices] = {};  // 1 yes, 2 no
  return device_property(cache, [](int device) {
    int major = 0;
    return cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 9 ? 1 : 2;
  }) == 1;
}

// kernel<<<grid, block, smem, stream>>>(args...), allowed to overlap the previous kernel where the
// device supports it. The kernel must call wait_for_previous_grid() before reading its inputs.
template <typename... Params, typename... Args>
cudaError_t launch_overlapping(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                               Args&&... args) {
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = overlapping_launch_supported() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace fastattn
#endif  // __CUDACC__
