// quant_mxfp4 / dequant_mxfp4 and the e2m1 self-check: arguments shared by the registration, the
// CPU kernels and the CUDA kernels.
#pragma once

#include <cstdint>

#include "fastattn/dispatch.h"

namespace fastattn {

// x [..., D] (D % 32 == 0) viewed as num_blocks blocks of 32 consecutive elements.
struct QuantMxfp4Params {
  const void* x;
  uint8_t* packed;  // [num_blocks * 16]: low nibble = even element
  uint8_t* scales;  // [num_blocks]: ue8m0, 0xff for a block holding NaN
  int64_t num_blocks;
  ElementType in_type;
  void* stream;
};

struct DequantMxfp4Params {
  const uint8_t* packed;
  const uint8_t* scales;
  void* out;  // [num_blocks * 32]
  int64_t num_blocks;
  ElementType out_type;
  void* stream;
};

// Compares a software e2m1 conversion with an independently written one. input kFp32:
// float_to_e2m1 on every stride-th float32 bit pattern. kBf16/kFp16 (GPU only): the packed fp16
// path that quant_mxfp4 takes for 16-bit inputs, on every stride-th index
// (e + 127) * 2^16 + pattern, i.e. every bit pattern times every block multiplier 2^-e.
// result[0] = number of mismatches, result[1] = smallest mismatching index (INT64_MAX if none).
struct E2m1CheckParams {
  int64_t stride;
  ElementType input;
  int64_t* result;
  void* stream;
};

void quant_mxfp4_cpu(const QuantMxfp4Params& p);
void dequant_mxfp4_cpu(const DequantMxfp4Params& p);
void check_e2m1_cpu(const E2m1CheckParams& p);
#if defined(FASTATTN_WITH_CUDA)
void quant_mxfp4_cuda(const QuantMxfp4Params& p);
void dequant_mxfp4_cuda(const DequantMxfp4Params& p);
void check_e2m1_cuda(const E2m1CheckParams& p);
#endif

}  // namespace fastattn
