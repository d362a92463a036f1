// check_packed_conversions: the two-at-a-time device conversions of numerics.h (Format::pack2)
// against the one-element conversions (from_float / float_to_e4m3) they stand in for.
#pragma once

#include <cstdint>

namespace fastattn {

// Every stride-th float32 bit pattern x is converted as the pair (x, -0.75x) by each format's
// pack2 and by its one-element conversion. result[0..2]: mismatches for bf16, fp16, e4m3;
// result[3..5]: the smallest mismatching pattern of each (INT64_MAX if none).
struct PackedConversionCheckParams {
  int64_t stride;
  int64_t* result;
  void* stream;
};

#if defined(FASTATTN_WITH_CUDA)
void check_packed_conversions_cuda(const PackedConversionCheckParams& p);
#endif

}  // namespace fastattn
