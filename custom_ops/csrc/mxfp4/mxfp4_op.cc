// Registration of fastattn_quant_mxfp4, fastattn_dequant_mxfp4 and fastattn_check_e2m1
// (Python wrappers: fastattn.ops.quant_mxfp4, dequant_mxfp4, check_e2m1_conversion).
#include <cstdint>

#include "../common/tensor_utils.h"
#include "fastattn/fp4.h"
#include "mxfp4.h"

namespace fastattn {
namespace {

paddle::DataType parse_float_dtype(const std::string& name) {
  const paddle::DataType t = parse_dtype(name, "out_dtype");
  float_element_type(t, "out_dtype");
  return t;
}

std::vector<int64_t> with_last(std::vector<int64_t> shape, int64_t last) {
  shape.back() = last;
  return shape;
}

// The last dimension scaled by num / den, or left -1 where a static program knows it only at run time.
std::vector<int64_t> with_last_scaled(const std::vector<int64_t>& shape, int64_t num, int64_t den) {
  return with_last(shape, shape.back() < 0 ? -1 : shape.back() * num / den);
}

std::vector<paddle::Tensor> QuantMxfp4(const paddle::Tensor& x) {
  const auto& s = x.shape();
  PD_CHECK(!s.empty() && s.back() % kMxBlock == 0, "x: the last dimension must be a multiple of 32, got ",
           shape_str(s));
  check_gpu_alignment(x, 16, "16 bytes at a time", "x");
  paddle::Tensor packed = paddle::empty(with_last(s, s.back() / 2), paddle::DataType::UINT8, x.place());
  paddle::Tensor scales = paddle::empty(with_last(s, s.back() / kMxBlock), paddle::DataType::UINT8, x.place());
  QuantMxfp4Params p{x.data(), packed.data<uint8_t>(), scales.data<uint8_t>(), x.numel() / kMxBlock,
                     float_element_type(x.dtype(), "x"), stream_of(x)};
  run_on_place(x, p, quant_mxfp4_cpu, FASTATTN_CUDA_ENTRY(quant_mxfp4_cuda), "quant_mxfp4");
  return {packed, scales};
}

std::vector<std::vector<int64_t>> QuantMxfp4Shape(const std::vector<int64_t>& x) {
  return {with_last_scaled(x, 1, 2), with_last_scaled(x, 1, kMxBlock)};
}

std::vector<paddle::DataType> QuantMxfp4Dtype(const paddle::DataType&) {
  return {paddle::DataType::UINT8, paddle::DataType::UINT8};
}

std::vector<paddle::Tensor> DequantMxfp4(const paddle::Tensor& packed, const paddle::Tensor& scales,
                                         const std::string& out_dtype) {
  const auto& s = packed.shape();
  PD_CHECK(packed.dtype() == paddle::DataType::UINT8 && scales.dtype() == paddle::DataType::UINT8,
           "packed and scales: expected uint8");
  PD_CHECK(!s.empty() && s.back() % (kMxBlock / 2) == 0, "packed: the last dimension must be a multiple of 16");
  check_shape(scales, with_last(s, s.back() / (kMxBlock / 2)), "scales");
  check_same_place(packed, scales, "scales");
  check_gpu_alignment(packed, 4, "4 bytes at a time", "packed");
  const paddle::DataType dtype = parse_float_dtype(out_dtype);
  paddle::Tensor out = paddle::empty(with_last(s, s.back() * 2), dtype, packed.place());
  DequantMxfp4Params p{packed.data<uint8_t>(), scales.data<uint8_t>(), out.data(), scales.numel(),
                       float_element_type(dtype, "out_dtype"), stream_of(packed)};
  run_on_place(packed, p, dequant_mxfp4_cpu, FASTATTN_CUDA_ENTRY(dequant_mxfp4_cuda), "dequant_mxfp4");
  return {out};
}

std::vector<std::vector<int64_t>> DequantMxfp4Shape(const std::vector<int64_t>& packed,
                                                    const std::vector<int64_t>&, const std::string&) {
  return {with_last_scaled(packed, 2, 1)};
}

std::vector<paddle::DataType> DequantMxfp4Dtype(const paddle::DataType&, const paddle::DataType&,
                                                const std::string& out_dtype) {
  return {parse_float_dtype(out_dtype)};
}

// `device` only says where to run: the check's result lands next to it.
std::vector<paddle::Tensor> CheckE2m1(const paddle::Tensor& device, int64_t stride, const std::string& input_dtype) {
  PD_CHECK(stride >= 1, "stride: expected >= 1");
  const ElementType input = float_element_type(parse_dtype(input_dtype, "input_dtype"), "input_dtype");
  paddle::Tensor result = paddle::empty({2}, paddle::DataType::INT64, device.place());
  E2m1CheckParams p{stride, input, result.data<int64_t>(), stream_of(device)};
  run_on_place(device, p, check_e2m1_cpu, FASTATTN_CUDA_ENTRY(check_e2m1_cuda), "check_e2m1_conversion");
  return {result};
}

std::vector<std::vector<int64_t>> CheckE2m1Shape(const std::vector<int64_t>&, int64_t, const std::string&) {
  return {{2}};
}
std::vector<paddle::DataType> CheckE2m1Dtype(const paddle::DataType&) { return {paddle::DataType::INT64}; }

}  // namespace
}  // namespace fastattn

PD_BUILD_OP(fastattn_quant_mxfp4)
    .Inputs({"x"})
    .Outputs({"packed", "scales"})
    .SetKernelFn(PD_KERNEL(fastattn::QuantMxfp4))
    .SetInferShapeFn(PD_INFER_SHAPE(fastattn::QuantMxfp4Shape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastattn::QuantMxfp4Dtype));

PD_BUILD_OP(fastattn_dequant_mxfp4)
    .Inputs({"packed", "scales"})
    .Outputs({"out"})
    .Attrs({"out_dtype: std::string"})
    .SetKernelFn(PD_KERNEL(fastattn::DequantMxfp4))
    .SetInferShapeFn(PD_INFER_SHAPE(fastattn::DequantMxfp4Shape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastattn::DequantMxfp4Dtype));

PD_BUILD_OP(fastattn_check_e2m1)
    .Inputs({"device"})
    .Outputs({"result"})
    .Attrs({"stride: int64_t", "input_dtype: std::string"})
    .SetKernelFn(PD_KERNEL(fastattn::CheckE2m1))
    .SetInferShapeFn(PD_INFER_SHAPE(fastattn::CheckE2m1Shape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastattn::CheckE2m1Dtype));
