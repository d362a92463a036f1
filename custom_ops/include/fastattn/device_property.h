// Properties of the current device, asked of the runtime once per device and kept: a process may
// drive several kinds of GPU, and the ops ask on every launch.
#pragma once

#if defined(__CUDACC__)
#include <cuda_runtime.h>

#include <atomic>

namespace fastattn {

constexpr int kMaxDevices = 64;

// query(device) gives the property, never 0 (0 marks "not asked yet" in `cache`).
template <class Query>
int device_property(std::atomic<int> (&cache)[kMaxDevices], Query&& query) {
  int device = 0;
  cudaGetDevice(&device);
  if (device < 0 || device >= kMaxDevices) return query(device);
  int value = cache[device].load(std::memory_order_relaxed);
  if (value == 0) {
    value = query(device);
    cache[device].store(value, std::memory_order_relaxed);
  }
  return value;
}

// The current device's multiprocessors.
inline int multiprocessor_count() {
  static std::atomic<int> cache[kMaxDevices] = {};
  return device_property(cache, [](int device) {
    int n = 0;
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
    return n > 0 ? n : 1;
  });
}

}  // namespace fastattn
#endif  // __CUDACC__
