// Registration of fastattn_merge_attn_states (Python wrapper: fastattn.ops.merge_attn_states).
#include <cstdint>

#include "../common/op_entry_points.h"
#include "../common/tensor_utils.h"
#include "merge_attn.h"

namespace fastattn {
namespace {

// The output dtype named by the out_dtype attribute ("" = the inputs' dtype).
paddle::DataType out_dtype_of(const std::string& out_dtype, paddle::DataType in) {
  return out_dtype.empty() ? in : parse_dtype(out_dtype, "out_dtype");
}

bool aligned_16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

std::vector<paddle::Tensor> MergeAttnStates(const paddle::Tensor& prefix_output, const paddle::Tensor& prefix_lse,
                                            const paddle::Tensor& suffix_output, const paddle::Tensor& suffix_lse,
                                            const paddle::optional<paddle::Tensor>& output_scale,
                                            const std::string& out_dtype) {
  PD_CHECK(prefix_output.shape().size() == 3, "prefix_output: expected [tokens, heads, head_dim]");
  check_shape(suffix_output, prefix_output.shape(), "suffix_output");
  PD_CHECK(suffix_output.dtype() == prefix_output.dtype(), "suffix_output: dtype differs from prefix_output");
  const auto& s = prefix_output.shape();
  check_shape(prefix_lse, {s[1], s[0]}, "prefix_lse");
  check_shape(suffix_lse, {s[1], s[0]}, "suffix_lse");
  for (const paddle::Tensor* t : {&prefix_lse, &suffix_lse}) {
    PD_CHECK(t->dtype() == paddle::DataType::FLOAT32, "lse: expected float32");
  }
  for (const paddle::Tensor* t : {&prefix_lse, &suffix_output, &suffix_lse}) {
    check_same_place(prefix_output, *t, "inputs");
  }
  MergeAttnParams p{};
  p.in_type = float_element_type(prefix_output.dtype(), "prefix_output");
  const paddle::DataType out_type = out_dtype_of(out_dtype, prefix_output.dtype());
  const bool fp8_out = is_fp8_dtype(out_type);
  PD_CHECK(fp8_out == bool(output_scale), "output_scale: an fp8 output needs output_scale and only an fp8 "
                                          "output takes one");
  if (fp8_out) {
    PD_CHECK(output_scale->dtype() == paddle::DataType::FLOAT32 && output_scale->numel() == 1,
             "output_scale: expected a float32 tensor of one element");
    check_same_place(prefix_output, *output_scale, "output_scale");
    p.output_scale = output_scale->data<float>();
  }
  p.out_type = fp8_out ? ElementType::kFp8 : float_element_type(out_type, "out_dtype");
  paddle::Tensor out = paddle::empty(s, out_type, prefix_output.place());
  paddle::Tensor out_lse = paddle::empty({s[1], s[0]}, paddle::DataType::FLOAT32, prefix_output.place());
  p.prefix_out = prefix_output.data();
  p.suffix_out = suffix_output.data();
  p.prefix_lse = prefix_lse.data<float>();
  p.suffix_lse = suffix_lse.data<float>();
  p.out = out.data();
  p.out_lse = out_lse.data<float>();
  p.tokens = int(s[0]);
  p.heads = int(s[1]);
  p.head_dim = int(s[2]);
  p.aligned_16 = aligned_16(p.prefix_out) && aligned_16(p.suffix_out) && aligned_16(p.out);
  p.stream = stream_of(prefix_output);
  run_on_place(prefix_output, p, merge_attn_states_cpu, FASTATTN_CUDA_ENTRY(merge_attn_states_cuda),
               "merge_attn_states");
  return {out, out_lse};
}

// Shape and dtype inference of the registrations below.
namespace {

std::vector<std::vector<int64_t>> MergeAttnStatesShape(const std::vector<int64_t>& prefix_output,
                                                       const std::vector<int64_t>&, const std::vector<int64_t>&,
                                                       const std::vector<int64_t>&,
                                                       const paddle::optional<std::vector<int64_t>>&,
                                                       const std::string&) {
  return {prefix_output, {prefix_output[1], prefix_output[0]}};
}

std::vector<paddle::DataType> MergeAttnStatesDtype(const paddle::DataType& prefix_output, const paddle::DataType&,
                                                   const paddle::DataType&, const paddle::DataType&,
                                                   const paddle::optional<paddle::DataType>&,
                                                   const std::string& out_dtype) {
  return {out_dtype_of(out_dtype, prefix_output), paddle::DataType::FLOAT32};
}

}  // namespace
}  // namespace fastattn

PD_BUILD_OP(fastattn_merge_attn_states)
    .Inputs({"prefix_output", "prefix_lse", "suffix_output", "suffix_lse", paddle::Optional("output_scale")})
    .Outputs({"out", "out_lse"})
    .Attrs({"out_dtype: std::string"})
    .SetKernelFn(PD_KERNEL(fastattn::MergeAttnStates))
    .SetInferShapeFn(PD_INFER_SHAPE(fastattn::MergeAttnStatesShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastattn::MergeAttnStatesDtype));
