// Registration of fastattn_quantize_fp8 (Python wrapper: fastattn.ops.quantize_fp8).
#include <cstdint>

#include "../common/tensor_utils.h"
#include "quant_fp8.h"

namespace fastattn {
namespace {

paddle::DataType fp8_dtype(const std::string& out_dtype) {
  const paddle::DataType t = parse_dtype(out_dtype, "out_dtype");
  PD_CHECK(is_fp8_dtype(t), "out_dtype: expected float8_e4m3fn or uint8, got '", out_dtype, "'");
  return t;
}

std::vector<paddle::Tensor> QuantizeFp8(const paddle::Tensor& x, const paddle::Tensor& scale,
                                        const std::string& out_dtype) {
  const ElementType type = float_element_type(x.dtype(), "x");
  PD_CHECK(scale.dtype() == paddle::DataType::FLOAT32 && scale.numel() == 1,
           "scale: expected a float32 tensor of one element");
  check_same_place(x, scale, "scale");
  paddle::Tensor out = paddle::empty(x.shape(), fp8_dtype(out_dtype), x.place());
  QuantFp8Params p{x.data(), static_cast<uint8_t*>(out.data()), scale.data<float>(), x.numel(), type,
                   reinterpret_cast<uintptr_t>(x.data()) % 16 == 0 && reinterpret_cast<uintptr_t>(out.data()) % 16 == 0,
                   stream_of(x)};
  run_on_place(x, p, quantize_fp8_cpu, FASTATTN_CUDA_ENTRY(quantize_fp8_cuda), "quantize_fp8");
  return {out};
}

std::vector<std::vector<int64_t>> QuantizeFp8Shape(const std::vector<int64_t>& x, const std::vector<int64_t>&,
                                                   const std::string&) {
  return {x};
}

std::vector<paddle::DataType> QuantizeFp8Dtype(const paddle::DataType&, const paddle::DataType&,
                                               const std::string& out_dtype) {
  return {fp8_dtype(out_dtype)};
}

}  // namespace
}  // namespace fastattn

PD_BUILD_OP(fastattn_quantize_fp8)
    .Inputs({"x", "scale"})
    .Outputs({"out"})
    .Attrs({"out_dtype: std::string"})
    .SetKernelFn(PD_KERNEL(fastattn::QuantizeFp8))
    .SetInferShapeFn(PD_INFER_SHAPE(fastattn::QuantizeFp8Shape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastattn::QuantizeFp8Dtype));
