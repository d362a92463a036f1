// Registration of fastattn_check_packed_conversions (Python wrapper:
// fastattn.ops.check_packed_conversions).
#include <cstdint>

#include "../common/tensor_utils.h"
#include "numerics_check.h"

namespace fastattn {
namespace {

// `device` only says where to run: the check's result lands next to it.
std::vector<paddle::Tensor> CheckPackedConversions(const paddle::Tensor& device, int64_t stride) {
  PD_CHECK(stride >= 1, "stride: expected >= 1");
  PD_CHECK(device.is_gpu(), "check_packed_conversions: the packed conversions exist in device code only; "
           "run the check on a GPU");
  paddle::Tensor result = paddle::empty({6}, paddle::DataType::INT64, device.place());
  PackedConversionCheckParams p{stride, result.data<int64_t>(), stream_of(device)};
#if defined(FASTATTN_WITH_CUDA)
  check_packed_conversions_cuda(p);
#else
  PD_THROW("check_packed_conversions: this build of fastattn has no CUDA kernels");
#endif
  return {result};
}

std::vector<std::vector<int64_t>> CheckPackedConversionsShape(const std::vector<int64_t>&, int64_t) { return {{6}}; }
std::vector<paddle::DataType> CheckPackedConversionsDtype(const paddle::DataType&) { return {paddle::DataType::INT64}; }

}  // namespace
}  // namespace fastattn

PD_BUILD_OP(fastattn_check_packed_conversions)
    .Inputs({"device"})
    .Outputs({"result"})
    .Attrs({"stride: int64_t"})
    .SetKernelFn(PD_KERNEL(fastattn::CheckPackedConversions))
    .SetInferShapeFn(PD_INFER_SHAPE(fastattn::CheckPackedConversionsShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastattn::CheckPackedConversionsDtype));
