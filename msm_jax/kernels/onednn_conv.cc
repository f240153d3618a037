// 2-D convolutions through oneDNN, as XLA FFI handlers for the CPU platform.
//
// Three handlers, one per derivative of y = conv(x, w) + b (NHWC activations, HWIO kernel,
// the layouts of lax.conv_general_dilated with dimension numbers ("NHWC", "HWIO", "NHWC")):
//   msm_conv_forward          x, w, b -> y   (attribute relu: y = max(conv(x, w) + b, 0))
//   msm_conv_backward_data    dy, w   -> dx
//   msm_conv_backward_weights x, dy   -> dw, db (db float32)
// Attributes (int64): stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right.
// Element types: float32, or bfloat16 (accumulated in float32 by oneDNN; the kernel and bias
// gradients are accumulated in float32, the kernel's rounded once into the caller's type).
// The bias gradient is a sum over batch x height x width: computed inside the kernel-gradient
// pass rather than by XLA, whose bfloat16 -> float32 reductions of that size are slow.
// msm_jax/kernels/onednn.py builds the custom_vjp around them; MakeGeometry refuses
// inconsistent shapes with an InvalidArgument error.
//
// Activations stay NHWC (oneDNN's nhwc kernels, as PyTorch's channels-last); the kernel is
// reordered into the blocked layout the chosen implementation wants on every call (a few
// hundred KB per layer). Primitives are cached by geometry, so each layer's kernel is
// generated once per process.

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "onednn_common.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = dnnl::memory::format_tag;
using msm_onednn::Engine;
using msm_onednn::Run;

namespace {

// Sizes of one convolution, in oneDNN's logical order (N C H W / O I H W).
struct Geometry {
  memory::dim batch, in_h, in_w, in_c, k_h, k_w, out_c, out_h, out_w;
  memory::dims strides, pad_l, pad_r;
  memory::data_type type;

  memory::desc Source() const { return {{batch, in_c, in_h, in_w}, type, Tag::nhwc}; }
  memory::desc Destination() const { return {{batch, out_c, out_h, out_w}, type, Tag::nhwc}; }
  memory::desc UserWeights(memory::data_type t) const {
    return {{out_c, in_c, k_h, k_w}, t, Tag::hwio};
  }
  memory::desc AnyWeights(memory::data_type t) const {
    return {{out_c, in_c, k_h, k_w}, t, Tag::any};
  }
  memory::desc Bias(memory::data_type t) const { return {{out_c}, t, Tag::a}; }
  std::string Key(const char* op) const {
    std::ostringstream key;
    key << op << ' ' << static_cast<int>(type) << ' ' << batch << ' ' << in_h << ' ' << in_w
        << ' ' << in_c << ' ' << k_h << ' ' << k_w << ' ' << out_c << ' ' << out_h << ' '
        << out_w;
    for (const auto* v : {&strides, &pad_l, &pad_r})
      for (auto d : *v) key << ' ' << d;
    return key.str();
  }
  // relu: a ReLU post-op fused into the convolution's output loop.
  dnnl::convolution_forward::primitive_desc Forward(bool relu = false) const {
    dnnl::primitive_attr attributes;
    if (relu) {
      dnnl::post_ops post_ops;
      post_ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attributes.set_post_ops(post_ops);
    }
    return {Engine(),     dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
            Source(),     AnyWeights(type), Bias(type), Destination(), strides, pad_l,
            pad_r,        attributes};
  }
};

struct Attributes {
  int64_t stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right;
};

// activations: [N, H, W, C] of x (or dx); kernel: [KH, KW, I, O]; outputs: [N, OH, OW, O].
ffi::Error MakeGeometry(ffi::DataType type, ffi::Span<const int64_t> activations,
                        ffi::Span<const int64_t> kernel, ffi::Span<const int64_t> outputs,
                        const Attributes& a, Geometry* g) {
  if (activations.size() != 4 || kernel.size() != 4 || outputs.size() != 4)
    return ffi::Error::InvalidArgument("msm_conv: operands must be 4-D (NHWC, HWIO)");
  if (!msm_onednn::ToDnnlType(type, &g->type))
    return ffi::Error::InvalidArgument("msm_conv: only float32 and bfloat16 are supported");
  g->batch = activations[0];
  g->in_h = activations[1];
  g->in_w = activations[2];
  g->in_c = activations[3];
  g->k_h = kernel[0];
  g->k_w = kernel[1];
  g->out_c = kernel[3];
  g->out_h = outputs[1];
  g->out_w = outputs[2];
  g->strides = {a.stride_h, a.stride_w};
  g->pad_l = {a.pad_top, a.pad_left};
  g->pad_r = {a.pad_bottom, a.pad_right};
  const bool consistent =
      kernel[2] == g->in_c && outputs[0] == g->batch && outputs[3] == g->out_c &&
      g->out_h == (g->in_h + a.pad_top + a.pad_bottom - g->k_h) / a.stride_h + 1 &&
      g->out_w == (g->in_w + a.pad_left + a.pad_right - g->k_w) / a.stride_w + 1;
  if (!consistent) return ffi::Error::InvalidArgument("msm_conv: inconsistent shapes");
  return ffi::Error::Success();
}

// A convolution primitive plus the reorder between the user's HWIO kernel and the layout the
// primitive chose (absent when they coincide).
struct Plan {
  dnnl::primitive conv;
  memory::desc weights;  // the primitive's kernel (or kernel-gradient) layout
  bool reorder_needed = false;
  dnnl::reorder reorder;
};

// kernel_to_primitive: the kernel is an input (user -> primitive layout); otherwise it is the
// kernel gradient (primitive -> user layout).
Plan MakePlan(dnnl::primitive conv, const memory::desc& primitive_layout,
              const memory::desc& user_layout, bool kernel_to_primitive) {
  Plan plan{std::move(conv), primitive_layout};
  plan.reorder_needed = primitive_layout != user_layout;
  if (plan.reorder_needed) {
    const auto& from = kernel_to_primitive ? user_layout : primitive_layout;
    const auto& to = kernel_to_primitive ? primitive_layout : user_layout;
    plan.reorder = dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), from, Engine(), to));
  }
  return plan;
}

// Scratch for the reordered kernel; one per thread, grown as needed.
void* WeightsScratch(size_t bytes) {
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < bytes) scratch.resize(bytes);
  return scratch.data();
}

// The caller's HWIO kernel in the layout the plan's primitive reads (reordered into per-thread
// scratch when they differ).
memory KernelForPrimitive(const Plan& plan, const Geometry& g, void* kernel,
                          dnnl::stream& stream) {
  memory user_weights(g.UserWeights(g.type), Engine(), kernel);
  if (!plan.reorder_needed) return user_weights;
  memory weights(plan.weights, Engine(), WeightsScratch(plan.weights.get_size()));
  plan.reorder.execute(stream, user_weights, weights);
  return weights;
}

Attributes ReadAttributes(int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                          int64_t pr) {
  return {sh, sw, pt, pb, pl, pr};
}

ffi::Error ConvForward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b,
                       ffi::Result<ffi::AnyBuffer> y,
                       int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                       int64_t pad_left, int64_t pad_right, bool relu) {
  Geometry g;
  auto attributes = ReadAttributes(stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right);
  if (x.element_type() != w.element_type() || y->element_type() != x.element_type() ||
      b.element_type() != x.element_type())
    return ffi::Error::InvalidArgument("msm_conv_forward: mixed element types");
  auto status = MakeGeometry(x.element_type(), x.dimensions(), w.dimensions(), y->dimensions(),
                             attributes, &g);
  if (status.failure()) return status;
  return Run([&] {
    auto plan = msm_onednn::Cached<Plan>(g.Key(relu ? "forward_relu" : "forward"), [&] {
      auto pd = g.Forward(relu);
      return MakePlan(dnnl::convolution_forward(pd), pd.weights_desc(), g.UserWeights(g.type),
                      true);
    });
    dnnl::stream stream(Engine());
    memory weights = KernelForPrimitive(*plan, g, w.untyped_data(), stream);
    plan->conv.execute(stream, {{DNNL_ARG_SRC, memory(g.Source(), Engine(), x.untyped_data())},
                                {DNNL_ARG_WEIGHTS, weights},
                                {DNNL_ARG_BIAS, memory(g.Bias(g.type), Engine(), b.untyped_data())},
                                {DNNL_ARG_DST, memory(g.Destination(), Engine(), y->untyped_data())}});
    stream.wait();
  });
}

ffi::Error ConvBackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                            int64_t stride_h, int64_t stride_w, int64_t pad_top,
                            int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  Geometry g;
  auto attributes = ReadAttributes(stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right);
  if (dy.element_type() != w.element_type() || dx->element_type() != dy.element_type())
    return ffi::Error::InvalidArgument("msm_conv_backward_data: mixed element types");
  auto status = MakeGeometry(dy.element_type(), dx->dimensions(), w.dimensions(),
                             dy.dimensions(), attributes, &g);
  if (status.failure()) return status;
  return Run([&] {
    auto plan = msm_onednn::Cached<Plan>(g.Key("backward_data"), [&] {
      dnnl::convolution_backward_data::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, g.Source(), g.AnyWeights(g.type),
          g.Destination(), g.strides, g.pad_l, g.pad_r, g.Forward());
      return MakePlan(dnnl::convolution_backward_data(pd), pd.weights_desc(),
                      g.UserWeights(g.type), true);
    });
    dnnl::stream stream(Engine());
    memory weights = KernelForPrimitive(*plan, g, w.untyped_data(), stream);
    plan->conv.execute(stream,
                       {{DNNL_ARG_DIFF_DST, memory(g.Destination(), Engine(), dy.untyped_data())},
                        {DNNL_ARG_WEIGHTS, weights},
                        {DNNL_ARG_DIFF_SRC, memory(g.Source(), Engine(), dx->untyped_data())}});
    stream.wait();
  });
}

ffi::Error ConvBackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                               ffi::Result<ffi::AnyBuffer> dw,
                               ffi::Result<ffi::AnyBuffer> db, int64_t stride_h,
                               int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                               int64_t pad_left, int64_t pad_right) {
  Geometry g;
  auto attributes = ReadAttributes(stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right);
  if (x.element_type() != dy.element_type() || dw->element_type() != x.element_type() ||
      db->element_type() != ffi::DataType::F32)
    return ffi::Error::InvalidArgument("msm_conv_backward_weights: mixed element types");
  auto status = MakeGeometry(x.element_type(), x.dimensions(), dw->dimensions(),
                             dy.dimensions(), attributes, &g);
  if (status.failure()) return status;
  return Run([&] {
    // The kernel gradient sums batch x height x width products: accumulate it in float32
    // whatever the activations' type, then round once into the caller's HWIO buffer.
    auto plan = msm_onednn::Cached<Plan>(g.Key("backward_weights"), [&] {
      dnnl::convolution_backward_weights::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, g.Source(),
          g.AnyWeights(memory::data_type::f32), g.Bias(memory::data_type::f32), g.Destination(),
          g.strides, g.pad_l, g.pad_r, g.Forward());
      return MakePlan(dnnl::convolution_backward_weights(pd), pd.diff_weights_desc(),
                      g.UserWeights(g.type), false);
    });
    dnnl::stream stream(Engine());
    memory user_weights(g.UserWeights(g.type), Engine(), dw->untyped_data());
    memory weights = plan->reorder_needed
                         ? memory(plan->weights, Engine(), WeightsScratch(plan->weights.get_size()))
                         : user_weights;
    plan->conv.execute(stream, {{DNNL_ARG_SRC, memory(g.Source(), Engine(), x.untyped_data())},
                                {DNNL_ARG_DIFF_DST, memory(g.Destination(), Engine(), dy.untyped_data())},
                                {DNNL_ARG_DIFF_WEIGHTS, weights},
                                {DNNL_ARG_DIFF_BIAS, memory(g.Bias(memory::data_type::f32), Engine(), db->untyped_data())}});
    if (plan->reorder_needed) plan->reorder.execute(stream, weights, user_weights);
    stream.wait();
  });
}

}  // namespace

#define MSM_CONV_ATTRIBUTES                                                             \
  .Attr<int64_t>("stride_h").Attr<int64_t>("stride_w").Attr<int64_t>("pad_top")         \
      .Attr<int64_t>("pad_bottom").Attr<int64_t>("pad_left").Attr<int64_t>("pad_right")

XLA_FFI_DEFINE_HANDLER_SYMBOL(MsmConvForward, ConvForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() MSM_CONV_ATTRIBUTES
                                  .Attr<bool>("relu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MsmConvBackwardData, ConvBackwardData,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() MSM_CONV_ATTRIBUTES);

XLA_FFI_DEFINE_HANDLER_SYMBOL(MsmConvBackwardWeights, ConvBackwardWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() MSM_CONV_ATTRIBUTES);
