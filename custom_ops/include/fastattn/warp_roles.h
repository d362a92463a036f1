// sm_90 primitives for kernels whose warpgroups take different roles (one copies, the others
// compute): shared-memory mbarriers for the hand-off of pipeline stages, named barriers for a
// subset of the CTA's warps, and the register reallocation between warpgroups.
#pragma once

#if defined(__CUDACC__)

#include <cstdint>

#include "fastattn/platform.h"

namespace fastattn {
namespace warp_roles {

// An mbarrier at shared address `bar` whose phase completes after `count` arrivals. Initialized
// by one thread; a barrier of the CTA must follow before anyone else uses it.
FA_DEVICE void mbarrier_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

// Arrival with release semantics: this thread's earlier shared-memory writes are visible to a
// thread whose wait sees the phase complete.
FA_DEVICE void mbarrier_arrive(uint32_t bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.release.cta.shared::cta.b64 state, [%0];\n}" ::"r"(bar) : "memory");
}

// Waits until the phase of parity `parity` has completed (acquire).
FA_DEVICE void mbarrier_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// Named barrier `id` (1-15; 0 is __syncthreads) over `threads` threads, a multiple of 32: sync
// waits for all of them, arrive counts this warp and goes on.
FA_DEVICE void named_sync(int id, int threads) { asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory"); }
FA_DEVICE void named_arrive(int id, int threads) { asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory"); }

// Per-thread register budget of the calling warpgroup: lowered by the copying warpgroup, raised
// by the computing ones (the sum must fit the registers the CTA was launched with).
template <int kRegisters>
FA_DEVICE void lower_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegisters));
#endif
}
template <int kRegisters>
FA_DEVICE void raise_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegisters));
#endif
}

}  // namespace warp_roles
}  // namespace fastattn

#endif  // __CUDACC__
