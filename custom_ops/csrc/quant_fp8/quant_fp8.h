// quantize_fp8: static-scale FP8 quantization of activations, byte = e4m3(x * (1 / scale)).
#pragma once

#include <cstdint>

#include "fastattn/dispatch.h"

namespace fastattn {

struct QuantFp8Params {
  const void* x;
  uint8_t* out;
  const float* scale;  // one element: the dequant multiplier (real value = e4m3 value * scale)
  int64_t numel;
  ElementType in_type;
  bool aligned_16;
  void* stream;
};

void quantize_fp8_cpu(const QuantFp8Params& p);
#if defined(FASTATTN_WITH_CUDA)
void quantize_fp8_cuda(const QuantFp8Params& p);
#endif

}  // namespace fastattn
