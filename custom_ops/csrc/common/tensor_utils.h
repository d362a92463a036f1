// Paddle-side glue shared by every *_op.cc: dtype tests, checks that raise before any kernel
// runs, and the device/stream a kernel launches on. The Python wrappers validate first and give
// the friendlier messages; these checks keep a direct call of the registered op memory-safe.
#pragma once

#include <string>
#include <vector>

#include "fastattn/dispatch.h"
#include "fastattn/kv_cache.h"
#include "paddle/extension.h"

// Paddle 3.x has a float8_e4m3fn dtype; 2.6 has none (fp8 data travels as uint8 there).
#if __has_include("paddle/phi/common/float8_e4m3fn.h")
#define FASTATTN_HAS_FP8_DTYPE 1
#endif

namespace fastattn {

inline bool is_half_dtype(const paddle::Tensor& t) {
  return t.dtype() == paddle::DataType::BFLOAT16 || t.dtype() == paddle::DataType::FLOAT16;
}

inline bool is_byte_dtype(const paddle::Tensor& t) {
#ifdef FASTATTN_HAS_FP8_DTYPE
  if (t.dtype() == paddle::DataType::FLOAT8_E4M3FN) return true;
#endif
  return t.dtype() == paddle::DataType::UINT8 || t.dtype() == paddle::DataType::INT8;
}

// The element type of a bf16/fp16/fp32 tensor (activations), or an error naming the argument.
inline ElementType float_element_type(paddle::DataType t, const char* name) {
  switch (t) {
    case paddle::DataType::BFLOAT16: return ElementType::kBf16;
    case paddle::DataType::FLOAT16: return ElementType::kFp16;
    case paddle::DataType::FLOAT32: return ElementType::kFp32;
    default: PD_THROW(name, ": expected bfloat16, float16 or float32");
  }
}

// A dtype named the way the Python wrappers pass it. "float8_e4m3fn" exists on Paddle 3 only;
// fp8 data is "uint8" elsewhere.
inline paddle::DataType parse_dtype(const std::string& name, const char* what) {
  if (name == "bfloat16") return paddle::DataType::BFLOAT16;
  if (name == "float16") return paddle::DataType::FLOAT16;
  if (name == "float32") return paddle::DataType::FLOAT32;
  if (name == "uint8") return paddle::DataType::UINT8;
#ifdef FASTATTN_HAS_FP8_DTYPE
  if (name == "float8_e4m3fn") return paddle::DataType::FLOAT8_E4M3FN;
#endif
  PD_THROW(what, ": unsupported dtype '", name, "'");
}

inline bool is_fp8_dtype(paddle::DataType t) {
#ifdef FASTATTN_HAS_FP8_DTYPE
  if (t == paddle::DataType::FLOAT8_E4M3FN) return true;
#endif
  return t == paddle::DataType::UINT8;
}

inline std::string shape_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

inline void check_shape(const paddle::Tensor& t, const std::vector<int64_t>& expected,
                        const char* name) {
  PD_CHECK(t.shape() == expected, name, ": expected shape ", shape_str(expected), ", got ",
           shape_str(t.shape()));
}

inline void check_int32(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.dtype() == paddle::DataType::INT32, name, ": expected int32");
}

inline void check_same_place(const paddle::Tensor& a, const paddle::Tensor& b, const char* name) {
  PD_CHECK(a.is_gpu() == b.is_gpu(), name, ": must be on the same device as the other inputs");
}

// A GPU kernel that reads t `unit` at a time ("16 bytes", "scales in pairs") needs its data to
// start `bytes`-aligned: every allocation does, a view at an offset may not. The CPU kernels take
// any address.
inline void check_gpu_alignment(const paddle::Tensor& t, uintptr_t bytes, const char* unit, const char* name) {
  PD_CHECK(!t.is_gpu() || reinterpret_cast<uintptr_t>(t.data()) % bytes == 0, name, ": the GPU kernels read ", unit,
           ", so the data must start ", bytes, "-byte aligned (a view at an offset may not be); pass a copy");
}

// Activations, K/V rows and caches: the GPU kernels move their rows 16 bytes at a time.
inline void check_gpu_rows_aligned(const paddle::Tensor& t, const char* name) {
  check_gpu_alignment(t, 16, "rows 16 bytes at a time", name);
}

// A paged cache's block size, as every op takes it: the kernels shift by log2(block_size), and the
// prefill kernel copies 4 keys' scales at a time from one block.
inline void check_block_size(int64_t block_size, const char* name) {
  PD_CHECK(block_size == 16 || block_size == 32 || block_size == 64 || block_size == 128, name,
           ": block_size must be 16, 32, 64 or 128, got ", block_size);
}

// A float32 or bf16 scale tensor with `numel` elements.
inline ScaleTensor scale_tensor(const paddle::Tensor& t, int64_t numel, const char* name) {
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32 || t.dtype() == paddle::DataType::BFLOAT16, name,
           ": expected float32 or bfloat16");
  PD_CHECK(t.numel() == numel, name, ": expected ", numel, " elements, got ", t.numel());
  return {const_cast<void*>(t.data()), t.dtype() == paddle::DataType::BFLOAT16};
}

inline void* stream_of(const paddle::Tensor& t) {
#if defined(FASTATTN_WITH_CUDA)
  if (t.is_gpu()) return static_cast<void*>(t.stream());
#endif
  (void)t;
  return nullptr;
}

// The CUDA entry point of a kernel, or nullptr in a build without CUDA sources.
#if defined(FASTATTN_WITH_CUDA)
#define FASTATTN_CUDA_ENTRY(fn) (fn)
#else
#define FASTATTN_CUDA_ENTRY(fn) nullptr
#endif

// T, in a parameter type that template argument deduction skips (C++20's std::type_identity).
template <typename T>
struct NonDeduced {
  using type = T;
};

// Runs the CPU or CUDA kernel by where `t` lives. `cuda` takes no part in deducing Params, so
// that a build without CUDA sources can pass nullptr.
template <typename Params>
void run_on_place(const paddle::Tensor& t, const Params& p, void (*cpu)(const Params&),
                  void (*cuda)(const typename NonDeduced<Params>::type&), const char* op) {
  if (t.is_gpu()) {
    PD_CHECK(cuda != nullptr, op,
             ": this build of fastattn has no CUDA kernels (nvcc was not found at build time)");
    cuda(p);
    return;
  }
  PD_CHECK(t.is_cpu(), op, ": tensors must be on the CPU or a CUDA GPU");
  cpu(p);
}

}  // namespace fastattn
