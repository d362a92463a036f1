// What the tensor cores cost the other warps of a multiprocessor, and the other way round (sm_90a).
//
// One CTA per multiprocessor. Warpgroup 0 issues wgmmas back to back (one of the prefill's two
// shapes: Q K^T's e4m3 m64n128k32 with both operands in shared memory, or P V's f16 m64n128k16 with
// A in registers); the next one or two warpgroups run a stream of one kind of instruction with
// 16 independent chains a thread. Each kind runs alone, the wgmmas run alone, then both together;
// every warp reads clock64 around its loop. The report gives each side's cycles together over
// alone: 1.00 where the two share nothing.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Icustom_ops/include \
//        scripts/pipe_overlap.cu -o pipe_overlap && ./pipe_overlap
//
// The data are constants (finite e4m3 and fp16 codes); nothing is checked but the timing.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

#include "fastattn/wgmma.h"

using namespace fastattn;

enum TensorKind { kQkE4m3 = 0, kPvF16 = 1 };
enum OtherKind { kEx2, kSoftmax, kFfmaImm, kFfmaReg, kFmnmx, kCvtE4m3, kCvtPack, kHmul2, kStoreShared, kLoadShared, kKinds };

constexpr const char* kTensorNames[] = {"Q K^T: e4m3 m64n128k32, A and B in shared memory",
                                        "P V: f16 m64n128k16, A in registers"};
constexpr const char* kOtherNames[] = {
    "ex2.approx.f32 (MUFU)",
    "softmax-like: per value a max, a fma and an ex2; per pair a pack to f16x2",
    "fma x * r + imm",
    "fma x * r + r",
    "max.f32 (FMNMX)",
    "cvt e4m3x2 -> f16x2 (V's widening)",
    "cvt f32 pair -> f16x2 (P's packing)",
    "mul.f16x2 (HMUL2)",
    "st.shared 16 bytes",
    "ld.shared 16 bytes",
};
// Iterations: each kind alone takes at most half the wgmma stream's time, so that together it
// runs wholly beside the wgmmas.
__host__ __device__ constexpr int other_iters(int kind) {
  constexpr int kIters[kKinds] = {2000, 1000, 8000, 8000, 4000, 4000, 4000, 4000, 1000, 1000};
  return kIters[kind];
}
// 16000 wgmmas of either shape: 64 cycles each at the tensor cores' peak, about 1.0 M cycles.
__host__ __device__ constexpr int tensor_iters(int) { return 4000; }

constexpr int kSharedBytes = 32768;  // A (8 KB), B (16 KB), the loads' and stores' 8 KB

template <int kTensor, int kOther>
__global__ void __launch_bounds__(384, 1)
    pipes(int tensor_warpgroups, int other_warpgroups, long long* cycles, float* sink) {
  extern __shared__ __align__(1024) uint8_t smem[];
  for (int i = threadIdx.x; i < kSharedBytes / 4; i += blockDim.x)
    reinterpret_cast<uint32_t*>(smem)[i] = 0x30383038u ^ (i * 0x01000100u & 0x80808080u);
  __syncthreads();
  const int warpgroup = threadIdx.x / 128;
  const uint32_t base = uint32_t(__cvta_generic_to_shared(smem));
  const long long t0 = clock64();
  float out = 0.f;
  if (warpgroup < tensor_warpgroups) {
    const uint64_t a_desc = wgmma::descriptor(base), b_desc = wgmma::descriptor(base + 8192);
    const uint64_t v_desc = wgmma::descriptor(base + 8192, 2048);  // N-major, blocks of 64 columns 2 KB apart
    const uint32_t p[4] = {0x30383038u, 0x38303830u, 0x30383038u, 0x38303830u};
    float d[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) d[i] = 0.f;
    for (int it = 0; it < tensor_iters(kTensor); ++it) {
      wgmma::fence();
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if constexpr (kTensor == kQkE4m3)
          wgmma::mma_e4m3_k32(d, wgmma::advanced(a_desc, 32 * k), wgmma::advanced(b_desc, 32 * k), true);
        else
          wgmma::mma_f16_k16(d, p, wgmma::advanced(v_desc, 4096 * (k & 1)));
      }
      wgmma::commit();
      wgmma::wait<1>();  // one group in flight while the next is issued
    }
    wgmma::wait<0>();
    wgmma::fence_registers(d);
#pragma unroll
    for (int i = 0; i < 64; ++i) out += d[i];
  } else if (warpgroup < tensor_warpgroups + other_warpgroups) {
    float x[16], y[16], z[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      x[i] = 0.5f + 0.01f * ((threadIdx.x + i) & 31);
      y[i] = 0.9f + 1e-7f * (threadIdx.x ^ i);
      z[i] = -0.45f - 1e-7f * (threadIdx.x + i);
    }
    uint32_t* u = reinterpret_cast<uint32_t*>(x);
    const uint32_t* v = reinterpret_cast<const uint32_t*>(y);
    const uint32_t store_base = base + 24576 + (threadIdx.x % 128) * 16;
    for (int it = 0; it < other_iters(kOther); ++it) {
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        if constexpr (kOther == kEx2) {
          asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(x[i]) : "f"(-x[i]));
        } else if constexpr (kOther == kFfmaImm) {
          x[i] = fmaf(x[i], y[0], -0.45f);
        } else if constexpr (kOther == kFfmaReg) {
          x[i] = fmaf(x[i], y[i], z[i]);
        } else if constexpr (kOther == kFmnmx) {
          asm volatile("max.f32 %0, %0, %1;" : "+f"(x[i]) : "f"(y[i]));
        } else if constexpr (kOther == kCvtE4m3) {
          asm volatile("{.reg .b16 lo;\nmov.b32 {lo, _}, %0;\ncvt.rn.f16x2.e4m3x2 %0, lo;}" : "+r"(u[i]));
        } else if constexpr (kOther == kCvtPack) {
          asm volatile("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(u[i]) : "f"(y[i]), "f"(__uint_as_float(u[i])));
        } else if constexpr (kOther == kHmul2) {
          asm volatile("mul.rn.f16x2 %0, %0, %1;" : "+r"(u[i]) : "r"(v[i]));
        } else if constexpr (kOther == kStoreShared) {
          if (i % 4 == 0)
            asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(store_base + (i / 4) * 2048), "r"(u[i]),
                         "r"(u[i + 1]), "r"(u[i + 2]), "r"(u[i + 3]));
        } else if constexpr (kOther == kLoadShared) {
          if (i % 4 == 0)
            asm volatile("ld.volatile.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                         : "=r"(u[i]), "=r"(u[i + 1]), "=r"(u[i + 2]), "=r"(u[i + 3])
                         : "r"(store_base + (i / 4) * 2048));
        }
      }
      if constexpr (kOther == kSoftmax) {
        float m = x[0];
#pragma unroll
        for (int i = 1; i < 16; ++i) m = fmaxf(m, x[i]);
#pragma unroll
        for (int i = 0; i < 16; ++i) asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(x[i]) : "f"(fmaf(x[i], y[0], -m)));
#pragma unroll
        for (int i = 0; i < 16; i += 2) {
          uint32_t h;
          asm volatile("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(h) : "f"(x[i]), "f"(x[i + 1]));
          x[i] += __uint_as_float(h & 0x3c003c00u) * 1e-30f;  // keeps the pack live
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) out += x[i];
  }
  const long long t1 = clock64();
  if (threadIdx.x % 32 == 0) cycles[blockIdx.x * 12 + threadIdx.x / 32] = t1 - t0;
  if (out == 12345.f) sink[threadIdx.x] = out;  // never true; keeps the loops' results live
}

using Kernel = void (*)(int, int, long long*, float*);

template <int kTensor, int... kOther>
void kernels_of(std::integer_sequence<int, kOther...>, std::vector<Kernel>& table) {
  (table.push_back(&pipes<kTensor, kOther>), ...);
}

// Mean cycles of the warps of warpgroups [first, first + count) over all CTAs.
double mean_cycles(const std::vector<long long>& cycles, int ctas, int first, int count) {
  double sum = 0;
  for (int b = 0; b < ctas; ++b)
    for (int w = 4 * first; w < 4 * (first + count); ++w) sum += double(cycles[b * 12 + w]);
  return sum / (ctas * 4 * count);
}

int main() {
  int sms = 0, clock_khz = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::vector<Kernel> table;
  kernels_of<kQkE4m3>(std::make_integer_sequence<int, kKinds>(), table);
  kernels_of<kPvF16>(std::make_integer_sequence<int, kKinds>(), table);
  for (Kernel k : table) cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes);
  long long* cycles;
  float* sink;
  cudaMalloc(&cycles, sms * 12 * sizeof(long long));
  cudaMalloc(&sink, 384 * sizeof(float));
  std::vector<long long> host(sms * 12);
  auto run = [&](int tensor, int other, int tensor_warpgroups, int other_warpgroups) {
    Kernel k = table[tensor * kKinds + other];
    const int threads = 128 * (tensor_warpgroups + other_warpgroups);
    for (int rep = 0; rep < 2; ++rep) k<<<sms, threads, kSharedBytes>>>(tensor_warpgroups, other_warpgroups, cycles, sink);
    if (cudaDeviceSynchronize() != cudaSuccess) {
      std::printf("launch failed: %s\n", cudaGetErrorString(cudaGetLastError()));
      std::exit(1);
    }
    cudaMemcpy(host.data(), cycles, host.size() * sizeof(long long), cudaMemcpyDeviceToHost);
  };
  std::printf("%s, %d SMs; cycles of the SM clock (max %d MHz)\n\n", prop.name, sms, clock_khz / 1000);
  for (int tensor : {kQkE4m3, kPvF16}) {
    run(tensor, kEx2, 1, 0);
    const double tensor_alone = mean_cycles(host, sms, 0, 1);
    std::printf("wgmmas: %s, %.0f cycles alone (%.1f a wgmma)\n\n", kTensorNames[tensor], tensor_alone,
                tensor_alone / (4.0 * tensor_iters(tensor)));
    std::printf("| other warps' instructions | warpgroups | alone (cycles) | together: theirs / alone | wgmmas / alone |\n");
    std::printf("|---|---|---|---|---|\n");
    for (int other = 0; other < kKinds; ++other)
      for (int warpgroups : {1, 2}) {
        run(tensor, other, 0, warpgroups);
        const double other_alone = mean_cycles(host, sms, 0, warpgroups);
        run(tensor, other, 1, warpgroups);
        const double other_together = mean_cycles(host, sms, 1, warpgroups);
        const double tensor_together = mean_cycles(host, sms, 0, 1);
        // A stream that outlasts the wgmmas ran partly alone: its ratio understates (marked).
        std::printf("| %s | %d | %.0f | %.2f%s | %.2f |\n", kOtherNames[other], warpgroups, other_alone,
                    other_together / other_alone, other_together > tensor_together ? " (outlasted)" : "",
                    tensor_together / tensor_alone);
      }
    std::printf("\n");
  }
  return 0;
}
