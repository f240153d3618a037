// Training-mode batch normalisation + ReLU through oneDNN, as XLA FFI handlers for the CPU.
//
//   msm_bn_relu_forward  x, scale, shift -> y = relu(scale (x - mean) / sqrt(var + eps) + shift),
//                                           mean, var, workspace (the ReLU's mask)
//   msm_bn_relu_backward x, dy, mean, var, scale, workspace -> dx, dscale, dshift
// x, y, dz, dx: [N, C] (all leading axes flattened; channels last), float32 or bfloat16;
// scale, shift, mean, var (biased, as nn.BatchNorm) and their gradients: float32 [C].
// Attribute: epsilon (float32). The workspace is a uint8 buffer whose size
// MsmBnReluWorkspaceBytes (plain C, called through ctypes) gives.
//
// Why: XLA:CPU computes these statistics, the normalisation and their gradients as separate
// passes with bfloat16 <-> float32 conversions; oneDNN does each direction in one or two passes
// over the activations. msm_jax/kernels/onednn.py builds the custom_vjp around them.

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>

#include "onednn_common.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using msm_onednn::Engine;

namespace {

struct Shape {
  memory::dim rows, channels;
  memory::data_type type;
  memory::desc Data() const { return {{rows, channels}, type, memory::format_tag::nc}; }
  memory::desc Statistic() const {
    return {{channels}, memory::data_type::f32, memory::format_tag::a};
  }
};

ffi::Error MakeShape(const ffi::AnyBuffer& x, Shape* shape) {
  auto dims = x.dimensions();
  if (dims.size() < 1) return ffi::Error::InvalidArgument("msm_bn: operand must have channels");
  if (!msm_onednn::ToDnnlType(x.element_type(), &shape->type))
    return ffi::Error::InvalidArgument("msm_bn: only float32 and bfloat16 are supported");
  shape->channels = dims[dims.size() - 1];
  shape->rows = 1;
  for (size_t i = 0; i + 1 < dims.size(); ++i) shape->rows *= dims[i];
  return ffi::Error::Success();
}

const auto kFlags = dnnl::normalization_flags::use_scale |
                    dnnl::normalization_flags::use_shift |
                    dnnl::normalization_flags::fuse_norm_relu;

dnnl::batch_normalization_forward::primitive_desc ForwardDesc(const Shape& s, float epsilon) {
  return {Engine(), dnnl::prop_kind::forward_training, s.Data(), s.Data(), epsilon, kFlags};
}

std::string Key(const char* op, const Shape& s, float epsilon) {
  std::ostringstream key;
  key << op << ' ' << static_cast<int>(s.type) << ' ' << s.rows << ' ' << s.channels << ' '
      << epsilon;
  return key.str();
}

// A primitive and the layout of the forward's workspace (the ReLU mask) it reads or writes.
struct Plan {
  dnnl::primitive primitive;
  memory::desc workspace;
};

ffi::Error BnReluForward(ffi::AnyBuffer x, ffi::AnyBuffer scale, ffi::AnyBuffer shift,
                         ffi::Result<ffi::AnyBuffer> y, ffi::Result<ffi::AnyBuffer> mean,
                         ffi::Result<ffi::AnyBuffer> var, ffi::Result<ffi::AnyBuffer> workspace,
                         float epsilon) {
  Shape s;
  auto status = MakeShape(x, &s);
  if (status.failure()) return status;
  return msm_onednn::Run([&] {
    auto plan = msm_onednn::Cached<Plan>(Key("bn_forward", s, epsilon), [&] {
      auto forward = ForwardDesc(s, epsilon);
      return Plan{dnnl::batch_normalization_forward(forward), forward.workspace_desc()};
    });
    dnnl::stream stream(Engine());
    plan->primitive.execute(stream,
                       {{DNNL_ARG_SRC, memory(s.Data(), Engine(), x.untyped_data())},
                        {DNNL_ARG_SCALE, memory(s.Statistic(), Engine(), scale.untyped_data())},
                        {DNNL_ARG_SHIFT, memory(s.Statistic(), Engine(), shift.untyped_data())},
                        {DNNL_ARG_DST, memory(s.Data(), Engine(), y->untyped_data())},
                        {DNNL_ARG_MEAN, memory(s.Statistic(), Engine(), mean->untyped_data())},
                        {DNNL_ARG_VARIANCE, memory(s.Statistic(), Engine(), var->untyped_data())},
                        {DNNL_ARG_WORKSPACE, memory(plan->workspace, Engine(), workspace->untyped_data())}});
    stream.wait();
  });
}

ffi::Error BnReluBackward(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::AnyBuffer mean,
                          ffi::AnyBuffer var, ffi::AnyBuffer scale, ffi::AnyBuffer workspace,
                          ffi::Result<ffi::AnyBuffer> dx,
                      ffi::Result<ffi::AnyBuffer> dscale, ffi::Result<ffi::AnyBuffer> dshift,
                      float epsilon) {
  Shape s;
  auto status = MakeShape(x, &s);
  if (status.failure()) return status;
  if (dy.element_type() != x.element_type() || dx->element_type() != x.element_type())
    return ffi::Error::InvalidArgument("msm_bn_backward: mixed element types");
  return msm_onednn::Run([&] {
    auto plan = msm_onednn::Cached<Plan>(Key("bn_backward", s, epsilon), [&] {
      auto forward = ForwardDesc(s, epsilon);
      return Plan{dnnl::batch_normalization_backward(
                      dnnl::batch_normalization_backward::primitive_desc(
                          Engine(), dnnl::prop_kind::backward, s.Data(), s.Data(), s.Data(),
                          epsilon, kFlags, forward)),
                  forward.workspace_desc()};
    });
    dnnl::stream stream(Engine());
    plan->primitive.execute(
        stream, {{DNNL_ARG_SRC, memory(s.Data(), Engine(), x.untyped_data())},
                 {DNNL_ARG_DIFF_DST, memory(s.Data(), Engine(), dy.untyped_data())},
                 {DNNL_ARG_WORKSPACE, memory(plan->workspace, Engine(), workspace.untyped_data())},
                 {DNNL_ARG_MEAN, memory(s.Statistic(), Engine(), mean.untyped_data())},
                 {DNNL_ARG_VARIANCE, memory(s.Statistic(), Engine(), var.untyped_data())},
                 {DNNL_ARG_SCALE, memory(s.Statistic(), Engine(), scale.untyped_data())},
                 {DNNL_ARG_DIFF_SRC, memory(s.Data(), Engine(), dx->untyped_data())},
                 {DNNL_ARG_DIFF_SCALE, memory(s.Statistic(), Engine(), dscale->untyped_data())},
                 {DNNL_ARG_DIFF_SHIFT, memory(s.Statistic(), Engine(), dshift->untyped_data())}});
    stream.wait();
  });
}

}  // namespace

// Bytes of the forward's workspace for x [rows, channels] (type 0: float32, 1: bfloat16); 0 on
// error.
extern "C" size_t MsmBnReluWorkspaceBytes(int64_t rows, int64_t channels, int type,
                                          float epsilon) {
  try {
    Shape s{rows, channels, type == 1 ? memory::data_type::bf16 : memory::data_type::f32};
    return ForwardDesc(s, epsilon).workspace_desc().get_size();
  } catch (const dnnl::error&) {
    return 0;
  }
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(MsmBnReluForward, BnReluForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("epsilon"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MsmBnReluBackward, BnReluBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("epsilon"));
